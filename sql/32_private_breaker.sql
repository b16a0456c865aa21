-- The circuit breaker, shared by every gateway through PostgreSQL: a sliding window of attempt
-- outcomes per channel, auto-disable above a failure threshold (with the reason stored), probes
-- while open (half-open), automatic re-enable on a successful probe. A channel an operator disabled
-- ('manually_disabled') is never re-enabled automatically. Channel tests use the same probes.
--
-- Outcomes arrive only through gateway.relay_finish's batch: private.settle folds the attempts of
-- the rows that batch settled into the window, in the same transaction, so the breaker costs no
-- round trip of its own.

-- private.breaker_record: folds attempts ([{channel_id, status, ms, error, key, skipped, failed}])
-- into the window, then opens the breaker of every channel that crossed the threshold and disables
-- keys with repeated authentication failures. Returns the number of channels it disabled.
-- Called by private.settle (one call per relay_finish batch, with the options it read already);
-- tests call it with a given now.
create or replace function private.breaker_record(p_attempts jsonb, p_now timestamptz default now(), p_opt jsonb default null)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  /* why so few assignments up front: each PL/pgSQL expression is set up again in every
     transaction (a few µs each), and settlement calls this once per transaction. Most batches
     fail nothing and touch no key: they read the failure codes and run one statement. */
  v_opt jsonb := coalesce(p_opt, private.options_pick('BreakerWindowSeconds', 'BreakerMinRequests', 'BreakerFailurePercent',
                                                      'BreakerOpenSeconds', 'KeyDisableAuthFailures', 'BreakerFailureStatusCodes'));
  v_window interval;
  v_bucket timestamptz := to_timestamp(floor(extract(epoch from p_now) / 10) * 10);
  v_failing jsonb;
  v_auth_failures boolean;
  v_opened integer := 0;
