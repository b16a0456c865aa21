-- Rollups the reports read instead of the raw request log: hourly usage per user, key, model and
-- channel (private.usage_hourly) and exact latency percentiles (private.latency_hourly), up to the
-- cut (the oldest request in flight); then usage per model, key and channel by the hour and by the
-- UTC day (private.usage_by_dim), what the dashboard and the cache page read. Run by the
-- elygate.rollup job (sql/47_jobs.sql).

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
