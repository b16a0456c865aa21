-- Self-maintenance: named, idempotent jobs; each is a plain function of "now" that tests call
-- directly. pg_cron runs them inside PostgreSQL (sql/90_cron.sql schedules the registry); without
-- pg_cron, the gateway runs the ones that are due through gateway.maintenance_run(), under an
-- advisory lock so that N gateways run each job once. Every run, by either runner, is logged in
-- private.job_runs, which admin.jobs reads.

-- private.latency_bucket: the histogram bucket of a latency, log-spaced by 5% (bucket i holds
-- [1.05^(i-1) - 1, 1.05^i - 1) ms; 10 minutes is bucket 273). Its midpoint stands for it within 2.5%.
create or replace function private.latency_bucket(p_ms integer)
returns integer
language sql immutable   -- no "set search_path": that would stop it being inlined (called per row)
as $$ select 1 + floor(ln(1 + greatest(p_ms, 0)) / ln(1.05))::integer $$;
comment on function private.latency_bucket(integer) is
  E'The 1-based bucket of private.latency_hourly.buckets a latency in ms falls into (log-spaced, 5% wide).';

-- private.latency_rollup: rebuilds private.latency_hourly for hours [p_from, p_to], requests created
-- before p_cut: each hour's exact p50/p95 and its histogram, over all traffic except the panel's
-- channel tests (as the dashboard), and how far it got (covered_to). Called by private.usage_rollup.
create or replace function private.latency_rollup(p_from timestamptz, p_to timestamptz, p_cut timestamptz)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_rows integer;
begin
  delete from private.latency_hourly where hour >= p_from and hour <= p_to;
  with r as (
    select date_trunc('hour', q.created_at) as hour, q.status, q.latency_ms
      from private.requests q
     where q.created_at >= p_from and q.created_at < least(p_to + interval '1 hour', p_cut)
       and not exists (select 1 from admin.internal_users i where i.id = q.user_id)
  ), counts as (
    select r.hour, private.latency_bucket(r.latency_ms) as i, count(*)::integer as n
      from r where r.latency_ms is not null group by 1, 2
  ), hist as (   -- dense arrays: bucket i at index i, zeros between
    select m.hour, array_agg(coalesce(c.n, 0) order by g.i) as buckets
      from (select hour, max(i) as top from counts group by 1) m
      cross join lateral generate_series(1, m.top) g(i)
      left join counts c on c.hour = m.hour and c.i = g.i
     group by 1
  ), hours as (
    select r.hour, count(*)::integer as requests,
           count(*) filter (where r.status in ('error', 'aborted', 'refused'))::integer as errors,
           percentile_cont(0.5) within group (order by r.latency_ms) as p50,
           percentile_cont(0.95) within group (order by r.latency_ms) as p95
      from r group by 1
  )
  insert into private.latency_hourly (hour, requests, errors, p50_ms, p95_ms, buckets, covered_to)
  select h.hour, h.requests, h.errors, h.p50, h.p95, coalesce(x.buckets, '{}'), least(h.hour + interval '1 hour', p_cut)
    from hours h left join hist x on x.hour = h.hour;
  get diagnostics v_rows = row_count;
  -- Hours without traffic get an empty row: they are rolled up too (see the backfill in usage_rollup);
  -- covered_to may then precede the hour: the cut, where the readers switch to the log.
  insert into private.latency_hourly (hour, requests, errors, covered_to)
  select g, 0, 0, least(g + interval '1 hour', p_cut) from generate_series(date_trunc('hour', p_from), date_trunc('hour', p_to), interval '1 hour') g
  on conflict (hour) do nothing;
  return v_rows;
end
$$;
comment on function private.latency_rollup(timestamptz, timestamptz, timestamptz) is
  E'Rebuilds private.latency_hourly (exact hourly p50/p95, mergeable latency histogram, covered_to) for the hours from p_from to p_to, requests created before p_cut.';

