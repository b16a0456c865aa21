-- pg_cron schedules (UTC), from the job registry (private.jobs, sql/47_jobs.sql).
-- pg_cron lives in one database per cluster (cron.database_name); when this is that database the
-- extension is created here and every registered job is scheduled in it. Elsewhere (a test
-- database, a server without pg_cron) nothing is scheduled: the gateway runs due jobs itself
-- (gateway.maintenance_run) and says so at start.

do $$
declare
  v_job record;
begin
  if current_setting('cron.database_name', true) = current_database()
     and exists (select 1 from pg_available_extensions where name = 'pg_cron') then
    create extension if not exists pg_cron;
    for v_job in select * from private.jobs loop
      perform cron.schedule(v_job.name, v_job.cron_schedule,
                            format('select private.job_run(%L, ''pg_cron'')', v_job.name));
    end loop;
    -- Jobs that left the registry leave the schedule too.
    perform cron.unschedule(j.jobid)
       from cron.job j
      where j.jobname like 'elygate.%' and not exists (select 1 from private.jobs r where r.name = j.jobname);
  end if;
end
$$;
