--! Previous: sha1:073a71738571e4fedce7c94039c3e9a7ff528759
--! Hash: sha1:6638b7c82f508425e0b3e0cd86cbf0c754f2a126
--! Message: admin panel: credentials, sessions, login attempts, setup tokens, schema me

-- Admin panel state: credentials (argon2id), server-side sessions, login throttling, the one-time
-- setup token, and the schema `me` for self-service (views and functions a regular user may use).

create schema if not exists me;

-- One row per user who may log in to the admin panel. The hash is an argon2id PHC string computed
-- by the admin server (PostgreSQL has no argon2); the plaintext never reaches the database.
create table if not exists private.credentials (
  user_id         bigint primary key references private.users (id) on delete cascade,
  password_hash   text not null check (password_hash like '$argon2id$%'),
  must_change     boolean not null default false,   -- forced change before any other page
  is_default      boolean not null default false,   -- the original's admin/admin123: loopback only, once
  totp_secret     bytea,                            -- 20 random bytes; null = no second factor
  totp_enabled    boolean not null default false,
  totp_last_step  bigint,                           -- last accepted TOTP time step (no replay)
  updated_at      timestamptz not null default now()
);

-- Server-side sessions. The browser holds a random token (HttpOnly cookie); only its sha256 is kept.
create table if not exists private.sessions (
  token_hash    bytea primary key check (length(token_hash) = 32),
  user_id       bigint not null references private.users (id) on delete cascade,
  stage         text not null default 'full' check (stage in ('totp', 'full')),
  created_at    timestamptz not null default now(),
  last_seen_at  timestamptz not null default now(),
  expires_at    timestamptz not null,
  ip            inet,
  user_agent    text
);
create index if not exists sessions_user_id_idx on private.sessions (user_id);
create index if not exists sessions_expires_at_idx on private.sessions (expires_at);

-- Every login attempt (ok or not): throttling counts recent failures per username and per address.
create table if not exists private.login_attempts (
  id        bigint generated always as identity primary key,
  at        timestamptz not null default now(),
  username  text not null,
  ip        inet,
  ok        boolean not null,
  reason    text
);
create index if not exists login_attempts_username_at_idx on private.login_attempts (username, at);
create index if not exists login_attempts_ip_at_idx on private.login_attempts (ip, at);

-- One-time setup tokens, printed by the admin server at start while no admin can log in.
create table if not exists private.setup_tokens (
  token_hash  bytea primary key check (length(token_hash) = 32),
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  used_at     timestamptz
);

alter table private.credentials    enable row level security;
alter table private.sessions       enable row level security;
alter table private.login_attempts enable row level security;
alter table private.setup_tokens   enable row level security;