-- private.usage_rollup: hourly usage per user, key, model and channel, from the request log.
-- Recomputes the current and the previous hour (late settlements land there) and backfills any
-- hour after the last one rolled up, at most 48 per run. The current hour is rolled up to the
-- oldest request still in flight (the cut, kept as private.latency_hourly.covered_to): the
-- dashboard reads these tables up to the cut and the log after it (admin.dashboard).
/* why the cut: a request is written to the log when it finishes, with created_at = its admission.
   Every request created before the oldest admission still open (private.admissions) is already in
   the log, so rolling up to there misses nothing that could arrive later; the minute's margin
   covers refusals, which are logged directly with their transaction's start time. */
create or replace function private.usage_rollup(p_now timestamptz default now())
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_last timestamptz;
  v_from timestamptz;
  v_to timestamptz := date_trunc('hour', p_now);
  v_rows integer;
  v_backfill timestamptz[];
  v_cut timestamptz;
  v_dims integer;
begin
  if not pg_try_advisory_xact_lock(hashtext('private.usage_rollup')) then
    return jsonb_build_object('skipped', 'another run holds the lock');
  end if;
  select max(hour) into v_last from private.usage_hourly;
  select least(p_now - interval '1 minute', min(a.created_at)) into v_cut from private.admissions a;
  v_from := greatest(least(coalesce(v_last, v_to - interval '47 hours'), v_to - interval '1 hour'), v_to - interval '47 hours');
  -- A request open for over an hour puts the cut before v_from: recompute from the cut's hour, so
  -- no hour keeps rows from after the cut (the readers take those from the log).
  v_from := greatest(least(v_from, date_trunc('hour', v_cut)), v_to - interval '47 hours');
  v_cut := greatest(v_cut, v_from);
  delete from private.usage_hourly where hour >= v_from and hour <= v_to;
  insert into private.usage_hourly (hour, user_id, key_id, model, channel_id, requests, errors, prompt_tokens,
                                    completion_tokens, cost_micros, latency_ms_sum, latency_p50_ms, latency_p95_ms,
                                    cache_exact, cache_semantic, cache_miss, cache_bypass)
  select date_trunc('hour', r.created_at), coalesce(r.user_id, 0), coalesce(r.key_id, 0), r.model, coalesce(r.channel_id, 0),
         count(*), count(*) filter (where r.status in ('error', 'aborted', 'refused')),   -- the dashboard's "errors"
         coalesce(sum(r.prompt_tokens), 0), coalesce(sum(r.completion_tokens), 0), coalesce(sum(r.cost_micros), 0),
         coalesce(sum(r.latency_ms), 0),
         percentile_disc(0.5) within group (order by r.latency_ms),
         percentile_disc(0.95) within group (order by r.latency_ms),
         count(*) filter (where r.cache = 'exact'), count(*) filter (where r.cache = 'semantic'),
         count(*) filter (where r.cache = 'miss'), count(*) filter (where r.cache = 'bypass')
    from private.requests r
   where r.created_at >= v_from and r.created_at < least(v_to + interval '1 hour', v_cut)
   group by 1, 2, 3, 4, 5;
  get diagnostics v_rows = row_count;
  perform private.latency_rollup(v_from, v_to, v_cut);
  v_dims := private.usage_dims_rollup(v_from, v_to, v_cut);
  /* why: hours rolled up before private.latency_hourly existed (an upgrade) have usage and no
     latency row; fill up to 48 of them per run, newest first, until none is left. */
  select array_agg(h.hour) into v_backfill
    from (select distinct u.hour from private.usage_hourly u
           where u.hour < v_from and not exists (select 1 from private.latency_hourly l where l.hour = u.hour)
           order by u.hour desc limit 48) h;
  if v_backfill is not null then
    perform private.latency_rollup(b, b, b + interval '1 hour') from unnest(v_backfill) b;
  end if;
  return jsonb_build_object('from', v_from, 'to', v_to, 'cut', v_cut, 'rows', v_rows, 'dim_rows', v_dims,
                            'latency_backfilled', coalesce(cardinality(v_backfill), 0));
end
$$;
comment on function private.usage_rollup(timestamptz) is
  E'Rebuilds private.usage_hourly and private.latency_hourly for the current and previous hour (and any missed hour, up to 48), and private.usage_by_dim for those hours and the days that became complete. Idempotent.';

