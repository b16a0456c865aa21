--! Previous: sha1:6411d90fccc2a43b88fac687d59385693e9f939b
--! Hash: sha1:5c62744711eee552da09facd68e28bd0930bdc34
--! Message: maintenance: job registry, job runs, hourly usage rollups

-- Self-maintenance: the job registry, a run log, and hourly usage rollups for dashboards.

create table private.jobs (
  name          text primary key,
  cron_schedule text not null,            -- for pg_cron (UTC)
  every         interval not null,        -- for the gateway's fallback runner, and "overdue"
  command       text not null,            -- a call of a private job function taking p_now
  description   text not null default ''
);

create table private.job_runs (
  id          bigint generated always as identity primary key,
  job         text not null references private.jobs (name) on delete cascade,
  runner      text not null check (runner in ('pg_cron', 'gateway', 'manual')),
  started_at  timestamptz not null,
  finished_at timestamptz,
  status      text not null check (status in ('running', 'succeeded', 'failed', 'skipped')),
  result      jsonb,
  error       text
);
create index job_runs_job_started_idx on private.job_runs (job, started_at desc);

-- Requests per hour per (user, key, model, channel): what dashboards chart, without scanning the log.
create table private.usage_hourly (
  hour              timestamptz not null,
  user_id           bigint not null,
  key_id            bigint not null,
  model             text not null,
  channel_id        bigint not null,     -- 0 when no channel answered
  requests          integer not null,
  errors            integer not null,
  prompt_tokens     bigint not null,
  completion_tokens bigint not null,
  cost_micros       bigint not null,
  latency_ms_sum    bigint not null,
  latency_p50_ms    integer,
  latency_p95_ms    integer,
  primary key (hour, user_id, key_id, model, channel_id)
);

alter table private.jobs         enable row level security;
alter table private.job_runs     enable row level security;
alter table private.usage_hourly enable row level security;
