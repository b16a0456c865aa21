--! Previous: sha1:2786a85db2f40878d5ed81bf2ded9d3042830112
--! Hash: sha1:5976729467c8ce65ccba2e2655d101ade10f23bf
--! Message: rollups the admin pages read: cache outcomes per usage_hourly row, private.latency_hourly with mergeable histograms and its watermark

-- Issue 21, "every page fast with real traffic": what the dashboard and the cache page read instead
-- of aggregating the raw request log (see sql/26_private_jobs.sql, sql/50_admin_ui.sql).

-- Cache outcomes per rollup row, so hit rates come from the rollup too.
alter table private.usage_hourly add column if not exists cache_exact    integer not null default 0;
alter table private.usage_hourly add column if not exists cache_semantic integer not null default 0;
alter table private.usage_hourly add column if not exists cache_miss     integer not null default 0;
alter table private.usage_hourly add column if not exists cache_bypass   integer not null default 0;

-- Latency per hour over all traffic (channel tests excluded): the exact p50/p95 of the hour, and a
-- histogram of log-spaced buckets (bucket i = latencies in [1.05^(i-1) - 1, 1.05^i - 1) ms) that
-- hours can be summed over, because percentiles of a range cannot be combined from hourly ones.
create table if not exists private.latency_hourly (
  hour     timestamptz primary key,
  requests integer not null,
  errors   integer not null,
  p50_ms   double precision,
  p95_ms   double precision,
  buckets  integer[] not null default '{}'
);
alter table private.latency_hourly enable row level security;

-- Backfill: the rollup job rebuilds only its last hours, so hours rolled up before these columns
-- existed get their cache counts here, once (bounded by the log's retention).
update private.usage_hourly u
   set cache_exact = r.e, cache_semantic = r.s, cache_miss = r.m, cache_bypass = r.b
  from (select date_trunc('hour', q.created_at) as hour, coalesce(q.user_id, 0) as user_id, coalesce(q.key_id, 0) as key_id,
               q.model, coalesce(q.channel_id, 0) as channel_id,
               count(*) filter (where q.cache = 'exact') as e, count(*) filter (where q.cache = 'semantic') as s,
               count(*) filter (where q.cache = 'miss') as m, count(*) filter (where q.cache = 'bypass') as b
          from private.requests q where q.cache is not null group by 1, 2, 3, 4, 5) r
 where u.hour = r.hour and u.user_id = r.user_id and u.key_id = r.key_id and u.model = r.model and u.channel_id = r.channel_id
   and (u.cache_exact, u.cache_semantic, u.cache_miss, u.cache_bypass) = (0, 0, 0, 0);

-- The rollup's watermark: the hour's requests created before covered_to are in the rollup (an hour
-- rolled up whole has hour + 1 hour). The job rolls up the current hour up to the oldest request
-- still in flight, so the dashboard reads the log only after that: minutes, not up to an hour.
alter table private.latency_hourly add column if not exists covered_to timestamptz;
update private.latency_hourly set covered_to = hour + interval '1 hour' where covered_to is null;
