// Billing in SQL: exact admission under concurrency, key quota and rate limits, settlement that
// releases exactly what was reserved, the reaper, redemption codes, price tables, and the receipt
// formula the gateway mirrors.
import { afterAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { randomUUID } from 'node:crypto';
import { attempt, closeDb, createChannel, createGroup, createKey, createUser, databaseUrl, db, sha256, unique, withTx } from '../support/db';
import { costMicros, type PriceCard } from '../../src/receipt';

afterAll(closeDb);

/** A funded user with a key for a model priced at 1 micro-USD per input token, 2 per output token. */
async function setup(opts: { balance: number; key?: Record<string, unknown>; price?: Record<string, unknown> }) {
  const sql = db();
  const group = await createGroup(sql);
  const model = unique('priced');
  await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1_000_000, output_price: 2_000_000, ...opts.price } as never)})`;
  const user = await createUser(sql, { group });
  if (opts.balance) await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: opts.balance })})`;
  const key = await createKey(sql, { user_id: user.id, ...opts.key });
  const channel = await createChannel(sql, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group] });
  return { model, user, key, channel, group };
}

const begin = (q: any, key: string, model: string, prompt: number, maxTokens: number) =>
  q`select t.request_id, t.created_at::text as created_at, t.reserved_micros::int as reserved, t.price
      from gateway.relay_begin(${randomUUID()}, ${sha256(key)}, ${model}, 'chat/completions', false, '127.0.0.1', ${prompt}, ${maxTokens}) t`.then(
    (r: any[]) => r[0],
  );

const wallet = async (userId: number) =>
  (await db()`select balance_micros::int as balance, reserved_micros::int as reserved from private.wallets where user_id = ${userId}`)[0];

const outcome = (t: any, usage: [number, number] | null, status = 'ok') => ({
  id: t.request_id,
  created_at: t.created_at,
  status,
  http_status: 200,
  channel_id: null,
  prompt_tokens: usage?.[0] ?? null,
  completion_tokens: usage?.[1] ?? null,
  usage_source: usage ? 'upstream' : 'none',
  attempts: [],
  latency_ms: 1,
});

