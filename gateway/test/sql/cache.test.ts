// The cache in SQL: exact layer inside relay_begin, the semantic lookup's threshold, tenant and
// context isolation, what settlement stores, billing of hits, and bounded expiry.
import { afterAll, describe, expect, it } from 'vitest';
import { createHash, randomUUID } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import { closeDb, createChannel, createGroup, createKey, createUser, sha256, unique, withTx } from '../support/db';

afterAll(closeDb);

const h = (s: string) => createHash('sha256').update(s).digest('hex');

async function setup(tx: TransactionSql) {
  await tx`select admin.option_set('SemanticCacheEnabled', 'true')`;
  await tx`select admin.option_set('SemanticCacheDimensions', '3')`;
  const group = await createGroup(tx);
  const model = unique('chat');
  const embedModel = unique('embed');
  await tx`select admin.model_upsert(${tx.json({ name: model, input_price: 1_000_000, output_price: 2_000_000 })})`;
  await tx`select admin.model_upsert(${tx.json({ name: embedModel, input_price: 100_000 })})`;
  const embedChannel = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [embedModel], groups: [group] });
  await tx`select admin.option_set('SemanticCacheEmbeddingChannel', ${embedChannel.name})`;
  await tx`select admin.option_set('SemanticCacheEmbeddingModel', ${embedModel})`;
  await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group] });
  const user = await createUser(tx, { group });
  await tx`select admin.wallet_credit(${tx.json({ user_id: user.id, amount_micros: 10_000_000 })})`;
  const key = await createKey(tx, { user_id: user.id });
  return { group, model, embedModel, user, key };
}

const begin = async (tx: TransactionSql, key: string, model: string, cache: unknown) =>
  (
    await tx`select t.request_id, t.created_at::text as created_at, t.cache, t.reserved_micros::int as reserved
               from gateway.relay_begin(${randomUUID()}, ${sha256(key)}, ${model}, 'chat/completions', false,
                                        '127.0.0.1', 10, 10, ${cache === null ? null : tx.json(cache as never)}) t`
  )[0];

const finish = (tx: TransactionSql, t: any, extra: Record<string, unknown>) =>
  tx`select gateway.relay_finish(${tx.json([
    { id: t.request_id, created_at: t.created_at, status: 'ok', http_status: 200, prompt_tokens: 10, completion_tokens: 5, usage_source: 'upstream', attempts: [], latency_ms: 1, ...extra },
  ] as never)})`;

// The sampling facts of a request meant to be repeatable (temperature 0): what the cache applies to
// by default (private.cache_eligibility).
const repeatable = { temperature: 0, seed: null, n: null, logprobs: null, tools: 0, tool_choice: null };

const store = (exact: string, context: string, embedding: string) => ({
  exact, context, prompt: 'hello', embedding, answer: { content: 'cached answer', finish_reason: 'stop' },
});

