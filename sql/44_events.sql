-- Events (issue 17, "alerts and webhooks").
--
-- An event is a row of private.events, inserted IN THE SAME TRANSACTION as the change that caused
-- it (a trigger, or the function making the change): a rolled-back change leaves no event, and a
-- committed one always has its event. Inserting an event also inserts one delivery per enabled
-- endpoint that subscribes to its kind (private.webhook_deliveries) and wakes the gateways
-- (NOTIFY elygate_webhook); how deliveries are sent is sql/45_webhook_delivery.sql.

--
-- Kinds (private.event_kinds):
--   budget.threshold  a budget's spend in its period reached its threshold_percent (once per period)
--   budget.exhausted  a budget's spend in its period reached its amount (once per period); both
--                     raised by settlement (private.limits_settle, sql/36_budgets.sql)
--   channel.disabled  the circuit breaker took a channel out (status auto_disabled)
--   channel.enabled   a channel the breaker had taken out is enabled again (probe or operator)
--   job.failed        a maintenance job's run failed (private.job_run)
--   job.overdue       a maintenance job has not succeeded within twice its interval plus a minute
--   key.revoked       an active client key was revoked or archived (status says which)
--   wallet.low        a wallet's balance fell below its threshold (WalletLowBalanceMicros, or the
--                     user's own in private.wallet_alerts); once per crossing
--   webhook.test      admin.webhook_test: delivered to the one endpoint it names
-- None is raised by the request path (budget events come from settlement, off it): the hot tables (wallets, key_counters, admissions, requests,
-- ledger) carry no trigger; the wallet check runs as a job (elygate.alerts).

-- private.event_kinds: every kind of event there is (endpoints subscribe to these).
create or replace function private.event_kinds()
returns text[]
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select array['budget.exhausted', 'budget.threshold', 'channel.disabled', 'channel.enabled', 'job.failed', 'job.overdue', 'key.revoked', 'wallet.low', 'webhook.test'] $$;

comment on function private.event_kinds() is E'The kinds of event that private.events holds and webhook endpoints subscribe to.';

-- private.event_emit: records an event, in the caller's transaction. Returns its id.
create or replace function private.event_emit(p_kind text, p_payload jsonb)
returns bigint
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$ insert into private.events (kind, payload) values (p_kind, coalesce(p_payload, '{}'::jsonb)) returning id $$;

comment on function private.event_emit(text, jsonb) is E'Records an event (private.events) in the current transaction; its deliveries follow by trigger.';

-- Fan-out: one delivery per enabled endpoint subscribed to the kind (an empty kinds list is every
-- kind). webhook.test goes only where admin.webhook_test sends it. Then the gateways are woken
-- (NOTIFY is delivered at commit, once per transaction whatever the number of events).
create or replace function private.tg_events__fanout()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.kind = 'webhook.test' then
    insert into private.webhook_deliveries (event_id, endpoint_id, next_attempt_at)
    select new.id, e.id, new.created_at from private.webhook_endpoints e where e.id = (new.payload ->> 'endpoint_id')::bigint;
  else
    insert into private.webhook_deliveries (event_id, endpoint_id, next_attempt_at)
    select new.id, e.id, new.created_at
      from private.webhook_endpoints e
     where e.enabled and (cardinality(e.kinds) = 0 or new.kind = any(e.kinds));
  end if;
  if found then
    perform pg_notify('elygate_webhook', '');
  end if;
  return null;
end
$$;

create or replace trigger _500_fanout after insert on private.events
  for each row execute function private.tg_events__fanout();

-- channel.disabled / channel.enabled: on the channel's status change by the circuit breaker
-- (private.breaker_record sets auto_disabled; gateway.probe_finish, or an operator, enables it
-- again). A channel row changes only when its configuration or status does, never per request.
create or replace function private.tg_channels__events()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.status = 'auto_disabled' and old.status <> 'auto_disabled' then
    perform private.event_emit('channel.disabled', jsonb_build_object(
      'channel_id', new.id, 'channel', new.name, 'status', new.status, 'reason', new.status_reason, 'at', new.status_changed_at));
  elsif old.status = 'auto_disabled' and new.status = 'enabled' then
    perform private.event_emit('channel.enabled', jsonb_build_object(
      'channel_id', new.id, 'channel', new.name, 'status', new.status, 'reason', new.status_reason, 'at', new.status_changed_at));
  end if;
  return null;
end
$$;

create or replace trigger _600_events after update of status on private.channels
  for each row when (old.status is distinct from new.status)
  execute function private.tg_channels__events();

-- key.revoked: whatever took an active key out of use (admin.key_revoke, admin.key_update,
-- admin.key_archive: "status" says which).
create or replace function private.tg_api_keys__events()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform private.event_emit('key.revoked', jsonb_build_object(
    'key_id', new.id, 'key_prefix', new.key_prefix, 'name', new.name, 'user_id', new.user_id, 'status', new.status,
    'revoked_at', coalesce(new.revoked_at, now()), 'by', current_user));
  return null;
end
$$;

create or replace trigger _600_events after update of status on private.api_keys
  for each row when (old.status = 'active' and new.status in ('revoked', 'archived'))
  execute function private.tg_api_keys__events();

-- private.wallets_low_check: wallet.low once per crossing. A wallet is below when its settled
-- balance (balance_micros) is under its threshold (the user's own, else WalletLowBalanceMicros;
-- 0 is off); it is alerted once and re-armed when it is back at or above the threshold.
/* why a job and not a trigger: private.wallets is the hot path's one atomic write per request; a
   trigger there would run per request. A minute's delay on a low-balance alert costs nothing. */
