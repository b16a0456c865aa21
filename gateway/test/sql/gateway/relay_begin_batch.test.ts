// gateway.relay_begin_batch: several admissions in one call. Each element is admitted or refused on
// its own (a refusal undoes that element's writes only), answers come back by position, and
// concurrent batches and settlements, whatever order their requests come in, never deadlock.
import { afterAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { randomUUID } from 'node:crypto';
import { closeDb, createChannel, createGroup, createKey, createUser, databaseUrl, db, masterKey, sha256, unique, withTx } from '../../support/db';

afterAll(closeDb);

/** A group with a channel for a model priced at 1 micro-USD per input token and 2 per output token. */
async function priced(q: any) {
  const group = await createGroup(q);
  const model = unique('batch');
  await q`select admin.model_upsert(${q.json({ name: model, input_price: 1_000_000, output_price: 2_000_000 } as never)})`;
  await createChannel(q, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group] });
  return { group, model };
}

async function fundedUser(q: any, group: string, balance: number) {
  const user = await createUser(q, { group });
  if (balance) await q`select admin.wallet_credit(${q.json({ user_id: user.id, amount_micros: balance })})`;
  return user;
}

/** One element of a batch: 10 prompt tokens + max_tokens 10 reserve 30 micro-USD at these prices. */
const req = (key: string | null, model: string, extra: Record<string, unknown> = {}) => ({
  id: randomUUID(),
  key_hash: key === null ? null : sha256(key).toString('hex'),
  model,
  endpoint: 'chat/completions',
  stream: false,
  client_ip: '127.0.0.1',
  prompt_tokens: 10,
  max_tokens: 10,
  ...extra,
});

const batch = async (q: any, elements: unknown[]) =>
  (await q`select idx, request_id, reserved_micros::int as reserved, plan, error
             from gateway.relay_begin_batch(${q.json(elements as never)}) order by idx`) as any[];