-- private.usage_dims_rollup: rebuilds private.usage_by_dim from private.usage_hourly: one row per
-- model, key and channel for each hour from p_from's to p_to's, and for each whole UTC day from
-- p_from's day up to p_cut's (those days are complete: every hour of them is rolled up), channel
-- tests left out (as the dashboard does). Called by private.usage_rollup with the hours it rebuilt,
-- so a day is summed by the first run whose cut passes its midnight (and again if its hours are
-- rebuilt); most runs rebuild two hours and no day.
create or replace function private.usage_dims_rollup(p_from timestamptz, p_to timestamptz, p_cut timestamptz)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_first timestamptz := date_trunc('day', p_from, 'UTC');
  v_last timestamptz := date_trunc('day', p_cut, 'UTC');
  v_rows integer;
  v_days integer := 0;
begin
  delete from private.usage_by_dim where period = 'hour' and at >= date_trunc('hour', p_from) and at <= p_to;
  insert into private.usage_by_dim (period, at, dim, model, key_id, channel_id, requests, errors, tokens, cost_micros,
                                    cache_exact, cache_semantic, cache_miss, cache_bypass)
  select 'hour', u.hour, case grouping(u.model, u.key_id, u.channel_id) when 3 then 'model' when 5 then 'key' else 'channel' end,
         u.model, nullif(u.key_id, 0), nullif(u.channel_id, 0),
         sum(u.requests), sum(u.errors), sum(u.prompt_tokens + u.completion_tokens), sum(u.cost_micros),
         sum(u.cache_exact), sum(u.cache_semantic), sum(u.cache_miss), sum(u.cache_bypass)
    from private.usage_hourly u
   where u.hour >= date_trunc('hour', p_from) and u.hour <= p_to
     and not exists (select 1 from private.users i where i.id = u.user_id and private.user_is_internal(i.username))
   group by u.hour, grouping sets ((u.model), (u.key_id), (u.channel_id));
  get diagnostics v_rows = row_count;
  if v_first < v_last then
    delete from private.usage_by_dim where period = 'day' and at >= v_first and at < v_last;
    insert into private.usage_by_dim (period, at, dim, model, key_id, channel_id, requests, errors, tokens, cost_micros,
                                      cache_exact, cache_semantic, cache_miss, cache_bypass)
    select 'day', date_trunc('day', h.at, 'UTC'), h.dim, h.model, h.key_id, h.channel_id, sum(h.requests), sum(h.errors), sum(h.tokens),
           sum(h.cost_micros), sum(h.cache_exact), sum(h.cache_semantic), sum(h.cache_miss), sum(h.cache_bypass)
      from private.usage_by_dim h
     where h.period = 'hour' and h.at >= v_first and h.at < v_last
     group by date_trunc('day', h.at, 'UTC'), h.dim, h.model, h.key_id, h.channel_id;
    get diagnostics v_days = row_count;
  end if;
  return v_rows + v_days;
end
$$;
comment on function private.usage_dims_rollup(timestamptz, timestamptz, timestamptz) is
  E'Rebuilds private.usage_by_dim (one row per model, key and channel) for the hours p_from..p_to and for the complete UTC days from p_from''s day to p_cut''s, from private.usage_hourly; channel tests left out. Called by private.usage_rollup.';

-- private.history_purge: keeps the run logs bounded (pg_cron's and ours), in bounded batches.
create or replace function private.history_purge(p_now timestamptz default now())
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_cron integer := 0;
  v_ours integer;
begin
  if to_regclass('cron.job_run_details') is not null then
    execute 'delete from cron.job_run_details where runid in (select runid from cron.job_run_details
              where end_time < $1 - interval ''7 days'' limit 50000)' using p_now;
    get diagnostics v_cron = row_count;
  end if;
  delete from private.job_runs where id in (select id from private.job_runs
                                             where started_at < p_now - interval '30 days' limit 50000);
  get diagnostics v_ours = row_count;
  return jsonb_build_object('cron_job_run_details', v_cron, 'job_runs', v_ours);
