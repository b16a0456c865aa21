// Routing and the circuit breaker in SQL: key selection, skip reasons, channel config checks, the
// breaker window fed through relay_finish, auto-disable past the threshold (never on one error),
// probes (half-open) and automatic re-enable, manual disables that stay, per-key disable, and the
// routing trace view.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import { attempt, closeDb, createChannel, createGroup, createKey, createUser, sha256, unique, withTx } from '../support/db';

afterAll(closeDb);

async function fixture(tx: TransactionSql, channelFields: Record<string, unknown> = {}) {
  const group = await createGroup(tx);
  const model = unique('model');
  const user = await createUser(tx, { group });
  const key = await createKey(tx, { user_id: user.id });
  const channel = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group], ...channelFields });
  return { group, model, user, key, channel };
}

async function begin(tx: TransactionSql, key: string, model: string) {
  const [t] = await tx`
    select t.request_id, t.created_at::text as created_at, t.plan
      from gateway.relay_begin(${randomUUID()}, ${sha256(key)}, ${model}, 'chat/completions', false, '127.0.0.1', 10, 100) t`;
  return t;
}

const outcome = (t: any, attempts: any[], extra: Record<string, any> = {}): any => ({
  id: t.request_id,
  created_at: t.created_at,
  status: 'ok',
  http_status: 200,
  channel_id: null,
  upstream_model: null,
  prompt_tokens: null,
  completion_tokens: null,
  usage_source: 'none',
  attempts,
  ttfb_ms: 1,
  latency_ms: 1,
  error_code: null,
  error_message: null,
  ...extra,
});

async function setOptions(tx: TransactionSql, opts: Record<string, string>) {
  for (const [k, v] of Object.entries(opts)) await tx`select admin.option_set(${k}, ${v})`;
}

const status = async (tx: TransactionSql, id: number) =>
  (await tx`select status, status_reason from private.channels where id = ${id}`)[0];