describe('admission', () => {
  it('200 concurrent requests against a wallet that covers 50: at most 50 admitted, never overdrawn', async () => {
    // Each request reserves 60 prompt + 20 completion tokens = 60 + 40 = 100 micro-USD.
    const f = await setup({ balance: 5000 });
    const pool = postgres(databaseUrl, { max: 40, onnotice: () => {}, connection: { role: 'elygate_gateway' } as Record<string, string> });
    const results = await Promise.allSettled(Array.from({ length: 200 }, () => begin(pool, f.key.key, f.model, 60, 20)));
    await pool.end();
    const admitted = results.filter((r) => r.status === 'fulfilled').length;
    const refused = results.filter((r) => r.status === 'rejected');
    console.log(`burst: 200 concurrent relay_begin, wallet covers 50 → admitted ${admitted}, refused ${refused.length}`);
    expect(admitted).toBe(50);
    expect(refused.every((r) => (r as PromiseRejectedResult).reason.code === 'QUOTA')).toBe(true);
    const w = await wallet(f.user.id);
    expect(w).toEqual({ balance: 5000, reserved: 5000 });
    expect(w.balance - w.reserved).toBeGreaterThanOrEqual(0);
  });

  it('refusal names what is needed and what is available (QUOTA → 429 insufficient_quota)', async () => {
    const f = await setup({ balance: 50 });
    await expect(begin(db(), f.key.key, f.model, 60, 20)).rejects.toMatchObject({
      code: 'QUOTA',
      message: expect.stringContaining('needs up to 100 micro-USD and 50 is available'),
    });
  });

  it('a credit limit lets the balance go below zero, and no further', async () => {
    const f = await setup({ balance: 0 });
    await db()`select admin.wallet_update(${db().json({ user_id: f.user.id, credit_limit_micros: 250 })})`;
    await begin(db(), f.key.key, f.model, 60, 20);
    await begin(db(), f.key.key, f.model, 60, 20);
    await expect(begin(db(), f.key.key, f.model, 60, 20)).rejects.toMatchObject({ code: 'QUOTA' });
  });

  it('DefaultMaxTokens is reserved when max_tokens is absent', async () => {
    await withTx(async (tx) => {
      const f = await setup({ balance: 1_000_000 });
      await tx`select admin.option_set('DefaultMaxTokens', '1000')`;
      const t = await begin(tx, f.key.key, f.model, 10, null as never);
      expect(t.reserved).toBe(10 + 2 * 1000);
    });
  });

  it('refuses unpriced models unless AllowUnpricedModels (NOPRC)', async () => {
    await withTx(async (tx) => {
      const group = await createGroup(tx);
      const model = unique('free');
      const user = await createUser(tx, { group });
      const key = await createKey(tx, { user_id: user.id });
      await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group] });
      await tx`select admin.option_set('AllowUnpricedModels', 'false')`;
      await expect(attempt(tx, (sp) => begin(sp, key.key, model, 1, 1))).rejects.toMatchObject({
        code: 'NOPRC',
        message: `The model \`${model}\` has no price configured, so it cannot be billed.`,
      });
      await tx`select admin.option_set('AllowUnpricedModels', 'true')`;
      const t = await begin(tx, key.key, model, 1, 1);
      expect(t.reserved).toBe(0);
      expect(t.price).toBeNull();
    });
  });

  it('enforces the key quota', async () => {
    const f = await setup({ balance: 1_000_000, key: { quota_micros: 250 } });
    const t1 = await begin(db(), f.key.key, f.model, 60, 20);
    await begin(db(), f.key.key, f.model, 60, 20);
    await expect(begin(db(), f.key.key, f.model, 60, 20)).rejects.toMatchObject({ code: 'QUOTA', message: expect.stringContaining('quota of 250') });
    // Settling for less than was reserved frees room.
    await db()`select gateway.relay_finish(${db().json([outcome(t1, [10, 5])])})`;
    await begin(db(), f.key.key, f.model, 60, 20);
    const [k] = await db()`select used_micros::int, reserved_micros::int, inflight from admin.api_keys where id = ${f.key.id}`;
    expect(k).toEqual({ used_micros: 20, reserved_micros: 200, inflight: 2 });
  });

  it('enforces concurrency, with Retry-After', async () => {
    const f = await setup({ balance: 1_000_000, key: { concurrency_limit: 2 } });
    const t1 = await begin(db(), f.key.key, f.model, 1, 1);
    await begin(db(), f.key.key, f.model, 1, 1);
    // The limit and the wait travel as fields (JSON in the detail of relay_begin's error), not as text.
    const err = await begin(db(), f.key.key, f.model, 1, 1).catch((e: any) => e);
    expect(err).toMatchObject({ code: 'RLIMT', message: expect.stringContaining('2 concurrent requests and 2 are in flight') });
    expect(JSON.parse(err.detail)).toEqual({ reason: 'concurrency', retry_after: 1 });
    await db()`select gateway.relay_finish(${db().json([outcome(t1, [1, 1])])})`;
    await begin(db(), f.key.key, f.model, 1, 1);
  });

  it('enforces RPM and TPM over a sliding minute, with Retry-After', async () => {
    const f = await setup({ balance: 1_000_000, key: { rpm_limit: 3 } });
    for (let i = 0; i < 3; i++) await begin(db(), f.key.key, f.model, 1, 1);
    const err = await begin(db(), f.key.key, f.model, 1, 1).catch((e: any) => e);
    expect(err).toMatchObject({ code: 'RLIMT', message: expect.stringContaining('3 requests per minute') });
    expect(JSON.parse(err.detail)).toMatchObject({ reason: 'rpm', retry_after: expect.any(Number) });
    expect(JSON.parse(err.detail).retry_after).toBeGreaterThanOrEqual(1);

    const g = await setup({ balance: 1_000_000, key: { tpm_limit: 100 } });
    await begin(db(), g.key.key, g.model, 40, 20); // 60 tokens in the window
    await expect(begin(db(), g.key.key, g.model, 30, 20)).rejects.toMatchObject({ code: 'TLIMT' });
    await begin(db(), g.key.key, g.model, 20, 20); // 40 more: exactly 100
  });

  it('rolls the window over on the key counters: the previous minute weighs in, an older one does not', async () => {
    const f = await setup({ balance: 1_000_000, key: { rpm_limit: 10, tpm_limit: 1_000 } });
    // One transaction: its now() is one instant, so no step can straddle a minute boundary (no
    // waiting for a quiet second of the clock). A refusal is caught in a savepoint.
    await withTx(async (tx) => {
      const secondOfMinute = async () =>
        (await tx`select extract(epoch from now() - date_trunc('minute', now()))::float8 as s`)[0].s as number;
      const counters = async () =>
        (await tx`select minute_requests, minute_tokens::int, prev_requests, prev_tokens::int,
                           rate_minute = date_trunc('minute', now()) as current
                      from private.key_counters where key_id = ${f.key.id}`)[0];
      // Last minute saw 8 requests and 300 tokens: they carry over as the previous minute.
      await tx`update private.key_counters set rate_minute = date_trunc('minute', now()) - interval '1 minute',
                   minute_requests = 8, minute_tokens = 300, prev_requests = 5, prev_tokens = 5 where key_id = ${f.key.id}`;
      const t = await begin(tx, f.key.key, f.model, 10, 20);
      expect(await counters()).toEqual({ minute_requests: 1, minute_tokens: 30, prev_requests: 8, prev_tokens: 300, current: true });
      // Settlement replaces the reserved 30 tokens with the 15 used, in the minute it was admitted in.
      await tx`select gateway.relay_finish(${tx.json([outcome(t, [10, 5])])})`;
      expect(await counters()).toEqual({ minute_requests: 1, minute_tokens: 15, prev_requests: 8, prev_tokens: 300, current: true });
      // The previous minute counts by the share of it still inside the last 60 s: enough previous
      // requests, at this second's weight, to fill the limit refuse the next one.
      const secs = await secondOfMinute();
      const weighted = Math.ceil(10 / (1 - secs / 60)) + 5;
      await tx`update private.key_counters set prev_requests = ${weighted} where key_id = ${f.key.id}`;
      const err = await tx.savepoint((sp) => begin(sp, f.key.key, f.model, 1, 1)).catch((e: any) => e);
      expect(err).toMatchObject({ code: 'RLIMT' });
      expect((await counters()).minute_requests).toBe(1); // the refusal undid its increment
      // Two minutes old: nothing carries over.
      await tx`update private.key_counters set rate_minute = date_trunc('minute', now()) - interval '2 minutes',
                   minute_requests = 9, minute_tokens = 900 where key_id = ${f.key.id}`;
      await begin(tx, f.key.key, f.model, 1, 1);
      expect(await counters()).toEqual({ minute_requests: 1, minute_tokens: 2, prev_requests: 0, prev_tokens: 0, current: true });
    });
  });
});