end
$$;
comment on function private.history_purge(timestamptz) is
  E'Deletes cron.job_run_details older than 7 days and private.job_runs older than 30 days, 50,000 rows per run each.';

-- The registry. Re-declared on every deploy; a job added here is scheduled by sql/90_cron.sql.
insert into private.jobs (name, cron_schedule, every, command, description)
values
  ('elygate.partitions', '7 * * * *', '1 hour', 'private.partitions_maintain($now)',
   'Creates request-log partitions ahead and drops those past LogRetentionDays.'),
  ('elygate.reaper', '* * * * *', '1 minute', 'private.reservations_reap($now)',
   'Settles requests whose gateway never reported back, at their reservation.'),
  ('elygate.rollup', '*/5 * * * *', '5 minutes', 'private.usage_rollup($now)',
   'Hourly usage rollups for dashboards.'),
  ('elygate.history_purge', '17 3 * * *', '1 day', 'private.history_purge($now)',
   'Bounds cron.job_run_details and private.job_runs.')
on conflict (name) do update
  set cron_schedule = excluded.cron_schedule, every = excluded.every, command = excluded.command,
      description = excluded.description;

-- private.job_run: runs one registered job and logs the run, whatever its outcome.
create or replace function private.job_run(p_name text, p_runner text default 'manual', p_now timestamptz default now())
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_job private.jobs;
  v_run bigint;
  v_result jsonb;
begin
  select * into v_job from private.jobs where name = p_name;
  if not found then
    raise exception using errcode = 'BADIN', message = format('No job named "%s" (see admin.jobs).', p_name);
  end if;
  insert into private.job_runs (job, runner, started_at, status) values (p_name, p_runner, clock_timestamp(), 'running')
  returning id into v_run;
  begin
    execute 'select to_jsonb(' || replace(v_job.command, '$now', quote_literal(p_now) || '::timestamptz') || ')' into v_result;
    update private.job_runs set status = 'succeeded', result = v_result, finished_at = clock_timestamp() where id = v_run;
  exception when others then
    update private.job_runs set status = 'failed', error = sqlerrm, finished_at = clock_timestamp() where id = v_run;
    v_result := jsonb_build_object('error', sqlerrm);
    -- The alert goes out with the run's record, in this transaction (sql/29_private_events.sql).
    perform private.event_emit('job.failed', jsonb_build_object('job', p_name, 'run_id', v_run, 'runner', p_runner,
                                                                'error', sqlerrm, 'at', p_now));
  end;
  return v_result;
end
$$;
comment on function private.job_run(text, text, timestamptz) is
  E'Runs a registered job (private.jobs) with the given "now", logging start, end, status and error in private.job_runs.';

-- gateway.maintenance_run: the fallback runner. Does nothing where pg_cron runs the jobs; elsewhere
-- runs every job that is due, once across all gateways (advisory lock).
create or replace function gateway.maintenance_run()
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_job record;
  v_ran jsonb := '[]'::jsonb;
begin
  if exists (select 1 from pg_extension where extname = 'pg_cron') then
    return jsonb_build_object('runner', 'pg_cron');
  end if;
  if not pg_try_advisory_xact_lock(hashtext('gateway.maintenance_run')) then
    return jsonb_build_object('runner', 'gateway', 'skipped', 'another gateway is running maintenance');
  end if;
  for v_job in
    select j.name from private.jobs j
     where not exists (select 1 from private.job_runs r
                        where r.job = j.name and r.status in ('succeeded', 'failed')
                          and r.started_at > now() - j.every + interval '1 second')
     order by j.name
  loop
    perform private.job_run(v_job.name, 'gateway', now());
    v_ran := v_ran || to_jsonb(v_job.name);
  end loop;
  return jsonb_build_object('runner', 'gateway', 'ran', v_ran);
end
$$;
comment on function gateway.maintenance_run() is
  E'Fallback for servers without pg_cron: runs the maintenance jobs that are due, once across all gateways. Returns {"runner": "pg_cron"} where pg_cron does it.';
