--! Previous: sha1:e4b7d0eaea8825ddd19ce9f977565bf6ee3b0b23
--! Hash: sha1:6411d90fccc2a43b88fac687d59385693e9f939b
--! Message: routing: breaker window, breaker state, channel probes, key status reason, key rotation sequence

-- Routing, circuit breaker and health probes (issue #4): state only.

-- The breaker's sliding window: attempt outcomes per channel (and key) in 10-second buckets, so
-- a batch of outcomes is one upsert per bucket touched, not one row per attempt.
create table if not exists private.channel_outcomes (
  channel_id   bigint not null references private.channels (id) on delete cascade,
  key_ordinal  integer not null default 0,          -- 0: no key recorded
  bucket       timestamptz not null,
  ok           integer not null default 0,
  failed       integer not null default 0,
  auth_failed  integer not null default 0,          -- 401/403: the key, not the channel
  primary key (channel_id, bucket, key_ordinal)
);
create index if not exists channel_outcomes_bucket_idx on private.channel_outcomes (bucket);

-- Breaker state per channel (a row once the breaker has opened at least once).
create table if not exists private.channel_breakers (
  channel_id      bigint primary key references private.channels (id) on delete cascade,
  state           text not null default 'closed' check (state in ('closed', 'open', 'half_open')),
  opened_at       timestamptz,
  next_probe_at   timestamptz,
  probe_failures  integer not null default 0,
  last_error      text,
  updated_at      timestamptz not null default now()
);

-- Channel tests and health probes: scheduled in SQL, executed by a gateway, results kept here.
create table if not exists private.channel_probes (
  id            bigint generated always as identity primary key,
  channel_id    bigint not null references private.channels (id) on delete cascade,
  kind          text not null check (kind in ('recovery', 'test')),
  model         text not null,
  requested_at  timestamptz not null default now(),
  claimed_at    timestamptz,
  claimed_by    text,
  finished_at   timestamptz,
  ok            boolean,
  http_status   integer,
  ms            integer,
  error         text
);
create index if not exists channel_probes_open_idx on private.channel_probes (requested_at) where finished_at is null;
create index if not exists channel_probes_channel_idx on private.channel_probes (channel_id, requested_at desc);

-- Why a key was disabled (automatically after repeated 401/403, or by hand).
alter table private.channel_keys add column if not exists status_reason text;
alter table private.channel_keys add column if not exists status_changed_at timestamptz;

-- Round-robin key rotation without a hot row: nextval never blocks and is not transactional.
create sequence if not exists private.channel_key_rotation;

alter table private.channel_outcomes enable row level security;
alter table private.channel_breakers enable row level security;
alter table private.channel_probes   enable row level security;
