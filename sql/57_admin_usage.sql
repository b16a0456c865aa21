-- What was served and billed: the request log (with requests in flight), the routing trace, the
-- ledger and receipts, usage by day, user, key, group, model and channel, and the dashboard.
-- Reports read rollups (sql/46_rollups.sql) up to their cut and the log only after it.

create or replace view admin.requests as
  select r.id, r.created_at, r.finished_at, r.status, r.http_status, r.endpoint, r.model, r.upstream_model,
         r.stream, r.user_id, r.key_id, r.group_name, r.channel_id, host(r.client_ip) as client_ip,
         r.prompt_tokens, r.completion_tokens, r.total_tokens, r.usage_source, r.reserved_micros, r.cost_micros,
         r.ttfb_ms, r.latency_ms, r.error_code, r.error_message, r.route_plan, r.attempts,
         r.cached_tokens, r.cache_write_tokens, r.reserved_tokens, r.cache, r.cache_similarity, r.cache_entry_id,
         r.embedding_tokens, r.text_altered, r.units
    from private.requests r
  union all
  -- In flight: admitted and not settled yet (status 'pending'; settlement moves it to the log).
  select a.id, a.created_at, null, 'pending', null, a.endpoint, a.model, null,
         a.stream, a.user_id, a.key_id, a.group_name, null, host(a.client_ip),
         a.prompt_tokens, null, null, null, a.reserved_micros, null,
         null, null, null, null, a.route_plan, null,
         null, null, a.reserved_tokens, a.cache, a.cache_similarity, a.cache_entry_id,
         null, false, null
    from private.admissions a;

-- admin.request_routes: the routing trace, one row per step of each request.
create or replace view admin.request_routes as
  select r.id as request_id, r.created_at, r.model, r.status as request_status, r.http_status as request_http_status,
         t.step, t.kind, t.channel_id, ch.name as channel_name, ch.type as channel_type, t.upstream_model,
         t.key_ordinal, t.status, t.ms, t.detail,
         (t.kind = 'attempt' and t.channel_id = r.channel_id and r.status = 'ok'
          and t.step = max(t.step) filter (where t.kind = 'attempt') over (partition by r.id)) as served,
         t.fallback
    from admin.requests r   -- in-flight requests too: their plan is known at admission
    cross join lateral (
      -- 1. channels the plan skipped, and why
      select s.ord::integer as step, 'skipped'::text as kind, (s.e ->> 'channel_id')::bigint as channel_id,
             null::text as upstream_model, null::integer as key_ordinal, null::integer as status, null::integer as ms,
             concat_ws(': ', s.e ->> 'reason', s.e ->> 'detail') as detail, s.e ->> 'fallback' as fallback
        from jsonb_array_elements(coalesce(r.route_plan -> 'skipped', '[]'::jsonb)) with ordinality s(e, ord)
      union all
      -- 2. candidates in the order they were tried (or passed over by the gateway)
      select (jsonb_array_length(coalesce(r.route_plan -> 'skipped', '[]'::jsonb)) + a.ord)::integer,
             case when coalesce((a.e ->> 'skipped')::boolean, false) then 'passed_over' else 'attempt' end,
             (a.e ->> 'channel_id')::bigint,
             (select c.e ->> 'model' from jsonb_array_elements(r.route_plan -> 'candidates') c(e)
               where c.e ->> 'channel_id' = a.e ->> 'channel_id'
                 and c.e ->> 'fallback' is not distinct from a.e ->> 'fallback' limit 1),
             (a.e ->> 'key')::integer, (a.e ->> 'status')::integer, (a.e ->> 'ms')::integer,
             concat_ws('; ', a.e ->> 'error', 'mapped from ' || (a.e ->> 'mapped_from')), a.e ->> 'fallback'
        from jsonb_array_elements(case when jsonb_typeof(r.attempts) = 'array' then r.attempts else '[]'::jsonb end)
             with ordinality a(e, ord)
      union all
      -- 3. candidates never reached (an earlier one answered, or the deadline or MaxAttempts hit)
      select (jsonb_array_length(coalesce(r.route_plan -> 'skipped', '[]'::jsonb))
               + coalesce(jsonb_array_length(case when jsonb_typeof(r.attempts) = 'array' then r.attempts end), 0) + c.ord)::integer,
             'not_tried', (c.e ->> 'channel_id')::bigint, c.e ->> 'model', (c.e ->> 'key_ordinal')::integer,
             null, null, null, c.e ->> 'fallback'
        from jsonb_array_elements(coalesce(r.route_plan -> 'candidates', '[]'::jsonb)) with ordinality c(e, ord)
       where r.status <> 'pending'
         and not exists (select 1 from jsonb_array_elements(case when jsonb_typeof(r.attempts) = 'array' then r.attempts else '[]'::jsonb end) a(e)
                          where a.e ->> 'channel_id' = c.e ->> 'channel_id'
                            and a.e ->> 'fallback' is not distinct from c.e ->> 'fallback')
    ) t
    left join private.channels ch on ch.id = t.channel_id;

