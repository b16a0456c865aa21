-- Client key rotation: admin.key_rotate issues a new key for the same owner with the same limits
-- and counters; the old key keeps working for a grace period, then is refused with a 401 saying it
-- was rotated (private.key_verify reads private.key_rotations only on that refusal).
/* why the grace end is the old key's expires_at: admission already refuses an expired key, so the
   request path reads nothing new and changes in one place only (the KEXPD message). */

-- admin.key_rotate: a new key replacing p_key_id; the old one works until now() + p_grace (or its
-- own earlier expiry). Returns the new plaintext key once.
create or replace function admin.key_rotate(p_key_id bigint, p_grace interval default interval '24 hours')
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_old private.api_keys;
  v_new private.api_keys;
  v_plain text;
  v_until timestamptz;
begin
  if p_grace is null or p_grace < interval '0' then
    raise exception using errcode = 'BADIN', column = 'grace',
      message = 'The grace period is how long the old key keeps working: zero or more (e.g. ''24 hours'').';
  end if;
  select * into v_old from private.api_keys k where k.id = p_key_id for update;
  if v_old.id is null then
    raise exception using errcode = 'BADIN', column = 'key_id', message = format('No API key #%s.', p_key_id);
  end if;
  if v_old.status <> 'active' or (v_old.expires_at is not null and v_old.expires_at <= now()) then
    raise exception using errcode = 'BADIN', column = 'key_id',
      message = format('Key #%s (%s) is %s: only a working key can be rotated.', v_old.id, v_old.key_prefix,
                       case when v_old.status <> 'active' then v_old.status else 'expired' end);
  end if;
  if exists (select 1 from private.key_rotations r where r.old_key_id = v_old.id) then
    raise exception using errcode = 'BADIN', column = 'key_id',
      message = format('Key #%s (%s) was already rotated (to key #%s); rotate that one instead.', v_old.id, v_old.key_prefix,
                       (select r.new_key_id from private.key_rotations r where r.old_key_id = v_old.id));
  end if;
  v_plain := 'sk-' || translate(encode(public.gen_random_bytes(36), 'base64'), '+/', '-_');
  insert into private.api_keys (user_id, name, key_hash, key_prefix, expires_at, allowed_models, allowed_ips,
                                quota_micros, rpm_limit, tpm_limit, concurrency_limit, cache_enabled, cache_mode)
  values (v_old.user_id, v_old.name, public.digest(v_plain, 'sha256'), left(v_plain, 7) || '...' || right(v_plain, 4),
          v_old.expires_at, v_old.allowed_models, v_old.allowed_ips, v_old.quota_micros, v_old.rpm_limit,
          v_old.tpm_limit, v_old.concurrency_limit, v_old.cache_enabled, v_old.cache_mode)
  returning * into v_new;
  -- The counters: the quota spent so far and the RPM/TPM window (this minute and the last one).
  -- Requests in flight stay on the old key's counters (reserved, inflight) and settle there.
  update private.key_counters c
     set used_micros = o.used_micros, rate_minute = o.rate_minute, minute_requests = o.minute_requests,
         minute_tokens = o.minute_tokens, prev_requests = o.prev_requests, prev_tokens = o.prev_tokens
    from private.key_counters o where o.key_id = v_old.id and c.key_id = v_new.id;
  v_until := least(coalesce(v_old.expires_at, 'infinity'), now() + p_grace);
  update private.api_keys k set expires_at = v_until where k.id = v_old.id;
  insert into private.key_rotations (old_key_id, new_key_id, grace_until, rotated_by)
  values (v_old.id, v_new.id, v_until, (select a.actor from private.audit_actor() a));
  return jsonb_build_object('id', v_new.id, 'key', v_plain, 'key_prefix', v_new.key_prefix, 'user_id', v_new.user_id,
                            'name', v_new.name, 'replaces', v_old.id, 'old_key_works_until', v_until);
end
$$;
comment on function admin.key_rotate(bigint, interval) is
  E'Rotates a client key: a new key for the same owner with the same limits, quota spent and rate windows; returns {"id", "key" (plaintext, shown only here), "key_prefix", "replaces", "old_key_works_until"}. The old key keeps working for p_grace (default 24 hours), then gets 401 saying it was rotated.';

-- The rotations, for the Keys page and psql. (Guarded: until migrations/current.sql is committed,
-- the first pass of sql/ runs before private.key_rotations exists.)
do $$
begin
  if to_regclass('private.key_rotations') is not null then
    execute $v$
      create or replace view admin.key_rotations as
        select r.old_key_id, r.new_key_id, r.rotated_at, r.grace_until, r.rotated_by, (r.grace_until > now()) as in_grace
          from private.key_rotations r
    $v$;
    comment on view admin.key_rotations is
      E'Which key replaced which (admin.key_rotate), when, who rotated it, and until when the old key keeps working.';
  end if;
end
$$;
