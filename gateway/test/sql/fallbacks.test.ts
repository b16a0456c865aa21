// Model fallbacks in SQL: the route plan lists the fallback models' candidates after the model's
// own (each marked with the model it serves), leaving out fallbacks the key may not use or that
// have no price; the reservation covers the dearest model; settlement bills the model that served
// at the prices admission kept, as the receipt computes them; admin.model_upsert checks the list.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { attempt, closeDb, createChannel, createGroup, createKey, createUser, sha256, unique, withTx } from '../support/db';
import { cardFor, costMicros } from '../../src/receipt';

afterAll(closeDb);

async function world(tx: any) {
  await tx`select admin.option_set('AllowUnpricedModels', 'false')`;
  const group = await createGroup(tx);
  const [cheap, dear, main, unpriced] = ['cheap', 'dear', 'main', 'unpriced'].map(unique);
  await tx`select admin.model_upsert(${tx.json({ name: cheap, input_price: 1_000_000, output_price: 2_000_000 })})`;
  await tx`select admin.model_upsert(${tx.json({ name: dear, input_price: 5_000_000, output_price: 20_000_000 })})`;
  const chMain = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [main], groups: [group] });
  const chCheap = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [cheap], groups: [group], cost_multiplier: 1.5 });
  const chDear = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [dear, unpriced], groups: [group] });
  await tx`select admin.model_upsert(${tx.json({ name: main, input_price: 2_000_000, output_price: 4_000_000, fallbacks: [unpriced, cheap, dear] })})`;
  const user = await createUser(tx, { group });
  await tx`select admin.wallet_credit(${tx.json({ user_id: user.id, amount_micros: 100_000_000 })})`;
  const key = await createKey(tx, { user_id: user.id });
  return { group, cheap, dear, main, unpriced, chMain, chCheap, chDear, user, key };
}

const begin = async (tx: any, key: string, model: string) =>
  (await tx`select t.request_id, t.created_at::text as created_at, t.reserved_micros::int as reserved, t.price, t.plan
              from gateway.relay_begin(${randomUUID()}, ${sha256(key)}, ${model}, 'chat/completions', false, '127.0.0.1', 1000, 500) t`)[0];

