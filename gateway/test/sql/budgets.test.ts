// Budgets with periods and per-model limits (sql/36_budgets.sql, sql/63_admin_budgets.sql), through
// gateway.relay_begin / relay_begin_batch / relay_finish as the gateway calls them. Time is moved by
// replacing private.admission_now() inside each test's transaction (rolled back with it): no sleeps.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import { attempt, closeDb, createChannel, createGroup, createKey, createUser, db, sha256, unique, withTx } from '../support/db';

afterAll(closeDb);

/** Admission's clock, set to p_at (as a test moves time). */
async function clockAt(tx: TransactionSql, at: string) {
  await tx.unsafe(`create or replace function private.admission_now() returns timestamptz language sql stable
                   as $$ select '${at}'::timestamptz $$`);
}

/** A user in a fresh group with a funded wallet, one key and one channel serving a priced model:
 *  1 micro-USD per token in and out, so a request of 10 prompt tokens and max_tokens 100 reserves 110. */
async function fixture(tx: TransactionSql) {
  const group = await createGroup(tx);
  const model = unique('model');
  await tx`select admin.model_upsert(${tx.json({ name: model, input_price: 1_000_000, output_price: 1_000_000 })})`;
  const user = await createUser(tx, { group });
  const key = await createKey(tx, { user_id: user.id, name: 'budgeted' });
  const channel = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group] });
  await tx`select admin.wallet_credit(${tx.json({ user_id: user.id, amount_micros: 100_000_000 })})`;
  return { group, model, user, key, channel };
}

type F = Awaited<ReturnType<typeof fixture>>;

async function begin(tx: TransactionSql, f: F, opts: { model?: string; key?: string; max?: number } = {}) {
  await tx`set local role elygate_gateway`;
  try {
    const [t] = await tx`
      select t.request_id, t.created_at::text as created_at, t.reserved_micros::int as reserved
        from gateway.relay_begin(${randomUUID()}, ${sha256(opts.key ?? f.key.key)}, ${opts.model ?? f.model},
                                 'chat/completions', false, '127.0.0.1', 10, ${opts.max ?? 100}) t`;
    return t;
  } finally {
    await tx`reset role`;
  }
}

const refused = (tx: TransactionSql, f: F, opts: { model?: string; key?: string } = {}) =>
  attempt(tx, (sp) => begin(sp as TransactionSql, f, opts)).then(
    () => null,
    (e) => e,
  );

/** Settles tickets as the gateway would: prompt 10, completion `completion` tokens. */
async function finish(tx: TransactionSql, f: F, tickets: any[], completion = 50) {
  const outcomes = tickets.map((t) => ({
    id: t.request_id, created_at: t.created_at, status: 'ok', http_status: 200, channel_id: f.channel.id,
    upstream_model: f.model, prompt_tokens: 10, completion_tokens: completion, usage_source: 'upstream',
    attempts: [{ channel_id: f.channel.id, status: 200, ms: 5 }], ttfb_ms: 5, latency_ms: 6,
  }));
  await tx`set local role elygate_gateway`;
  await tx`select gateway.relay_finish(${tx.json(outcomes)})`;
  await tx`reset role`;
}

async function budget(tx: TransactionSql, args: Record<string, unknown>) {
  const [{ b }] = await tx`select admin.budget_set(${tx.json(args as never)}) as b`;
  return b as { id: number };
}

async function row(tx: TransactionSql, id: number) {
  const [b] = await tx`select spent_micros::int as spent, reserved_micros::int as reserved, remaining_micros::int as remaining,
                              period_start, resets_at from admin.budgets where id = ${id}`;
  return b;
}