describe('route plan', () => {
  it('round-robin key selection rotates through the enabled keys; random covers them all', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx, { api_keys: ['k1', 'k2', 'k3'], config: { key_selection: 'round_robin' } });
      const seen: number[] = [];
      for (let i = 0; i < 6; i++) seen.push((await begin(tx, f.key.key, f.model)).plan[0].key_ordinal);
      // Consecutive values of a shared sequence: every key in turn.
      for (let i = 0; i < 3; i++) expect(new Set(seen.slice(i, i + 3)).size).toBe(3);
      await tx`update private.channel_keys set status = 'disabled' where channel_id = ${f.channel.id} and ordinal = 2`;
      const after = new Set<number>();
      for (let i = 0; i < 6; i++) after.add((await begin(tx, f.key.key, f.model)).plan[0].key_ordinal);
      expect([...after].sort()).toEqual([1, 3]);

      await tx`update private.channels set config = '{"key_selection": "random"}' where id = ${f.channel.id}`;
      const rows = await tx`
        select (t.plan -> 0 ->> 'key_ordinal')::int as k, count(*)::int as n
          from generate_series(1, 600) i,
               lateral gateway.relay_begin(gen_random_uuid(), ${sha256(f.key.key)}, ${f.model}, 'chat/completions', false, '127.0.0.1', i, 1) t
         group by 1 order by 1`;
      expect(rows.map((r) => r.k)).toEqual([1, 3]);
      for (const r of rows) expect(r.n).toBeGreaterThan(200);
    });
  });

  it('records why channels were skipped: manual disable, open breaker (with its reason), no enabled key', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const manual = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], status: 'manually_disabled', status_reason: 'maintenance' });
      const broken = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group] });
      await tx`update private.channels set status = 'auto_disabled', status_reason = 'circuit breaker: 9 of 10 failed' where id = ${broken.id}`;
      const keyless = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], api_keys: ['only'] });
      await tx`update private.channel_keys set status = 'disabled' where channel_id = ${keyless.id}`;
      const t = await begin(tx, f.key.key, f.model);
      expect(t.plan.map((p: any) => p.channel_id)).toEqual([Number(f.channel.id)]);
      const [row] = await tx`select route_plan from private.admissions where id = ${t.request_id}`;
      expect(row.route_plan.skipped.sort((a: any, b: any) => a.channel_id - b.channel_id)).toEqual([
        { channel_id: Number(manual.id), reason: 'manually_disabled', detail: 'maintenance' },
        { channel_id: Number(broken.id), reason: 'breaker_open', detail: 'circuit breaker: 9 of 10 failed' },
        { channel_id: Number(keyless.id), reason: 'no_enabled_key' },
      ]);
    });
  });

  it('caches a plan with nothing random in it, exactly as planned per request, and follows every change at once', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const cached = async () =>
        (await tx`select served, candidates, skipped, max_multiplier::text from private.route_cache
                   where model = ${f.model} and grp = ${f.group}`)[0] ?? null;
      const planned = async () =>
        (await tx`select (r).served, (r).candidates, (r).skipped, (r).max_multiplier::text
                    from (select (private.route_plans(array[${f.model}], array[${f.group}]))[1] as r) x`)[0];
      // One channel with one key: cached, the same as the plan made per request.
      expect(await cached()).toEqual(await planned());
      expect((await begin(tx, f.key.key, f.model)).plan).toEqual((await cached()).candidates);
      // A backup in a lower tier: still one answer, cached, in tier order.
      const backup = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], priority: -1, cost_multiplier: 2 });
      expect((await cached()).candidates.map((c: any) => c.channel_id)).toEqual([Number(f.channel.id), Number(backup.id)]);
      expect(await cached()).toEqual(await planned());
      // The breaker (or an operator) disables the first: the very next admission routes to the backup.
      await tx`update private.channels set status = 'auto_disabled', status_reason = 'circuit breaker: test' where id = ${f.channel.id}`;
      expect((await begin(tx, f.key.key, f.model)).plan.map((c: any) => c.channel_id)).toEqual([Number(backup.id)]);
      expect((await cached()).skipped).toEqual([{ channel_id: Number(f.channel.id), reason: 'breaker_open', detail: 'circuit breaker: test' }]);
      await tx`update private.channels set status = 'enabled', status_reason = null where id = ${f.channel.id}`;
      // A model mapping changes the plan's upstream model (and the channel's version).
      await tx`update private.channels set model_mapping = ${tx.json({ [f.model]: 'upstream-name' })} where id = ${f.channel.id}`;
      expect((await begin(tx, f.key.key, f.model)).plan[0]).toMatchObject({ channel_id: Number(f.channel.id), model: 'upstream-name' });
      expect(await cached()).toEqual(await planned());
      // Two usable channels in one tier: a weighted random choice, never cached, planned per request.
      const twin = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group] });
      expect(await cached()).toBeNull();
      const firsts = new Set<number>();
      for (let i = 0; i < 40; i++) firsts.add((await begin(tx, f.key.key, f.model)).plan[0].channel_id);
      expect([...firsts].sort((a, b) => a - b)).toEqual([Number(f.channel.id), Number(twin.id)].sort((a, b) => a - b));
      // The twin archived: one answer again. A second key on the channel: a random key, not cached.
      await tx`update private.channels set status = 'archived' where id = ${twin.id}`;
      expect(await cached()).toEqual(await planned());
      await tx`select admin.channel_update(${f.channel.id}, ${tx.json({ api_keys: ['k1', 'k2'] })})`;
      expect(await cached()).toBeNull();
      await tx`update private.channel_keys set status = 'disabled' where channel_id = ${f.channel.id} and ordinal = 2`;
      expect(await cached()).toEqual(await planned());
      // Deleting a channel leaves no cached plan naming it.
      await tx`delete from private.channels where id = ${backup.id}`;
      expect(JSON.stringify(await cached())).not.toContain(`"channel_id": ${backup.id}`);
      expect(await cached()).toEqual(await planned());
    });
  });

  it('checks channel config: unknown fields and wrong types are BADCH', async () => {
    await withTx(async (tx) => {
      await expect(attempt(tx, (sp) => createChannel(sp, { base_url: 'http://x', models: ['m'], config: { keyselection: 'random' } }))).rejects.toMatchObject({
        code: 'BADCH',
        message: 'Unknown channel config field(s): keyselection.',
      });
      await expect(attempt(tx, (sp) => createChannel(sp, { base_url: 'http://x', models: ['m'], config: { status_code_mapping: { '404': 'x' } } }))).rejects.toMatchObject({ code: 'BADCH' });
      await expect(attempt(tx, (sp) => createChannel(sp, { base_url: 'http://x', models: ['m'], config: { header_override: { Host: 'evil' } } }))).rejects.toMatchObject({ code: 'BADCH' });
      await expect(attempt(tx, (sp) => createChannel(sp, { base_url: 'http://x', models: ['m'], config: { responses_api: 'passthrough' } }))).rejects.toMatchObject({
        code: 'BADCH',
        message: expect.stringContaining('"config.responses_api" must be "native"'),
      });
      const ok = await createChannel(tx, {
        base_url: 'http://x',
        models: ['m'],
        config: { key_selection: 'round_robin', param_override: { top_k: 3 }, header_override: { 'X-Org': 'a' }, status_code_mapping: { '404': 503 }, api_version: '2024-10-21', responses_api: 'convert' },
      });
      expect(ok.id).toBeTruthy();
    });
  });
});

