// The price card an admission reserves with is the one it is billed with: a price, group multiplier,
// channel multiplier, cache hit ratio or embedding price changed while the request is in flight
// changes neither the ledger nor the receipt, and the two agree to the micro-dollar.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { closeDb, createChannel, db, createGroup, createKey, createUser, sha256, unique, withTx } from '../support/db';
import { costMicros, embeddingCostMicros, hitCostMicros, type PriceCard } from '../../src/receipt';

afterAll(closeDb);

/** A funded key on a model at 1 / 2 micro-USD per input / output token, group ×1.5, channel ×1.2. */
async function tenant(tx: any) {
  const group = await createGroup(tx);
  await tx`update private.groups set price_multiplier = 1.5 where name = ${group}`;
  const model = unique('card');
  await tx`select admin.model_upsert(${tx.json({ name: model, input_price: 1_000_000, output_price: 2_000_000 })})`;
  const user = await createUser(tx, { group });
  await tx`select admin.wallet_credit(${tx.json({ user_id: user.id, amount_micros: 100_000_000 })})`;
  const key = await createKey(tx, { user_id: user.id });
  const channel = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group], cost_multiplier: 1.2 });
  return { group, model, user, key, channel };
}

const begin = async (tx: any, key: string, model: string) =>
  (await tx`select t.request_id, t.created_at::text as created_at, t.reserved_micros::int as reserved, t.price
              from gateway.relay_begin(${randomUUID()}, ${sha256(key)}, ${model}, 'chat/completions', false, '127.0.0.1', 1000, 500) t`)[0];

const beginBatch = async (tx: any, key: string, model: string) =>
  (await tx`select t.request_id, t.created_at::text as created_at, t.reserved_micros::int as reserved, t.price, t.error
              from gateway.relay_begin_batch(${tx.json([{ id: randomUUID(), key_hash: sha256(key).toString('hex'), model,
                                                          endpoint: 'chat/completions', stream: false, client_ip: '127.0.0.1',
                                                          prompt_tokens: 1000, max_tokens: 500 }] as never)}) t`)[0];

const settle = async (tx: any, t: any, o: Record<string, unknown>) => {
  await tx`select gateway.relay_finish(${tx.json([{ id: t.request_id, created_at: t.created_at, status: 'ok', http_status: 200,
                                                   usage_source: 'upstream', attempts: [], latency_ms: 1, ...o }] as never)})`;
  return (await tx`select amount_micros::int as amount, embedding_micros::int as embedding, input_price::int as input,
                          output_price::int as output, group_multiplier::text as gm, channel_multiplier::text as cm
                     from private.ledger where request_id = ${t.request_id}`)[0];
};

/** Every price the card holds, changed: model prices ×10, group and channel multipliers, hit ratio, embedding price. */
async function reprice(tx: any, f: Awaited<ReturnType<typeof tenant>>, embedModel?: string) {
  await tx`select admin.model_upsert(${tx.json({ name: f.model, input_price: 10_000_000, output_price: 20_000_000 })})`;
  await tx`update private.groups set price_multiplier = 3 where name = ${f.group}`;
  await tx`select admin.channel_update(${f.channel.id}, ${tx.json({ cost_multiplier: 2.5 })})`;
  await tx`select admin.option_set('SemanticCacheHitPriceRatio', '0.9')`;
  if (embedModel) await tx`select admin.model_upsert(${tx.json({ name: embedModel, input_price: 5_000_000 })})`;
}

