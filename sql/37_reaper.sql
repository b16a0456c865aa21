-- The reaper (job elygate.reaper): requests whose gateway never reported back (it died, or lost its
-- database connection for longer than its spool could cover) are settled through private.settle at
-- their reservation, marked expired, once ReservationTtlMinutes have passed.

-- private.reservations_reap: settles admissions whose gateway never reported back (killed
-- mid-stream) at their reserved estimate, marked usage_source = 'expired'. Bounded per run.
create or replace function private.reservations_reap(p_now timestamptz default now(), p_limit integer default 5000)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ttl interval := make_interval(mins => private.option_int('ReservationTtlMinutes'));
  v_outcomes jsonb;
begin
  if not pg_try_advisory_xact_lock(hashtext('private.reservations_reap')) then
    return 0;
  end if;
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', r.id, 'created_at', r.created_at, 'status', 'expired', 'http_status', null,
           'prompt_tokens', r.prompt_tokens,
           'completion_tokens', greatest(r.reserved_tokens - coalesce(r.prompt_tokens, 0), 0),
           'usage_source', 'expired', 'abort_policy', 'reserved-estimate',
           'error_code', 'gateway_lost', 'error_message',
           format('No outcome arrived within %s; settled at the reserved estimate.', v_ttl))), '[]'::jsonb)
    into v_outcomes
    from (select a.id, a.created_at, a.prompt_tokens, a.reserved_tokens
            from private.admissions a
           where a.created_at < p_now - v_ttl
           order by a.created_at
           limit p_limit) r;
  return private.settle(v_outcomes);
end
$$;

comment on function private.reservations_reap(timestamptz, integer) is
  E'Settles admissions older than ReservationTtlMinutes (requests whose outcome never arrived) at their reserved estimate (usage_source expired). The job behind cron elygate.reaper.';