describe('circuit breaker', () => {
  const strict = { BreakerMinRequests: '4', BreakerFailurePercent: '50', BreakerWindowSeconds: '60', BreakerOpenSeconds: '30' };

  it('one error never disables a channel; crossing the threshold does, with the reason stored', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await setOptions(tx, strict);
      const b = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group] });
      const fail = { channel_id: Number(f.channel.id), status: 503, ms: 10 };
      const ok = { channel_id: Number(b.id), status: 200, ms: 10 };
      // Settled through relay_finish as the gateway would: settlement folds the attempts.
      await tx`set local role elygate_gateway`;
      const t1 = await begin(tx, f.key.key, f.model);
      await tx`select gateway.relay_finish(${tx.json([outcome(t1, [fail, ok])])})`;
      await tx`reset role`;
      expect((await status(tx, f.channel.id)).status).toBe('enabled');
      // Then 3 more failures and 1 success on this channel: 4 of 5 attempts failed ≥ 50%.
      await tx`set local role elygate_gateway`;
      const batch = [];
      for (let i = 0; i < 3; i++) batch.push(outcome(await begin(tx, f.key.key, f.model), [{ ...fail, status: i === 2 ? null : 500, error: i === 2 ? 'connect ECONNREFUSED' : undefined }, ok]));
      batch.push(outcome(await begin(tx, f.key.key, f.model), [{ channel_id: Number(f.channel.id), status: 200, ms: 5 }]));
      await tx`select gateway.relay_finish(${tx.json(batch)})`;
      await tx`reset role`;
      const s = await status(tx, f.channel.id);
      expect(s.status).toBe('auto_disabled');
      // (Rows begun in one transaction share created_at, so which failure was last is arbitrary here.)
      expect(s.status_reason).toMatch(/^circuit breaker: 4 of 5 attempts failed in the last 60 s \(last: (connect ECONNREFUSED|HTTP 500)\)$/);
      const [br] = await tx`select state, next_probe_at - opened_at as wait from private.channel_breakers where channel_id = ${f.channel.id}`;
      expect(br.state).toBe('open');
      expect(br.wait).toBe('00:00:30');
      // The other channel's successes keep it enabled.
      expect((await status(tx, b.id)).status).toBe('enabled');
      // Client errors are not channel failures.
      const [{ n }] = await tx`select private.breaker_record(${tx.json(Array.from({ length: 10 }, () => ({ channel_id: Number(b.id), status: 400, ms: 1 })))}) as n`;
      expect(n).toBe(0);
      expect((await status(tx, b.id)).status).toBe('enabled');
    });
  });

  it('attempts on a channel deleted since are passed over; the others of the batch still count', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await setOptions(tx, strict);
      const [{ id: gone }] = await tx`select coalesce(max(id), 0) + 1000 as id from private.channels`;
      const attempts = [
        ...Array.from({ length: 3 }, () => ({ channel_id: Number(gone), status: 502, ms: 1 })),
        { channel_id: Number(f.channel.id), status: 200, ms: 2 },
        { channel_id: Number(f.channel.id), status: 502, ms: 3 },
        { channel_id: Number(gone), status: 200, ms: 1, key: 2 },
      ];
      const [{ n }] = await tx`select private.breaker_record(${tx.json(attempts)}) as n`;
      expect(n).toBe(0);
      const rows = await tx`select channel_id, key_ordinal, ok, failed from private.channel_outcomes
                             where channel_id in (${f.channel.id}, ${gone}) order by channel_id, key_ordinal`;
      expect(rows.map((r) => ({ ...r, channel_id: Number(r.channel_id) }))).toEqual([
        { channel_id: Number(f.channel.id), key_ordinal: 0, ok: 1, failed: 1 },
      ]);
      expect((await status(tx, f.channel.id)).status).toBe('enabled');
    });
  });

  it('a stream that broke after its first byte counts as a failed attempt of the channel that served it', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`set local role elygate_gateway`;
      const ok = await begin(tx, f.key.key, f.model);
      const broken = await begin(tx, f.key.key, f.model);
      const served = { channel_id: Number(f.channel.id), status: 200, ms: 5 };
      await tx`select gateway.relay_finish(${tx.json([
        outcome(ok, [served]),
        outcome(broken, [{ channel_id: Number(f.channel.id), status: 503, ms: 1 }, served], {
          status: 'aborted', error_code: 'upstream_stream_error', error_message: 'upstream closed mid-stream',
        }),
      ])})`;
      await tx`reset role`;
      const [w] = await tx`select sum(ok)::int as ok, sum(failed)::int as failed from private.channel_outcomes where channel_id = ${f.channel.id}`;
      expect(w).toEqual({ ok: 1, failed: 2 }); // the 503, and the 200 whose stream then broke
    });
  });

  it('a probe half-opens the breaker; success re-enables, failure reopens with a doubled wait', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await setOptions(tx, strict);
      const fails = Array.from({ length: 4 }, () => ({ channel_id: Number(f.channel.id), status: 502, ms: 1 }));
      await tx`select private.breaker_record(${tx.json(fails)})`;
      expect((await status(tx, f.channel.id)).status).toBe('auto_disabled');
      // Not due yet.
      expect((await tx`select private.probes_schedule(now() + interval '10 seconds') as n`)[0].n).toBe(0);
      expect((await tx`select private.probes_schedule(now() + interval '31 seconds') as n`)[0].n).toBe(1);
      expect((await tx`select state from private.channel_breakers where channel_id = ${f.channel.id}`)[0].state).toBe('half_open');
      // Only one probe in flight per channel (until it is given up as lost, a minute later).
      expect((await tx`select private.probes_schedule(now() + interval '40 seconds') as n`)[0].n).toBe(0);

      await tx`set local role elygate_gateway`;
      const [p] = await tx`select * from gateway.probe_claim('test-gw', 10) where channel_id = ${f.channel.id}`;
      expect(p).toMatchObject({ kind: 'recovery', model: f.model, upstream_model: f.model, key_index: 0, key_ordinal: 1 });
      await tx`select gateway.probe_finish(${tx.json([{ id: p.id, ok: false, http_status: 503, ms: 12, error: 'still down' }])})`;
      await tx`reset role`;
      const [br] = await tx`select state, probe_failures, round(extract(epoch from next_probe_at - now()))::int as wait from private.channel_breakers where channel_id = ${f.channel.id}`;
      expect(br).toEqual({ state: 'open', probe_failures: 1, wait: 60 });
      expect((await status(tx, f.channel.id)).status).toBe('auto_disabled');

      expect((await tx`select private.probes_schedule(now() + interval '61 seconds') as n`)[0].n).toBe(1);
      await tx`set local role elygate_gateway`;
      const [p2] = await tx`select * from gateway.probe_claim('test-gw', 10) where channel_id = ${f.channel.id}`;
      await tx`select gateway.probe_finish(${tx.json([{ id: p2.id, ok: true, http_status: 200, ms: 9 }])})`;
      await tx`reset role`;
      const s = await status(tx, f.channel.id);
      expect(s.status).toBe('enabled');
      expect(s.status_reason).toMatch(new RegExp(`^re-enabled automatically: probe #${p2.id} succeeded`));
      const [closed] = await tx`select state, probe_failures from private.channel_breakers where channel_id = ${f.channel.id}`;
      expect(closed).toEqual({ state: 'closed', probe_failures: 0 });
      // The window starts empty: one new failure does not reopen it.
      await tx`select private.breaker_record(${tx.json([fails[0]])})`;
      expect((await status(tx, f.channel.id)).status).toBe('enabled');
      const [probes] = await tx`select count(*)::int as n from admin.channel_probes where channel_id = ${f.channel.id} and finished_at is not null`;
      expect(probes.n).toBe(2);
    });
  });

  it('a channel disabled by hand is never re-enabled automatically', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await setOptions(tx, strict);
      await tx`select private.breaker_record(${tx.json(Array.from({ length: 4 }, () => ({ channel_id: Number(f.channel.id), status: null, ms: 1, error: 'timeout' })))})`;
      expect((await status(tx, f.channel.id)).status).toBe('auto_disabled');
      await tx`select admin.channel_update(${f.channel.id}, '{"status": "manually_disabled", "status_reason": "billing dispute"}')`;
      // The breaker schedules no probe for it...
      expect((await tx`select private.probes_schedule(now() + interval '1 day') as n`)[0].n).toBe(0);
      // ...and even an operator's successful test leaves it disabled.
      const [{ id }] = await tx`select admin.channel_test(${f.channel.id}) as id`;
      await tx`set local role elygate_gateway`;
      await tx`select * from gateway.probe_claim('test-gw', 100)`;
      await tx`select gateway.probe_finish(${tx.json([{ id, ok: true, http_status: 200, ms: 5 }])})`;
      await tx`reset role`;
      expect(await status(tx, f.channel.id)).toEqual({ status: 'manually_disabled', status_reason: 'billing dispute' });
      // An already manually disabled channel is not auto-disabled over it either.
      await tx`select private.breaker_record(${tx.json(Array.from({ length: 10 }, () => ({ channel_id: Number(f.channel.id), status: 500, ms: 1 })))})`;
      expect((await status(tx, f.channel.id)).status).toBe('manually_disabled');
      const [h] = await tx`select status, breaker_state, last_probe_ok from admin.channel_health where id = ${f.channel.id}`;
      expect(h).toEqual({ status: 'manually_disabled', breaker_state: 'open', last_probe_ok: true });
    });
  });

  it('repeated 401s disable that key only; the channel keeps serving with its other keys', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx, { api_keys: ['good', 'revoked-upstream'] });
      await setOptions(tx, { ...strict, BreakerMinRequests: '100', KeyDisableAuthFailures: '3' });
      const a = (key: number, s: number) => ({ channel_id: Number(f.channel.id), status: s, ms: 1, key });
      await tx`select private.breaker_record(${tx.json([a(2, 401), a(2, 401), a(1, 200)])})`;
      expect((await tx`select status from private.channel_keys where channel_id = ${f.channel.id} and ordinal = 2`)[0].status).toBe('enabled');
      await tx`select private.breaker_record(${tx.json([a(2, 401)])})`;
      const keys = await tx`select ordinal, status, status_reason from private.channel_keys where channel_id = ${f.channel.id} order by ordinal`;
      expect(keys[0]).toMatchObject({ ordinal: 1, status: 'enabled' });
      expect(keys[1]).toMatchObject({ ordinal: 2, status: 'disabled', status_reason: 'auto: 3 authentication failures (401/403) in the last 60 s' });
      expect((await status(tx, f.channel.id)).status).toBe('enabled');
      const t = await begin(tx, f.key.key, f.model);
      expect(t.plan[0]).toMatchObject({ key_index: 0, key_ordinal: 1 });
    });
  });
});