describe('rate window races', () => {
  it('never moves the window back: an admission whose transaction began in the previous minute counts into the newer one', async () => {
    const f = await setup({ balance: 1_000_000, key: { rpm_limit: 1_000, tpm_limit: 100_000 } });
    // One transaction: one now(), so no step straddles a minute boundary.
    await withTx(async (tx) => {
      const counters = async () =>
        (await tx`select minute_requests, minute_tokens::int, prev_requests, prev_tokens::int,
                           rate_minute = date_trunc('minute', now()) + interval '1 minute' as ahead
                      from private.key_counters where key_id = ${f.key.id}`)[0];
      // Another admission, whose transaction began a moment later, already moved the row to the next
      // minute: this one (now() still in this minute) must add to it, not reset it to this minute.
      await tx`update private.key_counters set rate_minute = date_trunc('minute', now()) + interval '1 minute',
                   minute_requests = 4, minute_tokens = 400, prev_requests = 7, prev_tokens = 700 where key_id = ${f.key.id}`;
      await begin(tx, f.key.key, f.model, 10, 20);
      expect(await counters()).toEqual({ minute_requests: 5, minute_tokens: 430, prev_requests: 7, prev_tokens: 700, ahead: true });
      // The same in a batch.
      await tx`select count(*) from gateway.relay_begin_batch(${tx.json(
        [1, 2].map(() => ({ id: randomUUID(), key_hash: sha256(f.key.key).toString('hex'), model: f.model, endpoint: 'chat/completions',
                           stream: false, client_ip: '127.0.0.1', prompt_tokens: 10, max_tokens: 20 })) as never)})`;
      expect(await counters()).toEqual({ minute_requests: 7, minute_tokens: 490, prev_requests: 7, prev_tokens: 700, ahead: true });
    });
  });
});