describe('cache', () => {
  it('stores a complete answer, then serves it from the exact layer, billed at the hit ratio', async () => {
    await withTx(async (tx) => {
      const f = await setup(tx);
      const req = { exact: h('a'), context: h('ctx'), semantic: true, sampling: repeatable };
      const t1 = await begin(tx, f.key.key, f.model, req);
      expect(t1.cache).toMatchObject({ result: 'miss', semantic: { model: f.embedModel, dimensions: 3 } });
      await finish(tx, t1, { cache_store: store(req.exact, req.context, '[1,0,0]'), embedding_tokens: 4 });
      const t2 = await begin(tx, f.key.key, f.model, req);
      expect(t2.cache).toMatchObject({ result: 'exact', similarity: 1, answer: { content: 'cached answer' }, usage: { prompt_tokens: 10, completion_tokens: 5 } });
      expect(t2.reserved).toBe(0); // SemanticCacheHitPriceRatio = 0
      await finish(tx, t2, {});
      const ledger = await tx`select cache, amount_micros::int, embedding_micros::int from private.ledger where request_id in (${t1.request_id}, ${t2.request_id}) order by id`;
      // miss: 10 × 1 + 5 × 2 = 20, plus 4 embedding tokens at 0.1 → 0.4 → 0; hit: 0
      expect(ledger).toEqual([
        { cache: 'miss', amount_micros: 20, embedding_micros: 0 },
        { cache: 'exact', amount_micros: 0, embedding_micros: 0 },
      ]);
      await tx`select admin.option_set('SemanticCacheHitPriceRatio', '0.5')`;
      const t3 = await begin(tx, f.key.key, f.model, req);
      expect(t3.reserved).toBe(10);
    });
  });

  it('semantic layer: similarity 0.96 hits and 0.94 misses at threshold 0.95', async () => {
    await withTx(async (tx) => {
      const f = await setup(tx);
      const t1 = await begin(tx, f.key.key, f.model, { exact: h('q1'), context: h('ctx'), semantic: true, sampling: repeatable });
      await finish(tx, t1, { cache_store: store(h('q1'), h('ctx'), '[1,0,0]') });
      const lookup = async (vec: string, context = h('ctx'), key = f.key.key) => {
        const t = await begin(tx, key, f.model, { exact: h(vec), context, semantic: true, sampling: repeatable });
        // created_at travels as text: postgres.js would round a timestamptz parameter to milliseconds.
        const [{ r }] = await tx`select gateway.cache_lookup(${t.request_id}, decode(${context}, 'hex'), ${vec}) as r`;
        return r;
      };
      const hit = await lookup('[0.96,0.28,0]');
      expect(hit).toMatchObject({ result: 'semantic', threshold: 0.95, answer: { content: 'cached answer' } });
      expect(hit.similarity).toBeCloseTo(0.96, 2);
      const miss = await lookup('[0.94,0.3412,0]');
      expect(miss.result).toBe('miss');
      expect(miss.best_similarity).toBeCloseTo(0.94, 2);
      // Same vector, different context (system prompt, earlier turns, tools, parameters): never.
      expect((await lookup('[1,0,0]', h('other context'))).result).toBe('miss');
      // Another tenant: never, even for the identical prompt.
      const other = await createUser(tx, { group: f.group });
      await tx`select admin.wallet_credit(${tx.json({ user_id: other.id, amount_micros: 1_000_000 })})`;
      const otherKey = await createKey(tx, { user_id: other.id });
      expect((await lookup('[1,0,0]', h('ctx'), otherKey.key)).result).toBe('miss');
      const exactOther = await begin(tx, otherKey.key, f.model, { exact: h('q1'), context: h('ctx'), semantic: true, sampling: repeatable });
      expect(exactOther.cache.result).toBe('miss');
    });
  });

  it('group scope shares entries inside a group only', async () => {
    await withTx(async (tx) => {
      const f = await setup(tx);
      await tx`select admin.option_set('SemanticCacheScope', 'group')`;
      const t1 = await begin(tx, f.key.key, f.model, { exact: h('g'), context: h('ctx'), semantic: true, sampling: repeatable });
      await finish(tx, t1, { cache_store: store(h('g'), h('ctx'), '[1,0,0]') });
      const mate = await createUser(tx, { group: f.group });
      await tx`select admin.wallet_credit(${tx.json({ user_id: mate.id, amount_micros: 1_000_000 })})`;
      const mateKey = await createKey(tx, { user_id: mate.id });
      expect((await begin(tx, mateKey.key, f.model, { exact: h('g'), context: h('ctx'), semantic: true, sampling: repeatable })).cache.result).toBe('exact');
    });
  });

  it('switches: off globally, per key, per model; a request without a cache key bypasses', async () => {
    await withTx(async (tx) => {
      const f = await setup(tx);
      const req = { exact: h('s'), context: h('ctx'), semantic: true, sampling: repeatable };
      const off = { result: 'bypass', reason: 'off' };
      expect((await begin(tx, f.key.key, f.model, null)).cache).toBeNull();
      await tx`update private.api_keys set cache_enabled = false where id = ${f.key.id}`;
      expect((await begin(tx, f.key.key, f.model, req)).cache).toEqual(off);
      await tx`update private.api_keys set cache_enabled = true where id = ${f.key.id}`;
      await tx`select admin.model_upsert(${tx.json({ name: f.model, cache_enabled: false })})`;
      expect((await begin(tx, f.key.key, f.model, req)).cache).toEqual(off);
      await tx`select admin.model_upsert(${tx.json({ name: f.model, cache_enabled: true })})`;
      await tx`select admin.option_set('SemanticCacheEnabled', 'false')`;
      const t = await begin(tx, f.key.key, f.model, req);
      expect(t.cache).toEqual(off);
      const [r] = await tx`select cache from private.admissions where id = ${t.request_id}`;
      expect(r.cache).toBe('bypass');
    });
  });

  it('eligibility: deterministic by default (temperature 0 or a seed, one choice, no callable tools), always, off', async () => {
    await withTx(async (tx) => {
      const el = async (mode: string, sampling: unknown) =>
        (await tx`select private.cache_eligibility(${mode}, ${sampling === null ? null : tx.json(sampling as never)}) as r`)[0].r;
      const s = (over: Record<string, unknown>) => ({ ...repeatable, ...over });
      expect(await el('deterministic', repeatable)).toBeNull();
      expect(await el('deterministic', s({ temperature: 0.0 }))).toBeNull();
      expect(await el('deterministic', s({ temperature: null }))).toBe('sampling'); // the provider's default (about 1)
      expect(await el('deterministic', s({ temperature: 0.7 }))).toBe('sampling');
      expect(await el('deterministic', s({ temperature: 0.7, seed: 42 }))).toBeNull();
      expect(await el('deterministic', s({ n: 1 }))).toBeNull();
      expect(await el('deterministic', s({ n: 3 }))).toBe('choices');
      expect(await el('deterministic', s({ logprobs: true }))).toBe('logprobs');
      expect(await el('deterministic', s({ logprobs: false }))).toBeNull();
      expect(await el('deterministic', s({ tools: 2 }))).toBe('tools');
      expect(await el('deterministic', s({ tools: 2, tool_choice: 'auto' }))).toBe('tools');
      expect(await el('deterministic', s({ tools: 2, tool_choice: 'none' }))).toBeNull();
      expect(await el('deterministic', null)).toBe('sampling'); // no facts (a gateway of the last release)
      expect(await el('always', s({ temperature: 1.2, tools: 1 }))).toBeNull();
      expect(await el('always', s({ n: 2 }))).toBe('choices');
      expect(await el('always', s({ logprobs: true }))).toBe('logprobs');
      expect(await el('off', repeatable)).toBe('off');
    });
  });

  it("the request's mode: the key's cache_mode, else the model's, else CacheMode; bad values are refused", async () => {
    await withTx(async (tx) => {
      const f = await setup(tx);
      const sampled = { exact: h('m'), context: h('ctx'), semantic: false, sampling: { ...repeatable, temperature: 1 } };
      const result = async () => (await begin(tx, f.key.key, f.model, sampled)).cache;
      expect(await result()).toEqual({ result: 'bypass', reason: 'sampling' });
      await tx`select admin.option_set('CacheMode', 'always')`;
      expect((await result()).result).toBe('miss');
      await tx`select admin.model_upsert(${tx.json({ name: f.model, cache_mode: 'off' })})`;
      expect(await result()).toEqual({ result: 'bypass', reason: 'off' });
      await tx`select admin.key_update(${f.key.id}, ${tx.json({ cache_mode: 'always' })})`;
      expect((await result()).result).toBe('miss');
      await tx`select admin.key_update(${f.key.id}, ${tx.json({ cache_mode: 'deterministic' })})`;
      expect(await result()).toEqual({ result: 'bypass', reason: 'sampling' });
      const [k] = await tx`select cache_mode from admin.api_keys where id = ${f.key.id}`;
      const [m] = await tx`select cache_mode from admin.models where name = ${f.model}`;
      expect([k.cache_mode, m.cache_mode]).toEqual(['deterministic', 'off']);
      await expect(tx.savepoint((sp) => sp`select admin.option_set('CacheMode', 'sometimes')`)).rejects.toThrow(/"deterministic", "always" or "off"/);
      await expect(tx.savepoint((sp) => sp`select admin.key_update(${f.key.id}, ${sp.json({ cache_mode: 'sometimes' })})`)).rejects.toThrow(/"cache_mode" must be/);
      await expect(tx.savepoint((sp) => sp`select admin.model_upsert(${sp.json({ name: f.model, cache_mode: 'never' })})`)).rejects.toThrow(/"cache_mode" must be/);
    });
  });

  it('never stores failed or interrupted answers, and expires in bounded batches', async () => {
    await withTx(async (tx) => {
      const f = await setup(tx);
      const t1 = await begin(tx, f.key.key, f.model, { exact: h('x'), context: h('ctx'), semantic: true, sampling: repeatable });
      await tx`select gateway.relay_finish(${tx.json([{ id: t1.request_id, created_at: t1.created_at, status: 'aborted', http_status: 200, prompt_tokens: 1, completion_tokens: 1, usage_source: 'estimated', attempts: [], latency_ms: 1, cache_store: store(h('x'), h('ctx'), '[1,0,0]') }] as never)})`;
      const [{ n }] = await tx`select count(*)::int as n from private.cache_entries where exact_hash = decode(${h('x')}, 'hex')`;
      expect(n).toBe(0);
      const t2 = await begin(tx, f.key.key, f.model, { exact: h('y'), context: h('ctx'), semantic: true, sampling: repeatable });
      await finish(tx, t2, { cache_store: store(h('y'), h('ctx'), '[1,0,0]') });
      const [{ removed }] = await tx`select private.cache_expire(now() + interval '2 days', 1) as removed`;
      expect(removed).toBe(1);
    });
  });

  it('records audits and reports the false-hit rate per model and threshold', async () => {
    await withTx(async (tx) => {
      await tx`select gateway.cache_audit_record(${tx.json([
        { request_id: randomUUID(), entry_id: 1, model: 'audited', similarity: 0.96, threshold: 0.95, agreement: 0.97 },
        { request_id: randomUUID(), entry_id: 2, model: 'audited', similarity: 0.955, threshold: 0.95, agreement: 0.42 },
      ])})`;
      const [a] = await tx`select audits::int, agreed::int, disagreed::int, false_hit_rate::float from admin.cache_audit where model = 'audited'`;
      expect(a).toEqual({ audits: 2, agreed: 1, disagreed: 1, false_hit_rate: 0.5 });
    });
  });
});
