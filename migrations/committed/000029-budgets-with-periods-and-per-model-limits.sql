--! Previous: sha1:5a00d1e2c0430c08150781bcd66c00d6e4fef5b0
--! Hash: sha1:ad67c2436036d95faf4c3504bfd0bba5ed4acb70
--! Message: Budgets with periods and per-model limits

-- Budgets with periods and per-model limits (issue 17). Behaviour: sql/36_budgets.sql.

-- A budget: an amount per calendar day, week or month (in the BudgetTimeZone option's zone) for a
-- key, a user or a group, for every model or one. Its counters are on the row: the period they
-- count (period_start), what settled in it (spent_micros) and what admitted requests hold
-- (reserved_micros; older_reserved for requests of earlier periods still in flight). Admission rolls the period over when it sees a new one (as a key's rate
-- window), so no job has to run at midnight.
create table if not exists private.budgets (
  id                 bigint generated always as identity primary key,
  scope              text not null check (scope in ('key', 'user', 'group')),
  key_id             bigint references private.api_keys (id) on delete cascade,
  user_id            bigint references private.users (id) on delete cascade,
  group_name         text references private.groups (name) on update cascade on delete cascade,
  model              text check (model <> ''),   -- null: every model
  period             text not null check (period in ('day', 'week', 'month')),
  amount_micros      bigint not null check (amount_micros > 0),
  threshold_percent  integer check (threshold_percent between 1 and 100),
  period_start       timestamptz not null default '-infinity',
  spent_micros       bigint not null default 0,
  reserved_micros    bigint not null default 0 check (reserved_micros >= 0),   -- admitted in period_start's period
  older_reserved     bigint not null default 0 check (older_reserved >= 0),    -- admitted in earlier periods
  threshold_alerted  timestamptz,   -- the period_start whose budget.threshold was raised
  exhausted_alerted  timestamptz,   -- the period_start whose budget.exhausted was raised
  created_at         timestamptz not null default now(),
  updated_at         timestamptz not null default now(),
  constraint budgets_target_check check (
    (scope = 'key' and key_id is not null and user_id is null and group_name is null) or
    (scope = 'user' and user_id is not null and key_id is null and group_name is null) or
    (scope = 'group' and group_name is not null and key_id is null and user_id is null))
);
create unique index if not exists budgets_target_idx
  on private.budgets (scope, coalesce(key_id, user_id), coalesce(group_name, ''), coalesce(model, ''), period);
create index if not exists budgets_key_idx on private.budgets (key_id) where key_id is not null;
create index if not exists budgets_user_idx on private.budgets (user_id) where user_id is not null;
create index if not exists budgets_group_idx on private.budgets (group_name) where group_name is not null;
alter table private.budgets enable row level security;
comment on table private.budgets is
  'Budgets per key, user or group (optionally per model) and calendar period, with their counters. Managed by admin.budget_set / admin.budget_clear; read in admin.budgets.';

-- RPM/TPM of one model for a key or a group, with the rate window on the row (as key_counters).
create table if not exists private.model_limits (
  id              bigint generated always as identity primary key,
  scope           text not null check (scope in ('key', 'group')),
  key_id          bigint references private.api_keys (id) on delete cascade,
  group_name      text references private.groups (name) on update cascade on delete cascade,
  model           text not null check (model <> ''),
  rpm_limit       integer check (rpm_limit > 0),
  tpm_limit       integer check (tpm_limit > 0),
  rate_minute     timestamptz not null default '-infinity',
  minute_requests integer not null default 0,
  prev_requests   integer not null default 0,
  minute_tokens   bigint not null default 0,
  prev_tokens     bigint not null default 0,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  constraint model_limits_target_check check (
    (scope = 'key' and key_id is not null and group_name is null) or
    (scope = 'group' and group_name is not null and key_id is null)),
  constraint model_limits_some_check check (num_nonnulls(rpm_limit, tpm_limit) > 0)
);
-- Both are hot rows (every admission of a budgeted key writes its budgets' rows, as its wallet's):
-- vacuumed by count, unthrottled, as wallets and key_counters are (migration 000014).
alter table private.budgets set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100,
                                 autovacuum_vacuum_cost_delay = 0);
alter table private.model_limits set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100,
                                      autovacuum_vacuum_cost_delay = 0);
create unique index if not exists model_limits_target_idx
  on private.model_limits (scope, coalesce(key_id, 0), coalesce(group_name, ''), model);
create index if not exists model_limits_key_idx on private.model_limits (key_id) where key_id is not null;
create index if not exists model_limits_group_idx on private.model_limits (group_name) where group_name is not null;
alter table private.model_limits enable row level security;
comment on table private.model_limits is
  'RPM/TPM per (key or group, model), with the sliding rate window on the row. Managed by admin.model_limit_set / admin.model_limit_clear.';

-- Whether a budget or a model limit names the row: read with the key at admission (the one lookup
-- it makes anyway), so a key that none applies to costs no statement more. Kept by triggers on
-- private.budgets and private.model_limits (sql/36_budgets.sql).
alter table private.api_keys add column if not exists scoped_limits boolean not null default false;
alter table private.users add column if not exists scoped_limits boolean not null default false;
alter table private.groups add column if not exists scoped_limits boolean not null default false;

-- What an admission counted in: its budgets and model limits, and the admission clock
-- (private.admission_now), which says the period a budget counted it in and the minute of a model
-- limit's window.
alter table private.admissions add column if not exists budget_ids bigint[];
alter table private.admissions add column if not exists limit_ids bigint[];
alter table private.admissions add column if not exists admitted_at timestamptz;
