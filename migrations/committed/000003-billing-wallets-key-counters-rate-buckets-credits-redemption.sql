--! Previous: sha1:6638b7c82f508425e0b3e0cd86cbf0c754f2a126
--! Hash: sha1:e4b7d0eaea8825ddd19ce9f977565bf6ee3b0b23
--! Message: billing: wallets, key counters, rate buckets, credits, redemption codes

-- Billing: wallets, key counters, rate buckets, top-ups, redemption codes, channel cost multiplier.

-- Wallet state moves off the users row: admission updates it on every request (the one atomic
-- write the hot path allows), and a user's profile should not churn with it.
drop view if exists admin.users;
create table private.wallets (
  user_id             bigint primary key references private.users (id) on delete cascade,
  balance_micros      bigint not null default 0,   -- top-ups minus settled spend
  reserved_micros     bigint not null default 0 check (reserved_micros >= 0),  -- open reservations
  credit_limit_micros bigint not null default 0 check (credit_limit_micros >= 0),
  updated_at          timestamptz not null default now()
);
insert into private.wallets (user_id, balance_micros, credit_limit_micros)
  select id, balance_micros, credit_limit_micros from private.users;
alter table private.users drop column balance_micros, drop column credit_limit_micros;

-- Per-key counters (only touched for keys that have a quota or limits).
create table private.key_counters (
  key_id          bigint primary key references private.api_keys (id) on delete cascade,
  used_micros     bigint not null default 0,
  reserved_micros bigint not null default 0 check (reserved_micros >= 0),
  inflight        integer not null default 0 check (inflight >= 0),
  updated_at      timestamptz not null default now()
);

-- Requests and tokens per key per minute, for RPM/TPM (sliding window over two buckets).
create table private.rate_buckets (
  key_id   bigint not null references private.api_keys (id) on delete cascade,
  minute   timestamptz not null,
  requests integer not null default 0,
  tokens   bigint not null default 0,
  primary key (key_id, minute)
);

-- What relay_begin reserved, and which counters it touched, so settlement can release exactly that.
alter table private.requests add column reserved_tokens integer not null default 0;
alter table private.requests add column counted boolean not null default false;
alter table private.requests add column cached_tokens integer;
alter table private.requests add column cache_write_tokens integer;

alter table private.ledger add column cached_tokens integer not null default 0;
alter table private.ledger add column cache_write_tokens integer not null default 0;
alter table private.ledger add column cached_input_price bigint;
alter table private.ledger add column cache_write_price bigint;
alter table private.ledger add column channel_multiplier numeric(12, 6) not null default 1;
alter table private.ledger add column group_name text;
create index ledger_created_idx on private.ledger (created_at);
create index ledger_key_created_idx on private.ledger (key_id, created_at);

alter table private.channels add column cost_multiplier numeric(12, 6) not null default 1 check (cost_multiplier > 0);

-- Every change to a wallet that is not a request: top-ups, redemptions, adjustments.
create table private.wallet_credits (
  id            bigint generated always as identity primary key,
  user_id       bigint not null references private.users (id) on delete cascade,
  amount_micros bigint not null,
  source        text not null check (source in ('admin', 'redeem', 'adjustment')),
  code_id       bigint,
  note          text not null default '',
  created_by    text not null default current_user,
  created_at    timestamptz not null default now()
);
create index wallet_credits_user_idx on private.wallet_credits (user_id, created_at);

create table private.redemption_codes (
  id            bigint generated always as identity primary key,
  code_hash     bytea not null unique check (length(code_hash) = 32),
  code_prefix   text not null,
  batch         text not null default '',
  amount_micros bigint not null check (amount_micros > 0),
  expires_at    timestamptz,
  created_at    timestamptz not null default now(),
  redeemed_by   bigint references private.users (id) on delete set null,
  redeemed_at   timestamptz
);

alter table private.wallets          enable row level security;
alter table private.key_counters     enable row level security;
alter table private.rate_buckets     enable row level security;
alter table private.wallet_credits   enable row level security;
alter table private.redemption_codes enable row level security;

insert into private.key_counters (key_id) select id from private.api_keys;

-- The ticket gains the price card (for the usage receipt); its type and the function returning it
-- are re-created by sql/.
drop function if exists gateway.relay_begin(uuid, bytea, text, text, boolean, inet, integer, integer);
drop type if exists gateway.relay_ticket;