describe('settlement', () => {
  it("puts each key's token deltas in the minute its requests were admitted in, within one batch of several keys and minutes", async () => {
    const f = await setup({ balance: 1_000_000, key: { tpm_limit: 100_000 } });
    const otherKey = await createKey(db(), { user_id: f.user.id, tpm_limit: 100_000 });
    // One transaction: one now(), so no step straddles a minute boundary.
    await withTx(async (tx) => {
      // Five requests of 10 + max 20 tokens (30 reserved each); they will have used 10 + 5 = 15.
      const ts = [];
      for (let i = 0; i < 4; i++) ts.push(await begin(tx, f.key.key, f.model, 10, 20));
      const other = await begin(tx, otherKey.key, f.model, 10, 20);
      // Re-date three of the first key's admissions: two minutes ago, one minute ago (twice).
      const ago = async (t: any, minutes: number) =>
        (await tx`update private.admissions set created_at = created_at - make_interval(mins => ${minutes})
                     where id = ${t.request_id} returning created_at::text`)[0].created_at as string;
      ts[0].created_at = await ago(ts[0], 2);
      ts[1].created_at = await ago(ts[1], 1);
      ts[2].created_at = await ago(ts[2], 1);
      await tx`update private.key_counters set prev_tokens = 500 where key_id = ${f.key.id}`;
      const counters = async (keyId: number) =>
        (await tx`select minute_tokens::int, prev_tokens::int, inflight from private.key_counters where key_id = ${keyId}`)[0];
      expect(await counters(f.key.id)).toEqual({ minute_tokens: 120, prev_tokens: 500, inflight: 4 });
      const n = (await tx`select gateway.relay_finish(${tx.json([...ts, other].map((t) => outcome(t, [10, 5])))}) as n`)[0].n;
      expect(n).toBe(5);
      // This minute: 120 reserved, one request (-15) of this minute settled; the previous minute:
      // 500 and two requests of it (-30); two minutes ago is outside the window.
      expect(await counters(f.key.id)).toEqual({ minute_tokens: 105, prev_tokens: 470, inflight: 0 });
      expect(await counters(otherKey.id)).toEqual({ minute_tokens: 15, prev_tokens: 0, inflight: 0 });
    });
  });

  it('releases exactly the reservation and folds the cost into the wallet, once', async () => {
    const f = await setup({ balance: 10_000 });
    const t = await begin(db(), f.key.key, f.model, 60, 20);
    expect(await wallet(f.user.id)).toEqual({ balance: 10_000, reserved: 100 });
    const batch = [outcome(t, [30, 7])];
    await db()`select gateway.relay_finish(${db().json(batch)})`;
    await db()`select gateway.relay_finish(${db().json(batch)})`; // replay
    expect(await wallet(f.user.id)).toEqual({ balance: 10_000 - (30 + 14), reserved: 0 });
    const ledger = await db()`select amount_micros::int from private.ledger where request_id = ${t.request_id}`;
    expect(ledger).toEqual([{ amount_micros: 44 }]);
  });

  it('bills an outcome whose admission a crash lost, from the ticket it carries, once', async () => {
    const f = await setup({ balance: 10_000 });
    const lost = { request_id: randomUUID(), created_at: new Date().toISOString() };
    const batch = [{ ...outcome(lost, [30, 7]), ticket: { user_id: f.user.id, key_id: f.key.id, group_name: f.group, model: f.model, endpoint: 'chat/completions' } }];
    await db()`select gateway.relay_finish(${db().json(batch)})`;
    await db()`select gateway.relay_finish(${db().json(batch)})`; // replayed from a spool
    expect(await wallet(f.user.id)).toEqual({ balance: 10_000 - 44, reserved: 0 });
    const rows = await db()`select status, cost_micros::int from private.requests where id = ${lost.request_id}`;
    expect(rows).toEqual([{ status: 'ok', cost_micros: 44 }]);
    const ledger = await db()`select amount_micros::int from private.ledger where request_id = ${lost.request_id}`;
    expect(ledger).toEqual([{ amount_micros: 44 }]);
  });

  it('bills nothing for an upstream error before any content, and never an error body', async () => {
    const f = await setup({ balance: 10_000 });
    const t = await begin(db(), f.key.key, f.model, 60, 20);
    await db()`select gateway.relay_finish(${db().json([{ ...outcome(t, [60, 0], 'error'), usage_source: 'estimated' }])})`;
    expect(await wallet(f.user.id)).toEqual({ balance: 10_000, reserved: 0 });
    const [r] = await db()`select status, cost_micros::int, usage_source from private.requests where id = ${t.request_id}`;
    expect(r).toEqual({ status: 'error', cost_micros: 0, usage_source: 'none' });
  });

  it('prices cached input, cache writes, per-call prices and both multipliers', async () => {
    const f = await setup({
      balance: 10_000_000,
      price: { cached_input_price: 250_000, cache_write_price: 1_250_000, per_call_price: 7 },
    });
    await db()`update private.groups set price_multiplier = 1.5 where name = ${f.group}`;
    await db()`update private.channels set cost_multiplier = 1.1 where id = ${f.channel.id}`;
    const t = await begin(db(), f.key.key, f.model, 1000, 100);
    await db()`select gateway.relay_finish(${db().json([
      { ...outcome(t, [1000, 100]), channel_id: f.channel.id, cached_tokens: 400, cache_write_tokens: 100 },
    ])})`;
    // (500*1 + 400*0.25 + 100*1.25 + 100*2 + 7) * 1.5 * 1.1 = 932 * 1.65 = 1537.8 → 1538
    const [l] = await db()`select amount_micros::int from private.ledger where request_id = ${t.request_id}`;
    expect(l.amount_micros).toBe(1538);
  });

  it('the receipt formula in the gateway agrees with SQL to the micro-dollar', async () => {
    const rows = await db()`
      select p, c, ca, cw, inp, outp, cip, cwp, pc, gm::text, cm::text, u, up,
             private.cost_micros(p, c, ca, cw, inp, outp, cip, cwp, pc, gm, cm, u, up)::bigint as cost
        from (select (random() * 200000)::int as p, (random() * 50000)::int as c,
                     (random() * 1000)::int as ca, (random() * 1000)::int as cw,
                     (random() * 30000000)::bigint as inp, (random() * 60000000)::bigint as outp,
                     case when random() < 0.5 then null else (random() * 5000000)::bigint end as cip,
                     case when random() < 0.5 then null else (random() * 5000000)::bigint end as cwp,
                     case when random() < 0.7 then null else (random() * 100000)::bigint end as pc,
                     round((0.1 + random() * 3)::numeric, 6)::numeric(12, 6) as gm,
                     round((0.1 + random() * 3)::numeric, 6)::numeric(12, 6) as cm,
                     -- a media endpoint's units at a unit price (micro-USD per 1M units), on some rows
                     case when random() < 0.5 then 0 else (random() * 5000)::int end as u,
                     case when random() < 0.3 then null else (random() * 200000000000)::bigint end as up
                from generate_series(1, 2000)) s`;
    for (const r of rows) {
      const card: PriceCard = {
        input: Number(r.inp), output: Number(r.outp), cached_input: r.cip === null ? null : Number(r.cip),
        cache_write: r.cwp === null ? null : Number(r.cwp), per_call: r.pc === null ? null : Number(r.pc),
        group_multiplier: r.gm, channel_multipliers: { '5': r.cm }, unit_price: r.up === null ? null : Number(r.up),
      };
      const ts = costMicros(card, 5, { prompt_tokens: r.p, completion_tokens: r.c, cached_tokens: Math.min(r.ca, r.p), cache_write_tokens: Math.min(r.cw, Math.max(r.p - r.ca, 0)), units: r.u });
      const [sqlCost] = await db()`select private.cost_micros(${r.p}, ${r.c}, ${Math.min(r.ca, r.p)}, ${Math.min(r.cw, Math.max(r.p - r.ca, 0))}, ${r.inp}, ${r.outp}, ${r.cip}, ${r.cwp}, ${r.pc}, ${r.gm}::numeric, ${r.cm}::numeric, ${r.u}, ${r.up})::bigint as v`;
      expect(ts).toBe(Number(sqlCost.v));
    }
  });
});

