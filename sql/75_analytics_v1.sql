-- The analytics contract, version 1 (issue 17; docs/analytics.md): documented views for BI tools
-- (Grafana, Metabase, a notebook), read by the role elygate_analytics, which can read nothing else
-- (grants: sql/80_grants.sql). The columns of these views are a contract: they only ever gain
-- columns at the end; anything else is analytics_v2, beside this one.
--
-- Usage views read the hourly rollup (private.usage_hourly, kept by the elygate.rollup job) for
-- every hour before the rollup's cut and the request log only from the cut's hour on (minutes of
-- traffic), as the admin dashboard does, so they stay fast with millions of log rows. The panel's
-- channel tests (admin.internal_users) are not traffic and are left out everywhere.
-- Every view runs with its owner's rights: no function in them may need a grant to the reader
-- (only pg_catalog functions are called).

create or replace view analytics_v1.users as
  select u.id as user_id, u.username, u.display_name, u.group_name, u.role, u.status, u.created_at
    from private.users u
   where not exists (select 1 from admin.internal_users i where i.id = u.id);

comment on view analytics_v1.users is 'Users (the panel''s internal channel-test users left out). Join on user_id.';

create or replace view analytics_v1.keys as
  select k.id as key_id, k.key_prefix, k.name, k.user_id, k.status, k.created_at, k.expires_at, k.revoked_at
    from private.api_keys k
   where not exists (select 1 from admin.internal_users i where i.id = k.user_id);

comment on view analytics_v1.keys is 'Client API keys, by display prefix (never the key or its hash). Join on key_id.';

create or replace view analytics_v1.channels as
  select c.id as channel_id, c.name as channel, c.type, c.status, c.cost_multiplier, c.created_at
    from private.channels c;

comment on view analytics_v1.channels is 'Upstream channels (no URLs, no credentials). Join on channel_id.';

create or replace view analytics_v1.groups as
  select g.name as group_name, g.price_multiplier, g.created_at
    from private.groups g
   where g.name not like 'channel-test.%';

comment on view analytics_v1.groups is 'User groups and their price multipliers.';

create or replace view analytics_v1.models as
  select m.name as model, m.input_price, m.output_price, m.cached_input_price, m.cache_write_price, m.per_call_price, m.updated_at
    from private.models m;

comment on view analytics_v1.models is 'Models and their current prices (micro-USD per 1M tokens; per_call_price in micro-USD per call).';

create or replace view analytics_v1.requests as
  select r.id as request_id, r.created_at, r.finished_at, r.user_id, r.key_id, r.group_name, r.endpoint, r.model,
         r.upstream_model, r.channel_id, r.stream, r.status, r.http_status, r.error_code,
         r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cached_tokens, r.cache_write_tokens,
         r.usage_source, r.reserved_micros, r.cost_micros, r.cache, r.ttfb_ms, r.latency_ms
    from private.requests r
   where not exists (select 1 from admin.internal_users i where i.id = r.user_id);

comment on view analytics_v1.requests is
  'The request log, one row per finished request (kept LogRetentionDays; filter on created_at, the partition key). status: ok, error, aborted, refused, expired. cost_micros in micro-USD. No bodies, addresses or error texts.';

create or replace view analytics_v1.ledger as
  select l.request_id, l.created_at, l.user_id, l.key_id, l.channel_id, l.group_name, l.model,
         l.prompt_tokens, l.completion_tokens, l.cached_tokens, l.cache_write_tokens,
         l.input_price, l.output_price, l.cached_input_price, l.cache_write_price, l.per_call_price,
         l.group_multiplier, l.channel_multiplier, l.amount_micros, l.usage_source, l.cache,
         l.embedding_tokens, l.embedding_micros, l.overrun_micros
    from private.ledger l
   where not exists (select 1 from admin.internal_users i where i.id = l.user_id);

comment on view analytics_v1.ledger is
  'What was billed: one row per settled request (kept for good), with the unit prices and multipliers it was billed at. amount_micros in micro-USD (embedding_micros included); overrun_micros: how much it exceeded the request''s reservation (ReservationPolicy allow).';

