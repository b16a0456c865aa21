-- Probes: while a channel's breaker is open, a recovery probe is queued when its wait is over; a
-- gateway claims it (gateway.probe_claim), sends one small request through its SSRF guard and
-- reports (gateway.probe_finish), which re-enables the channel on success. The panel's channel
-- tests (admin.channel_test) use the same queue. private.probes_schedule is the elygate.probes job
-- (sql/47_jobs.sql); gateways also drive it (gateway.probes_tick) where pg_cron does not.

-- private.probes_schedule: the pg_cron job. Queues a recovery probe for each open breaker whose
-- wait is over (and, with ChannelTestIntervalMinutes, a test of each enabled channel), gives up on
-- probes a gateway claimed but never finished, and wakes the gateways (NOTIFY elygate_probe).
create or replace function private.probes_schedule(p_now timestamptz default now())
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_lost interval := make_interval(secs => greatest(60, private.option_int('ProbeTimeoutMs') / 500));
  v_test integer := private.option_int('ChannelTestIntervalMinutes');
  v_n integer := 0;
  v_m integer := 0;
begin
  if not pg_try_advisory_xact_lock(hashtext('elygate.probes_schedule')) then
    return 0; -- another run is at it
  end if;
  with lost as (
    update private.channel_probes p
       set finished_at = p_now, ok = false,
           error = format('probe lost: %s never reported a result', coalesce(p.claimed_by, 'no gateway'))
     where p.finished_at is null and coalesce(p.claimed_at, p.requested_at) < p_now - v_lost
    returning p.channel_id
  )
  update private.channel_breakers b set state = 'open', updated_at = p_now
    from lost l where b.channel_id = l.channel_id and b.state = 'half_open';

  with due as (
    insert into private.channel_probes (channel_id, kind, model, requested_at)
    select c.id, 'recovery', coalesce(c.config ->> 'probe_model', c.models[1]), p_now
      from private.channels c
      join private.channel_breakers b on b.channel_id = c.id
     where c.status = 'auto_disabled' and b.state = 'open' and b.next_probe_at <= p_now
       and cardinality(c.models) > 0
       and not exists (select 1 from private.channel_probes p where p.channel_id = c.id and p.finished_at is null)
    returning channel_id
  )
  update private.channel_breakers b set state = 'half_open', updated_at = p_now
    from due d where b.channel_id = d.channel_id;
  get diagnostics v_n = row_count;

  if v_test > 0 then
    insert into private.channel_probes (channel_id, kind, model, requested_at)
    select c.id, 'test', coalesce(c.config ->> 'probe_model', c.models[1]), p_now
      from private.channels c
     where c.status = 'enabled' and cardinality(c.models) > 0
       and not exists (select 1 from private.channel_probes p
                        where p.channel_id = c.id
                          and (p.finished_at is null or p.requested_at > p_now - make_interval(mins => v_test)));
    get diagnostics v_m = row_count;
  end if;

  if v_n + v_m > 0 then
    perform pg_notify('elygate_probe', (v_n + v_m)::text);
  end if;
  return v_n + v_m;
end
$$;

comment on function private.probes_schedule(timestamptz) is
  E'pg_cron job (every minute): queues recovery probes for open breakers whose wait is over and periodic channel tests, expires lost probes, and NOTIFYs elygate_probe.';

-- gateway.probe_claim: hands up to p_limit queued probes to one gateway, with what it needs to
-- send them (channel version, upstream model after mapping, key).
create or replace function gateway.probe_claim(p_instance text, p_limit integer default 10)
returns table (id bigint, channel_id bigint, version integer, kind text, model text, upstream_model text,
               key_index integer, key_ordinal integer, timeout_ms integer)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  with due as (
    select p.id from private.channel_probes p
     where p.finished_at is null and p.claimed_at is null
     order by p.requested_at
     limit greatest(p_limit, 1)
       for update skip locked
  ),
  claimed as (
    update private.channel_probes p set claimed_at = now(), claimed_by = left(p_instance, 200)
      from due where p.id = due.id
    returning p.id, p.channel_id, p.kind, p.model
  )
  select cl.id, cl.channel_id, c.version, cl.kind, cl.model,
         coalesce(c.model_mapping ->> cl.model, cl.model),
         k.idx, k.ordinal, private.option_int('ProbeTimeoutMs')
    from claimed cl
    join private.channels c on c.id = cl.channel_id
    left join lateral (
      select (row_number() over (order by ck.ordinal) - 1)::integer as idx, ck.ordinal
        from private.channel_keys ck where ck.channel_id = c.id and ck.status = 'enabled'
       order by random() limit 1) k on true
