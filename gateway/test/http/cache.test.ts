// The cache through the real gateway: misses, exact and semantic hits (JSON and SSE replay),
// opt-out, tenant and context isolation, and an embedding upstream that fails; then which requests
// the cache applies to (CacheMode: deterministic by default, always, off; per key and per model),
// with the `openai` npm client. Upstream call counts prove when the upstream was not called.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let upstream: MockUpstream;
let embedder: MockUpstream;
let model: string;
let key: string;
let otherKey: string;
let userA: { id: number };

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
  userA = a;
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
  await sql`select admin.option_set('CacheMode', 'deterministic')`;
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
    // temperature 0: an answer meant to be repeatable, which the cache applies to by default
    body: JSON.stringify({ model, messages, stream: opts.stream ?? false, temperature: 0 }),
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
    expect(second.res.headers.get('x-elygate-model')).toBe(model); // the model that answered, as for an upstream answer
    expect(chatCalls()).toBe(before + 1);
    expect(JSON.parse(second.text).choices[0].message.content).toBe(JSON.parse(first.text).choices[0].message.content);
  });

  it('a stream request hit by the cache still receives a proper stream', async () => {
    const before = chatCalls();
    const hit = await ask('what is the capital of France? vec:1,0', { stream: true });
    expect(hit.cache).toBe('exact');
    expect(hit.res.headers.get('x-elygate-model')).toBe(model);
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
    expect((await ask('what is the capital of France? vec:1,0', { headers: { 'cache-control': 'no-cache' } })).cache).toBe('bypass; reason=client');
    expect((await ask('what is the capital of France? vec:1,0', { headers: { 'x-elygate-cache': 'off' } })).cache).toBe('bypass; reason=client');
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

/** Waits until this gateway has settled (and so stored) every answer it gave. */
async function settled() {
  while ((await gw.metric('elygate_settle_queue_depth')) > 0) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 30));
}

/** Sets an option and waits until the gateway's snapshot has it (NOTIFY elygate_config). */
async function optionSet(name: string, value: string) {
  await db()`select admin.option_set(${name}, ${value})`;
  await new Promise((r) => setTimeout(r, 150));
}

describe('which requests the cache applies to (CacheMode)', () => {
  const client = (k = key) => new OpenAI({ apiKey: k, baseURL: `${gw.url}/v1`, maxRetries: 0 });

  /** One chat request through the openai client: its x-elygate-cache header and answer. */
  async function chat(content: string, extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}, k = key) {
    const { data, response } = await client(k)
      .chat.completions.create({ model, messages: [{ role: 'user', content }], ...extra })
      .withResponse();
    await settled();
    return { cache: response.headers.get('x-elygate-cache'), content: data.choices[0].message.content };
  }

  it('a chat UI regenerating at the default temperature asks the upstream every time', async () => {
    const before = chatCalls();
    const first = await chat('write me a poem about the sea');
    const again = await chat('write me a poem about the sea');
    expect(first.cache).toBe('bypass; reason=sampling');
    expect(again.cache).toBe('bypass; reason=sampling');
    expect(chatCalls()).toBe(before + 2);
    // Nor at a temperature above 0.
    expect((await chat('write me a poem about the sea', { temperature: 0.7 })).cache).toBe('bypass; reason=sampling');
    expect(chatCalls()).toBe(before + 3);
  });

  it('temperature 0 twice asks the upstream once; a seed makes an answer repeatable too', async () => {
    const before = chatCalls();
    expect((await chat('the boiling point of water', { temperature: 0 })).cache).toBe('miss');
    expect((await chat('the boiling point of water', { temperature: 0 })).cache).toBe('exact');
    expect(chatCalls()).toBe(before + 1);
    expect((await chat('the melting point of iron', { temperature: 0.8, seed: 7 })).cache).toBe('miss');
    expect((await chat('the melting point of iron', { temperature: 0.8, seed: 7 })).cache).toBe('exact');
    expect(chatCalls()).toBe(before + 2);
  });

  it('more than one choice, or tools the model may call, are not cached by default', async () => {
    const before = chatCalls();
    expect((await chat('list three colours', { temperature: 0, n: 2 })).cache).toBe('bypass; reason=choices');
    const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'send_mail', parameters: { type: 'object', properties: {} } } }];
    expect((await chat('mail the report', { temperature: 0, tools })).cache).toBe('bypass; reason=tools');
    expect((await chat('mail the report', { temperature: 0, tools })).cache).toBe('bypass; reason=tools');
    // tool_choice "none": no tool can be called, so the answer is text and may be cached.
    expect((await chat('mail the report', { temperature: 0, tools, tool_choice: 'none' })).cache).toBe('miss');
    expect((await chat('mail the report', { temperature: 0, tools, tool_choice: 'none' })).cache).toBe('exact');
    expect(chatCalls()).toBe(before + 4);
  });

  it('CacheMode always caches sampled answers; off caches nothing', async () => {
    try {
      await optionSet('CacheMode', 'always');
      const before = chatCalls();
      expect((await chat('a haiku about autumn')).cache).toBe('miss');
      expect((await chat('a haiku about autumn')).cache).toBe('exact');
      expect(chatCalls()).toBe(before + 1);
      // n is never cached, whatever the mode: the cache keeps one answer.
      expect((await chat('a haiku about autumn', { n: 2 })).cache).toBe('bypass; reason=choices');
      await optionSet('CacheMode', 'off');
      expect((await chat('a haiku about autumn')).cache).toBe('bypass; reason=off');
      expect((await chat('the boiling point of water', { temperature: 0 })).cache).toBe('bypass; reason=off');
      expect(chatCalls()).toBe(before + 4);
    } finally {
      await optionSet('CacheMode', 'deterministic');
    }
  });

  it("a key's cache_mode overrides the model's, which overrides the option", async () => {
    const sql = db();
    const always = await createKey(sql, { user_id: userA.id, cache_mode: 'always' });
    const before = chatCalls();
    expect((await chat('a limerick about a cat', {}, always.key)).cache).toBe('miss');
    expect((await chat('a limerick about a cat', {}, always.key)).cache).toBe('exact');
    // The other key of the same owner (default mode) does not use the cache for it.
    expect((await chat('a limerick about a cat')).cache).toBe('bypass; reason=sampling');
    expect(chatCalls()).toBe(before + 2);
    try {
      await sql`select admin.model_upsert(${sql.json({ name: model, cache_mode: 'off' })})`;
      expect((await chat('the boiling point of water', { temperature: 0 })).cache).toBe('bypass; reason=off');
      // ... while the key set to always still uses it.
      expect((await chat('a limerick about a cat', {}, always.key)).cache).toBe('exact');
      await sql`select admin.key_update(${always.id}, ${sql.json({ cache_mode: null })})`;
      expect((await chat('a limerick about a cat', {}, always.key)).cache).toBe('bypass; reason=off');
      expect(chatCalls()).toBe(before + 4);
    } finally {
      await sql`select admin.model_upsert(${sql.json({ name: model, cache_mode: null })})`;
    }
  });
});
