--! Previous: sha1:0de5a414927c49b0c55ccf4ba0ffb8cba19b470b
--! Hash: sha1:cd2f09a555f904f4bcd9acf7e9c75015c61e8ee0
--! Message: Security edges: failed-login index for the global ceiling, the audit log, key rotations

-- Enter migration here

-- Login throttling counts all failures of the window (LoginMaxFailuresGlobal): an index on the
-- failed rows' time, so the count reads only the window.
create index if not exists login_attempts_failed_at_idx on private.login_attempts (at) where not ok;

-- The audit log of admin mutations (sql/46_admin_audit.sql writes it; admin.audit_log reads it).
-- Granted to nobody: elygate_admin reads it through the view and can neither write nor erase it.
create table if not exists private.audit_log (
  id             bigint generated always as identity primary key,
  at             timestamptz not null default now(),
  actor          text not null,          -- the panel user, else the database role (session_user)
  actor_user_id  bigint,                 -- the panel user's id (no foreign key: the log outlives users)
  db_role        text not null default session_user,
  action         text not null,          -- the function that made the change (admin.channel_update, ...), or "SQL"
  target         text not null,          -- table:id (channels:12, options:LoginWindowMinutes, wallets:7)
  before         jsonb,                  -- the row before (null for an insert), secrets as digests
  after          jsonb                   -- the row after (null for a delete)
);
create index if not exists audit_log_at_idx on private.audit_log (at);
create index if not exists audit_log_target_idx on private.audit_log (target, at);
alter table private.audit_log enable row level security;

-- Key rotation (admin.key_rotate, sql/45_admin_key_rotate.sql): which key replaced which, and until
-- when the old one keeps working. The old key's expires_at carries the grace end (so admission
-- needs nothing new); this row lets its refusal say it was rotated.
create table if not exists private.key_rotations (
  old_key_id   bigint primary key references private.api_keys (id) on delete cascade,
  new_key_id   bigint not null references private.api_keys (id) on delete cascade,
  rotated_at   timestamptz not null default now(),
  grace_until  timestamptz not null,
  rotated_by   text not null
);
create index if not exists key_rotations_new_key_idx on private.key_rotations (new_key_id);
alter table private.key_rotations enable row level security;