comment on view admin.request_routes is
  'The routing trace: for each request, the channels the plan skipped (and why), each attempt in order (status, ms, error, key), the candidates never tried, and which attempt served it; fallback names the fallback model a step serves (null: the model asked for).';

create or replace view admin.ledger as
  select l.id, l.request_id, l.created_at, l.user_id, l.key_id, l.channel_id, l.model, l.prompt_tokens,
         l.completion_tokens, l.input_price, l.output_price, l.per_call_price, l.group_multiplier,
         l.amount_micros, l.usage_source, l.abort_policy, l.cached_tokens, l.cache_write_tokens,
         l.cached_input_price, l.cache_write_price, l.channel_multiplier, l.group_name, l.overrun_micros,
         l.units, l.unit_price   -- a media request's units (images, characters, audio seconds, search units), per 1M units
    from private.ledger l;

-- Spend by dimension and UTC day, from the ledger.
create or replace view admin.usage_daily as
  select (l.created_at at time zone 'UTC')::date as day, l.user_id, l.key_id, l.group_name, l.model, l.channel_id,
         count(*) as requests, sum(l.prompt_tokens) as prompt_tokens, sum(l.completion_tokens) as completion_tokens,
         sum(l.amount_micros) as amount_micros
    from private.ledger l
   group by 1, 2, 3, 4, 5, 6;

create or replace view admin.usage_by_user as
  select l.user_id, u.username, count(*) as requests, sum(l.prompt_tokens + l.completion_tokens) as tokens,
         sum(l.amount_micros) as amount_micros
    from private.ledger l join private.users u on u.id = l.user_id
   where not exists (select 1 from admin.internal_users i where i.id = l.user_id)   -- channel tests are not spend
   group by 1, 2;

create or replace view admin.usage_by_key as
  select l.key_id, k.key_prefix, k.name, k.user_id, count(*) as requests,
         sum(l.prompt_tokens + l.completion_tokens) as tokens, sum(l.amount_micros) as amount_micros
    from private.ledger l join private.api_keys k on k.id = l.key_id
   where not exists (select 1 from admin.internal_users i where i.id = k.user_id)
   group by 1, 2, 3, 4;

create or replace view admin.usage_by_group as
  select l.group_name, count(*) as requests, sum(l.prompt_tokens + l.completion_tokens) as tokens,
         sum(l.amount_micros) as amount_micros
    from private.ledger l group by 1;

create or replace view admin.usage_by_model as
  select l.model, count(*) as requests, sum(l.prompt_tokens) as prompt_tokens,
         sum(l.completion_tokens) as completion_tokens, sum(l.amount_micros) as amount_micros
    from private.ledger l group by 1;

create or replace view admin.usage_by_channel as
  select l.channel_id, c.name as channel, count(*) as requests, sum(l.prompt_tokens + l.completion_tokens) as tokens,
         sum(l.amount_micros) as amount_micros
    from private.ledger l left join private.channels c on c.id = l.channel_id group by 1, 2;

