-- What a DBA reads to know the database is looking after itself.

-- pg_cron may be absent (a test database, a server without it): the function reads cron.* only
-- when it exists, so the views work everywhere. (A function in admin, not private: functions in a
-- view run with the caller's execute privilege.)
create or replace function admin.cron_jobs()
returns table (jobid bigint, jobname text, schedule text, command text, active boolean, last_status text,
               last_start timestamptz, last_end timestamptz, last_message text, runs_24h bigint, failures_24h bigint)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if to_regclass('cron.job') is null then
    return;
  end if;
  return query execute $q$
    select j.jobid, j.jobname::text, j.schedule::text, j.command::text, j.active, d.status::text, d.start_time, d.end_time,
           d.return_message::text,
           (select count(*) from cron.job_run_details x where x.jobid = j.jobid and x.start_time > now() - interval '24 hours'),
           (select count(*) from cron.job_run_details x where x.jobid = j.jobid and x.start_time > now() - interval '24 hours' and x.status = 'failed')
      from cron.job j
      left join lateral (select * from cron.job_run_details r where r.jobid = j.jobid order by r.start_time desc limit 1) d on true
     where j.database = current_database()
     order by j.jobname $q$;
end
$$;

comment on function admin.cron_jobs() is E'pg_cron jobs of this database with their last run and 24-hour counts; no rows when pg_cron is not installed here. admin.jobs joins it to the job registry.';

-- cron.database_name is readable by superusers only; the panel may know it.
create or replace function admin.cron_database()
returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select current_setting('cron.database_name', true)
$$;

comment on function admin.cron_database() is E'The database pg_cron runs in (cron.database_name), or null.';

create or replace view admin.cron_status as
  select exists (select 1 from pg_extension where extname = 'pg_cron') as installed,
         exists (select 1 from pg_available_extensions where name = 'pg_cron') as available,
         admin.cron_database() as cron_database,
         current_database() as this_database;

-- admin.job_overdue: THE rule of an overdue job: its last success (or, never having succeeded,
-- its first sighting) is older than twice its interval plus a minute. admin.jobs shows it and
-- private.jobs_overdue_check (sql/44_events.sql) raises job.overdue on it. In schema admin because
-- the view calls it as the operator's role, which may execute admin's functions only.
create or replace function admin.job_overdue(p_last_ok timestamptz, p_every interval, p_now timestamptz)
returns boolean
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select p_last_ok < p_now - 2 * p_every - interval '1 minute' $$;

comment on function admin.job_overdue(timestamptz, interval, timestamptz) is
  E'Whether a job whose last success (or first sighting) was p_last_ok is overdue at p_now: older than twice p_every plus a minute.';

-- admin.jobs: every maintenance job (private.jobs), what runs it (pg_cron in the cron database,
-- else the gateways: gateway.maintenance_run), its schedule, its last run and last success (by
-- either), its runs and failures of the last 24 hours, and whether it is overdue (no successful run
-- within twice its interval, plus a minute). The one view of the jobs; admin.job_runs is their log.
create or replace view admin.jobs as
  select j.name, j.description, j.cron_schedule, j.every,
         case when c.jobname is not null then 'pg_cron' else 'gateway' end as runner,
         c.active as cron_active,
         last.runner as last_runner, last.started_at as last_started_at, last.finished_at as last_finished_at,
         last.status as last_status, last.error as last_error, last.result as last_result,
         ok.started_at as last_success_at,
         coalesce(admin.job_overdue(ok.started_at, j.every, now()), true) as overdue,
         coalesce(day.runs, 0) as runs_24h, coalesce(day.failures, 0) as failures_24h
    from private.jobs j
    left join admin.cron_jobs() c on c.jobname = j.name
    left join lateral (select * from private.job_runs r where r.job = j.name order by r.started_at desc limit 1) last on true
    left join lateral (select r.started_at from private.job_runs r where r.job = j.name and r.status = 'succeeded'
                        order by r.started_at desc limit 1) ok on true
    left join lateral (select count(*) as runs, count(*) filter (where r.status = 'failed') as failures
                         from private.job_runs r where r.job = j.name and r.started_at > now() - interval '24 hours') day on true;

create or replace view admin.job_runs as
  select r.id, r.job, r.runner, r.started_at, r.finished_at, r.status, r.result, r.error
    from private.job_runs r;

-- The request log's partitions are listed by admin.partitions (below).

-- admin.job_run: run a maintenance job now, from psql or the admin panel.
create or replace function admin.job_run(p_name text)
returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$ select private.job_run(p_name, 'manual', now()) $$;

comment on function admin.job_run(text) is E'Runs a maintenance job now (see admin.jobs) and returns its result.';

create or replace view admin.partitions as
  select c.relname as name,
         pg_get_expr(c.relpartbound, c.oid) as bounds,
         c.reltuples::bigint as rows_estimate,
         pg_total_relation_size(c.oid) as bytes
    from pg_inherits i join pg_class c on c.oid = i.inhrelid
   where i.inhparent = 'private.requests'::regclass;


------------------------------------------------------------------------------------------------
-- Self-service: schema me (role elygate_user). Every row is the session user's own.
------------------------------------------------------------------------------------------------
