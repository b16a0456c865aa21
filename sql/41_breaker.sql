-- The circuit breaker, shared by every gateway through PostgreSQL: a sliding window of attempt
-- outcomes per channel, auto-disable above a failure threshold (with the reason stored), and the
-- state the gateways export as a metric. A channel an operator disabled ('manually_disabled') is
-- never re-enabled automatically. Probes (half-open) and re-enable: sql/42_probes.sql.
--
-- Outcomes arrive only through gateway.relay_finish's batch: private.settle folds the attempts of
-- the rows that batch settled into the window, in the same transaction, so the breaker costs no
-- round trip of its own.

-- private.breaker_record: folds attempts ([{channel_id, status, ms, error, key, skipped, failed}])
-- into the window, then opens the breaker of every channel that crossed the threshold and disables
-- keys with repeated authentication failures. Returns the number of channels it disabled.
-- Called by private.settle (one call per relay_finish batch, with the options it read already);
-- tests call it with a given now.
-- (Invoker's rights, no search_path of its own: it runs inside private.settle, which pins both, and
-- setting them again cost a settings save and restore per settlement call.)
create or replace function private.breaker_record(p_attempts jsonb, p_now timestamptz default now(), p_opt jsonb default null)
returns integer
language plpgsql volatile
as $$
declare
  /* why so few assignments up front: each PL/pgSQL expression is set up again in every
     transaction, and settlement calls this once per transaction. Most batches
     fail nothing and touch no key: they read the failure codes and run one statement. */
  v_opt jsonb := coalesce(p_opt, private.options_hot());
  v_codes integer[] := private.status_codes(v_opt ->> 'BreakerFailureStatusCodes');   -- (an expression: no statement)
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
  with a as (
    select (e ->> 'channel_id')::bigint as channel_id, coalesce((e ->> 'key')::integer, 0) as key_ordinal,
           (e ->> 'status')::integer as status, ord,
           coalesce(e ->> 'error', 'HTTP ' || (e ->> 'status')) as error,
           coalesce((e ->> 'failed')::boolean,
                    (e ->> 'status') is null
                    or (e ->> 'status')::integer = any(v_codes)
                    or ((e ->> 'status')::integer between 200 and 299 and e ? 'error')) as failed
      from jsonb_array_elements(p_attempts) with ordinality x(e, ord)
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
        per attempt, and every rescan asks the kernel for the table's size (an lseek);
        docs/performance.md, finding 38. */
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
