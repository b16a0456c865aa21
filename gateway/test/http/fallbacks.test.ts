// Model fallbacks through the real gateway: when every channel of the asked-for model fails before
// the first byte, the fallback model's channels are tried (admin.model_upsert's "fallbacks"), the
// answer is billed at the fallback's prices (receipt header = ledger), and the routing trace and
// x-elygate-model say which model served. Without fallbacks, the same failure is a 502 as before.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let primaryUp: MockUpstream;
let fallbackUp: MockUpstream;
let key: string;
let primary: string;
let fallback: string;
let lonely: string;
const ids: Record<'primary' | 'fallback' | 'lonely', number> = {} as never;

beforeAll(async () => {
  [primaryUp, fallbackUp] = await Promise.all([startMockUpstream(), startMockUpstream()]);
  const sql = db();
  const group = await createGroup(sql);
  primary = unique('big');
  fallback = unique('small');
  lonely = unique('alone');
  await sql`select admin.model_upsert(${sql.json({ name: fallback, input_price: 1_000_000, output_price: 3_000_000 })})`;
  await sql`select admin.model_upsert(${sql.json({ name: primary, input_price: 10_000_000, output_price: 30_000_000, fallbacks: [fallback] })})`;
  await sql`select admin.model_upsert(${sql.json({ name: lonely, input_price: 10_000_000, output_price: 30_000_000 })})`;
  ids.primary = Number((await createChannel(sql, { base_url: primaryUp.url, models: [primary, lonely], groups: [group] })).id);
  // The fallback's channel maps it to another upstream name, as a provider's would be.
  ids.fallback = Number((await createChannel(sql, { base_url: fallbackUp.url, models: [fallback], groups: [group], model_mapping: { [fallback]: 'upstream-small' } })).id);
  const user = await createUser(sql, { group });
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 100_000_000 })})`;
  key = (await createKey(sql, { user_id: user.id })).key;
  gw = await startGateway();
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([primaryUp?.close(), fallbackUp?.close()]);
  await closeDb();
});

beforeEach(() => {
  for (const m of [primaryUp, fallbackUp]) {
    m.mode = { kind: 'ok' };
    m.calls.length = 0;
  }
});

async function ledgerOf(requestId: string) {
  for (let i = 0; i < 200; i++) {
    const [row] = await db()`
      select l.model, l.amount_micros::int as amount, l.input_price::int as input_price, l.output_price::int as output_price,
             l.prompt_tokens, l.completion_tokens, l.channel_id::int as channel_id, r.model as asked, r.upstream_model
        from private.ledger l join private.requests r on r.id = l.request_id where l.request_id = ${requestId}`;
    if (row) return row;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`request ${requestId} was not settled`);
}

const chatCalls = (m: MockUpstream) => m.calls.filter((c) => c.path.endsWith('/chat/completions'));

describe('model fallbacks', () => {
  it('/v1/models lists a model that has no channel of its own but a fallback that is served', async () => {
    const sql = db();
    const virtual = unique('virtual');
    await sql`select admin.model_upsert(${sql.json({ name: virtual, input_price: 1_000_000, output_price: 3_000_000, fallbacks: [fallback] })})`;
    const client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const ids = (await client.models.list()).data.map((m) => m.id);
    expect(ids).toEqual(expect.arrayContaining([primary, fallback, lonely, virtual]));
    expect(new Set(ids).size).toBe(ids.length); // listed once, not once per way to reach it
    // And it answers: through the fallback's channel.
    const { data, response } = await client.chat.completions.create({ model: virtual, messages: [{ role: 'user', content: 'only through a fallback' }] }).withResponse();
    expect(data.choices[0].message.content).toBe('echo: only through a fallback');
    expect(response.headers.get('x-elygate-model')).toBe(fallback);
  });

  it("the primary model's only channel fails: the fallback answers, billed at its price, and says so", async () => {
    primaryUp.mode = { kind: 'status', status: 500 };
    const client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const { data, response } = await client.chat.completions
      .create({ model: primary, messages: [{ role: 'user', content: 'fall back please' }] })
      .withResponse();
    expect(data.choices[0].message.content).toBe('echo: fall back please');
    expect(response.headers.get('x-elygate-model')).toBe(fallback);
    expect(chatCalls(primaryUp)).toHaveLength(1);
    expect(chatCalls(fallbackUp)).toHaveLength(1);
    expect(chatCalls(fallbackUp)[0].body.model).toBe('upstream-small');

    const id = response.headers.get('x-request-id')!;
    const l = await ledgerOf(id);
    expect(l).toMatchObject({ model: fallback, asked: primary, input_price: 1_000_000, output_price: 3_000_000, channel_id: ids.fallback, upstream_model: 'upstream-small' });
    // The fallback's prices: 1 and 3 micro-USD per token.
    expect(l.amount).toBe(l.prompt_tokens * 1 + l.completion_tokens * 3);
    expect(l.amount).toBeGreaterThan(0);
    expect(Number(response.headers.get('x-elygate-cost-micros'))).toBe(l.amount);

    const steps = await db()`
      select kind, channel_id::int, status, fallback, served, upstream_model from admin.request_routes where request_id = ${id} order by step`;
    expect(steps).toEqual([
      { kind: 'attempt', channel_id: ids.primary, status: 500, fallback: null, served: false, upstream_model: primary },
      { kind: 'attempt', channel_id: ids.fallback, status: 200, fallback, served: true, upstream_model: 'upstream-small' },
    ]);
  });

  it('a stream falls back too, and names the model that served', async () => {
    primaryUp.mode = { kind: 'status', status: 503 };
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: primary, stream: true, messages: [{ role: 'user', content: 'stream it' }] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-elygate-model')).toBe(fallback);
    expect(await res.text()).toContain('[DONE]');
    const l = await ledgerOf(res.headers.get('x-request-id')!);
    expect(l).toMatchObject({ model: fallback, input_price: 1_000_000 });
  });

  it('the primary answering is billed at its own price and named so', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: primary, messages: [{ role: 'user', content: 'no need' }] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-elygate-model')).toBe(primary);
    expect(chatCalls(fallbackUp)).toHaveLength(0);
    const l = await ledgerOf(res.headers.get('x-request-id')!);
    expect(l).toMatchObject({ model: primary, input_price: 10_000_000 });
    expect(Number(res.headers.get('x-elygate-cost-micros'))).toBe(l.amount);
  });

  it("no fallback configured: the upstream's failure is the answer, as before", async () => {
    const ask = () =>
      fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: lonely, messages: [{ role: 'user', content: 'nobody home' }] }),
      });
    // An error status is passed on (its status and body); a channel that cannot be reached is a 502.
    primaryUp.mode = { kind: 'status', status: 500 };
    const failed = await ask();
    expect(failed.status).toBe(500);
    expect(failed.headers.get('x-elygate-model')).toBeNull();
    primaryUp.mode = { kind: 'reset' };
    expect((await ask()).status).toBe(502);
    expect(chatCalls(fallbackUp)).toHaveLength(0);
  });
});
