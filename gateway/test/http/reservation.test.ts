// ReservationPolicy through the real gateway and the `openai` client: a request without
// max_tokens is reserved at DefaultMaxTokens. "cap" sends the upstream that limit (and says so in
// x-elygate-max-tokens), so no bill exceeds its reservation; "allow" sends none, bills a longer
// answer in full, records the overrun in the ledger, and refuses the wallet it pushed past its
// credit limit until it is topped up.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startMockGemini, type MockGemini } from '../support/mock-gemini';

let gw: RunningGateway;
let upstream: MockUpstream;
let gemini: MockGemini;
const defaults: Record<string, string> = {};
const touched = ['ReservationPolicy', 'DefaultMaxTokens'];

beforeAll(async () => {
  [upstream, gemini] = await Promise.all([startMockUpstream(), startMockGemini()]);
  for (const o of await db()`select key, value from private.options where key = any(${touched})`) defaults[o.key] = o.value;
  await db()`select admin.option_set('DefaultMaxTokens', '20')`;
  gw = await startGateway();
});

afterAll(async () => {
  for (const [k, v] of Object.entries(defaults)) await db()`select admin.option_set(${k}, ${v})`;
  await gw?.stop();
  await upstream?.close();
  await gemini?.close();
  await closeDb();
});

/** A user with `balance` micro-USD on a model at 1 micro-USD per token (in and out), served by
 *  the OpenAI mock (or the channel `channel` describes). */
async function tenant(balance: number, channel: Record<string, unknown> = {}) {
  const sql = db();
  const group = await createGroup(sql);
  const model = unique('reserved');
  await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1_000_000, output_price: 1_000_000 })})`;
  const user = await createUser(sql, { group });
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: balance })})`;
  const { key } = await createKey(sql, { user_id: user.id });
  await createChannel(sql, { base_url: upstream.url, models: [model], groups: [group], ...channel });
  return { model, user, client: new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 }) };
}