describe('model fallbacks', () => {
  it('plans the fallbacks after the model, in order, skipping an unpriced one; reserves for the dearest', async () => {
    await withTx(async (tx) => {
      const f = await world(tx);
      const t = await begin(tx, f.key.key, f.main);
      expect(t.plan.map((c: any) => [Number(c.channel_id), c.fallback ?? null])).toEqual([
        [Number(f.chMain.id), null],
        [Number(f.chCheap.id), f.cheap],
        [Number(f.chDear.id), f.dear],
      ]);
      // main: 1000 × 2 + 500 × 4 = 4000; cheap: (1000 + 1000) = 2000; dear: 5000 + 10000 = 15000.
      // At the dearest candidate's multiplier (1.5): 15000 × 1.5 = 22500.
      expect(t.reserved).toBe(22_500);
      expect(t.price.fallbacks).toEqual({
        [f.cheap]: { model: f.cheap, input: 1_000_000, output: 2_000_000, cached_input: null, cache_write: null, per_call: null, unit_price: null },
        [f.dear]: { model: f.dear, input: 5_000_000, output: 20_000_000, cached_input: null, cache_write: null, per_call: null, unit_price: null },
      });
      // A batch admission plans and reserves alike.
      const [b] = await tx`select t.reserved_micros::int as reserved, t.plan, t.error
                             from gateway.relay_begin_batch(${tx.json([{ id: randomUUID(), key_hash: sha256(f.key.key).toString('hex'), model: f.main,
                                                                         endpoint: 'chat/completions', stream: false, client_ip: '127.0.0.1',
                                                                         prompt_tokens: 1000, max_tokens: 500 }] as never)}) t`;
      expect(b.error).toBeNull();
      expect(b.reserved).toBe(22_500);
      expect(b.plan.map((c: any) => c.fallback ?? null)).toEqual([null, f.cheap, f.dear]);
      // A model without fallbacks plans and prices as before.
      const plain = await begin(tx, f.key.key, f.cheap);
      expect(plain.plan.every((c: any) => c.fallback === undefined)).toBe(true);
      expect(plain.price.fallbacks).toBeNull();
      const [a] = await tx`select route_plan ? 'fallbacks' as has from private.admissions where id = ${plain.request_id}`;
      expect(a.has).toBe(false);
    });
  });

  it("an image model's fallback priced only by image size is listed for images, at its unit price, and not for chat", async () => {
    await withTx(async (tx) => {
      const f = await world(tx);
      const [img, backup] = ['img', 'img-backup'].map(unique);
      await tx`select admin.model_upsert(${tx.json({ name: backup, image_prices: { '1024x1024': 10_000 } })})`;
      await tx`select admin.model_upsert(${tx.json({ name: img, image_prices: { '1024x1024': 40_000 }, input_price: 1_000_000, fallbacks: [backup] })})`;
      await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [img, backup], groups: [f.group] });
      const admit = async (endpoint: string, units: unknown) =>
        (await tx`select t.price, t.plan from gateway.relay_begin(${randomUUID()}, ${sha256(f.key.key)}, ${img}, ${endpoint}, false,
                                                                  '127.0.0.1', 10, 0, null, ${tx.json(units as never)}) t`)[0];
      const images = await admit('images/generations', { count: 1, size: '1024x1024' });
      expect(images.price.fallbacks).toEqual({
        [backup]: { model: backup, input: null, output: null, cached_input: null, cache_write: null, per_call: null, unit_price: 10_000_000_000 },
      });
      expect(images.plan.some((c: any) => c.fallback === backup)).toBe(true);
      // For a chat request it has no price at all: left out, as an unpriced fallback is.
      const chat = await admit('chat/completions', null);
      expect(chat.price.fallbacks ?? null).toBeNull();
      expect(chat.plan.some((c: any) => c.fallback === backup)).toBe(false);
    });
  });

  it("leaves out fallbacks the key may not use, and serves a model whose own channels are all gone", async () => {
    await withTx(async (tx) => {
      const f = await world(tx);
      const limited = await createKey(tx, { user_id: f.user.id, allowed_models: [f.main, f.dear] });
      const t = await begin(tx, limited.key, f.main);
      expect(t.plan.map((c: any) => c.fallback ?? null)).toEqual([null, f.dear]);
      await tx`select admin.channel_update(${f.chMain.id}, ${tx.json({ status: 'manually_disabled' })})`;
      const t2 = await begin(tx, f.key.key, f.main);
      expect(t2.plan.map((c: any) => c.fallback ?? null)).toEqual([f.cheap, f.dear]);
    });
  });

  it('bills the fallback that served at the prices admission kept, equal to the receipt; the ledger names it', async () => {
    await withTx(async (tx) => {
      const f = await world(tx);
      const t = await begin(tx, f.key.key, f.main);
      // A price change while in flight changes nothing.
      await tx`select admin.model_upsert(${tx.json({ name: f.cheap, input_price: 9_000_000 })})`;
      const usage = { prompt_tokens: 800, completion_tokens: 300 };
      await tx`select gateway.relay_finish(${tx.json([{ id: t.request_id, created_at: t.created_at, status: 'ok', http_status: 200,
        usage_source: 'upstream', attempts: [], latency_ms: 1, channel_id: f.chCheap.id, fallback: f.cheap, ...usage }] as never)})`;
      const [l] = await tx`select model, amount_micros::int as amount, input_price::int as input, channel_multiplier::text as cm
                             from private.ledger where request_id = ${t.request_id}`;
      // (800 × 1 + 300 × 2) × 1.5 = 2100
      expect(l).toMatchObject({ model: f.cheap, amount: 2100, input: 1_000_000 });
      expect(costMicros(cardFor(t.price, f.cheap), Number(f.chCheap.id), usage)).toBe(2100);
      const [r] = await tx`select model from private.requests where id = ${t.request_id}`;
      expect(r.model).toBe(f.main);
      // A fallback the plan did not name is billed as the model asked for.
      const t2 = await begin(tx, f.key.key, f.main);
      await tx`select gateway.relay_finish(${tx.json([{ id: t2.request_id, created_at: t2.created_at, status: 'ok', http_status: 200,
        usage_source: 'upstream', attempts: [], latency_ms: 1, channel_id: f.chMain.id, fallback: 'no-such-model', ...usage }] as never)})`;
      const [l2] = await tx`select model, amount_micros::int as amount from private.ledger where request_id = ${t2.request_id}`;
      expect(l2).toEqual({ model: f.main, amount: 800 * 2 + 300 * 4 });
    });
  });

  it('a lost admission restored from its ticket bills the fallback the same', async () => {
    await withTx(async (tx) => {
      const f = await world(tx);
      const t = await begin(tx, f.key.key, f.main);
      await tx`delete from private.admissions where id = ${t.request_id}`;
      const usage = { prompt_tokens: 800, completion_tokens: 300 };
      const ticket = { user_id: f.user.id, key_id: f.key.id, group_name: f.group, model: f.main, endpoint: 'chat/completions', cache: null, price: t.price };
      await tx`select gateway.relay_finish(${tx.json([{ id: t.request_id, created_at: t.created_at, status: 'ok', http_status: 200,
        usage_source: 'upstream', attempts: [], latency_ms: 1, channel_id: f.chCheap.id, fallback: f.cheap, ticket, ...usage }] as never)})`;
      const [l] = await tx`select model, amount_micros::int as amount from private.ledger where request_id = ${t.request_id}`;
      expect(l).toEqual({ model: f.cheap, amount: 2100 });
    });
  });

  it('an archived fallback is never tried, and an archived model is refused with the reason', async () => {
    await withTx(async (tx) => {
      const f = await world(tx);
      expect((await tx`select admin.model_archive(${f.cheap}) as ok`)[0].ok).toBe(true);
      const t = await begin(tx, f.key.key, f.main);
      expect(t.plan.map((c: any) => c.fallback ?? null)).toEqual([null, f.dear]);
      const err = await tx.savepoint((sp: any) => begin(sp, f.key.key, f.cheap)).catch((e: any) => e);
      expect(err).toMatchObject({ code: 'NOMDL', message: `The model \`${f.cheap}\` has been archived and is no longer served.` });
      expect((await tx`select admin.model_archive(${f.cheap}) as ok`)[0].ok).toBeNull(); // once only
    });
  });

  it('admin.model_upsert checks the list: known models, not itself, none twice; [] clears it', async () => {
    await withTx(async (tx) => {
      const f = await world(tx);
      const up = (args: unknown) => (sp: any) => sp`select admin.model_upsert(${sp.json(args as never)})`;
      await expect(attempt(tx, up({ name: f.main, fallbacks: ['nope-nothing'] }))).rejects.toThrow(/Unknown model\(s\) in "fallbacks": "nope-nothing"/);
      await expect(attempt(tx, up({ name: f.main, fallbacks: [f.main] }))).rejects.toThrow(/its own fallback/);
      await expect(attempt(tx, up({ name: f.main, fallbacks: [f.cheap, f.cheap] }))).rejects.toThrow(/twice/);
      const [m] = await tx`select fallbacks from admin.models where name = ${f.main}`;
      expect(m.fallbacks).toEqual([f.unpriced, f.cheap, f.dear]);
      await tx`select admin.model_upsert(${tx.json({ name: f.main, input_price: 3_000_000 })})`;   // untouched when not given
      expect((await tx`select fallbacks from admin.models where name = ${f.main}`)[0].fallbacks).toEqual([f.unpriced, f.cheap, f.dear]);
      await tx`select admin.model_upsert(${tx.json({ name: f.main, fallbacks: [] })})`;
      expect((await tx`select fallbacks from admin.models where name = ${f.main}`)[0].fallbacks).toBeNull();
    });
  });
});