-- A request's usage receipt (streams cannot carry it in headers): select * from admin.receipts where request_id = ...
create or replace view admin.receipts as
  select r.id as request_id, r.created_at, r.status, r.model, r.upstream_model, r.channel_id,
         r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cache_write_tokens,
         r.usage_source, r.reserved_micros, r.cost_micros, l.abort_policy, l.input_price, l.output_price,
         l.group_multiplier, l.channel_multiplier, r.units, l.unit_price
    from admin.requests r left join private.ledger l on l.request_id = r.id;   -- in-flight requests too

-- Per hour and dimension; the dashboard filters by hour and sums.
/* why two halves: aggregating the raw log took the dashboard 32 s at 2M requests a day. Hours the
   rollup job (private.usage_rollup, every 5 minutes) finished come from its table; the hour of its
   cut (latency_hourly.covered_to) and later ones from the log, through its primary key
   (created_at, id). The boundary is read in the same statement, so no hour is counted twice or
   missed, and without any rollup (a fresh database, a stopped job) it is all the log: exact either
   way. The dashboard itself reads finer (admin.dashboard); these views are for psql and reports. */
create or replace view admin.usage_hourly as
  with b as (select least(date_trunc('hour', coalesce(max(l.covered_to), '-infinity')), date_trunc('hour', now())) as since
               from (select l.covered_to from private.latency_hourly l order by l.hour desc limit 1) l)
  select u.hour, u.model, nullif(u.user_id, 0) as user_id, nullif(u.key_id, 0) as key_id, nullif(u.channel_id, 0) as channel_id,
         u.requests::bigint as requests, u.errors::bigint as errors, u.prompt_tokens, u.completion_tokens,
         u.cost_micros::numeric as cost_micros
    from private.usage_hourly u
   where u.hour < (select since from b)
     and not exists (select 1 from admin.internal_users i where i.id = u.user_id)   -- channel tests are not traffic
  union all
  select date_trunc('hour', r.created_at), r.model, r.user_id, r.key_id, r.channel_id,
         count(*),
         count(*) filter (where r.status in ('error', 'aborted', 'refused')),
         coalesce(sum(r.prompt_tokens), 0),
         coalesce(sum(r.completion_tokens), 0),
         coalesce(sum(r.cost_micros), 0)
    from private.requests r
   where r.created_at >= (select since from b)
     and not exists (select 1 from admin.internal_users i where i.id = r.user_id)
   group by 1, 2, 3, 4, 5;

-- Per hour: the exact p50/p95 of each hour, halves as in admin.usage_hourly.
create or replace view admin.latency_hourly as
  with b as (select least(date_trunc('hour', coalesce(max(l.covered_to), '-infinity')), date_trunc('hour', now())) as since
               from (select l.covered_to from private.latency_hourly l order by l.hour desc limit 1) l)
  select l.hour, l.requests::bigint as requests, l.errors::bigint as errors, l.p50_ms, l.p95_ms
    from private.latency_hourly l
   where l.hour < (select since from b) and l.requests > 0
  union all
  select date_trunc('hour', r.created_at), count(*),
         count(*) filter (where r.status in ('error', 'aborted', 'refused')),
         percentile_cont(0.5) within group (order by r.latency_ms),
         percentile_cont(0.95) within group (order by r.latency_ms)
    from private.requests r
   where r.created_at >= (select since from b)
     and not exists (select 1 from admin.internal_users i where i.id = r.user_id)
   group by 1;

