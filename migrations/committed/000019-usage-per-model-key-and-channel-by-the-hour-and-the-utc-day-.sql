--! Previous: sha1:cd2f09a555f904f4bcd9acf7e9c75015c61e8ee0
--! Hash: sha1:bb6c523da7a71a1668cb215821378cd9ce818fa9
--! Message: Usage per model, key and channel by the hour and the UTC day, what the dashboard and the cache page read (backfilled once)

-- Issue 21, "every page fast with real traffic", the 7- and 30-day ranges: the dashboard's totals
-- and top lists and the cache page's hit rates read usage per dimension (one row per model, key or
-- channel) by hour, and by UTC day for whole days, instead of the hourly rollup's row per hour and
-- (user, key, model, channel) (measured: 30 days of those at 200k requests a day took 1.5–2.9 s;
-- docs/performance.md). Rebuilt by private.usage_dims_rollup (sql/26_private_jobs.sql) from
-- private.usage_hourly whenever the rollup job rebuilds hours; channel tests are left out.
create table if not exists private.usage_by_dim (
  period         text not null check (period in ('hour', 'day')),
  at             timestamptz not null,           -- the hour, or midnight UTC of the day
  dim            text not null check (dim in ('model', 'key', 'channel')),
  model          text,                           -- set on dim 'model' rows
  key_id         bigint,                         -- set on dim 'key' rows; null: no key
  channel_id     bigint,                         -- set on dim 'channel' rows; null: no channel answered
  requests       bigint not null,
  errors         bigint not null,
  tokens         bigint not null,
  cost_micros    bigint not null,
  cache_exact    bigint not null,
  cache_semantic bigint not null,
  cache_miss     bigint not null,
  cache_bypass   bigint not null
);
create index if not exists usage_by_dim_period_at on private.usage_by_dim (period, at);
alter table private.usage_by_dim enable row level security;

-- Backfill, once: every hour the hourly rollup holds, and every whole UTC day it covers.
insert into private.usage_by_dim (period, at, dim, model, key_id, channel_id, requests, errors, tokens, cost_micros,
                                  cache_exact, cache_semantic, cache_miss, cache_bypass)
select 'hour', u.hour, case grouping(u.model, u.key_id, u.channel_id) when 3 then 'model' when 5 then 'key' else 'channel' end,
       u.model, nullif(u.key_id, 0), nullif(u.channel_id, 0),
       sum(u.requests), sum(u.errors), sum(u.prompt_tokens + u.completion_tokens), sum(u.cost_micros),
       sum(u.cache_exact), sum(u.cache_semantic), sum(u.cache_miss), sum(u.cache_bypass)
  from private.usage_hourly u
 where not exists (select 1 from private.users i where i.id = u.user_id and i.username ~ '^channel-test(\.[0-9]+)?$')
   and not exists (select 1 from private.usage_by_dim)
 group by u.hour, grouping sets ((u.model), (u.key_id), (u.channel_id));
insert into private.usage_by_dim (period, at, dim, model, key_id, channel_id, requests, errors, tokens, cost_micros,
                                  cache_exact, cache_semantic, cache_miss, cache_bypass)
select 'day', date_trunc('day', h.at, 'UTC'), h.dim, h.model, h.key_id, h.channel_id, sum(h.requests), sum(h.errors), sum(h.tokens),
       sum(h.cost_micros), sum(h.cache_exact), sum(h.cache_semantic), sum(h.cache_miss), sum(h.cache_bypass)
  from private.usage_by_dim h
 where h.period = 'hour' and h.at < date_trunc('day', (select max(l.covered_to) from private.latency_hourly l), 'UTC')
   and not exists (select 1 from private.usage_by_dim x where x.period = 'day')
 group by date_trunc('day', h.at, 'UTC'), h.dim, h.model, h.key_id, h.channel_id;