describe('the reaper', () => {
  it('settles requests whose gateway died at the reserved estimate, marked expired', async () => {
    const f = await setup({ balance: 10_000, key: { concurrency_limit: 5 } });
    const t = await begin(db(), f.key.key, f.model, 60, 20);
    expect(await wallet(f.user.id)).toEqual({ balance: 10_000, reserved: 100 });
    // Not yet due.
    await db()`select private.reservations_reap(now())`;
    expect(await db()`select 1 from private.admissions where id = ${t.request_id}`).toHaveLength(1);
    const [{ n }] = await db()`select private.reservations_reap(now() + interval '61 minutes') as n`;
    expect(n).toBeGreaterThanOrEqual(1);
    const [r] = await db()`select status, usage_source, cost_micros::int from private.requests where id = ${t.request_id}`;
    expect(r).toEqual({ status: 'expired', usage_source: 'expired', cost_micros: 100 });
    expect(await wallet(f.user.id)).toEqual({ balance: 9_900, reserved: 0 });
    const [k] = await db()`select inflight, reserved_micros::int from admin.api_keys where id = ${f.key.id}`;
    expect(k).toEqual({ inflight: 0, reserved_micros: 0 });
    // A late outcome from a gateway that was only slow changes nothing.
    await db()`select gateway.relay_finish(${db().json([outcome(t, [1, 1])])})`;
    expect(await wallet(f.user.id)).toEqual({ balance: 9_900, reserved: 0 });
  });
});