-- admin.dashboard: everything the panel's home shows for the hours from p_since's on, in one call:
-- totals, top 5 models, keys and channels, the hourly series, p50/p95 and the cache hit rate.
-- Channel tests excluded. Called by admin/src/routes/+page.server.ts.
/* why: aggregating the raw log took this page 32 s at 2M requests a day. Rolled-up data is read up
   to the rollup's cut (private.usage_rollup: the oldest request in flight when it ran, minutes
   ago), the log only after it, once, with the cut as a value the planner sees. Totals and top
   lists are one grouping-sets pass. Latency: complete hours show their exact p50/p95; the hour in
   progress and the range's p50/p95 come from summed histograms (5%-wide log-spaced buckets,
   private.latency_bucket), within 2.5% of the exact value, since percentiles cannot be combined
   from parts. jit is off: compiling costs ~350 ms, more than these aggregations take. */
create or replace function admin.dashboard(p_since timestamptz)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  v_from timestamptz := date_trunc('hour', p_since);
  v_cut timestamptz;
  v_day_from timestamptz;   -- [v_day_from, v_day_to): whole UTC days read by the day
  v_day_to timestamptz;
  v_out jsonb;
begin
  select l.covered_to into v_cut from private.latency_hourly l order by l.hour desc limit 1;
  -- No rollup yet: all from the log. A cut ahead of the clock (a run with a future "now"): from this hour.
  v_cut := greatest(case when v_cut > now() then date_trunc('hour', now()) else coalesce(v_cut, '-infinity') end, v_from);
  -- The range's whole days that private.usage_by_dim holds by the day (up to the last complete day).
  v_day_from := date_trunc('day', v_from + interval '24 hours' - interval '1 microsecond', 'UTC');
  select d.at + interval '24 hours' into v_day_to from private.usage_by_dim d where d.period = 'day' order by d.period, d.at desc limit 1;
  v_day_to := least(coalesce(v_day_to, '-infinity'), date_trunc('day', v_cut, 'UTC'));
  if v_day_to <= v_day_from then
    v_day_from := '-infinity';
    v_day_to := '-infinity';
  end if;
  with raw as materialized (
    select date_trunc('hour', r.created_at) as hour, r.model, r.key_id, r.channel_id, r.latency_ms, r.cache,
           (r.status in ('error', 'aborted', 'refused'))::integer as errors,
           coalesce(r.prompt_tokens, 0) + coalesce(r.completion_tokens, 0) as tokens, coalesce(r.cost_micros, 0) as cost_micros
      from private.requests r
     where r.created_at >= v_cut and not exists (select 1 from admin.internal_users i where i.id = r.user_id)
  ), usage as (   -- per model, key and channel: whole days, the other hours up to the cut, then the log after it
    select d.dim, d.model, d.key_id, d.channel_id, d.requests, d.errors, d.tokens, d.cost_micros,
           d.cache_exact + d.cache_semantic as hits, d.cache_exact + d.cache_semantic + d.cache_miss + d.cache_bypass as cacheable
      from private.usage_by_dim d
     where (d.period = 'day' and d.at >= v_day_from and d.at < v_day_to)
        or (d.period = 'hour' and ((d.at >= v_from and d.at < least(v_day_from, v_cut)) or (d.at >= greatest(v_day_to, v_from) and d.at < v_cut)))
    union all
    select m.dim, case m.dim when 'model' then x.model end, case m.dim when 'key' then x.key_id end,
           case m.dim when 'channel' then x.channel_id end, 1, x.errors, x.tokens, x.cost_micros,
           (x.cache in ('exact', 'semantic'))::integer, (x.cache is not null)::integer
      from raw x cross join (values ('model'), ('key'), ('channel')) m(dim)
  ), agg as (   -- each top list's candidates (g: 3 models, 5 keys, 6 channels, as grouping() numbers them) and the totals (7)
    select case u.dim when 'model' then 3 when 'key' then 5 else 6 end as g, u.model, u.key_id, u.channel_id,
           sum(u.requests) as requests, sum(u.errors) as errors, sum(u.tokens) as tokens, sum(u.cost_micros) as cost_micros,
           sum(u.hits) as hits, sum(u.cacheable) as cacheable
      from usage u group by 1, 2, 3, 4
    union all
    select 7, null, null, null, sum(u.requests), sum(u.errors), sum(u.tokens), sum(u.cost_micros), sum(u.hits), sum(u.cacheable)
      from usage u where u.dim = 'model'
  ), hb as (    -- latency histogram per hour: rolled up, then the log after the cut
    select l.hour, x.i::integer as i, x.n::bigint as n
      from private.latency_hourly l cross join lateral unnest(l.buckets) with ordinality x(n, i)
     where l.hour >= v_from and l.hour < v_cut and x.n > 0
    union all
    select r.hour, private.latency_bucket(r.latency_ms), 1 from raw r where r.latency_ms is not null
  ), cum as (   -- cumulative counts for the whole range (hour null) and per hour in progress
    select null::timestamptz as hour, h.i, sum(sum(h.n)) over (order by h.i) as below, sum(sum(h.n)) over () as total
      from hb h group by h.i
    union all
    select h.hour, h.i, sum(sum(h.n)) over (partition by h.hour order by h.i), sum(sum(h.n)) over (partition by h.hour)
      from hb h where h.hour >= date_trunc('hour', v_cut) group by h.hour, h.i
  ), pct as (
    select c.hour, round(exp((min(c.i) filter (where c.below >= 0.5 * c.total) - 0.5) * ln(1.05)) - 1) as p50,
           round(exp((min(c.i) filter (where c.below >= 0.95 * c.total) - 0.5) * ln(1.05)) - 1) as p95
      from cum c group by 1
  )
  select jsonb_build_object(
    'totals', (select jsonb_build_object('requests', coalesce(requests, 0), 'errors', coalesce(errors, 0), 'tokens', coalesce(tokens, 0),
                                         'cost_micros', coalesce(cost_micros, 0), 'cache_rate', hits::float8 / nullif(cacheable, 0))
                 from agg where g = 7),
    'models', (select coalesce(jsonb_agg(t order by t.requests desc, t.id), '[]') from (
                 select model as id, requests, tokens, cost_micros from agg where g = 3 order by requests desc, model limit 5) t),
    'keys', (select coalesce(jsonb_agg(t order by t.requests desc, t.id), '[]') from (
               select key_id as id, requests, tokens, cost_micros from agg where g = 5 and key_id is not null order by requests desc, key_id limit 5) t),
    'channels', (select coalesce(jsonb_agg(t order by t.requests desc, t.id), '[]') from (
                   select channel_id as id, requests, tokens, cost_micros from agg where g = 6 and channel_id is not null
                    order by requests desc, channel_id limit 5) t),
    'series', (select coalesce(jsonb_agg(s order by s.hour), '[]') from (
                 select l.hour, l.requests, l.errors, l.p50_ms, l.p95_ms from private.latency_hourly l   -- complete hours: exact
                  where l.hour >= v_from and l.hour + interval '1 hour' <= v_cut and l.requests > 0
                 union all
                 select o.hour, sum(o.requests), sum(o.errors), p.p50, p.p95
                   from (select l.hour, l.requests, l.errors from private.latency_hourly l
                          where l.hour >= date_trunc('hour', v_cut) and l.hour < v_cut
                         union all
                         select x.hour, 1, x.errors from raw x) o
                   left join pct p on p.hour = o.hour group by o.hour, p.p50, p.p95 having sum(o.requests) > 0) s),
    'p50_ms', (select p50 from pct where hour is null),
    'p95_ms', (select p95 from pct where hour is null))
  into v_out;
  return v_out;
end
$$;

comment on function admin.dashboard(timestamptz) is
  E'The dashboard from p_since''s hour on: totals (with cache_rate), top 5 models, keys and channels, the hourly series (exact p50/p95 for complete hours, within 2.5% for the hour in progress) and p50_ms/p95_ms of the range (within 2.5%). Per model, key and channel (private.usage_by_dim): whole UTC days by the day, other hours by the hour up to the rollup''s cut, the request log after; channel tests excluded.';
