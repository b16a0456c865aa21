// The real gateway process (Bun) against the test database and mock upstreams: every refusal the
// client can meet, streaming, failover, settlement, and the one-round-trip budget.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let primary: MockUpstream;
let backup: MockUpstream;
let key: string;
let model: string;
let group: string;
let userId: number;
const extraKeys: Record<string, string> = {};

beforeAll(async () => {
  primary = await startMockUpstream();
  backup = await startMockUpstream();
  const sql = db();
  group = await createGroup(sql);
  model = unique('gpt');
  await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1000000, output_price: 2000000 })})`;
  const user = await createUser(sql, { group });
  userId = user.id;
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 100_000_000 })})`;
  key = (await createKey(sql, { user_id: user.id })).key;
  await createChannel(sql, { base_url: primary.url, models: [model, 'embed-' + model], groups: [group], priority: 10 });
  await createChannel(sql, { base_url: backup.url + '/v1', models: [model, 'embed-' + model], groups: [group], priority: 0 });
  extraKeys.revoked = (await createKey(sql, { user_id: user.id })).key;
  await sql`update private.api_keys set status = 'revoked' where key_hash = sha256(${extraKeys.revoked}::bytea)`;
  extraKeys.expired = (await createKey(sql, { user_id: user.id, expires_at: '2021-01-01T00:00:00Z' })).key;
  await sql`select admin.model_upsert('{"name": "other-model"}')`; // a key may allow known models only
  extraKeys.limited = (await createKey(sql, { user_id: user.id, allowed_models: ['other-model'] })).key;
  extraKeys.ipBound = (await createKey(sql, { user_id: user.id, allowed_ips: ['10.9.9.0/24'] })).key;
  gw = await startGateway();
});

afterAll(async () => {
  await gw?.stop();
  await primary?.close();
  await backup?.close();
  await closeDb();
});

beforeEach(() => {
  primary.mode = { kind: 'ok' };
  backup.mode = { kind: 'ok' };
  primary.calls.length = 0;
  backup.calls.length = 0;
});