create or replace view analytics_v1.usage_hourly as
  with b as (select least(date_trunc('hour', coalesce(max(l.covered_to), '-infinity')), date_trunc('hour', now())) as since
               from (select l.covered_to from private.latency_hourly l order by l.hour desc limit 1) l)
  select x.hour, x.user_id, u.group_name, x.key_id, x.model, x.channel_id, x.requests, x.errors, x.prompt_tokens,
         x.completion_tokens, x.cost_micros, x.latency_ms_sum, x.cache_exact, x.cache_semantic, x.cache_miss, x.cache_bypass
    from (
      select h.hour, nullif(h.user_id, 0) as user_id, nullif(h.key_id, 0) as key_id, h.model, nullif(h.channel_id, 0) as channel_id,
             h.requests::bigint as requests, h.errors::bigint as errors, h.prompt_tokens, h.completion_tokens, h.cost_micros,
             h.latency_ms_sum, h.cache_exact::bigint as cache_exact, h.cache_semantic::bigint as cache_semantic,
             h.cache_miss::bigint as cache_miss, h.cache_bypass::bigint as cache_bypass
        from private.usage_hourly h
       where h.hour < (select since from b)
      union all
      select date_trunc('hour', r.created_at), r.user_id, r.key_id, r.model, r.channel_id, count(*),
             count(*) filter (where r.status in ('error', 'aborted', 'refused')),
             coalesce(sum(r.prompt_tokens), 0), coalesce(sum(r.completion_tokens), 0), coalesce(sum(r.cost_micros), 0),
             coalesce(sum(r.latency_ms), 0),
             count(*) filter (where r.cache = 'exact'), count(*) filter (where r.cache = 'semantic'),
             count(*) filter (where r.cache = 'miss'), count(*) filter (where r.cache = 'bypass')
        from private.requests r
       where r.created_at >= (select since from b)
       group by 1, 2, 3, 4, 5
    ) x
    left join private.users u on u.id = x.user_id
   where not exists (select 1 from admin.internal_users i where i.id = x.user_id);

comment on view analytics_v1.usage_hourly is
  'Requests, errors (error/aborted/refused), tokens, cost (micro-USD), summed latency (ms; divide by requests) and cache outcomes per UTC hour, user, key, model and channel. From the hourly rollup, the last minutes from the log. group_name is the user''s current group.';

create or replace view analytics_v1.usage_daily as
  select (u.hour at time zone 'UTC')::date as day, u.user_id, u.group_name, u.key_id, u.model, u.channel_id,
         sum(u.requests)::bigint as requests, sum(u.errors)::bigint as errors, sum(u.prompt_tokens)::bigint as prompt_tokens,
         sum(u.completion_tokens)::bigint as completion_tokens, sum(u.cost_micros)::bigint as cost_micros,
         sum(u.latency_ms_sum)::bigint as latency_ms_sum, sum(u.cache_exact)::bigint as cache_exact,
         sum(u.cache_semantic)::bigint as cache_semantic, sum(u.cache_miss)::bigint as cache_miss, sum(u.cache_bypass)::bigint as cache_bypass
    from analytics_v1.usage_hourly u
   group by 1, 2, 3, 4, 5, 6;

comment on view analytics_v1.usage_daily is 'analytics_v1.usage_hourly summed per UTC day, user, key, model and channel.';

create or replace view analytics_v1.latency_hourly as
  select a.hour, a.requests, a.errors, a.p50_ms, a.p95_ms from admin.latency_hourly a;

comment on view analytics_v1.latency_hourly is 'Exact p50 and p95 latency (ms) of all traffic per UTC hour, with its requests and errors.';

create or replace view analytics_v1.channel_health as
  select h.id as channel_id, h.name as channel, h.type, h.status, h.status_reason, h.status_changed_at, h.breaker_state,
         h.opened_at as breaker_opened_at, h.next_probe_at, h.window_ok, h.window_failed, h.keys_enabled, h.keys_disabled,
         h.last_probe_at, h.last_probe_ok
    from admin.channel_health h;

comment on view analytics_v1.channel_health is
  'Each channel now: status, circuit breaker state, attempts that succeeded and failed in the breaker window (BreakerWindowSeconds), upstream keys enabled, the last probe.';