describe('cost', () => {
  it('10,000 route plans over four channels with keys', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx, { api_keys: ['a', 'b', 'c'] });
      for (let i = 0; i < 3; i++) await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], priority: i % 2, api_keys: ['x', 'y'] });
      const t0 = performance.now();
      const [{ n }] = await tx`
        select count(*)::int as n from generate_series(1, 10000) i,
               lateral private.route_plan(case when i > 0 then ${f.model} end, ${f.group}) rp
         where jsonb_array_length(rp.candidates) = 4`;
      const ms = performance.now() - t0;
      console.log(`10,000 route plans (4 candidates, 9 keys): ${ms.toFixed(0)} ms, ${((ms * 1000) / 10000).toFixed(1)} µs each`);
      expect(n).toBe(10000);
    });
  });
});

describe('routing trace', () => {
  it('admin.request_routes shows skipped channels, each attempt in order, and the one that served', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx, { priority: 10 });
      const second = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], priority: 5, model_mapping: { [f.model]: 'mapped' } });
      const third = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], priority: 1 });
      const off = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], status: 'manually_disabled' });
      const t = await begin(tx, f.key.key, f.model);
      await tx`select gateway.relay_finish(${tx.json([
        outcome(t, [
          { channel_id: Number(f.channel.id), status: 503, ms: 40, key: 1 },
          { channel_id: Number(second.id), status: 200, ms: 120, key: 1 },
        ], { channel_id: Number(second.id), upstream_model: 'mapped' }),
      ])})`;
      const rows = await tx`select step, kind, channel_id::int, upstream_model, status, ms, detail, served from admin.request_routes where request_id = ${t.request_id} order by step`;
      expect(rows).toEqual([
        { step: 1, kind: 'skipped', channel_id: Number(off.id), upstream_model: null, status: null, ms: null, detail: 'manually_disabled', served: false },
        { step: 2, kind: 'attempt', channel_id: Number(f.channel.id), upstream_model: f.model, status: 503, ms: 40, detail: '', served: false },
        { step: 3, kind: 'attempt', channel_id: Number(second.id), upstream_model: 'mapped', status: 200, ms: 120, detail: '', served: true },
        { step: 6, kind: 'not_tried', channel_id: Number(third.id), upstream_model: f.model, status: null, ms: null, detail: null, served: false },
      ]);
    });
  });
});