describe('gateway.relay_begin_batch', () => {
  it('admits or refuses each element on its own, answering by position', async () => {
    await withTx(async (tx) => {
      const { group, model } = await priced(tx);
      const user = await fundedUser(tx, group, 1_000);
      const good = await createKey(tx, { user_id: user.id });
      await tx`select admin.model_upsert('{"name": "something-else"}')`; // a key may allow known models only
      const narrow = await createKey(tx, { user_id: user.id, allowed_models: ['something-else'] });
      const elements = [req(good.key, model), req('sk-not-a-key', model), req(narrow.key, model), req(null, model), req(good.key, 'no-such-model'), req(good.key, model),
                        { ...req(good.key, model), key_hash: 'not hex' }];
      await tx`set local role elygate_gateway`;
      const rows = await batch(tx, elements);
      await tx`reset role`;
      expect(rows.map((r) => r.idx)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      // A malformed element is refused alone (decode's 22023), not the batch.
      expect(rows.map((r) => r.error?.code ?? 'ok')).toEqual(['ok', 'NOKEY', 'MDENY', 'NOKEY', 'NOMDL', 'ok', '22023']);
      expect(rows[0].request_id).toBe(elements[0].id);
      expect(rows[5].request_id).toBe(elements[5].id);
      expect(rows[0].reserved).toBe(30);
      expect(rows[0].plan).toHaveLength(1);
      // The refusal carries what the gateway turns into an OpenAI error.
      expect(rows[2].error).toMatchObject({ code: 'MDENY', column: 'model', message: expect.stringContaining('not allowed to use the model') });
      expect(rows[1].error).toMatchObject({ hint: expect.stringContaining('admin.key_create') });
      expect(rows[1].request_id).toBeNull();
      const admitted = await tx`select id from private.admissions where id = any(${elements.map((e) => e.id)}::uuid[]) order by id`;
      expect(admitted.map((r) => r.id).sort()).toEqual([elements[0].id, elements[5].id].sort());
      const [w] = await tx`select reserved_micros::int as reserved from private.wallets where user_id = ${user.id}`;
      expect(w.reserved).toBe(60);
    });
  });

  it("plans each element's route for its own model and its owner's group, as relay_begin does", async () => {
    await withTx(async (tx) => {
      // Two groups, two models: a batch plans them all in one statement, so an element must get
      // its own pair's channels (mapping, multiplier, skipped ones), never a neighbour's.
      const { group: g1, model: m1 } = await priced(tx);
      const g2 = await createGroup(tx);
      const m2 = unique('batch');
      await tx`select admin.model_upsert(${tx.json({ name: m2, input_price: 1_000_000, output_price: 2_000_000 } as never)})`;
      const c2 = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [m1, m2], groups: [g2], cost_multiplier: 2, model_mapping: { [m1]: 'upstream-m1' } });
      const off = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [m2], groups: [g2], status: 'manually_disabled' });
      const [{ id: c1 }] = await tx`select id from private.channels where ${m1} = any(models) and ${g1} = any(groups)`;
      const k1 = await createKey(tx, { user_id: (await fundedUser(tx, g1, 10_000)).id });
      const k2 = await createKey(tx, { user_id: (await fundedUser(tx, g2, 10_000)).id });
      const elements = [req(k2.key, m2), req(k1.key, m1), req(k2.key, m1), req(k1.key, m2), req(k2.key, m2), req(k1.key, m1)];
      const rows = await batch(tx, elements);
      expect(rows.map((r) => r.error?.code ?? 'ok')).toEqual(['ok', 'ok', 'ok', 'NOMDL', 'ok', 'ok']);
      const chosen = rows.map((r) => r.plan?.map((c: any) => [c.channel_id, c.model, c.multiplier]) ?? null);
      expect(chosen).toEqual([
        [[Number(c2.id), m2, '2.000000']],
        [[Number(c1), m1, '1.000000']],
        [[Number(c2.id), 'upstream-m1', '2.000000']],
        null,
        [[Number(c2.id), m2, '2.000000']],
        [[Number(c1), m1, '1.000000']],
      ]);
      // The route recorded on the admission is the element's own, skipped channels included.
      const [adm] = await tx`select route_plan from private.admissions where id = ${elements[0].id}`;
      expect(adm.route_plan.skipped).toEqual([{ channel_id: Number(off.id), reason: 'manually_disabled' }]);
      const [adm3] = await tx`select route_plan, reserved_micros::int as reserved from private.admissions where id = ${elements[2].id}`;
      expect(adm3.route_plan.skipped).toEqual([]);
      expect(adm3.reserved).toBe(60);   // 30 at the route's dearest multiplier, 2
      // relay_begin plans the same request alike.
      const [single] = await tx`select plan, reserved_micros::int as reserved from gateway.relay_begin(
        ${randomUUID()}, ${sha256(k2.key)}, ${m1}, 'chat/completions', false, '127.0.0.1', 10, 10)`;
      expect(single.plan.map((c: any) => [c.channel_id, c.model, c.multiplier])).toEqual(chosen[2]);
      expect(single.reserved).toBe(60);
    });
  });

  it("undoes a refused element's writes and keeps the others' (wallet, key counters)", async () => {
    await withTx(async (tx) => {
      const { group, model } = await priced(tx);
      const user = await fundedUser(tx, group, 70);   // two reservations of 30 fit, a third does not
      const key = await createKey(tx, { user_id: user.id, concurrency_limit: 10, rpm_limit: 100 });
      const rows = await batch(tx, [req(key.key, model), req(key.key, model), req(key.key, model)]);
      expect(rows.map((r) => r.error?.code ?? 'ok')).toEqual(['ok', 'ok', 'QUOTA']);
      const [w] = await tx`select reserved_micros::int as reserved from private.wallets where user_id = ${user.id}`;
      expect(w.reserved).toBe(60);
      const [k] = await tx`select inflight, reserved_micros::int as reserved, minute_requests from private.key_counters where key_id = ${key.id}`;
      expect(k).toEqual({ inflight: 2, reserved: 60, minute_requests: 2 });

      // A refusal after the wallet was written (the key's concurrency) undoes the wallet too.
      const capped = await createKey(tx, { user_id: (await fundedUser(tx, group, 1_000)).id, concurrency_limit: 1 });
      const rows2 = await batch(tx, [req(capped.key, model), req(capped.key, model)]);
      expect(rows2.map((r) => r.error?.code ?? 'ok')).toEqual(['ok', 'RLIMT']);
      expect(rows2[1].error).toMatchObject({ code: 'RLIMT', reason: 'concurrency', retry_after: 1, detail: null });
      const [w2] = await tx`select w.reserved_micros::int as reserved from private.wallets w
                             join private.api_keys k on k.user_id = w.user_id where k.id = ${capped.id}`;
      expect(w2.reserved).toBe(30);
    });
  });

  it("writes a busy key's wallet and counters once per batch, with the sums of its requests", async () => {
    await withTx(async (tx) => {
      const { group, model } = await priced(tx);
      const user = await fundedUser(tx, group, 1_000);
      const key = await createKey(tx, { user_id: user.id, concurrency_limit: 10, rpm_limit: 100, tpm_limit: 10_000, quota_micros: 1_000 });
      const other = await createKey(tx, { user_id: user.id });
      const elements = [req(key.key, model), req(other.key, model), req('sk-not-a-key', model), req(key.key, model), req(key.key, model),
                        req(other.key, model), req(key.key, model, { max_tokens: 40 })];
      const updated = async () => (await tx`
        select pg_stat_get_xact_tuples_updated('private.wallets'::regclass)::int as wallets,
               pg_stat_get_xact_tuples_updated('private.key_counters'::regclass)::int as counters`)[0];
      const before = await updated();
      const rows = await batch(tx, elements);
      expect(rows.map((r) => r.error?.code ?? 'ok')).toEqual(['ok', 'ok', 'NOKEY', 'ok', 'ok', 'ok', 'ok']);
      expect(rows.map((r) => r.reserved)).toEqual([30, 30, null, 30, 30, 30, 90]);
      // One owner, one counted key (the other key has no limits): one row version each.
      const after = await updated();
      expect({ wallets: after.wallets - before.wallets, counters: after.counters - before.counters }).toEqual({ wallets: 1, counters: 1 });
      const [w] = await tx`select reserved_micros::int as reserved from private.wallets where user_id = ${user.id}`;
      expect(w.reserved).toBe(240);
      const [k] = await tx`select inflight, reserved_micros::int as reserved, minute_requests, minute_tokens::int as minute_tokens
                             from private.key_counters where key_id = ${key.id}`;
      expect(k).toEqual({ inflight: 4, reserved: 180, minute_requests: 4, minute_tokens: 110 });
      const admitted = await tx`select id, reserved_micros::int as reserved, reserved_tokens, counted from private.admissions
                                 where id = any(${elements.map((e) => e.id)}::uuid[])`;
      expect(admitted).toHaveLength(6);
      expect(admitted.find((a) => a.id === elements[6].id)).toMatchObject({ reserved: 90, reserved_tokens: 50, counted: true });
      expect(admitted.find((a) => a.id === elements[1].id)).toMatchObject({ counted: false });
    });
  });

  it('when the sums do not fit, refuses exactly the requests that would be refused one by one', async () => {
    await withTx(async (tx) => {
      const { group, model } = await priced(tx);
      const user = await fundedUser(tx, group, 1_000);
      const rpm = await createKey(tx, { user_id: user.id, rpm_limit: 3 });
      const tpm = await createKey(tx, { user_id: user.id, tpm_limit: 45 });   // 20 tokens each: two fit
      const quota = await createKey(tx, { user_id: user.id, quota_micros: 70 });
      const rows = await batch(tx, [...[1, 2, 3, 4, 5].map(() => req(rpm.key, model)), ...[1, 2, 3].map(() => req(tpm.key, model)),
                                    ...[1, 2, 3].map(() => req(quota.key, model))]);
      expect(rows.map((r) => r.error?.code ?? 'ok')).toEqual(['ok', 'ok', 'ok', 'RLIMT', 'RLIMT', 'ok', 'ok', 'TLIMT', 'ok', 'ok', 'QUOTA']);
      const counters = await tx`select key_id, inflight, minute_requests, reserved_micros::int as reserved
                                  from private.key_counters where key_id = any(${[rpm.id, tpm.id, quota.id]}) order by key_id`;
      expect(counters.map((c) => [c.inflight, c.minute_requests, c.reserved])).toEqual([[3, 3, 90], [2, 2, 60], [2, 2, 60]]);
      const [w] = await tx`select reserved_micros::int as reserved from private.wallets where user_id = ${user.id}`;
      expect(w.reserved).toBe(210);
    });
  });

  it('reads "cache": null (what the gateway sends for a request it cannot cache) as no cache, like relay_begin', async () => {
    await withTx(async (tx) => {
      const { group, model } = await priced(tx);
      const user = await fundedUser(tx, group, 1_000);
      const key = await createKey(tx, { user_id: user.id });
      const cacheable = { exact: 'ab'.repeat(32), context: 'cd'.repeat(32), semantic: false };
      const elements = [req(key.key, model, { cache: null }), req(key.key, model, { cache: cacheable })];
      const rows = await batch(tx, elements);
      expect(rows.map((r) => r.error)).toEqual([null, null]);
      const singleId = randomUUID();
      await tx`select * from gateway.relay_begin(${singleId}, ${sha256(key.key)}, ${model}, 'chat/completions', false, '127.0.0.1', 10, 10, ${tx.json(cacheable)})`;
      const stored = await tx`select id, cache from private.admissions where id = any(${[...elements.map((e) => e.id), singleId]}::uuid[])`;
      const cacheOf = Object.fromEntries(stored.map((r) => [r.id, r.cache]));
      expect(cacheOf[elements[0].id]).toBeNull();
      // The cacheable one is classified exactly as a single call classifies it.
      expect(cacheOf[singleId]).not.toBeUndefined();
      expect(cacheOf[elements[1].id]).toBe(cacheOf[singleId]);
    });
  });

  it('ReservationPolicy cap: a chat request without max_tokens gets the reserved output tokens as its limit; allow: none', async () => {
    await withTx(async (tx) => {
      const { group, model } = await priced(tx);
      const user = await fundedUser(tx, group, 1_000_000);
      const { key } = await createKey(tx, { user_id: user.id });
      await tx`select admin.option_set('DefaultMaxTokens', '25')`;
      const elements = () => [req(key, model, { max_tokens: null }), req(key, model), req(key, model, { max_tokens: null, endpoint: 'completions' }),
                              req(key, model, { max_tokens: null, endpoint: 'responses' })];
      await tx`select admin.option_set('ReservationPolicy', 'cap')`;
      const capped = (await tx`select idx, max_tokens, reserved_micros::int as reserved from gateway.relay_begin_batch(${tx.json(elements() as never)}) order by idx`) as any[];
      // 10 prompt tokens + 25 (DefaultMaxTokens) output tokens at 1 and 2 micro-USD: 60 reserved, and 25 is what it covers.
      expect(capped.map((r) => [r.max_tokens, r.reserved])).toEqual([[25, 60], [null, 30], [null, 60], [25, 60]]);
      const [single] = await tx`select * from gateway.relay_begin(${randomUUID()}, ${sha256(key)}, ${model}, 'chat/completions', false, '127.0.0.1', 10, null)`;
      expect(single.max_tokens).toBe(25);
      await tx`select admin.option_set('ReservationPolicy', 'allow')`;
      const allowed = (await tx`select max_tokens from gateway.relay_begin_batch(${tx.json(elements() as never)}) order by idx`) as any[];
      expect(allowed.map((r) => r.max_tokens)).toEqual([null, null, null, null]);
      await expect(tx`select admin.option_set('ReservationPolicy', 'sometimes')`).rejects.toMatchObject({ code: 'BADOP' });
    });
  });

  it('a wallet past its credit limit (an overrun billed in full) is refused, saying so, in a batch as alone', async () => {
    await withTx(async (tx) => {
      const { group, model } = await priced(tx);
      const user = await fundedUser(tx, group, 100);
      const { key } = await createKey(tx, { user_id: user.id });
      await tx`update private.wallets set balance_micros = -50 where user_id = ${user.id}`;
      const rows = await batch(tx, [req(key, model), req(key, model)]);
      for (const r of rows) {
        expect(r.error.code).toBe('QUOTA');
        expect(r.error.message).toContain('This account is 50 micro-USD past its credit limit');
      }
      await expect(tx`select * from gateway.relay_begin(${randomUUID()}, ${sha256(key)}, ${model}, 'chat/completions', false, '127.0.0.1', 10, 10)`)
        .rejects.toMatchObject({ code: 'QUOTA', message: expect.stringContaining('past its credit limit') });
    });
  });

  it('refuses a batch larger than AdmissionBatchMax, or not an array', async () => {
    await withTx(async (tx) => {
      await tx`select admin.option_set('AdmissionBatchMax', '2')`;
      const { model } = await priced(tx);
      const err = await batch(tx, [req('a', model), req('b', model), req('c', model)]).catch((e) => e);
      expect(err.code).toBe('BADRQ');
      expect(err.message).toContain('AdmissionBatchMax (2)');
    });
    await withTx(async (tx) => {
      const err = await tx`select * from gateway.relay_begin_batch('{"id": 1}'::jsonb)`.catch((e) => e);
      expect(err.code).toBe('BADRQ');
    });
  });

  it('concurrent batches and settlements in any order never deadlock, and leave reservations exact', async () => {
    const sql = db();
    const { group, model } = await priced(sql);
    const users = await Promise.all([0, 1, 2, 3].map(() => fundedUser(sql, group, 10_000_000)));
    const keys: string[] = [];
    for (const u of users) for (let i = 0; i < 2; i++) keys.push((await createKey(sql, { user_id: u.id, concurrency_limit: 1000, quota_micros: 10_000_000 })).key);
    const pool = postgres(databaseUrl, { max: 8, onnotice: () => {}, connection: { 'elygate.master_key': masterKey } as Record<string, string> });
    const failures: string[] = [];
    try {
      const worker = async () => {
        for (let round = 0; round < 8; round++) {
          // Every key twice, shuffled: the batch meets other batches' owners in every order.
          const elements = [...keys, ...keys].sort(() => Math.random() - 0.5).map((k) => req(k, model));
          const rows = await batch(pool, elements).catch((e) => {
            failures.push(`${e.code}: ${e.message}`);
            return [];
          });
          for (const r of rows) if (r.error) failures.push(`${r.error.code}: ${r.error.message}`);
          const admitted = rows.filter((r) => !r.error);
          const tickets = await pool`select id, created_at::text as created_at from private.admissions where id = any(${admitted.map((r) => r.request_id)}::uuid[])`;
          // Settle half now, in another order; the rest stay open.
          const outcomes = tickets.slice(0, Math.ceil(tickets.length / 2)).reverse()
            .map((t) => ({ id: t.id, created_at: t.created_at, status: 'ok', http_status: 200, prompt_tokens: 10, completion_tokens: 5, usage_source: 'upstream' }));
          await pool`select gateway.relay_finish(${pool.json(outcomes as never)})`.catch((e) => failures.push(`settle ${e.code}: ${e.message}`));
        }
      };
      await Promise.all(Array.from({ length: 6 }, worker));
    } finally {
      await pool.end();
    }
    expect(failures).toEqual([]);
    const ids = users.map((u) => u.id);
    const drift = await sql`
      select w.user_id, w.reserved_micros::int as reserved, coalesce(sum(a.reserved_micros), 0)::int as open
        from private.wallets w left join private.admissions a on a.user_id = w.user_id
       where w.user_id = any(${ids}) group by 1, 2 having w.reserved_micros <> coalesce(sum(a.reserved_micros), 0)`;
    expect(drift).toEqual([]);
  });
});
