-- pg_cron schedules (UTC). pg_cron lives in one database per cluster (cron.database_name); when
-- this is that database the extension is created here and the jobs scheduled into it. Elsewhere
-- (a test database, a server without pg_cron) nothing is scheduled and the gateway reports it.

do $$
begin
  if current_setting('cron.database_name', true) = current_database()
     and exists (select 1 from pg_available_extensions where name = 'pg_cron') then
    create extension if not exists pg_cron;
    perform cron.schedule('elygate.partitions', '7 * * * *', 'select private.partitions_maintain()');
    perform cron.schedule('elygate.reaper', '* * * * *', 'select private.reservations_reap()');
  end if;
end
$$;
