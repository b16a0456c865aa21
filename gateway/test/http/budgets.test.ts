// Budgets and per-model limits through the real gateway: a 200-request burst at a budget's
// boundary admits exactly what the budget covers (never more), settles to Σ ledger = spent, and
// refuses the rest with 429 budget_exceeded and a Retry-After until the reset; a per-model RPM
// refuses with 429 model_rate_limited naming the model.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let upstream: MockUpstream;
let concurrency = '1';

beforeAll(async () => {
  upstream = await startMockUpstream();
  [{ value: concurrency }] = await db()`select value from private.options where key = 'AdmissionConcurrency'`;
  // Four admission lanes: concurrent transactions contend for the budget rows, and each lane
  // batches the requests that wait for it (relay_begin_batch).
  await db()`select admin.option_set('AdmissionConcurrency', '4')`;
  gw = await startGateway();
});

afterAll(async () => {
  await db()`select admin.option_set('AdmissionConcurrency', ${concurrency})`;
  await gw?.stop();
  await upstream?.close();
  await closeDb();
});

/** A funded user in a fresh group with a key, on a model billed 1000 micro-USD per call (so every
 *  request reserves and is billed exactly 1000). */
async function tenant() {
  const sql = db();
  const group = await createGroup(sql);
  const model = unique('budgeted');
  await sql`select admin.model_upsert(${sql.json({ name: model, per_call_price: 1000 })})`;
  const user = await createUser(sql, { group });
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 10_000_000 })})`;
  const key = await createKey(sql, { user_id: user.id, name: 'burst' });
  await createChannel(sql, { base_url: upstream.url, models: [model], groups: [group] });
  return { group, model, user, key };
}

const ask = (key: string, model: string) =>
  fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, max_tokens: 5, messages: [{ role: 'user', content: 'hello' }] }),
  });

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>): Promise<T> {
  for (let i = 0; i < 1000; i++) {
    const v = await fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('budgets through the gateway', () => {
  it('a 200-request burst at the boundary admits exactly what the budget covers; Σ ledger = spent', async () => {
    const t = await tenant();
    const sql = db();
    // 50 requests fit the key's daily budget (50,500: the 51st would need 51,000); the group's
    // monthly budget is larger and counts them too (two budget rows per request, locked in order).
    const [{ b: keyBudget }] = await sql`select admin.budget_set(${sql.json({ key_id: t.key.id, period: 'day', amount_micros: 50_500 })}) as b`;
    const [{ b: groupBudget }] = await sql`select admin.budget_set(${sql.json({ group: t.group, period: 'month', amount_micros: 80_000 })}) as b`;

    const answers = await Promise.all(Array.from({ length: 200 }, () => ask(t.key.key, t.model)));
    const bodies = await Promise.all(answers.map((r) => r.json()));
    const ok = answers.filter((r) => r.status === 200).length;
    const refusals = bodies.filter((b, i) => answers[i].status === 429);
    expect(ok + refusals.length).toBe(200);
    expect(ok).toBe(50);
    for (const b of refusals) {
      expect(b.error.code).toBe('budget_exceeded');
      expect(b.error.message).toContain(`the daily budget of the key ${t.key.key_prefix} (burst) is 50500 micro-USD`);
      expect(b.error.message).toMatch(/It resets at \d{4}-\d\d-\d\dT00:00:00Z\.$/);
    }
    const refused = answers.find((r) => r.status === 429)!;
    const retry = Number(refused.headers.get('retry-after'));
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(86400);

    // Every admission settles: nothing reserved is left, and the budgets' spend equals the ledger.
    const spent = await until('settlement', async () => {
      const rows = await sql`select id, spent_micros::int as spent, reserved_micros::int as reserved from admin.budgets
                              where id in (${keyBudget.id}, ${groupBudget.id}) order by id`;
      return rows.every((r) => r.reserved === 0 && r.spent === 50_000) && rows;
    });
    const [{ sum, n }] = await sql`select sum(amount_micros)::int as sum, count(*)::int as n from private.ledger where key_id = ${t.key.id}`;
    expect({ sum, n }).toEqual({ sum: 50_000, n: 50 });
    expect(spent.map((r) => r.spent)).toEqual([sum, sum]);
    expect(sum).toBeLessThanOrEqual(50_500);
    // the refusals are logged as such
    await until('refusal rows', async () => {
      const [{ c }] = await sql`select count(*)::int as c from private.requests where key_id = ${t.key.id} and error_code = 'budget_exceeded'`;
      return c === 150;
    });
  });

  it('a per-model RPM refuses with 429 model_rate_limited naming the model, with Retry-After', async () => {
    const t = await tenant();
    const sql = db();
    await sql`select admin.model_limit_set(${sql.json({ key_id: t.key.id, model: t.model, rpm_limit: 3 })})`;
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await ask(t.key.key, t.model));
    // (a sliding window: a minute turning between them still counts the previous minute's requests)
    const last = answers.at(-1)!;
    expect(answers.slice(0, 3).map((r) => r.status)).toEqual([200, 200, 200]);
    expect(last.status).toBe(429);
    const body = await last.json();
    expect(body.error).toMatchObject({ code: 'model_rate_limited', type: 'requests' });
    expect(body.error.message).toContain(`Rate limit reached for the model \`${t.model}\``);
    expect(Number(last.headers.get('retry-after'))).toBeGreaterThan(0);
  });
});
