--! Previous: -
--! Hash: sha1:073a71738571e4fedce7c94039c3e9a7ff528759
--! Message: initial schema

-- Elygate schema, first cut: state only (tables, constraints, indexes, seed rows).
-- Functions, views, grants and cron schedules live in sql/ and are re-applied after every migrate.

create extension if not exists pgcrypto with schema public;
create extension if not exists vector with schema public;

create schema if not exists private;
create schema if not exists gateway;
create schema if not exists admin;
revoke all on schema private from public;

------------------------------------------------------------------------------------------------
-- Settings. Read by SQL; tuned from psql or the admin with admin.option_set().
------------------------------------------------------------------------------------------------
create table private.options (
  key         text primary key check (key ~ '^[A-Za-z][A-Za-z0-9_.]{0,63}$'),
  value       text not null,
  value_type  text not null default 'text' check (value_type in ('text', 'int', 'number', 'bool', 'json')),
  min_value   numeric,
  max_value   numeric,
  description text not null default '',
  updated_at  timestamptz not null default now()
);

------------------------------------------------------------------------------------------------
-- Tenants
------------------------------------------------------------------------------------------------
create table private.groups (
  name             text primary key check (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
  price_multiplier numeric(12, 6) not null default 1 check (price_multiplier > 0),
  description      text not null default '',
  created_at       timestamptz not null default now()
);
insert into private.groups (name, description) values ('default', 'Every user starts here');

create table private.users (
  id                  bigint generated always as identity primary key,
  username            text not null unique check (username ~ '^[A-Za-z0-9_.@+-]{1,64}$'),
  display_name        text not null default '',
  email               text,
  group_name          text not null default 'default' references private.groups (name) on update cascade,
  role                text not null default 'user' check (role in ('user', 'admin')),
  status              text not null default 'active' check (status in ('active', 'disabled')),
  -- Wallet, in micro-USD. Folded from the ledger in batches (billing), never per request.
  balance_micros      bigint not null default 0,
  credit_limit_micros bigint not null default 0 check (credit_limit_micros >= 0),
  created_at          timestamptz not null default now(),
  updated_at          timestamptz not null default now()
);

create table private.api_keys (
  id                bigint generated always as identity primary key,
  user_id           bigint not null references private.users (id) on delete cascade,
  name              text not null default '',
  key_hash          bytea not null unique check (length(key_hash) = 32),   -- sha256 of the key
  key_prefix        text not null,                                          -- shown in lists
  status            text not null default 'active' check (status in ('active', 'revoked')),
  expires_at        timestamptz,
  allowed_models    text[],            -- null: every model the user's group may use
  allowed_ips       cidr[],            -- null: any address
  quota_micros      bigint check (quota_micros >= 0),   -- null: unlimited (billing)
  rpm_limit         integer check (rpm_limit > 0),      -- null: none (billing)
  tpm_limit         integer check (tpm_limit > 0),
  concurrency_limit integer check (concurrency_limit > 0),
  created_at        timestamptz not null default now(),
  revoked_at        timestamptz
);
create index api_keys_user_id_idx on private.api_keys (user_id);

------------------------------------------------------------------------------------------------
-- Upstreams
------------------------------------------------------------------------------------------------
create table private.channels (
  id               bigint generated always as identity primary key,
  name             text not null unique check (length(name) between 1 and 128),
  type             text not null check (type in ('openai', 'azure', 'anthropic', 'gemini')),
  base_url         text not null check (base_url ~ '^https?://[^\s/]+'),
  models           text[] not null default '{}',
  model_mapping    jsonb not null default '{}' check (jsonb_typeof(model_mapping) = 'object'),
  groups           text[] not null default '{default}',
  priority         integer not null default 0,
  weight           integer not null default 1 check (weight >= 0),
  config           jsonb not null default '{}' check (jsonb_typeof(config) = 'object'),
  status           text not null default 'enabled'
                     check (status in ('enabled', 'manually_disabled', 'auto_disabled')),
  status_reason    text,
  status_changed_at timestamptz,
  -- Bumped on every change so gateways can tell their credential snapshot is stale.
  version          integer not null default 1,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now()
);
create index channels_models_idx on private.channels using gin (models);

-- Upstream keys, AES-256-GCM. key_id names the master key that sealed the row.
create table private.channel_keys (
  id          bigint generated always as identity primary key,
  channel_id  bigint not null references private.channels (id) on delete cascade,
  ordinal     integer not null,
  key_id      text not null,
  nonce       bytea not null check (length(nonce) = 12),
  ciphertext  bytea not null,
  tag         bytea not null check (length(tag) = 16),
  status      text not null default 'enabled' check (status in ('enabled', 'disabled')),
  created_at  timestamptz not null default now(),
  unique (channel_id, ordinal)
);

------------------------------------------------------------------------------------------------
-- Models and prices (micro-USD per 1M tokens, or per call)
------------------------------------------------------------------------------------------------
create table private.models (
  name                     text primary key check (length(name) between 1 and 200),
  owned_by                 text not null default 'elygate',
  description              text not null default '',
  input_price              bigint check (input_price >= 0),
  output_price             bigint check (output_price >= 0),
  cached_input_price       bigint check (cached_input_price >= 0),
  cache_write_price        bigint check (cache_write_price >= 0),
  per_call_price           bigint check (per_call_price >= 0),
  created_at               timestamptz not null default now(),
  updated_at               timestamptz not null default now()
);

------------------------------------------------------------------------------------------------
-- Requests log: one row per request, inserted by relay_begin, completed by relay_finish.
-- Range-partitioned by day; partitions are created ahead by private.partitions_ensure().
------------------------------------------------------------------------------------------------
create table private.requests (
  id                uuid not null,
  created_at        timestamptz not null default now(),
  key_id            bigint,
  user_id           bigint,
  group_name        text,
  endpoint          text not null,
  model             text not null,
  stream            boolean not null default false,
  client_ip         inet,
  status            text not null default 'pending'
                      check (status in ('pending', 'ok', 'error', 'aborted', 'expired')),
  http_status       integer,
  channel_id        bigint,
  upstream_model    text,
  route_plan        jsonb,
  attempts          jsonb,
  prompt_tokens     integer,
  completion_tokens integer,
  total_tokens      integer,
  usage_source      text check (usage_source in ('upstream', 'estimated', 'expired', 'none')),
  reserved_micros   bigint not null default 0,
  cost_micros       bigint,
  error_code        text,
  error_message     text,
  ttfb_ms           integer,
  latency_ms        integer,
  finished_at       timestamptz,
  primary key (created_at, id)
) partition by range (created_at);
create table private.requests_default partition of private.requests default;
create index requests_id_idx on private.requests (id);
create index requests_key_created_idx on private.requests (key_id, created_at);
create index requests_pending_idx on private.requests (created_at) where status = 'pending';

------------------------------------------------------------------------------------------------
-- Ledger: append-only, one row per settled request (idempotent on request_id).
------------------------------------------------------------------------------------------------
create table private.ledger (
  id                 bigint generated always as identity primary key,
  request_id         uuid not null unique,
  created_at         timestamptz not null default now(),
  user_id            bigint not null,
  key_id             bigint,
  channel_id         bigint,
  model              text not null,
  prompt_tokens      integer not null default 0,
  completion_tokens  integer not null default 0,
  input_price        bigint,
  output_price       bigint,
  per_call_price     bigint,
  group_multiplier   numeric(12, 6) not null default 1,
  amount_micros      bigint not null,
  usage_source       text not null check (usage_source in ('upstream', 'estimated', 'expired', 'none')),
  abort_policy       text,
  folded             boolean not null default false
);
create index ledger_user_created_idx on private.ledger (user_id, created_at);
create index ledger_unfolded_idx on private.ledger (id) where not folded;

alter table private.options      enable row level security;
alter table private.groups       enable row level security;
alter table private.users        enable row level security;
alter table private.api_keys     enable row level security;
alter table private.channels     enable row level security;
alter table private.channel_keys enable row level security;
alter table private.models       enable row level security;
alter table private.requests     enable row level security;
alter table private.ledger       enable row level security;
alter table private.requests_default enable row level security;
