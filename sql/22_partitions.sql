-- Daily partitions of private.requests: created ahead, dropped after LogRetentionDays, never DELETEd.

-- private.partitions_maintain: the job behind cron 'elygate.partitions'; tests call it with p_now.
create or replace function private.partitions_maintain(p_now timestamptz default now())
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_today date := (p_now at time zone 'UTC')::date;
  v_ahead integer := private.option_int('PartitionDaysAhead');
  v_keep integer := private.option_int('LogRetentionDays');
  v_day date;
  v_name text;
  v_from timestamptz;
  v_to timestamptz;
  v_created text[] := '{}';
  v_dropped text[] := '{}';
  v_part record;
begin
  -- One runner at a time (cron, a gateway fallback, a DBA); the others have nothing to add.
  if not pg_try_advisory_xact_lock(hashtext('private.partitions_maintain')) then
    return jsonb_build_object('skipped', 'another run holds the lock');
  end if;

  for v_day in select d::date from generate_series(v_today - 1, v_today + v_ahead, interval '1 day') d loop
    v_name := 'requests_' || to_char(v_day, 'YYYYMMDD');
    if v_day >= v_today - v_keep and to_regclass('private.' || v_name) is null then
      v_from := v_day::timestamp at time zone 'UTC';
      v_to := (v_day + 1)::timestamp at time zone 'UTC';
      /* why: rows that arrived while no partition existed sit in the default partition, and
         PostgreSQL refuses to create a partition whose range the default already holds. So the
         new table is filled from the default first and attached after (bounded by one day). */
      execute format('create table private.%I (like private.requests including defaults including constraints)', v_name);
      execute format('with moved as (delete from private.requests_default where created_at >= %L and created_at < %L returning *)
                      insert into private.%I select * from moved', v_from, v_to, v_name);
      execute format('alter table private.requests attach partition private.%I for values from (%L) to (%L)',
                     v_name, v_from, v_to);
      execute format('alter table private.%I enable row level security', v_name);
      v_created := v_created || v_name;
    end if;
  end loop;

  for v_part in
    select c.relname, to_date(substring(c.relname from 10 for 8), 'YYYYMMDD') as day
      from pg_inherits i
      join pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'private.requests'::regclass and c.relname ~ '^requests_[0-9]{8}$'
  loop
    if v_part.day < v_today - v_keep then
      execute format('drop table private.%I', v_part.relname);
      v_dropped := v_dropped || v_part.relname::text;
    end if;
  end loop;

  return jsonb_build_object('created', to_jsonb(v_created), 'dropped', to_jsonb(v_dropped));
end
$$;

comment on function private.partitions_maintain(timestamptz) is
  E'Creates daily request-log partitions PartitionDaysAhead days ahead of p_now and drops those older than LogRetentionDays. Idempotent.';

-- Every deploy leaves today's partitions in place, whether or not pg_cron runs.
select private.partitions_maintain();
