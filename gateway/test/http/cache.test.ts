// The cache through the real gateway: misses, exact and semantic hits (JSON and SSE replay),
// opt-out, tenant and context isolation, and an embedding upstream that fails. Upstream call
// counts prove when the upstream was not called.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let upstream: MockUpstream;
let embedder: MockUpstream;
let model: string;
let key: string;
let otherKey: string;

beforeAll(async () => {
  upstream = await startMockUpstream();
  embedder = await startMockUpstream();
  const sql = db();
  const group = await createGroup(sql);
  model = unique('cached');
  const embedModel = unique('embed');
  await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1_000_000, output_price: 1_000_000 })})`;
  await sql`select admin.model_upsert(${sql.json({ name: embedModel, input_price: 1_000_000 })})`;
  await createChannel(sql, { base_url: upstream.url, models: [model], groups: [group] });
  const embedChannel = await createChannel(sql, { base_url: embedder.url, models: [embedModel], groups: [group] });
  const a = await createUser(sql, { group });
  const b = await createUser(sql, { group });
  for (const u of [a, b]) await sql`select admin.wallet_credit(${sql.json({ user_id: u.id, amount_micros: 100_000_000 })})`;
  key = (await createKey(sql, { user_id: a.id })).key;
  otherKey = (await createKey(sql, { user_id: b.id })).key;
  await sql`select admin.option_set('SemanticCacheEnabled', 'true')`;
  await sql`select admin.option_set('SemanticCacheDimensions', '8')`;
  await sql`select admin.option_set('SemanticCacheEmbeddingChannel', ${embedChannel.name})`;
  await sql`select admin.option_set('SemanticCacheEmbeddingModel', ${embedModel})`;
  await sql`select admin.option_set('SemanticCacheAuditRate', '0')`;
  gw = await startGateway();
});

afterAll(async () => {
  const sql = db();
  await sql`select admin.option_set('SemanticCacheEnabled', 'false')`;
  await sql`select admin.option_set('SemanticCacheEmbeddingChannel', '')`;
  await sql`select admin.option_set('SemanticCacheEmbeddingModel', '')`;
  await gw?.stop();
  await upstream?.close();
  await embedder?.close();
  await closeDb();
});

beforeEach(() => {
  upstream.mode = { kind: 'ok' };
  embedder.mode = { kind: 'ok' };
});

const chatCalls = () => upstream.calls.filter((c) => c.path.endsWith('/chat/completions')).length;

async function ask(content: string, opts: { k?: string; stream?: boolean; system?: string; headers?: Record<string, string> } = {}) {
  const messages = [...(opts.system ? [{ role: 'system', content: opts.system }] : []), { role: 'user', content }];
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${opts.k ?? key}`, 'content-type': 'application/json', ...opts.headers },
    body: JSON.stringify({ model, messages, stream: opts.stream ?? false }),
  });
  const text = await res.text();
  // Let the miss settle (and be stored) before the next request looks for it.
  await new Promise((r) => setTimeout(r, 20));
  while ((await gw.metric('elygate_settle_queue_depth')) > 0) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 30));
  return { res, text, cache: res.headers.get('x-elygate-cache') };
}

describe('response cache through the gateway', () => {
  it('a miss is stored; the identical request is an exact hit without an upstream call', async () => {
    const before = chatCalls();
    const first = await ask('what is the capital of France? vec:1,0');
    expect(first.cache).toBe('miss');
    expect(chatCalls()).toBe(before + 1);
    const second = await ask('what is the capital of France? vec:1,0');
    expect(second.cache).toBe('exact');
    expect(chatCalls()).toBe(before + 1);
    expect(JSON.parse(second.text).choices[0].message.content).toBe(JSON.parse(first.text).choices[0].message.content);
  });

  it('a stream request hit by the cache still receives a proper stream', async () => {
    const before = chatCalls();
    const hit = await ask('what is the capital of France? vec:1,0', { stream: true });
    expect(hit.cache).toBe('exact');
    expect(hit.res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = hit.text.split('\n\n').filter(Boolean);
    expect(events.at(-1)).toBe('data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toBe('echo: what is the capital of France? vec:1,0');
    expect(chatCalls()).toBe(before);
  });

  it('semantic layer: 0.96 hits, 0.94 misses', async () => {
    await ask('tell me a joke vec:1,0,0');
    const before = chatCalls();
    const near = await ask('tell me a joke please vec:0.96,0.28,0');
    expect(near.cache).toMatch(/^semantic; similarity=0\.96$/);
    expect(chatCalls()).toBe(before);
    const far = await ask('tell me something else vec:0.94,0.3412,0');
    expect(far.cache).toBe('miss');
    expect(chatCalls()).toBe(before + 1);
  });

  it('another tenant never hits, even with the identical request', async () => {
    const before = chatCalls();
    const r = await ask('what is the capital of France? vec:1,0', { k: otherKey });
    expect(r.cache).toBe('miss');
    expect(chatCalls()).toBe(before + 1);
  });

  it('a different system prompt never hits', async () => {
    const before = chatCalls();
    const r = await ask('tell me a joke please vec:1,0,0', { system: 'You are a pirate.' });
    expect(r.cache).toBe('miss');
    expect(chatCalls()).toBe(before + 1);
  });

  it('clients opt out per request', async () => {
    const before = chatCalls();
    expect((await ask('what is the capital of France? vec:1,0', { headers: { 'cache-control': 'no-cache' } })).cache).toBe('off');
    expect((await ask('what is the capital of France? vec:1,0', { headers: { 'x-elygate-cache': 'off' } })).cache).toBe('off');
    expect(chatCalls()).toBe(before + 2);
  });

  it('a failing embedding upstream bypasses the cache and never fails the request', async () => {
    embedder.mode = { kind: 'status', status: 500 };
    const before = chatCalls();
    const r = await ask('brand new question vec:0,1');
    expect(r.res.status).toBe(200);
    expect(r.cache).toBe('miss');
    expect(chatCalls()).toBe(before + 1);
  });

  it('the embedding call goes through the SSRF guard: a private embedding upstream is never contacted unless allowed', async () => {
    await db()`select admin.option_set('AllowPrivateUpstreams', 'false')`;
    await new Promise((r) => setTimeout(r, 150)); // the option reaches the gateway through NOTIFY
    try {
      const embedsBefore = embedder.calls.length;
      const r = await ask('a question nobody asked before vec:0,0,1');
      // The chat channel is on 127.0.0.1 as well: refused by the same guard, so the request fails.
      expect(r.res.status).toBe(502);
      expect(embedder.calls.length).toBe(embedsBefore);
    } finally {
      await db()`select admin.option_set('AllowPrivateUpstreams', 'true')`;
      await new Promise((r) => setTimeout(r, 150));
    }
  });

  it('hits are logged and billed at the hit ratio; the embedding call is billed', async () => {
    const rows = await db()`
      select r.cache, l.amount_micros::int as amount, l.embedding_micros::int as embedding, r.embedding_tokens
        from private.requests r join private.ledger l on l.request_id = r.id
       where r.model = ${model} order by r.created_at`;
    const hits = rows.filter((r) => r.cache === 'exact' || r.cache === 'semantic');
    expect(hits.length).toBeGreaterThanOrEqual(3);
    for (const h of hits.filter((x) => x.cache === 'exact')) expect(h.amount).toBe(0);
    expect(rows.some((r) => r.cache === 'semantic' && r.embedding > 0 && r.amount === r.embedding)).toBe(true);
  });
});