begin
  if jsonb_typeof(p_attempts) is distinct from 'array' or jsonb_array_length(p_attempts) = 0 then
    return 0;
  end if;

  /* why: one row per (channel, key, 10 s bucket) keeps a batch to a handful of upserts whatever
     the request rate; the window is a sum over the last BreakerWindowSeconds of buckets.
     A failure is a connection error or timeout (no status), a status in BreakerFailureStatusCodes,
     or a 2xx whose stream broke before its first byte (an error recorded with it). Attempts the
     gateway passed over without calling (skipped) are not outcomes. */
  with codes as materialized (
    select array(select jsonb_array_elements_text((v_opt ->> 'BreakerFailureStatusCodes')::jsonb)::integer) as c
  ),
  a as (
    select (e ->> 'channel_id')::bigint as channel_id, coalesce((e ->> 'key')::integer, 0) as key_ordinal,
           (e ->> 'status')::integer as status, ord,
           coalesce(e ->> 'error', 'HTTP ' || (e ->> 'status')) as error,
           coalesce((e ->> 'failed')::boolean,
                    (e ->> 'status') is null
                    or (e ->> 'status')::integer = any(codes.c)
                    or ((e ->> 'status')::integer between 200 and 299 and e ? 'error')) as failed
      from jsonb_array_elements(p_attempts) with ordinality x(e, ord), codes
     where e ? 'channel_id' and not coalesce((e ->> 'skipped')::boolean, false)
  ),
  b as (
    select a.channel_id, a.key_ordinal,
           (count(*) filter (where not a.failed))::integer as ok, (count(*) filter (where a.failed))::integer as failed,
           (count(*) filter (where a.status in (401, 403)))::integer as auth_failed,
           (array_agg(a.error order by a.ord desc) filter (where a.failed))[1] as last_error
      from a
     group by a.channel_id, a.key_ordinal
     /* why after grouping: checked per attempt, the correlated scan of private.channels ran once
        per attempt, and every rescan asks the kernel for the table's size (an lseek): with 120
        attempts 0.75-0.82 ms per call, 0.45-0.49 ms checked per group (performance.md, 38). */
    having exists (select 1 from private.channels c where c.id = a.channel_id)
  ),
  up as (
    insert into private.channel_outcomes as o (channel_id, key_ordinal, bucket, ok, failed, auth_failed)
    select b.channel_id, b.key_ordinal, v_bucket, b.ok, b.failed, b.auth_failed from b
    on conflict (channel_id, bucket, key_ordinal) do update
      set ok = o.ok + excluded.ok, failed = o.failed + excluded.failed, auth_failed = o.auth_failed + excluded.auth_failed
    returning 1
  )
  -- (up runs whether or not it is read: PostgreSQL executes every data-modifying CTE.)
  select (select jsonb_agg(jsonb_build_object('channel_id', f.channel_id, 'last_error', f.last_error))
            from (select b.channel_id,
                         (array_agg(b.last_error order by b.failed desc) filter (where b.last_error is not null))[1] as last_error
                    from b group by b.channel_id having sum(b.failed) > 0) f),
         exists (select 1 from a where a.status in (401, 403) and a.key_ordinal > 0)
    into v_failing, v_auth_failures;
  if v_failing is null and not v_auth_failures then
    return 0;
  end if;
  v_window := make_interval(secs => (v_opt ->> 'BreakerWindowSeconds')::integer);

  /* why a second statement: most batches have no failure, and then nothing below runs (reading
     the window, and an UPDATE of channels whose statement trigger would fire even for no row).
     The window it reads already includes this batch (the upsert above has completed). */
  if v_failing is not null then
    with bc as (
      select (f ->> 'channel_id')::bigint as channel_id, f ->> 'last_error' as last_error
        from jsonb_array_elements(v_failing) f
    ),
    w as (
      select bc.channel_id as id, bc.last_error,
             coalesce((select sum(o.ok) from private.channel_outcomes o
                        where o.channel_id = bc.channel_id and o.bucket > p_now - v_window and o.bucket <= p_now), 0)::integer as ok,
             coalesce((select sum(o.failed) from private.channel_outcomes o
                        where o.channel_id = bc.channel_id and o.bucket > p_now - v_window and o.bucket <= p_now), 0)::integer as failed
        from bc
        join private.channels c on c.id = bc.channel_id and c.status = 'enabled'
    ),
    tripped as (
      select w.* from w
       where w.ok + w.failed >= (v_opt ->> 'BreakerMinRequests')::integer
         and w.failed * 100 >= (v_opt ->> 'BreakerFailurePercent')::integer * (w.ok + w.failed)
    ),
    disabled as (
      update private.channels c
         set status = 'auto_disabled',
             status_changed_at = p_now,
             status_reason = format('circuit breaker: %s of %s attempts failed in the last %s s (last: %s)',
                                    t.failed, t.ok + t.failed, extract(epoch from v_window)::integer,
                                    left(coalesce(t.last_error, 'unknown'), 300))
        from tripped t
       where c.id = t.id and c.status = 'enabled'
      returning c.id, t.last_error
    ),
    opened as (
      insert into private.channel_breakers as br (channel_id, state, opened_at, next_probe_at, probe_failures, last_error, updated_at)
      select d.id, 'open', p_now, p_now + make_interval(secs => (v_opt ->> 'BreakerOpenSeconds')::integer), 0, d.last_error, p_now
        from disabled d
      on conflict (channel_id) do update
        set state = 'open', opened_at = p_now, next_probe_at = excluded.next_probe_at, probe_failures = 0,
            last_error = excluded.last_error, updated_at = p_now
      returning 1
    )
    select (select count(*) from opened)::integer into v_opened;
  end if;

  if v_auth_failures and (v_opt ->> 'KeyDisableAuthFailures')::integer > 0 then
    -- The window now includes this batch (the statement above has completed).
    update private.channel_keys k
       set status = 'disabled', status_changed_at = p_now,
           status_reason = format('auto: %s authentication failures (401/403) in the last %s s', s.n, extract(epoch from v_window)::integer)
      from (select o.channel_id, o.key_ordinal, sum(o.auth_failed)::integer as n
              from private.channel_outcomes o
              join private.channel_keys ck on ck.channel_id = o.channel_id and ck.ordinal = o.key_ordinal
             where (o.channel_id, o.key_ordinal) in (select (e ->> 'channel_id')::bigint, (e ->> 'key')::integer
                                                       from jsonb_array_elements(p_attempts) e
                                                      where (e ->> 'status') in ('401', '403'))
               and o.bucket > p_now - v_window
               and o.bucket + interval '10 seconds' > greatest(ck.created_at, coalesce(ck.status_changed_at, ck.created_at))
             group by 1, 2
            having sum(o.auth_failed) >= (v_opt ->> 'KeyDisableAuthFailures')::integer) s
     where k.channel_id = s.channel_id and k.ordinal = s.key_ordinal and k.status = 'enabled';
  end if;
  return v_opened;
end
$$;
comment on function private.breaker_record(jsonb, timestamptz, jsonb) is
  E'Folds upstream attempts into the breaker window; auto-disables channels past BreakerFailurePercent of at least BreakerMinRequests attempts in BreakerWindowSeconds (reason stored) and keys with KeyDisableAuthFailures 401/403s. Never touches manually disabled channels.';


-- An operator (or a probe) re-enabling a channel starts it with an empty window and a closed breaker.
create or replace function private.tg_channels__breaker_reset()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.status = 'enabled' and old.status <> 'enabled' then
    delete from private.channel_outcomes o where o.channel_id = new.id;
    update private.channel_breakers b
       set state = 'closed', next_probe_at = null, probe_failures = 0, updated_at = now()
     where b.channel_id = new.id;
  end if;
  return null;
end
$$;
create or replace trigger _310_breaker_reset after update of status on private.channels
  for each row execute function private.tg_channels__breaker_reset();

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