create or replace function private.wallets_low_check(p_now timestamptz default now())
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_default bigint := private.option_text('WalletLowBalanceMicros')::bigint;
  v_n integer;
begin
  -- Re-arm the wallets that are back above their threshold (or whose threshold went to 0).
  update private.wallet_alerts a set alerted_at = null, alerted_balance = null
    from private.wallets w
   where w.user_id = a.user_id and a.alerted_at is not null
     and (coalesce(a.threshold_micros, v_default) = 0 or w.balance_micros >= coalesce(a.threshold_micros, v_default));
  with below as (
    select w.user_id, w.balance_micros, coalesce(a.threshold_micros, v_default) as threshold,
           w.balance_micros - w.reserved_micros + w.credit_limit_micros as available
      from private.wallets w
      left join private.wallet_alerts a on a.user_id = w.user_id
     where coalesce(a.threshold_micros, v_default) > 0
       and w.balance_micros < coalesce(a.threshold_micros, v_default)
       and a.alerted_at is null
       and not exists (select 1 from admin.internal_users i where i.id = w.user_id)
  ), marked as (
    insert into private.wallet_alerts as a (user_id, alerted_at, alerted_balance)
    select b.user_id, p_now, b.balance_micros from below b
    on conflict (user_id) do update set alerted_at = excluded.alerted_at, alerted_balance = excluded.alerted_balance
      where a.alerted_at is null
    returning a.user_id
  )
  select count(private.event_emit('wallet.low', jsonb_build_object(
           'user_id', b.user_id, 'username', u.username, 'balance_micros', b.balance_micros,
           'threshold_micros', b.threshold, 'available_micros', b.available, 'at', p_now)))::integer
    into v_n
    from marked m join below b on b.user_id = m.user_id join private.users u on u.id = b.user_id;
  return v_n;
end
$$;

comment on function private.wallets_low_check(timestamptz) is
  E'Raises wallet.low once for each wallet that went below its threshold (WalletLowBalanceMicros or the user''s own) and re-arms those back above it. Returns the events raised.';

-- private.jobs_overdue_check: job.overdue once per episode (admin.job_overdue, the rule
-- admin.jobs shows), counted from the job's first sighting when it never succeeded. Re-armed by
-- the next success. Called by the elygate.alerts job
-- and by every webhook poll of the gateways (gateway.webhook_claim), so that a stopped pg_cron,
-- which runs no job at all, is still noticed.
create or replace function private.jobs_overdue_check(p_now timestamptz default now())
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_n integer;
begin
  -- Every gateway's poll calls this: one at a time is enough (and two could lock rows in another order).
  if not pg_try_advisory_xact_lock(hashtext('private.jobs_overdue_check')) then
    return 0;
  end if;
  insert into private.job_alerts (job, first_seen)
  select j.name, p_now from private.jobs j
   where not exists (select 1 from private.job_alerts a where a.job = j.name)
  on conflict (job) do nothing;
  with s as (
    select j.name, j.every, a.first_seen, a.overdue_alerted_at,
           (select max(r.started_at) from private.job_runs r where r.job = j.name and r.status = 'succeeded') as last_ok
      from private.jobs j join private.job_alerts a on a.job = j.name
  ), judged as (
    select s.*, admin.job_overdue(coalesce(s.last_ok, s.first_seen), s.every, p_now) as overdue from s
  ), rearmed as (
    update private.job_alerts a set overdue_alerted_at = null
      from judged x where x.name = a.job and not x.overdue and a.overdue_alerted_at is not null
  ), marked as (
    update private.job_alerts a set overdue_alerted_at = p_now
      from judged x where x.name = a.job and x.overdue and a.overdue_alerted_at is null
    returning a.job
  )
  select count(private.event_emit('job.overdue', jsonb_build_object(
           'job', x.name, 'every', x.every::text, 'last_success_at', x.last_ok, 'at', p_now)))::integer
    into v_n
    from marked m join judged x on x.name = m.job;
  return v_n;
end
$$;

comment on function private.jobs_overdue_check(timestamptz) is
  E'Raises job.overdue once for each maintenance job without a success within twice its interval plus a minute, and re-arms the ones that succeeded since. Returns the events raised.';

-- private.events_purge: events older than EventRetentionDays go, with their delivery log, unless a
-- delivery of theirs is still pending (bounded per run).
create or replace function private.events_purge(p_now timestamptz default now())
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_n integer;
begin
  delete from private.events e
   where e.id in (select x.id from private.events x
                   where x.created_at < p_now - make_interval(days => private.option_text('EventRetentionDays')::integer)
                     and not exists (select 1 from private.webhook_deliveries d
                                      where d.event_id = x.id and d.status in ('pending', 'retrying'))
                   order by x.created_at limit 50000);
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

comment on function private.events_purge(timestamptz) is E'Deletes up to 50,000 events older than EventRetentionDays whose deliveries are all finished (delivered or dead).';

-- private.alerts_check: the elygate.alerts job.
create or replace function private.alerts_check(p_now timestamptz default now())
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not pg_try_advisory_xact_lock(hashtext('private.alerts_check')) then
    return jsonb_build_object('skipped', 'another run holds the lock');
  end if;
  return jsonb_build_object('wallet_low', private.wallets_low_check(p_now),
                            'job_overdue', private.jobs_overdue_check(p_now),
                            'events_purged', private.events_purge(p_now));
end
$$;

comment on function private.alerts_check(timestamptz) is
  E'The elygate.alerts job: wallet.low and job.overdue events (once per crossing), and the purge of old events.';