/** The request's settled row: what was reserved, what was billed and by how much it overran. */
async function settled(id: string) {
  for (let i = 0; i < 500; i++) {
    const [r] = await db()`
      select r.reserved_micros::int as reserved, l.amount_micros::int as amount, l.overrun_micros::int as overrun,
             l.completion_tokens
        from private.requests r join private.ledger l on l.request_id = r.id
       where r.id = ${id}`;
    if (r) return r;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error(`request ${id} was never settled`);
}

const wallet = async (userId: unknown) =>
  (await db()`select balance_micros::int as balance, reserved_micros::int as reserved from private.wallets where user_id = ${userId as number}`)[0];

describe('ReservationPolicy cap', () => {
  beforeAll(async () => {
    await db()`select admin.option_set('ReservationPolicy', 'cap')`;
  });

  it('sends the upstream the reserved output tokens, says so, and bills no more than it reserved', async () => {
    const t = await tenant(1_000_000);
    const { data, response } = await t.client.chat.completions
      .create({ model: t.model, messages: [{ role: 'user', content: 'mock:long:300' }] })
      .withResponse();
    expect(response.headers.get('x-elygate-max-tokens')).toBe('20; reason=reservation');
    expect(upstream.calls.at(-1)!.body.max_tokens).toBe(20);
    expect(data.choices[0].finish_reason).toBe('length');
    expect(data.usage!.completion_tokens).toBe(20);
    const r = await settled(response.headers.get('x-request-id')!);
    expect(r.amount).toBeLessThanOrEqual(r.reserved);
    expect(r.overrun).toBe(0);
  });

  it('caps a stream the same way', async () => {
    const t = await tenant(1_000_000);
    const { data: stream, response } = await t.client.chat.completions
      .create({ model: t.model, stream: true, messages: [{ role: 'user', content: 'mock:long:300' }] })
      .withResponse();
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(response.headers.get('x-elygate-max-tokens')).toBe('20; reason=reservation');
    expect(upstream.calls.at(-1)!.body.max_tokens).toBe(20);
    expect(text.split(' ')).toHaveLength(20);
    const r = await settled(response.headers.get('x-request-id')!);
    expect(r.amount).toBeLessThanOrEqual(r.reserved);
  });

  it('leaves a client\'s own max_tokens alone (it is reserved in full)', async () => {
    const t = await tenant(1_000_000);
    const { data, response } = await t.client.chat.completions
      .create({ model: t.model, max_tokens: 50, messages: [{ role: 'user', content: 'mock:long:300' }] })
      .withResponse();
    expect(response.headers.get('x-elygate-max-tokens')).toBeNull();
    expect(upstream.calls.at(-1)!.body.max_tokens).toBe(50);
    expect(data.usage!.completion_tokens).toBe(50);
  });

  it('in the field each upstream reads: a channel\'s max_tokens_field, Gemini\'s generationConfig.maxOutputTokens', async () => {
    const named = await tenant(1_000_000, { config: { max_tokens_field: 'max_completion_tokens' } });
    await named.client.chat.completions.create({ model: named.model, messages: [{ role: 'user', content: 'mock:long:300' }] });
    expect(upstream.calls.at(-1)!.body).toMatchObject({ max_completion_tokens: 20 });
    expect(upstream.calls.at(-1)!.body).not.toHaveProperty('max_tokens');
    const g = await tenant(1_000_000, { type: 'gemini', base_url: gemini.url });
    const { response } = await g.client.chat.completions.create({ model: g.model, messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    expect(response.headers.get('x-elygate-max-tokens')).toBe('20; reason=reservation');
    expect(gemini.calls.at(-1)!.body.generationConfig).toMatchObject({ maxOutputTokens: 20 });
  });

  it('caps a Responses request converted for a chat-only upstream', async () => {
    const t = await tenant(1_000_000);
    const { data, response } = await t.client.responses.create({ model: t.model, input: 'mock:long:300' }).withResponse();
    expect(response.headers.get('x-elygate-max-tokens')).toBe('20; reason=reservation');
    expect(upstream.calls.at(-1)!.body.max_tokens).toBe(20);
    expect(data.usage!.output_tokens).toBe(20);
  });
});

describe('ReservationPolicy allow (the default)', () => {
  beforeAll(async () => {
    expect(defaults.ReservationPolicy).toBe('allow');
    await db()`select admin.option_set('ReservationPolicy', 'allow')`;
  });

  it('bills a long answer in full, records the overrun, and refuses the wallet until it is topped up', async () => {
    const t = await tenant(100);
    const { data, response } = await t.client.chat.completions
      .create({ model: t.model, messages: [{ role: 'user', content: 'mock:long:300' }] })
      .withResponse();
    expect(response.headers.get('x-elygate-max-tokens')).toBeNull();
    expect(upstream.calls.at(-1)!.body).not.toHaveProperty('max_tokens');
    expect(data.usage!.completion_tokens).toBe(300);
    const r = await settled(response.headers.get('x-request-id')!);
    // 1 prompt token + 300 completion tokens at 1 micro-USD each, however little was reserved.
    expect(r.amount).toBe(301);
    expect(r.reserved).toBeLessThan(100);
    expect(r.overrun).toBe(r.amount - r.reserved);
    expect(await wallet(t.user.id)).toEqual({ balance: -201, reserved: 0 });

    const refused = await t.client.chat.completions.create({ model: t.model, messages: [{ role: 'user', content: 'again' }] }).catch((e) => e);
    expect(refused).toBeInstanceOf(OpenAI.APIError);
    expect(refused.status).toBe(429);
    expect(refused.error).toMatchObject({ code: 'insufficient_quota' });
    expect(refused.message).toContain('201 micro-USD past its credit limit');
    expect(refused.message).toContain('billed more than was reserved');

    // Topped up just enough to cover the overrun, it is still refused: nothing is left for a reservation.
    await db()`select admin.wallet_credit(${db().json({ user_id: t.user.id, amount_micros: 201 })})`;
    const still = await t.client.chat.completions.create({ model: t.model, messages: [{ role: 'user', content: 'again' }] }).catch((e) => e);
    expect(still.status).toBe(429);
    expect(still.message).not.toContain('past its credit limit');

    await db()`select admin.wallet_credit(${db().json({ user_id: t.user.id, amount_micros: 1000 })})`;
    const ok = await t.client.chat.completions.create({ model: t.model, messages: [{ role: 'user', content: 'again' }] });
    expect(ok.choices[0].message.content).toBe('echo: again');
  });
});