-- gateway.breaker_states: every channel's breaker state, for the gateway's /metrics
-- (elygate_breaker_state); read every 30 s and after probes, never on the request path.
create or replace function gateway.breaker_states()
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(jsonb_object_agg(c.id::text,
           case when c.status = 'auto_disabled' then coalesce(nullif(b.state, 'closed'), 'open')
                else coalesce(b.state, 'closed') end), '{}'::jsonb)
    from private.channels c
    left join private.channel_breakers b on b.channel_id = c.id
   where c.status <> 'archived'
$$;
comment on function gateway.breaker_states() is
  E'Every channel''s circuit breaker state (closed, half_open, open) by channel id, for the gateway''s /metrics.';

-- private.breaker_trim: bounded cleanup of window buckets long past any window.
create or replace function private.breaker_trim(p_now timestamptz default now())
returns integer
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  with old as (
    select o.ctid from private.channel_outcomes o
     where o.bucket < p_now - make_interval(secs => 2 * private.option_int('BreakerWindowSeconds')) - interval '1 minute'
     limit 50000
  ), gone as (
    delete from private.channel_outcomes o using old where o.ctid = old.ctid returning 1
  )
  select count(*)::integer from gone
$$;
comment on function private.breaker_trim(timestamptz) is E'Deletes at most 50,000 breaker window buckets older than twice the window (pg_cron, every 10 minutes).';

-- admin.channel_test: queues a test request to a channel now; the result appears in admin.channel_probes.
create or replace function admin.channel_test(p_channel_id bigint, p_model text default null)
returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ch private.channels;
  v_id bigint;
begin
  select * into v_ch from private.channels c where c.id = p_channel_id;
  if not found then
    raise exception using errcode = 'BADCH', message = format('No channel with id %s.', p_channel_id);
  end if;
  if v_ch.status = 'archived' then   -- archived is for good: nothing calls it any more
    raise exception using errcode = 'BADCH', column = 'status',
      message = format('Channel "%s" is archived; restore it (status manually_disabled) to test it.', v_ch.name);
  end if;
  if coalesce(p_model, v_ch.config ->> 'probe_model', v_ch.models[1]) is null then
    raise exception using errcode = 'BADCH', column = 'model', message = 'The channel serves no model; name one to test.';
  end if;
  insert into private.channel_probes (channel_id, kind, model)
  values (p_channel_id, 'test', coalesce(p_model, v_ch.config ->> 'probe_model', v_ch.models[1]))
  returning id into v_id;
  perform pg_notify('elygate_probe', '1');
  return v_id;
end
$$;
comment on function admin.channel_test(bigint, text) is
  E'Queues a test request (a one-token chat completion) to the channel; a gateway runs it within a moment. Returns the probe id: select * from admin.channel_probes where id = ...';

create or replace view admin.channel_probes as
  select p.id, p.channel_id, c.name as channel_name, p.kind, p.model, p.requested_at, p.claimed_at, p.claimed_by,
         p.finished_at, p.ok, p.http_status, p.ms, p.error
    from private.channel_probes p
    left join private.channels c on c.id = p.channel_id;

create or replace view admin.channel_health as
  select c.id, c.name, c.type, c.status, c.status_reason, c.status_changed_at,
         coalesce(b.state, 'closed') as breaker_state, b.opened_at, b.next_probe_at, b.probe_failures, b.last_error,
         coalesce(w.ok, 0) as window_ok, coalesce(w.failed, 0) as window_failed,
         (select count(*) from private.channel_keys k where k.channel_id = c.id and k.status = 'enabled') as keys_enabled,
         (select count(*) from private.channel_keys k where k.channel_id = c.id and k.status <> 'enabled') as keys_disabled,
         lp.finished_at as last_probe_at, lp.ok as last_probe_ok, lp.error as last_probe_error
    from private.channels c
    left join private.channel_breakers b on b.channel_id = c.id
    left join lateral (
      select sum(o.ok)::integer as ok, sum(o.failed)::integer as failed from private.channel_outcomes o
       -- (the option read inline: a view runs functions as its reader, who may not call private.*)
       where o.channel_id = c.id
         and o.bucket > now() - make_interval(secs => (select op.value::integer from private.options op where op.key = 'BreakerWindowSeconds'))) w on true
    left join lateral (
      select p.finished_at, p.ok, p.error from private.channel_probes p
       where p.channel_id = c.id and p.finished_at is not null order by p.finished_at desc limit 1) lp on true;

do $$
begin
  if current_setting('cron.database_name', true) = current_database()
     and exists (select 1 from pg_available_extensions where name = 'pg_cron') then
    create extension if not exists pg_cron;
    perform cron.schedule('elygate.probes', '* * * * *', 'select private.probes_schedule()');
    perform cron.schedule('elygate.breaker_trim', '*/10 * * * *', 'select private.breaker_trim()');
  end if;
end
$$;