describe('top-ups and redemption codes', () => {
  it('creates codes once, redeems each once, and keeps an audit trail', async () => {
    const f = await setup({ balance: 0 });
    const [{ r }] = await db()`select admin.code_create('{"count": 3, "amount_micros": 2000000, "batch": "launch"}') as r`;
    expect(r.codes).toHaveLength(3);
    expect(r.codes[0]).toMatch(/^ely-[0-9A-F]{20}$/);
    const stored = await db()`select count(*)::int as n from private.redemption_codes where code_prefix like 'ely-%' and batch = 'launch'`;
    expect(stored[0].n).toBeGreaterThanOrEqual(3);
    const [{ x }] = await db()`select admin.code_redeem(${f.user.id}, ${r.codes[0]}) as x`;
    expect(x).toEqual({ amount_micros: 2000000, balance_micros: 2000000 });
    await expect(db()`select admin.code_redeem(${f.user.id}, ${r.codes[0]})`).rejects.toMatchObject({ code: 'BADCD' });
    await expect(db()`select admin.code_redeem(${f.user.id}, 'ely-NOPE')`).rejects.toMatchObject({ code: 'BADCD' });
    // Two users racing for one code: exactly one wins.
    const other = await createUser(db());
    const race = await Promise.allSettled([
      db()`select admin.code_redeem(${f.user.id}, ${r.codes[1]})`,
      db()`select admin.code_redeem(${other.id}, ${r.codes[1]})`,
    ]);
    expect(race.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
    const audit = await db()`select source, amount_micros::int from admin.wallet_credits where user_id in (${f.user.id}, ${other.id}) order by id`;
    expect(audit).toEqual([
      { source: 'redeem', amount_micros: 2000000 },
      { source: 'redeem', amount_micros: 2000000 },
    ]);
  });
});

describe('price tables', () => {
  it('exports and imports the same table', async () => {
    await withTx(async (tx) => {
      const name = unique('m');
      await tx`select admin.model_upsert(${tx.json({ name, input_price: 150000, output_price: 600000, cached_input_price: 75000 })})`;
      const [{ t }] = await tx`select admin.prices_export() as t`;
      expect(t.format).toBe('elygate.prices.v1');
      const mine = t.models.find((m: any) => m.name === name);
      expect(mine).toMatchObject({ input_price: 150000, output_price: 600000, cached_input_price: 75000 });
      await tx`delete from private.models where name = ${name}`;
      const [{ n }] = await tx`select admin.prices_import(${tx.json({ format: 'elygate.prices.v1', models: [mine] })}) as n`;
      expect(n).toBe(1);
      const [back] = await tx`select input_price::int, output_price::int, cached_input_price::int from admin.models where name = ${name}`;
      expect(back).toEqual({ input_price: 150000, output_price: 600000, cached_input_price: 75000 });
      await expect(attempt(tx, (sp) => sp`select admin.prices_import('{"models": {}}')`)).rejects.toMatchObject({ code: 'BADIN' });
    });
  });
});