$$;

comment on function gateway.probe_claim(text, integer) is
  E'Claims queued channel probes (FOR UPDATE SKIP LOCKED) for one gateway instance; returns channel, version, upstream model and key to use.';

-- gateway.probe_finish: stores probe results ([{id, ok, http_status, ms, error}]). A successful
-- probe re-enables an auto-disabled channel; a failed recovery probe reopens the breaker with a
-- doubled wait. Manually disabled channels are never changed.
create or replace function gateway.probe_finish(p_results jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_open integer := private.option_int('BreakerOpenSeconds');
  v_max integer := private.option_int('BreakerMaxOpenSeconds');
  v_n integer;
  v_ok bigint[];
  v_ok_probe bigint[];
  v_failed bigint[];
  v_errors text[];
begin
  with r as (
    select * from jsonb_to_recordset(p_results) as x(id bigint, ok boolean, http_status integer, ms integer, error text)
  ),
  done as (
    update private.channel_probes p
       set finished_at = now(), ok = coalesce(r.ok, false), http_status = r.http_status, ms = r.ms, error = left(r.error, 2000)
      from r where p.id = r.id and p.finished_at is null
    returning p.channel_id, p.id, p.ok, p.error
  )
  select count(*)::integer,
         coalesce(array_agg(d.channel_id) filter (where d.ok), '{}'),
         coalesce(array_agg(d.id) filter (where d.ok), '{}'),
         coalesce(array_agg(d.channel_id) filter (where not d.ok), '{}'),
         coalesce(array_agg(d.error) filter (where not d.ok), '{}')
    into v_n, v_ok, v_ok_probe, v_failed, v_errors
    from done d;

  update private.channels c
     set status = 'enabled', status_changed_at = now(),
         status_reason = format('re-enabled automatically: probe #%s succeeded at %s', v_ok_probe[array_position(v_ok, c.id)],
                                to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
   where c.id = any(v_ok) and c.status = 'auto_disabled';

  update private.channel_breakers b
     set state = 'open', probe_failures = b.probe_failures + 1,
         last_error = left(v_errors[array_position(v_failed, b.channel_id)], 2000),
         next_probe_at = now() + make_interval(secs => least(v_max, v_open * power(2, least(b.probe_failures + 1, 20))::bigint)),
         updated_at = now()
   where b.channel_id = any(v_failed) and not (b.channel_id = any(v_ok))
     and exists (select 1 from private.channels c where c.id = b.channel_id and c.status = 'auto_disabled');
  return v_n;
end
$$;

comment on function gateway.probe_finish(jsonb) is
  E'Stores channel probe results; a success re-enables an auto-disabled channel (never a manually disabled one), a failure reopens its breaker with exponential back-off.';

-- gateway.probes_tick: lets gateways drive probes_schedule when pg_cron does not (no-op otherwise).
create or replace function gateway.probes_tick()
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_cron boolean := false;
begin
  if to_regclass('cron.job') is not null then
    execute 'select exists (select 1 from cron.job where jobname = ''elygate.probes'' and active)' into v_cron;
  end if;
  if v_cron then
    return 0;
  end if;
  return private.probes_schedule(now());
end
$$;

comment on function gateway.probes_tick() is
  E'Runs private.probes_schedule() unless pg_cron schedules it in this database; gateways call it every 30 s.';
