-- What a DBA reads to know the database is looking after itself.

-- admin.maintenance_jobs: every job, its schedule, its last run (by pg_cron or a gateway), and
-- whether it is overdue (no successful run within twice its interval, plus a minute).
create or replace view admin.maintenance_jobs as
  select j.name, j.cron_schedule, j.every, j.description,
         case when exists (select 1 from pg_extension where extname = 'pg_cron') then 'pg_cron' else 'gateway' end as runner,
         last.runner as last_runner, last.started_at as last_started_at, last.finished_at as last_finished_at,
         last.status as last_status, last.error as last_error, last.result as last_result,
         ok.started_at as last_success_at,
         coalesce(ok.started_at < now() - 2 * j.every - interval '1 minute', true) as overdue
    from private.jobs j
    left join lateral (select * from private.job_runs r where r.job = j.name order by r.started_at desc limit 1) last on true
    left join lateral (select r.started_at from private.job_runs r where r.job = j.name and r.status = 'succeeded'
                        order by r.started_at desc limit 1) ok on true;

create or replace view admin.job_runs as
  select r.id, r.job, r.runner, r.started_at, r.finished_at, r.status, r.result, r.error
    from private.job_runs r;

-- The request log's partitions are listed by admin.partitions (sql/50_admin_ui.sql).

-- admin.job_run: run a maintenance job now, from psql or the admin panel.
create or replace function admin.job_run(p_name text)
returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$ select private.job_run(p_name, 'manual', now()) $$;
comment on function admin.job_run(text) is E'Runs a maintenance job now (see admin.maintenance_jobs) and returns its result.';
