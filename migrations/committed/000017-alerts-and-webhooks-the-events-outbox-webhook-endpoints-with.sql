--! Previous: sha1:663a852c2df75a5676a104341ceecb54e8141071
--! Hash: sha1:0de5a414927c49b0c55ccf4ba0ffb8cba19b470b
--! Message: Alerts and webhooks: the events outbox, webhook endpoints with sealed secrets, deliveries with retries and dead letters, the periodic checks' alerted state

-- Issue 17, alerts and webhooks: an outbox of events, written in the same transaction as the change
-- that caused it; the endpoints operators register; one delivery row per (event, endpoint) with its
-- attempts, retry time and dead-letter state; the "already alerted" state of the periodic checks.
-- Behaviour: sql/29_private_events.sql, sql/45_admin_webhooks.sql.

create table if not exists private.events (
  id         bigint generated always as identity primary key,
  kind       text not null check (kind ~ '^[a-z_]+\.[a-z_]+$'),
  payload    jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);
create index if not exists events_created_idx on private.events (created_at);

-- The signing secret is sealed like an upstream key (AES-256-GCM under the master key, see
-- sql/21_private_crypto.sql); only the gateway opens it, to sign.
create table if not exists private.webhook_endpoints (
  id                bigint generated always as identity primary key,
  name              text not null unique check (length(name) between 1 and 100),
  url               text not null check (url ~ '^https?://'),
  kinds             text[] not null default '{}',   -- event kinds delivered; empty: every kind
  enabled           boolean not null default true,
  description       text not null default '',
  secret_prefix     text not null,
  secret_key_id     text not null,
  secret_nonce      bytea not null,
  secret_ciphertext bytea not null,
  secret_tag        bytea not null,
  created_at        timestamptz not null default now(),
  updated_at        timestamptz not null default now()
);

create table if not exists private.webhook_deliveries (
  id              bigint generated always as identity primary key,
  event_id        bigint not null references private.events (id) on delete cascade,
  endpoint_id     bigint not null references private.webhook_endpoints (id) on delete cascade,
  status          text not null default 'pending' check (status in ('pending', 'retrying', 'delivered', 'dead')),
  attempts        integer not null default 0,
  next_attempt_at timestamptz not null default now(),   -- while an attempt runs: the end of its lease
  last_attempt_at timestamptz,
  last_status     integer,                              -- the endpoint's HTTP status, null when none came
  last_error      text,
  delivered_at    timestamptz,
  created_at      timestamptz not null default now(),
  unique (event_id, endpoint_id)
);
create index if not exists webhook_deliveries_due_idx on private.webhook_deliveries (next_attempt_at)
  where status in ('pending', 'retrying');
create index if not exists webhook_deliveries_endpoint_idx on private.webhook_deliveries (endpoint_id, id desc);

-- One crossing, one event: a wallet is alerted once while below its threshold, again only after it
-- went back above it. threshold_micros overrides the option WalletLowBalanceMicros for that user.
create table if not exists private.wallet_alerts (
  user_id          bigint primary key references private.users (id) on delete cascade,
  threshold_micros bigint check (threshold_micros >= 0),
  alerted_at       timestamptz,
  alerted_balance  bigint
);

-- Likewise per job: overdue is alerted once, until the job succeeds again. first_seen stands in for
-- the last success of a job that never ran (a fresh install is not "overdue" at once).
create table if not exists private.job_alerts (
  job         text primary key references private.jobs (name) on delete cascade,
  first_seen  timestamptz not null default now(),
  overdue_alerted_at timestamptz
);

alter table private.events             enable row level security;
alter table private.webhook_endpoints  enable row level security;
alter table private.webhook_deliveries enable row level security;
alter table private.wallet_alerts      enable row level security;
alter table private.job_alerts         enable row level security;

-- Issue 17, the analytics contract: a versioned schema of documented views for BI tools, read by
-- the role elygate_analytics (migrations/afterReset.sql) and nothing else. Views: sql/70_analytics_v1.sql.
create schema if not exists analytics_v1;
