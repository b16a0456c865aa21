// Refusals in the request log: a known key's refused request (403 model not allowed, 429 quota) is
// logged with status 'refused', its HTTP status and code, and costs nothing; a request without a
// valid key is counted in metrics and never written to the database.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let upstream: MockUpstream;
let model: string;
let other: string;
let userId: number;
let keyId: number;
let key: string;
let poorKey: string;

beforeAll(async () => {
  upstream = await startMockUpstream();
  const sql = db();
  const group = await createGroup(sql);
  model = unique('refusable');
  other = unique('other');
  for (const m of [model, other]) await sql`select admin.model_upsert(${sql.json({ name: m, input_price: 1_000_000, output_price: 1_000_000 })})`;
  await createChannel(sql, { base_url: upstream.url, models: [model, other], groups: [group] });
  const user = await createUser(sql, { group });
  userId = user.id;
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 100_000_000 })})`;
  const k = await createKey(sql, { user_id: user.id, allowed_models: [model] });
  key = k.key;
  keyId = k.id;
  const poor = await createUser(sql, { group });
  poorKey = (await createKey(sql, { user_id: poor.id })).key;
  gw = await startGateway();
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
  await closeDb();
});

const ask = (k: string, m: string) =>
  fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: m, messages: [{ role: 'user', content: 'hello' }] }),
  });

async function logged(id: string) {
  for (let i = 0; i < 200; i++) {
    const [row] = await db()`select * from admin.requests where id = ${id} and status <> 'pending'`;
    if (row) return row;
    await new Promise((r) => setTimeout(r, 10));
  }
  return null;
}

describe('refusals', () => {
  it("a known key's refusal is in the request log as refused, with its status and code, billed nothing", async () => {
    const res = await ask(key, other);
    expect(res.status).toBe(403);
    const id = res.headers.get('x-request-id')!;
    const row = await logged(id);
    expect(row).toMatchObject({ status: 'refused', http_status: 403, error_code: 'model_not_allowed', model: other });
    expect(Number(row!.key_id)).toBe(keyId);
    expect(Number(row!.user_id)).toBe(userId);
    expect((await db()`select count(*)::int as n from private.ledger where request_id = ${id}`)[0].n).toBe(0);
    expect(upstream.calls.length).toBe(0);
  });

  it('a 429 for an empty wallet is logged the same way', async () => {
    const res = await ask(poorKey, model);
    expect(res.status).toBe(429);
    const row = await logged(res.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'refused', http_status: 429, error_code: 'insufficient_quota' });
  });

  it('a request without a valid key is counted, not logged', async () => {
    const before = await gw.metric('elygate_auth_failures_total{endpoint="chat/completions"}');
    const res = await ask('sk-not-a-real-key', model);
    expect(res.status).toBe(401);
    expect(await gw.metric('elygate_auth_failures_total{endpoint="chat/completions"}')).toBe((Number.isNaN(before) ? 0 : before) + 1);
    // Let a settlement batch go by: nothing of it reaches the log.
    const ok = await ask(key, model);
    expect(ok.status).toBe(200);
    await logged(ok.headers.get('x-request-id')!);
    expect(await logged(res.headers.get('x-request-id')!)).toBeNull();
    expect(gw.output()).toMatch(/request without a valid API key refused \(401\)/);
  });
});