describe('the price card', () => {
  it('an answer is billed at the prices and multipliers it was admitted with, equal to the receipt', async () => {
    await withTx(async (tx) => {
      const f = await tenant(tx);
      const t = await begin(tx, f.key.key, f.model);
      // (1000 * 1 + 500 * 2) * 1.5 * 1.2 = 3600, the most the request may cost.
      expect(t.reserved).toBe(3600);
      await reprice(tx, f);
      const usage = { prompt_tokens: 800, completion_tokens: 300 };
      const l = await settle(tx, t, { channel_id: f.channel.id, ...usage });
      // (800 + 600) * 1.5 * 1.2 = 2520 at the admission's prices; 70,000 at the new ones.
      expect(l).toEqual({ amount: 2520, embedding: 0, input: 1_000_000, output: 2_000_000, gm: '1.500000', cm: '1.200000' });
      expect(costMicros(t.price as PriceCard, f.channel.id, usage)).toBe(l.amount);
    });
  });

  it('a batched admission keeps its card too', async () => {
    await withTx(async (tx) => {
      const f = await tenant(tx);
      const t = await beginBatch(tx, f.key.key, f.model);
      expect(t.error).toBeNull();
      await reprice(tx, f);
      const usage = { prompt_tokens: 100, completion_tokens: 10 };
      const l = await settle(tx, t, { channel_id: f.channel.id, ...usage });
      // (100 + 20) * 1.5 * 1.2 = 216
      expect(l.amount).toBe(216);
      expect(costMicros(t.price as PriceCard, f.channel.id, usage)).toBe(216);
    });
  });

  it('a cache hit and the semantic cache embedding are billed at the card too', async () => {
    await withTx(async (tx) => {
      const f = await tenant(tx);
      const embedModel = unique('embed');
      await tx`select admin.model_upsert(${tx.json({ name: embedModel, input_price: 100_000 })})`;
      await tx`select admin.option_set('SemanticCacheEmbeddingModel', ${embedModel})`;
      await tx`select admin.option_set('SemanticCacheHitPriceRatio', '0.5')`;
      const t = await begin(tx, f.key.key, f.model);
      expect(t.price).toMatchObject({ cache_hit_ratio: '0.5', embedding: { input: 100_000, per_call: null } });
      // The semantic layer found a hit after admission (as gateway.cache_lookup records it).
      await tx`update private.admissions set cache = 'semantic', cache_similarity = 0.99 where id = ${t.request_id}`;
      await reprice(tx, f, embedModel);
      const usage = { prompt_tokens: 700, completion_tokens: 200 };
      const l = await settle(tx, t, { channel_id: null, ...usage, embedding_tokens: 40 });
      // Hit: (700 + 400) * 1.5 * 0.5 = 825. Embedding: 40 * 0.1 * 1.5 = 6.
      expect(l).toMatchObject({ amount: 831, embedding: 6 });
      const card = t.price as PriceCard;
      expect(hitCostMicros(card, usage) + embeddingCostMicros(card, 40)).toBe(l.amount);
      expect(embeddingCostMicros(card, 40)).toBe(l.embedding);
    });
  });

  it("a free model's request still pays for the semantic cache's embedding call, as its receipt says", async () => {
    await withTx(async (tx) => {
      const group = await createGroup(tx);
      const model = unique('free');
      const user = await createUser(tx, { group });
      const key = await createKey(tx, { user_id: user.id });
      await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group] });
      await tx`select admin.option_set('AllowUnpricedModels', 'true')`;
      const embedModel = unique('embed');
      await tx`select admin.model_upsert(${tx.json({ name: embedModel, input_price: 100_000 })})`;
      await tx`select admin.option_set('SemanticCacheEmbeddingModel', ${embedModel})`;
      const t = await begin(tx, key.key, model);
      expect(t.reserved).toBe(0);
      expect(t.price).toMatchObject({ input: null, output: null, embedding: { input: 100_000, per_call: null } });
      const l = await settle(tx, t, { channel_id: null, prompt_tokens: 700, completion_tokens: 200, embedding_tokens: 40 });
      // The answer is free; the embedding: 40 * 0.1 = 4.
      expect(l).toMatchObject({ amount: 4, embedding: 4 });
      expect(costMicros(t.price as PriceCard, null, { prompt_tokens: 700, completion_tokens: 200 }) + embeddingCostMicros(t.price as PriceCard, 40)).toBe(4);
    });
  });

  it('an admission a crash lost is restored from the outcome\'s ticket with its card: billed as its receipt said', async () => {
    await withTx(async (tx) => {
      const f = await tenant(tx);
      const [t] = await tx`select t.request_id, t.created_at::text as created_at, t.user_id, t.key_id, t.group_name, t.price
                             from gateway.relay_begin(${randomUUID()}, ${sha256(f.key.key)}, ${f.model}, 'chat/completions', false,
                                                      '127.0.0.1', 1000, 500) t`;
      // The admission was committed asynchronously and lost; the outcome carries the ticket.
      await tx`delete from private.admissions where id = ${t.request_id}`;
      await tx`update private.wallets set reserved_micros = 0 where user_id = ${f.user.id}`;
      await reprice(tx, f);
      const ticket = { user_id: t.user_id, key_id: t.key_id, group_name: t.group_name, model: f.model, endpoint: 'chat/completions', price: t.price };
      const l = await settle(tx, t, { channel_id: f.channel.id, prompt_tokens: 10, completion_tokens: 5, ticket });
      // (10 * 1 + 5 * 2) * 1.5 * 1.2 = 36, as the receipt computes it from the ticket's card.
      expect(l).toMatchObject({ amount: 36, input: 1_000_000, gm: '1.500000', cm: '1.200000' });
      expect(costMicros(t.price as PriceCard, f.channel.id, { prompt_tokens: 10, completion_tokens: 5 })).toBe(36);
    });
  });

  it("the receipt's arithmetic equals private.cost_micros, within safe integers and past them", async () => {
    // A seeded generator: a failing case is the same case on the next run.
    let seed = 20261203;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
    const pick = <T,>(xs: T[]) => xs[rand(xs.length)];
    const tokens = () => pick([0, 1, 7, 999, rand(100_000), rand(2_147_483_647), 2_147_483_647]);
    // (Bounded so that the cost itself fits a bigint; its intermediate products still pass 2^53.)
    const price = () => pick([null, 0, 1, 150_000, rand(10_000_000), 1_000_000_000 - rand(1000)]);
    const multiplier = () => pick(['1.000000', '0.000001', '1.500000', '99.999999', `${rand(100)}.${String(rand(1_000_000)).padStart(6, '0')}`]);
    const cases = Array.from({ length: 400 }, (_, k) => {
      const prompt = tokens();
      return {
        k, p: prompt, c: tokens(), ca: pick([null, 0, rand(prompt + 1), prompt + 5]), cw: pick([null, 0, rand(prompt + 1)]),
        i: price(), o: price(), cp: pick([null, price()]), cwp: pick([null, price()]), pc: pick([null, null, 1, rand(1_000_000)]),
        gm: multiplier(), cm: pick([null, multiplier()]),
      };
    });
    const rows = await db()`
      select x.k, private.cost_micros(x.p, x.c, x.ca, x.cw, x.i, x.o, x.cp, x.cwp, x.pc, x.gm, x.cm)::text as cost
        from jsonb_to_recordset(${db().json(cases as never)}) as x(k int, p int, c int, ca int, cw int, i bigint, o bigint,
                                                                   cp bigint, cwp bigint, pc bigint, gm numeric, cm numeric)
       order by x.k`;
    const receipts = cases.map((x) => {
      const card = { input: x.i, output: x.o, cached_input: x.cp, cache_write: x.cwp, per_call: x.pc, group_multiplier: x.gm,
                     channel_multipliers: x.cm === null ? {} : { '7': x.cm } } as PriceCard;
      return costMicros(card, 7, { prompt_tokens: x.p, completion_tokens: x.c, cached_tokens: x.ca ?? undefined, cache_write_tokens: x.cw ?? undefined });
    });
    expect(receipts).toEqual(rows.map((r) => Number(r.cost)));
  });

  it('an admission without a card (restored after a crash, or from before cards) is billed at the current prices', async () => {
    await withTx(async (tx) => {
      const f = await tenant(tx);
      const t = await begin(tx, f.key.key, f.model);
      await tx`update private.admissions set group_multiplier = null where id = ${t.request_id}`;
      await reprice(tx, f);
      const l = await settle(tx, t, { channel_id: f.channel.id, prompt_tokens: 10, completion_tokens: 5 });
      // (10 * 10 + 5 * 20) * 3 * 2.5 = 1500
      expect(l).toMatchObject({ amount: 1500, input: 10_000_000, gm: '3.000000', cm: '2.500000' });
    });
  });
});