describe('budgets', () => {
  it('refuses with BUDGT once a key budget cannot cover a reservation, naming the budget, the period and the reset', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await clockAt(tx, '2031-03-15T10:00:00Z');
      const b = await budget(tx, { key_id: f.key.id, period: 'day', amount_micros: 500 });
      const admitted = [];
      for (let i = 0; i < 4; i++) admitted.push(await begin(tx, f)); // 4 × 110 = 440 ≤ 500
      const err = await refused(tx, f); // 550 > 500
      expect(err).toMatchObject({ code: 'BUDGT' });
      expect(err.message).toContain(`the daily budget of the key ${f.key.key_prefix} (budgeted)`);
      expect(err.message).toContain('is 500 micro-USD, and 440 of it is spent or reserved this day; this request needs up to 110');
      expect(err.message).toContain('It resets at 2031-03-16T00:00:00Z.');
      // retry_after (seconds to the reset) travels in the detail, as for rate limits
      expect(JSON.parse(err.detail)).toEqual({ reason: 'budget', retry_after: 14 * 3600 });
      expect(await row(tx, b.id)).toMatchObject({ spent: 0, reserved: 440, remaining: 60 });

      // Settlement replaces the reservations with the bills (10 + 50 = 60 each): Σ ledger = spent.
      await finish(tx, f, admitted);
      expect(await row(tx, b.id)).toMatchObject({ spent: 240, reserved: 0, remaining: 260 });
      const [{ sum }] = await tx`select sum(amount_micros)::int as sum from private.ledger where key_id = ${f.key.id}`;
      expect(sum).toBe(240);
      expect(await begin(tx, f)).toBeTruthy(); // room again
    });
  });

  it('rolls over at the next calendar period of BudgetTimeZone, with no job, and bills an older period to that period', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`select admin.option_set('BudgetTimeZone', 'Europe/Paris')`;
      await clockAt(tx, '2031-03-15T22:30:00Z'); // 23:30 in Paris
      const b = await budget(tx, { user_id: f.user.id, period: 'day', amount_micros: 300 });
      const late = [await begin(tx, f), await begin(tx, f)];
      const err = await refused(tx, f);
      expect(err.message).toContain('the daily budget of the user');
      expect(err.message).toContain('It resets at 2031-03-15T23:00:00Z.'); // midnight in Paris
      expect(JSON.parse(err.detail).retry_after).toBe(1800);

      await clockAt(tx, '2031-03-15T23:00:01Z'); // a new day in Paris
      // The day before's requests still in flight hold their reservations, but not against the new day.
      const next = await begin(tx, f);
      expect(next).toBeTruthy();
      const [held] = await tx`select reserved_micros::int as r, older_reserved::int as o from private.budgets where id = ${b.id}`;
      expect(held).toEqual({ r: 110, o: 220 });
      // The previous day's requests settle now: their bills belong to the day they were admitted
      // in, their reservations are released.
      await finish(tx, f, late);
      const [r] = await tx`select spent_micros::int as spent, reserved_micros::int as reserved, older_reserved::int as older,
                                  period_start from private.budgets where id = ${b.id}`;
      expect(r).toMatchObject({ spent: 0, reserved: 110, older: 0 });
      expect(r.period_start.toISOString()).toBe('2031-03-15T23:00:00.000Z');
      await finish(tx, f, [next]);
      expect((await tx`select spent_micros::int as s from private.budgets where id = ${b.id}`)[0].s).toBe(60);
    });
  });

  it('a BudgetTimeZone change mid-period bills what is settled after it to the period the budget counts', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await clockAt(tx, '2031-03-15T10:00:00Z');
      const b = await budget(tx, { key_id: f.key.id, period: 'day', amount_micros: 1000 });
      const before = await begin(tx, f); // counted in the UTC day that began 2031-03-15T00:00Z
      // Tokyo's day began at 2031-03-14T15:00Z: earlier, so the budget keeps the day it counts
      // until Tokyo's next midnight.
      await tx`select admin.option_set('BudgetTimeZone', 'Asia/Tokyo')`;
      await clockAt(tx, '2031-03-15T10:00:05Z');
      const after = await begin(tx, f);
      await finish(tx, f, [before, after]);
      const [r] = await tx`select spent_micros::int as spent, reserved_micros::int as reserved, older_reserved::int as older,
                                  period_start from private.budgets where id = ${b.id}`;
      expect(r).toMatchObject({ spent: 120, reserved: 0, older: 0 });
      expect(r.period_start.toISOString()).toBe('2031-03-15T00:00:00.000Z');
    });
  });

  it('two sessions setting the same new budget or model limit at once: one row, the later values', async () => {
    const sql = db();
    const f = await fixture(sql as unknown as TransactionSql); // (committed: two sessions must see it)
    const waiting = async () => {
      for (let i = 0; i < 200; i++) {
        const [{ n }] = await sql`select count(*)::int as n from pg_stat_activity
                                   where datname = current_database() and wait_event_type = 'Lock'`;
        if (n > 0) return;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error('the second session never waited');
    };
    const race = async (set: (tx: TransactionSql, value: number) => Promise<unknown>) => {
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let setFirst!: () => void;
      const firstSet = new Promise<void>((r) => (setFirst = r));
      const first = sql.begin(async (tx) => {
        await set(tx, 100);
        setFirst();
        await held; // the first session keeps its transaction open
      });
      await firstSet;
      const second = sql.begin((tx) => set(tx, 200));
      await waiting();
      release();
      await first;
      await second; // before: 23505 from the target's unique index
    };
    await race((tx, v) => tx`select admin.budget_set(${tx.json({ key_id: f.key.id, period: 'day', amount_micros: v })})`);
    expect(await sql`select amount_micros::int as a from private.budgets where key_id = ${f.key.id}`).toEqual([{ a: 200 }]);
    await race((tx, v) => tx`select admin.model_limit_set(${tx.json({ key_id: f.key.id, model: f.model, rpm_limit: v })})`);
    expect(await sql`select rpm_limit as r from private.model_limits where key_id = ${f.key.id}`).toEqual([{ r: 200 }]);
  });

  it('weeks start on Monday and months on the 1st; resets_at says when', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await clockAt(tx, '2031-03-15T10:00:00Z'); // a Saturday
      const w = await budget(tx, { group: f.group, period: 'week', amount_micros: 100 });
      const m = await budget(tx, { key_id: f.key.id, period: 'month', amount_micros: 100_000 });
      const err = await refused(tx, f);
      expect(err.message).toContain(`the weekly budget of the group ${f.group} is 100 micro-USD`);
      expect(err.message).toContain('It resets at 2031-03-17T00:00:00Z.');
      const [{ ends }] = await tx`select private.budget_period_end('month', '2031-03-15T10:00:00Z', 'UTC') as ends`;
      expect(ends.toISOString()).toBe('2031-04-01T00:00:00.000Z');
      // The refused request took nothing from either budget.
      const rows = await tx`select id, reserved_micros::int as r from private.budgets where id in (${w.id}, ${m.id})`;
      expect(rows.map((x) => x.r)).toEqual([0, 0]);
    });
  });

  it('a model budget counts only that model', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const other = unique('model');
      await tx`select admin.model_upsert(${tx.json({ name: other, input_price: 1_000_000, output_price: 1_000_000 })})`;
      await tx`update private.channels set models = models || ${[other]}::text[] where id = ${f.channel.id}`;
      await budget(tx, { key_id: f.key.id, model: f.model, period: 'day', amount_micros: 200 });
      await begin(tx, f);
      expect((await refused(tx, f)).message).toContain(`for the model \`${f.model}\``);
      expect(await begin(tx, f, { model: other })).toBeTruthy();
    });
  });

  it('raises budget.threshold and budget.exhausted once per period, from settlement', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await clockAt(tx, '2031-03-15T10:00:00Z');
      const b = await budget(tx, { key_id: f.key.id, period: 'day', amount_micros: 240, threshold_percent: 50 });
      const events = async () =>
        (await tx`select kind, payload from private.events where payload ->> 'budget_id' = ${String(b.id)} order by id`).map(
          (e) => [e.kind, e.payload.spent_micros],
        );
      const t1 = await begin(tx, f);
      const t2 = await begin(tx, f);
      expect(await events()).toEqual([]); // admission raises nothing
      await finish(tx, f, [t1]);
      expect(await events()).toEqual([]); // 60 < 120
      await finish(tx, f, [t2]);
      expect(await events()).toEqual([['budget.threshold', 120]]);
      const t3 = await begin(tx, f);
      await finish(tx, f, [t3]);
      expect(await events()).toEqual([['budget.threshold', 120]]); // once per period
      await finish(tx, f, [await begin(tx, f, { max: 50 })]);
      const [, ex] = await tx`select kind, payload from private.events where payload ->> 'budget_id' = ${String(b.id)} order by id`;
      expect(ex.kind).toBe('budget.exhausted');
      expect(ex.payload).toMatchObject({ spent_micros: 240, amount_micros: 240, period: 'day', scope: 'key', resets_at: '2031-03-16T00:00:00+00:00' });
      // The next day re-arms both.
      await clockAt(tx, '2031-03-16T00:00:00Z');
      await finish(tx, f, [await begin(tx, f), await begin(tx, f)]);
      expect((await events()).map((e) => e[0])).toEqual(['budget.threshold', 'budget.exhausted', 'budget.threshold']);
    });
  });

  it('a batch refuses exactly the requests that would be refused one by one', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const b = await budget(tx, { key_id: f.key.id, period: 'month', amount_micros: 1000 });
      const reqs = Array.from({ length: 12 }, () => ({
        id: randomUUID(), key_hash: sha256(f.key.key).toString('hex'), model: f.model, endpoint: 'chat/completions',
        stream: false, client_ip: '127.0.0.1', prompt_tokens: 10, max_tokens: 100,
      }));
      await tx`set local role elygate_gateway`;
      const rows = await tx`select idx, request_id, error from gateway.relay_begin_batch(${tx.json(reqs)}) order by idx`;
      await tx`reset role`;
      expect(rows.filter((r) => r.request_id).map((r) => r.idx)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]); // 9 × 110 = 990
      expect(rows[9].error).toMatchObject({ code: 'BUDGT', reason: 'budget' });
      expect((await row(tx, b.id)).reserved).toBe(990);
      // A model limit in a batch likewise: what the refused ones counted is taken back.
      const other = await createKey(tx, { user_id: f.user.id });
      await tx`select admin.model_limit_set(${tx.json({ key_id: other.id, model: f.model, rpm_limit: 3 })})`;
      const five = reqs.slice(0, 5).map((r) => ({ ...r, id: randomUUID(), key_hash: sha256(other.key).toString('hex') }));
      await tx`set local role elygate_gateway`;
      const limited = await tx`select idx, request_id, error from gateway.relay_begin_batch(${tx.json(five)}) order by idx`;
      await tx`reset role`;
      expect(limited.map((r) => (r.request_id ? 'ok' : r.error.code))).toEqual(['ok', 'ok', 'ok', 'MRLIM', 'MRLIM']);
      expect(limited[3].error.reason).toBe('model_rpm');
      const [{ n }] = await tx`select minute_requests as n from private.model_limits where key_id = ${other.id}`;
      expect(n).toBe(3);
    });
  });

  it('per-model RPM and TPM of a key or a group refuse with MRLIM naming the model; the window rolls with the clock', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await clockAt(tx, '2031-03-15T10:00:00Z');
      await tx`select admin.model_limit_set(${tx.json({ key_id: f.key.id, model: f.model, rpm_limit: 2 })})`;
      await begin(tx, f);
      await begin(tx, f);
      const err = await refused(tx, f);
      expect(err).toMatchObject({ code: 'MRLIM', message: `Rate limit reached for the model \`${f.model}\`: the key ${f.key.key_prefix} (budgeted) allows 2 requests per minute for it.` });
      expect(JSON.parse(err.detail)).toEqual({ reason: 'model_rpm', retry_after: 60 });
      await clockAt(tx, '2031-03-15T10:02:00Z');
      expect(await begin(tx, f)).toBeTruthy();
      // Key expiry reads the same clock.
      await tx`select admin.key_update(${f.key.id}, ${tx.json({ expires_at: '2031-03-15T11:00:00Z' })})`;
      await clockAt(tx, '2031-03-15T11:00:00Z');
      expect(await refused(tx, f)).toMatchObject({ code: 'KEXPD', message: expect.stringContaining('expired at 2031-03-15T11:00:00Z') });
      await clockAt(tx, '2031-03-15T10:59:59Z');

      await tx`select admin.model_limit_clear(${tx.json({ key_id: f.key.id, model: f.model })})`;
      await tx`select admin.model_limit_set(${tx.json({ group: f.group, model: f.model, tpm_limit: 300 })})`;
      const counted = [await begin(tx, f), await begin(tx, f)]; // 220 tokens reserved
      const tpm = await refused(tx, f);
      expect(tpm).toMatchObject({ code: 'MRLIM' });
      expect(tpm.message).toContain(`the group ${f.group} allows 300 tokens per minute for it, and this request may use 110`);
      expect(JSON.parse(tpm.detail).reason).toBe('model_tpm');
      // Settlement replaces the reserved tokens with those used (10 + 50 each): 120 + 110 ≤ 300.
      await finish(tx, f, counted);
      const [{ t }] = await tx`select minute_tokens::int as t from private.model_limits where group_name = ${f.group}`;
      expect(t).toBe(120);
      expect(await begin(tx, f)).toBeTruthy();
    });
  });

  it('keys that no budget or limit names look nothing up; the flags follow budget_set and budget_clear', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const flags = async () => {
        const [r] = await tx`select k.scoped_limits as k, u.scoped_limits as u, g.scoped_limits as g
                               from private.api_keys k join private.users u on u.id = k.user_id
                               join private.groups g on g.name = u.group_name where k.id = ${f.key.id}`;
        return r;
      };
      expect(await flags()).toEqual({ k: false, u: false, g: false });
      const b = await budget(tx, { user_id: f.user.id, period: 'day', amount_micros: 10 });
      await tx`select admin.model_limit_set(${tx.json({ group: f.group, model: f.model, rpm_limit: 5 })})`;
      expect(await flags()).toEqual({ k: false, u: true, g: true });
      expect((await tx`select admin.budget_clear(${tx.json({ id: b.id })}) as ok`)[0].ok).toBe(true);
      // (the model as model_limit_set reads it: trimmed)
      expect((await tx`select admin.model_limit_clear(${tx.json({ group: f.group, model: ` ${f.model} ` })}) as ok`)[0].ok).toBe(true);
      expect(await flags()).toEqual({ k: false, u: false, g: false });
      const [{ ids }] = await tx`select private.limits_of(${f.key.id}, ${f.user.id}, ${f.group}, ${f.model}) as ids`;
      expect(ids).toBe('(,)');
      // A renamed group keeps its budgets (and its flag); a deleted key takes its own with it.
      await budget(tx, { group: f.group, period: 'day', amount_micros: 10 });
      await budget(tx, { key_id: f.key.id, period: 'day', amount_micros: 10 });
      await tx`update private.groups set name = ${f.group + '_renamed'} where name = ${f.group}`;
      const [g] = await tx`select g.scoped_limits, (select count(*)::int from private.budgets b where b.group_name = g.name) as n
                             from private.groups g where g.name = ${f.group + '_renamed'}`;
      expect(g).toEqual({ scoped_limits: true, n: 1 });
      await tx`delete from private.api_keys where id = ${f.key.id}`;
      expect(await tx`select 1 from private.budgets where key_id = ${f.key.id}`).toHaveLength(0);
    });
  });

  it('admin.budget_set checks its arguments, naming the field; BudgetTimeZone must be a real time zone', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const bad = (args: Record<string, unknown>) =>
        attempt(tx, (sp) => sp`select admin.budget_set(${sp.json(args as never)})`).then(() => null, (e) => e);
      expect(await bad({ period: 'day', amount_micros: 5 })).toMatchObject({ code: 'BADIN', column_name: 'key_id' });
      expect(await bad({ key_id: f.key.id, user_id: f.user.id, period: 'day', amount_micros: 5 })).toMatchObject({ code: 'BADIN', column_name: 'user_id' });
      expect(await bad({ key_id: f.key.id, period: 'year', amount_micros: 5 })).toMatchObject({ code: 'BADIN', column_name: 'period' });
      expect(await bad({ key_id: f.key.id, period: 'day' })).toMatchObject({ code: 'BADIN', column_name: 'amount_micros' });
      expect(await bad({ key_id: f.key.id, period: 'day', amount_micros: 5, threshold_percent: 120 })).toMatchObject({ column_name: 'threshold_percent' });
      expect(await bad({ key_id: f.key.id, model: 'no-such-model', period: 'day', amount_micros: 5 })).toMatchObject({ column_name: 'model' });
      expect(await bad({ group: 'no-such-group', period: 'day', amount_micros: 5 })).toMatchObject({ column_name: 'group' });
      expect(await bad({ key_id: f.key.id, period: 'day', amount_micros: 5, colour: 'red' })).toMatchObject({ column_name: 'colour' });
      const tz = await attempt(tx, (sp) => sp`select admin.option_set('BudgetTimeZone', 'Mars/Olympus')`).then(() => null, (e) => e);
      expect(tz).toMatchObject({ code: 'BADOP', message: expect.stringContaining('BudgetTimeZone') });

      // set twice: one budget, changed; shown in admin.budgets
      const [{ last }] = await tx`select coalesce(max(id), 0) as last from admin.audit_log`;
      const a = await budget(tx, { key_id: f.key.id, period: 'week', amount_micros: 5 });
      const b = await budget(tx, { key_id: f.key.id, period: 'week', amount_micros: 7, threshold_percent: 80 });
      expect(b).toMatchObject({ id: a.id, amount_micros: 7, threshold_percent: 80, scope: 'key', key_prefix: f.key.key_prefix, remaining_micros: 7 });
      // Audited as the budget's change; the key's flag that followed is bookkeeping, not a mutation of the key.
      const audit = await tx`select target, before ->> 'amount_micros' as before, after ->> 'amount_micros' as after
                               from admin.audit_log where id > ${last} order by id`;
      expect(audit.map((r) => [r.target, r.before, r.after])).toEqual([[`budgets:${a.id}`, null, '5'], [`budgets:${a.id}`, '5', '7']]);
      expect((await tx`select admin.budget_clear(${tx.json({ key_id: f.key.id, period: 'week' })}) as ok`)[0].ok).toBe(true);
      expect((await tx`select admin.budget_clear(${tx.json({ key_id: f.key.id, period: 'week' })}) as ok`)[0].ok).toBe(false);
    });
  });
});
