-- Self-maintenance: named, idempotent jobs; each is a plain function of "now" that tests call
-- directly. pg_cron runs them inside PostgreSQL (sql/90_cron.sql schedules the registry); without
-- pg_cron, the gateway runs the ones that are due through gateway.maintenance_run(), under an
-- advisory lock so that N gateways run each job once. Every run, by either runner, is logged in
-- private.job_runs, which admin.jobs reads. The registry below is the one list of jobs.

-- private.history_purge: keeps the run logs (pg_cron's and ours) and the usage rollups
-- (UsageRetentionDays) bounded, 50,000 rows of each per run.
create or replace function private.history_purge(p_now timestamptz default now())
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_cron integer := 0;
  v_ours integer;
  v_cut timestamptz := p_now - make_interval(days => private.option_int('UsageRetentionDays'));
  v_hourly integer;
  v_dims integer;
  v_latency integer;
begin
  if to_regclass('cron.job_run_details') is not null then
    execute 'delete from cron.job_run_details where runid in (select runid from cron.job_run_details
              where end_time < $1 - interval ''7 days'' limit 50000)' using p_now;
    get diagnostics v_cron = row_count;
  end if;
  delete from private.job_runs where id in (select id from private.job_runs
                                             where started_at < p_now - interval '30 days' limit 50000);
  get diagnostics v_ours = row_count;
  -- Oldest hours first, by each table's leading index column.
  delete from private.usage_hourly where ctid in (select ctid from private.usage_hourly
                                                   where hour < v_cut order by hour limit 50000);
  get diagnostics v_hourly = row_count;
  delete from private.usage_by_dim where ctid in (select ctid from private.usage_by_dim
                                                   where period in ('hour', 'day') and at < v_cut limit 50000);
  get diagnostics v_dims = row_count;
  delete from private.latency_hourly where hour < v_cut and hour in (select hour from private.latency_hourly
                                                                      where hour < v_cut order by hour limit 50000);
  get diagnostics v_latency = row_count;
  return jsonb_build_object('cron_job_run_details', v_cron, 'job_runs', v_ours,
                            'usage_hourly', v_hourly, 'usage_by_dim', v_dims, 'latency_hourly', v_latency);
end
$$;

comment on function private.history_purge(timestamptz) is
  E'Deletes cron.job_run_details older than 7 days, private.job_runs older than 30 days, and usage and latency rollups older than UsageRetentionDays, 50,000 rows of each per run.';

-- The registry: every maintenance job, in one list. Re-declared on every deploy; a job added here is
-- scheduled by sql/90_cron.sql (and one removed here leaves the schedule).
insert into private.jobs (name, cron_schedule, every, command, description)
values
  ('elygate.partitions', '7 * * * *', '1 hour', 'private.partitions_maintain($now)',
   'Creates request-log partitions ahead and drops those past LogRetentionDays.'),
  ('elygate.reaper', '* * * * *', '1 minute', 'private.reservations_reap($now)',
   'Settles requests whose gateway never reported back, at their reservation.'),
  ('elygate.rollup', '*/5 * * * *', '5 minutes', 'private.usage_rollup($now)',
   'Hourly usage rollups for dashboards.'),
  ('elygate.history_purge', '17 3 * * *', '1 day', 'private.history_purge($now)',
   'Bounds cron.job_run_details, private.job_runs and the usage rollups (UsageRetentionDays).'),
  ('elygate.cache_expiry', '*/2 * * * *', '2 minutes', 'private.cache_expire($now)',
   'Deletes expired cache entries in bounded batches.'),
  ('elygate.alerts', '* * * * *', '1 minute', 'private.alerts_check($now)',
   'Raises wallet.low and job.overdue events (once per crossing) and purges events past EventRetentionDays.'),
  ('elygate.probes', '* * * * *', '1 minute', 'private.probes_schedule($now)',
   'Queues recovery probes for open circuit breakers (and scheduled channel tests) and wakes the gateways.'),
  ('elygate.breaker_trim', '*/10 * * * *', '10 minutes', 'private.breaker_trim($now)',
   'Deletes circuit-breaker window buckets long past any window.')
on conflict (name) do update
  set cron_schedule = excluded.cron_schedule, every = excluded.every, command = excluded.command,
      description = excluded.description;

-- private.job_run: runs one registered job and logs the run, whatever its outcome.
create or replace function private.job_run(p_name text, p_runner text default 'manual', p_now timestamptz default now())
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_job private.jobs;
  v_run bigint;
  v_result jsonb;
begin
  select * into v_job from private.jobs where name = p_name;
  if not found then
    raise exception using errcode = 'BADIN', message = format('No job named "%s" (see admin.jobs).', p_name);
  end if;
  insert into private.job_runs (job, runner, started_at, status) values (p_name, p_runner, clock_timestamp(), 'running')
  returning id into v_run;
  begin
    execute 'select to_jsonb(' || replace(v_job.command, '$now', quote_literal(p_now) || '::timestamptz') || ')' into v_result;
    update private.job_runs set status = 'succeeded', result = v_result, finished_at = clock_timestamp() where id = v_run;
  exception when others then
    update private.job_runs set status = 'failed', error = sqlerrm, finished_at = clock_timestamp() where id = v_run;
    v_result := jsonb_build_object('error', sqlerrm);
    -- The alert goes out with the run's record, in this transaction (sql/44_events.sql).
    perform private.event_emit('job.failed', jsonb_build_object('job', p_name, 'run_id', v_run, 'runner', p_runner,
                                                                'error', sqlerrm, 'at', p_now));
  end;
  return v_result;
end
$$;

comment on function private.job_run(text, text, timestamptz) is
  E'Runs a registered job (private.jobs) with the given "now", logging start, end, status and error in private.job_runs.';

-- gateway.maintenance_run: the fallback runner. Does nothing where pg_cron runs the jobs; elsewhere
-- runs every job that is due, once across all gateways (advisory lock).
create or replace function gateway.maintenance_run()
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_job record;
  v_ran jsonb := '[]'::jsonb;
begin
  if exists (select 1 from pg_extension where extname = 'pg_cron') then
    return jsonb_build_object('runner', 'pg_cron');
  end if;
  if not pg_try_advisory_xact_lock(hashtext('gateway.maintenance_run')) then
    return jsonb_build_object('runner', 'gateway', 'skipped', 'another gateway is running maintenance');
  end if;
  for v_job in
    select j.name from private.jobs j
     where not exists (select 1 from private.job_runs r
                        where r.job = j.name and r.status in ('succeeded', 'failed')
                          and r.started_at > now() - j.every + interval '1 second')
     order by j.name
  loop
    perform private.job_run(v_job.name, 'gateway', now());
    v_ran := v_ran || to_jsonb(v_job.name);
  end loop;
  return jsonb_build_object('runner', 'gateway', 'ran', v_ran);
end
$$;

comment on function gateway.maintenance_run() is
  E'Fallback for servers without pg_cron: runs the maintenance jobs that are due, once across all gateways. Returns {"runner": "pg_cron"} where pg_cron does it.';
