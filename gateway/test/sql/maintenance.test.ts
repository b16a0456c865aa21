// Self-maintenance: the job runner logs every run, the fallback runs each due job once, rollups
// add up, and the DBA view says what is overdue.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeDb, withTx } from '../support/db';

afterAll(closeDb);

describe('maintenance jobs', () => {
  it('private.job_run logs success, result and failure', async () => {
    await withTx(async (tx) => {
      const r = await tx`select private.job_run('elygate.partitions', 'manual', '2032-01-10T00:00:00Z') as r`;
      expect(r[0].r.created.length).toBeGreaterThan(0);
      const [run] = await tx`select runner, status, result, error from private.job_runs where job = 'elygate.partitions' order by id desc limit 1`;
      expect(run).toMatchObject({ runner: 'manual', status: 'succeeded', error: null });
      // A failing job is recorded, not raised; with no success on record it is overdue.
      await tx`delete from private.job_runs where job = 'elygate.rollup'`;
      await tx`update private.jobs set command = 'private.no_such_function($now)' where name = 'elygate.rollup'`;
      const f = await tx`select private.job_run('elygate.rollup') as r`;
      expect(f[0].r.error).toMatch(/does not exist/);
      const [failed] = await tx`select status, error from private.job_runs where job = 'elygate.rollup' order by id desc limit 1`;
      expect(failed.status).toBe('failed');
      const [view] = await tx`select last_status, last_error, overdue from admin.jobs where name = 'elygate.rollup'`;
      expect(view).toMatchObject({ last_status: 'failed', overdue: true });
    });
  });

  it('every job is in the one registry, and each registered job runs', async () => {
    // pg_cron schedules only the registry (sql/90_cron.sql), and unschedules elygate.* jobs that
    // are not in it: a job scheduled anywhere else was unscheduled again in the same deploy (the
    // breaker trim never ran, and probes fell back to the gateways).
    const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'sql');
    const scheduling = readdirSync(dir).filter((f) => f.endsWith('.sql') && /cron\.schedule\(/.test(readFileSync(join(dir, f), 'utf8')));
    expect(scheduling).toEqual(['90_cron.sql']);
    await withTx(async (tx) => {
      const jobs = await tx`select name from private.jobs order by name`;
      expect(jobs.map((j) => j.name)).toEqual(expect.arrayContaining(['elygate.breaker_trim', 'elygate.probes', 'elygate.reaper']));
      for (const { name } of jobs) await tx`select private.job_run(${name}, 'manual')`;
      const failed = await tx`select job, error from private.job_runs where status <> 'succeeded' and runner = 'manual'
                                and started_at >= now()`;
      expect(failed).toEqual([]);
    });
  });

  it('without pg_cron, gateway.maintenance_run runs each due job once', async () => {
    await withTx(
      async (tx) => {
        const [{ a }] = await tx`select gateway.maintenance_run() as a`;
        expect(a.runner).toBe('gateway');
        const [{ b }] = await tx`select gateway.maintenance_run() as b`;
        expect(b.ran).toEqual([]); // nothing is due a second time
      },
      { role: 'elygate_gateway' },
    );
  });

  it('usage_rollup sums the request log per hour', async () => {
    await withTx(async (tx) => {
      // Nothing in flight, as far as this test sees: an admission another file left open would
      // hold the rollup's cut back (by design: see usage_rollup).
      await tx`select pg_advisory_xact_lock(hashtext('private.usage_rollup'))`; // no gateway's rollup runs beside it
      await tx`lock table private.admissions in exclusive mode`; // none opens beside this test until it ends
      await tx`delete from private.admissions`;
      const hour = '2033-05-05T10:00:00Z';
      for (const [lat, status, cost] of [
        [100, 'ok', 5],
        [300, 'ok', 7],
        [900, 'error', 0],
      ] as const) {
        await tx`insert into private.requests (id, created_at, user_id, key_id, endpoint, model, status, latency_ms, cost_micros, prompt_tokens, completion_tokens)
                 values (${randomUUID()}, ${hour}::timestamptz + interval '5 minutes', 424242, 1, 'chat/completions', 'roll', ${status}, ${lat}, ${cost}, 10, 2)`;
      }
      await tx`select private.usage_rollup('2033-05-05T11:30:00Z')`;
      const [h] = await tx`select requests, errors, cost_micros::int, prompt_tokens::int, latency_p50_ms, latency_p95_ms
                             from private.usage_hourly where user_id = 424242`;
      expect(h).toEqual({ requests: 3, errors: 1, cost_micros: 12, prompt_tokens: 30, latency_p50_ms: 300, latency_p95_ms: 900 });
      // Idempotent.
      await tx`select private.usage_rollup('2033-05-05T11:30:00Z')`;
      const [{ n }] = await tx`select count(*)::int as n from private.usage_hourly where user_id = 424242`;
      expect(n).toBe(1);
    });
  });

  it('usage_rollup stops at the oldest request in flight; the dashboard adds the log after it, exactly', async () => {
    await withTx(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext('private.usage_rollup'))`; // no gateway's rollup runs beside it
      const log = (ago: number, lat: number) => tx`
        insert into private.requests (id, created_at, user_id, key_id, endpoint, model, status, latency_ms, cost_micros, prompt_tokens, completion_tokens)
        values (${randomUUID()}, now() - make_interval(secs => ${ago}), 434343, 1, 'chat/completions', 'cut', 'ok', ${lat}, 1, 1, 1)`;
      for (const ago of [200, 190, 180]) await log(ago, 100);
      // Admitted 150 s ago and still streaming when the job runs.
      const [a] = await tx`insert into private.admissions (id, created_at, key_id, user_id, endpoint, model)
                           values (${randomUUID()}, now() - interval '150 seconds', 1, 434343, 'chat/completions', 'cut') returning created_at`;
      await tx`select private.usage_rollup(now())`;
      const [h] = await tx`select covered_to from private.latency_hourly order by hour desc limit 1`;
      expect(new Date(h.covered_to).getTime()).toBeLessThanOrEqual(new Date(a.created_at).getTime());
      // It finishes after the run: written with its admission time, before the next run.
      await tx`delete from private.admissions where model = 'cut'`;
      await log(150, 3000);
      const [{ d }] = await tx`select admin.dashboard(now() - interval '3 hours') as d`;
      const [raw] = await tx`select count(*)::int as n from private.requests r
                               where created_at >= date_trunc('hour', now() - interval '3 hours')
                                 and not exists (select 1 from admin.internal_users i where i.id = r.user_id)`;
      expect(d.totals.requests).toBe(raw.n);
      const [{ n }] = await tx`select coalesce(sum(requests), 0)::int as n from private.usage_hourly where user_id = 434343`;
      expect(n).toBe(3); // the late one is in the log half, not (yet) in the rollup
    });
  });

  it('a request open for over an hour moves the rollup back to its hour: nothing after the cut stays rolled up', async () => {
    await withTx(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext('private.usage_rollup'))`; // no gateway's rollup runs beside it
      await tx`lock table private.admissions in exclusive mode`; // none opens beside this test until it ends
      await tx`delete from private.admissions`; // only this test's admission is in flight
      for (const at of ['2033-07-01T09:10:00Z', '2033-07-01T09:50:00Z', '2033-07-01T10:05:00Z']) {
        await tx`insert into private.requests (id, created_at, user_id, key_id, endpoint, model, status, latency_ms)
                 values (${randomUUID()}, ${at}, 464646, 1, 'chat/completions', 'long', 'ok', 10)`;
      }
      await tx`select private.usage_rollup('2033-07-01T10:10:00Z')`;   // rolls up all three
      await tx`insert into private.admissions (id, created_at, key_id, user_id, endpoint, model)
               values (${randomUUID()}, '2033-07-01T09:30:00Z', 1, 464646, 'chat/completions', 'long')`;
      await tx`select private.usage_rollup('2033-07-01T11:00:30Z')`;   // its window starts at 10:00
      const [{ n }] = await tx`select coalesce(sum(requests), 0)::int as n from private.usage_hourly where user_id = 464646`;
      expect(n).toBe(1); // 09:50 and 10:05 are after the cut (09:30): the readers count them from the log
    });
  });

  it('usage_rollup fills private.latency_hourly for hours rolled up before it existed (an upgrade)', async () => {
    await withTx(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext('private.usage_rollup'))`; // no gateway's rollup runs beside it
      await tx`lock table private.admissions in exclusive mode`; // none opens beside this test until it ends
      await tx`delete from private.admissions`; // nothing in flight
      for (const [at, lat] of [['2033-06-01T00:05:00Z', 40], ['2033-06-03T10:05:00Z', 50]] as const) {
        await tx`insert into private.requests (id, created_at, user_id, key_id, endpoint, model, status, latency_ms)
                 values (${randomUUID()}, ${at}, 454545, 1, 'chat/completions', 'old', 'ok', ${lat})`;
      }
      // Usage rolled up by the previous release: an old hour and a recent one, no latency rows.
      await tx`insert into private.usage_hourly (hour, user_id, key_id, model, channel_id, requests, errors, prompt_tokens,
                                                 completion_tokens, cost_micros, latency_ms_sum)
               values ('2033-06-01T00:00:00Z', 454545, 1, 'old', 0, 1, 0, 0, 0, 0, 40),
                      ('2033-06-03T10:00:00Z', 454545, 1, 'old', 0, 1, 0, 0, 0, 0, 50)`;
      const [{ r }] = await tx`select private.usage_rollup('2033-06-03T10:30:00Z') as r`;
      expect(r.latency_backfilled).toBeGreaterThanOrEqual(1);
      const [old] = await tx`select requests, p50_ms, covered_to from private.latency_hourly where hour = '2033-06-01T00:00:00Z'`;
      expect(old).toMatchObject({ requests: 1, p50_ms: 40 });
      expect(new Date(old.covered_to).toISOString()).toBe('2033-06-01T01:00:00.000Z');
    });
  });

  it('usage per model, key and channel by the hour, and by the day once the first rollup past midnight finds the day complete', async () => {
    await withTx(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext('private.usage_rollup'))`; // no gateway's rollup runs beside it
      await tx`delete from private.admissions`; // nothing in flight
      const [{ u }] = await tx`select admin.user_create('{"username": "daily-user"}') as u`;
      const [{ k }] = await tx`select admin.key_create(${tx.json({ user_id: u.id })}) as k`;
      const log = (at: string, status: string, cost: number, user = u.id, key = k.id) => tx`
        insert into private.requests (id, created_at, user_id, key_id, channel_id, endpoint, model, status, latency_ms, cost_micros,
                                      prompt_tokens, completion_tokens, cache)
        values (${randomUUID()}, ${at}, ${user}, ${key}, 7, 'chat/completions', 'daily', ${status}, 50, ${cost}, 10, 5, 'exact')`;
      await log('2033-08-01T22:10:00Z', 'ok', 5);
      await log('2033-08-01T23:40:00Z', 'error', 0);
      await log('2033-08-02T00:05:00Z', 'ok', 9); // the next day: not in 08-01's row
      // A channel test (an internal user) is left out, as the dashboard leaves it out.
      const [{ t }] = await tx`select admin.channel_test_key(${(await tx`select admin.channel_create('{"name": "daily-ch", "base_url": "https://api.example.com", "models": ["daily"]}') as c`)[0].c.id}, null) as t`;
      const [internal] = await tx`select user_id from private.api_keys where id = ${t.id}`;
      await log('2033-08-01T23:50:00Z', 'ok', 100, internal.user_id, t.id);
      await tx`select private.usage_rollup('2033-08-01T23:55:00Z')`;
      const day = (at: string) => tx`select dim, model, key_id::int, channel_id::int, requests::int, errors::int, tokens::int, cost_micros::int,
                                            cache_exact::int, cache_semantic::int, cache_miss::int, cache_bypass::int
                                       from private.usage_by_dim where period = 'day' and at = ${at} order by dim`;
      expect(await day('2033-08-01T00:00:00Z')).toEqual([]); // not finished yet
      const [hour] = await tx`select requests::int from private.usage_by_dim where period = 'hour' and at = '2033-08-01T23:00:00Z' and dim = 'model'`;
      expect(hour.requests).toBe(1); // the error at 23:40; the channel test at 23:50 is left out
      await tx`select private.usage_rollup('2033-08-02T00:10:00Z')`;
      const rows = await day('2033-08-01T00:00:00Z');
      const sums = { requests: 2, errors: 1, tokens: 30, cost_micros: 5, cache_exact: 2, cache_semantic: 0, cache_miss: 0, cache_bypass: 0 };
      expect(rows).toEqual([
        { dim: 'channel', model: null, key_id: null, channel_id: 7, ...sums },
        { dim: 'key', model: null, key_id: Number(k.id), channel_id: null, ...sums },
        { dim: 'model', model: 'daily', key_id: null, channel_id: null, ...sums },
      ]);
      // Rebuilt, not added to, while the day's last hour can still change; later runs leave it be.
      await tx`select private.usage_rollup('2033-08-02T00:20:00Z')`;
      await tx`select private.usage_rollup('2033-08-02T02:20:00Z')`;
      expect(await day('2033-08-01T00:00:00Z')).toEqual(rows);
      expect(await day('2033-08-02T00:00:00Z')).toEqual([]);
    });
  });

  it('history_purge is bounded and keeps recent runs', async () => {
    await withTx(async (tx) => {
      await tx`insert into private.job_runs (job, runner, started_at, status) values ('elygate.reaper', 'manual', '2000-01-01', 'succeeded')`;
      const [{ r }] = await tx`select private.history_purge() as r`;
      expect(r.job_runs).toBeGreaterThanOrEqual(1);
    });
  });

  it('history_purge deletes usage rollups past UsageRetentionDays, and only those', async () => {
    await withTx(async (tx) => {
      await tx`select admin.option_set('UsageRetentionDays', '60')`;
      const now = new Date('2031-06-01T00:00:00Z');
      const hours = ['2031-03-01T05:00:00Z', '2031-04-02T01:00:00Z', '2031-04-02T23:00:00Z', '2031-05-20T00:00:00Z']; // cut: 2031-04-02T00:00Z
      for (const [i, h] of hours.entries()) {
        await tx`insert into private.usage_hourly (hour, user_id, key_id, model, channel_id, requests, errors, prompt_tokens,
                                                   completion_tokens, cost_micros, latency_ms_sum)
                 values (${h}, ${-1 - i}, 0, 'purge-test', 0, 1, 0, 1, 1, 1, 1)`;
        await tx`insert into private.usage_by_dim (period, at, dim, model, requests, errors, tokens, cost_micros,
                                                   cache_exact, cache_semantic, cache_miss, cache_bypass)
                 values ('hour', ${h}, 'model', 'purge-test', 1, 0, 1, 1, 0, 0, 0, 0)`;
        await tx`insert into private.latency_hourly (hour, requests, errors) values (${h}, 1, 0) on conflict (hour) do nothing`;
      }
      await tx`select private.history_purge(${now})`;
      const left = await tx`select (select string_agg(to_char(hour at time zone 'UTC', 'MM-DD HH24'), ',' order by hour) from private.usage_hourly where model = 'purge-test') as hourly,
                                   (select count(*)::int from private.usage_by_dim where model = 'purge-test') as dims,
                                   (select count(*)::int from private.latency_hourly where hour < '2031-04-02') as latency_old`;
      expect(left[0].hourly).toBe('04-02 01,04-02 23,05-20 00');
      expect(left[0].dims).toBe(3);
      expect(left[0].latency_old).toBe(0);
    });
  });
});