const post = (path: string, body: unknown, k: string | null = key, headers: Record<string, string> = {}) =>
  fetch(gw.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(k ? { authorization: `Bearer ${k}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

const chat = (extra: Record<string, unknown> = {}) => ({ model, messages: [{ role: 'user', content: 'hello there' }], ...extra });

async function expectError(res: Response, status: number, code: string, param?: string | null) {
  expect(res.status).toBe(status);
  expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  const body = await res.json();
  expect(body.error).toMatchObject({ code, type: expect.any(String), message: expect.any(String) });
  if (param !== undefined) expect(body.error.param).toBe(param);
  return body.error;
}

/** Waits for the group commit to settle a request row. */
async function settled(requestId: string) {
  for (let i = 0; i < 100; i++) {
    const [row] = await db()`select * from private.requests where id = ${requestId} and status <> 'pending'`;
    if (row) return row;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`request ${requestId} was not settled`);
}

describe('refusals before and inside relay_begin', () => {
  it('malformed JSON → 400 invalid_json', async () => {
    const e = await expectError(await post('/v1/chat/completions', '{"model": '), 400, 'invalid_json');
    expect(e.message).toMatch(/could not parse the JSON body/);
  });
  it('a body that is not an object → 400', async () => {
    await expectError(await post('/v1/chat/completions', '[1,2]'), 400, 'invalid_json');
  });
  it('missing model → 400 with param', async () => {
    await expectError(await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] }), 400, 'invalid_request', 'model');
  });
  it('missing messages → 400 with param', async () => {
    await expectError(await post('/v1/chat/completions', { model }), 400, 'invalid_request', 'messages');
  });
  it('wrong types → 400 with param', async () => {
    await expectError(await post('/v1/chat/completions', chat({ stream: 'yes' })), 400, 'invalid_request', 'stream');
    await expectError(await post('/v1/chat/completions', chat({ max_tokens: -3 })), 400, 'invalid_request', 'max_tokens');
  });
  it('oversize body → 413 before any database call', async () => {
    const before = await gw.metric('elygate_db_queries_total');
    const big = JSON.stringify(chat({ messages: [{ role: 'user', content: 'x'.repeat(17 * 1024 * 1024) }] }));
    await expectError(await post('/v1/chat/completions', big), 413, 'request_too_large');
    expect(await gw.metric('elygate_db_queries_total')).toBe(before);
  });
  it('no key → 401', async () => {
    await expectError(await post('/v1/chat/completions', chat(), null), 401, 'invalid_api_key');
  });
  it('unknown key → 401', async () => {
    await expectError(await post('/v1/chat/completions', chat(), 'sk-unknown'), 401, 'invalid_api_key', null);
  });
  it('revoked key → 401', async () => {
    const e = await expectError(await post('/v1/chat/completions', chat(), extraKeys.revoked), 401, 'invalid_api_key');
    expect(e.message).toMatch(/revoked/);
  });
  it('expired key → 401', async () => {
    const e = await expectError(await post('/v1/chat/completions', chat(), extraKeys.expired), 401, 'invalid_api_key');
    expect(e.message).toMatch(/expired/);
  });
  it('model not allowed for the key → 403', async () => {
    await expectError(await post('/v1/chat/completions', chat(), extraKeys.limited), 403, 'model_not_allowed', 'model');
  });
  it('client address outside the key allowlist → 403', async () => {
    await expectError(await post('/v1/chat/completions', chat(), extraKeys.ipBound), 403, 'ip_not_allowed', null);
  });
  it('unknown model → 404', async () => {
    await expectError(await post('/v1/chat/completions', chat({ model: 'no-such-model' })), 404, 'model_not_found', 'model');
  });
  it('no enabled channel → 503', async () => {
    const m = unique('lonely');
    const ch = await createChannel(db(), { base_url: primary.url, models: [m], groups: [group], status: 'manually_disabled' });
    await expectError(await post('/v1/chat/completions', chat({ model: m })), 503, 'no_available_channel', null);
    expect(ch.id).toBeTruthy();
  });
  it('unknown URL → 404 in OpenAI shape', async () => {
    await expectError(await post('/v1/nope', {}), 404, 'unknown_url');
  });
  it('x-api-key works as well as Authorization', async () => {
    const res = await post('/v1/chat/completions', chat(), null, { 'x-api-key': key });
    expect(res.status).toBe(200);
  });
});

describe('relaying', () => {
  it('non-stream chat: passes the answer through, settles usage and cost, one round trip', async () => {
    const begins = () => gw.metric('elygate_db_queries_total{function="relay_begin"}');
    const all = () => gw.metric('elygate_db_queries_total');
    // Let earlier requests' outcomes settle first, so this request's round trips stand alone.
    while ((await gw.metric('elygate_settle_queue_depth')) > 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    const [b0, a0] = [await begins(), await all()];
    const f0 = (await gw.metric('elygate_db_queries_total{function="relay_finish"}')) || 0;
    const res = await post('/v1/chat/completions', chat({ tools: undefined, temperature: 0.2, some_future_field: { a: 1 } }));
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id')!;
    const body = await res.json();
    expect(body.choices[0].message.content).toBe('echo: hello there');
    expect(body.usage).toEqual({ prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 });
    // Unknown fields reach the upstream untouched.
    expect(primary.calls[0].body.some_future_field).toEqual({ a: 1 });
    expect(primary.calls[0].headers.authorization).toBe('Bearer sk-upstream-test');
    const row = await settled(requestId);
    // One relay_begin on the request's path; the rest (at most the shared relay_finish batch) is off it.
    expect((await begins()) - b0).toBe(1);
    // ...and this request's share of one relay_finish batch. (Other traffic, e.g. the maintenance
    // check every 30 s, is not on the request path and is counted under its own function.)
    expect((await gw.metric('elygate_db_queries_total{function="relay_finish"}')) - f0).toBe(1);
    expect((await all()) - a0).toBeGreaterThanOrEqual(2);
    expect(row).toMatchObject({ status: 'ok', http_status: 200, prompt_tokens: 2, completion_tokens: 3, usage_source: 'upstream' });
    // 2 tokens at $1/M + 3 at $2/M = 2 + 6 = 8 micro-USD
    expect(Number(row.cost_micros)).toBe(8);
    const [ledger] = await db()`select amount_micros from private.ledger where request_id = ${requestId}`;
    expect(Number(ledger.amount_micros)).toBe(8);
  });

  it('stream chat: SSE framing, usage injected upstream and stripped for the client', async () => {
    const res = await post('/v1/chat/completions', chat({ stream: true }));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = await res.text();
    const events = text.split('\n\n').filter(Boolean);
    expect(events.every((e) => e.startsWith('data: '))).toBe(true);
    expect(events.at(-1)).toBe('data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toBe('echo: hello there');
    expect(chunks.some((c) => c.usage)).toBe(false);
    expect(primary.calls[0].body.stream_options).toEqual({ include_usage: true });
    const row = await settled(res.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'ok', prompt_tokens: 2, completion_tokens: 3, usage_source: 'upstream' });
  });

  it('stream chat: the usage chunk is kept when the client asked for it', async () => {
    const res = await post('/v1/chat/completions', chat({ stream: true, stream_options: { include_usage: true } }));
    const chunks = (await res.text())
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .map((e) => JSON.parse(e.slice(6)));
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 2, completion_tokens: 3 } });
  });

  it('streams arrive as they are produced, not buffered', async () => {
    primary.mode = { kind: 'slow-stream', delayMs: 150 };
    const t0 = Date.now();
    const res = await post('/v1/chat/completions', chat({ stream: true }));
    const reader = res.body!.getReader();
    const first = await reader.read();
    const firstAt = Date.now() - t0;
    expect(new TextDecoder().decode(first.value)).toContain('data: ');
    while (!(await reader.read()).done) {
      /* drain */
    }
    const total = Date.now() - t0;
    expect(total - firstAt).toBeGreaterThan(400); // the rest came later, chunk by chunk
  });

  it('client disconnect mid-stream cancels the upstream call and settles as aborted', async () => {
    primary.mode = { kind: 'slow-stream', delayMs: 200 };
    const ac = new AbortController();
    const res = await post('/v1/chat/completions', chat({ stream: true }), key, {});
    const requestId = res.headers.get('x-request-id')!;
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    ac.abort();
    const row = await settled(requestId);
    expect(row.status).toBe('aborted');
    await new Promise((r) => setTimeout(r, 300));
    expect(primary.calls.at(-1)!.aborted).toBe(true);
  });

  it('fails over to the next channel on 5xx, 429 and connection errors before the first byte', async () => {
    for (const mode of [{ kind: 'status', status: 500 }, { kind: 'status', status: 429 }, { kind: 'reset' }] as const) {
      primary.mode = mode;
      primary.calls.length = 0;
      backup.calls.length = 0;
      const res = await post('/v1/chat/completions', chat());
      expect(res.status).toBe(200);
      expect(primary.calls.length).toBe(1);
      expect(backup.calls.length).toBe(1);
      const row = await settled(res.headers.get('x-request-id')!);
      expect(row.attempts.map((a: any) => a.status)).toEqual([mode.kind === 'reset' ? null : mode.status, 200]);
    }
  });

  it('fails over a stream whose upstream errors before its first byte', async () => {
    primary.mode = { kind: 'status', status: 503 };
    const res = await post('/v1/chat/completions', chat({ stream: true }));
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('echo: hello there'.split(' ')[0]);
    expect(backup.calls.length).toBe(1);
  });

  it('never retries a 400 from the upstream, and passes its error through', async () => {
    primary.mode = { kind: 'status', status: 400 };
    const res = await post('/v1/chat/completions', chat());
    expect(res.status).toBe(400);
    expect((await res.json()).error.message).toBe('mock upstream says 400');
    expect(backup.calls.length).toBe(0);
    const row = await settled(res.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'error', cost_micros: '0' });
  });

  it('does not retry once the first byte of a stream has reached the client', async () => {
    primary.mode = { kind: 'stream-break', afterChunks: 2 };
    const res = await post('/v1/chat/completions', chat({ stream: true }));
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('upstream_stream_error');
    expect(backup.calls.length).toBe(0);
    const row = await settled(res.headers.get('x-request-id')!);
    expect(row.status).toBe('error');
  });

  it('when every channel fails, answers with the last upstream error', async () => {
    primary.mode = { kind: 'status', status: 502 };
    backup.mode = { kind: 'status', status: 503 };
    const res = await post('/v1/chat/completions', chat());
    expect(res.status).toBe(503);
    expect(res.headers.get('x-request-id')).toBeTruthy();
  });

  it('legacy completions and embeddings', async () => {
    const c = await post('/v1/completions', { model, prompt: 'say hi' });
    expect(c.status).toBe(200);
    expect((await c.json()).choices[0].text).toBe('echo: say hi');
    const e = await post('/v1/embeddings', { model: 'embed-' + model, input: ['a b', 'c'] });
    expect(e.status).toBe(200);
    const body = await e.json();
    expect(body.data).toHaveLength(2);
    expect(body.usage.prompt_tokens).toBe(3);
    expect(primary.calls.at(-1)!.path).toBe('/v1/embeddings');
  });

  it('GET /v1/models lists only what the key may use', async () => {
    const all = await (await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).json();
    expect(all.data.map((m: any) => m.id).sort()).toEqual(['embed-' + model, model].sort());
    const limited = await (await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${extraKeys.limited}` } })).json();
    expect(limited.data).toEqual([]);
    const res = await fetch(`${gw.url}/v1/models`);
    await expectError(res, 401, 'invalid_api_key');
  });

  it('health and readiness', async () => {
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    const r = await fetch(`${gw.url}/readyz`);
    expect(r.status).toBe(200);
    expect(r.headers.get('x-request-id')).toBeTruthy();
  });

  it('settles in batches: many concurrent requests, fewer relay_finish calls', async () => {
    const b0 = await gw.metric('elygate_settle_batches_total');
    const s0 = await gw.metric('elygate_settled_outcomes_total');
    const q0 = await gw.metric('elygate_db_queries_total');
    const n = 64;
    const results = await Promise.all(Array.from({ length: n }, () => post('/v1/chat/completions', chat())));
    expect(results.every((r) => r.status === 200)).toBe(true);
    await Promise.all(results.map((r) => r.arrayBuffer()));
    while ((await gw.metric('elygate_settle_queue_depth')) > 0) await new Promise((r) => setTimeout(r, 20));
    const batches = (await gw.metric('elygate_settle_batches_total')) - b0;
    const outcomes = (await gw.metric('elygate_settled_outcomes_total')) - s0;
    const queries = (await gw.metric('elygate_db_queries_total')) - q0;
    console.log(`${n} concurrent requests: ${outcomes} outcomes in ${batches} relay_finish calls; ${queries} database round trips in all`);
    expect(outcomes).toBeGreaterThanOrEqual(n);
    expect(queries).toBeLessThanOrEqual(n + batches);
    expect(batches).toBeLessThan(n / 2);
    const [{ pending }] = await db()`select count(*)::int as pending from private.admissions where user_id = ${userId}`;
    expect(pending).toBe(0);
  });
});
