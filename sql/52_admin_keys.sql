-- Client API keys, for operators: create (the plaintext shown once), revoke, edit limits, archive,
-- rotate with a grace period.

-- admin.key_create: creates a client API key and returns its plaintext ONCE (only its sha256 is kept).
create or replace function admin.key_create(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user_id bigint;
  v_plain text;
  v_key private.api_keys;
  v_ips cidr[];
begin
  perform private.args_check(p_args, array['user_id', 'username', 'name', 'expires_at', 'allowed_models',
    'allowed_ips', 'quota_micros', 'rpm_limit', 'tpm_limit', 'concurrency_limit', 'cache_enabled', 'cache_mode'], 'admin.key_create');
  perform private.key_fields_check(p_args);
  select u.id into v_user_id from private.users u
   where u.id = (p_args ->> 'user_id')::bigint or u.username = p_args ->> 'username';
  if v_user_id is null then
    raise exception using errcode = 'BADIN', column = 'user_id',
      message = 'admin.key_create needs an existing "user_id" or "username".';
  end if;
  begin
    v_ips := private.json_text_array(p_args -> 'allowed_ips', 'allowed_ips')::cidr[];
  exception when invalid_text_representation then
    raise exception using errcode = 'BADIN', column = 'allowed_ips',
      message = '"allowed_ips" must hold IP addresses or CIDR ranges such as "10.0.0.0/8".';
  end;
  v_plain := 'sk-' || translate(encode(public.gen_random_bytes(36), 'base64'), '+/', '-_');
  insert into private.api_keys (user_id, name, key_hash, key_prefix, expires_at, allowed_models, allowed_ips,
                                quota_micros, rpm_limit, tpm_limit, concurrency_limit, cache_enabled, cache_mode)
  values (v_user_id, coalesce(p_args ->> 'name', ''), public.digest(v_plain, 'sha256'),
          left(v_plain, 7) || '...' || right(v_plain, 4),
          private.arg_time(p_args, 'expires_at'),
          private.json_text_array(p_args -> 'allowed_models', 'allowed_models'), v_ips,
          private.arg_int(p_args, 'quota_micros', 0, 9223372036854775807),
          private.arg_int(p_args, 'rpm_limit', 1, 2147483647),
          private.arg_int(p_args, 'tpm_limit', 1, 2147483647), private.arg_int(p_args, 'concurrency_limit', 1, 2147483647),
          coalesce((p_args ->> 'cache_enabled')::boolean, true), private.arg_cache_mode(p_args))
  returning * into v_key;
  return jsonb_build_object('id', v_key.id, 'key', v_plain, 'key_prefix', v_key.key_prefix,
                            'user_id', v_key.user_id, 'name', v_key.name, 'expires_at', v_key.expires_at);
exception
  when invalid_text_representation or invalid_datetime_format or datetime_field_overflow or numeric_value_out_of_range then
    raise exception using errcode = 'BADIN', message = format('admin.key_create: %s', sqlerrm);
  when check_violation then
    raise exception using errcode = 'BADIN', message = format('admin.key_create: invalid value (%s).', sqlerrm);
end
$$;

comment on function admin.key_create(jsonb) is
  E'Creates an API key; returns {"id", "key", "key_prefix", ...}. The plaintext "key" is shown only here. Fields: "user_id" or "username" (required), "name", "expires_at", "allowed_models" [..], "allowed_ips" [CIDR..], "quota_micros", "rpm_limit", "tpm_limit", "concurrency_limit", "cache_enabled", "cache_mode" (deterministic | always | off; null: the model''s, else the CacheMode option).';

create or replace function admin.key_revoke(p_key_id bigint)
returns boolean
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update private.api_keys set status = 'revoked', revoked_at = now()
   where id = p_key_id and status = 'active'
  returning true
$$;

comment on function admin.key_revoke(bigint) is E'Revokes a key at once (the next request with it gets 401). Returns true, or null if it was not active.';

create or replace view admin.api_keys as
  select k.id, k.user_id, u.username, k.name, k.key_prefix, k.status, k.expires_at, k.allowed_models,
         k.allowed_ips, k.quota_micros, k.rpm_limit, k.tpm_limit, k.concurrency_limit, k.created_at, k.revoked_at,
         coalesce(c.used_micros, 0) as used_micros, coalesce(c.reserved_micros, 0) as reserved_micros,
         coalesce(c.inflight, 0) as inflight, k.cache_enabled, k.cache_mode
    from private.api_keys k
    join private.users u on u.id = k.user_id
    left join private.key_counters c on c.key_id = k.id
   where u.id not in (select i.id from admin.internal_users i);

-- admin.key_archive: retires a key for good, keeping its history (requests, ledger, usage).
/* why next to revoke: revoked says "stop it now" (a leak); archived says "this key is finished",
   and the Keys page can leave archived keys out of its list. Both refuse every request (KREVK,
   private.key_verify). Channels and users are archived through their update functions
   ("status": "archived"); a key has no status field in admin.key_update, hence this function. */
create or replace function admin.key_archive(p_key_id bigint)
returns boolean
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update private.api_keys k set status = 'archived', revoked_at = coalesce(k.revoked_at, now())
   where k.id = p_key_id and k.status <> 'archived'
     and k.user_id not in (select i.id from admin.internal_users i)
  returning true
$$;

comment on function admin.key_archive(bigint) is
  E'Archives a key (active or revoked): every request with it is refused (KREVK, "has been archived"); its requests and ledger stay. Returns true, or null if it was already archived or unknown.';

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

-- The rotations, for the Keys page and psql.
create or replace view admin.key_rotations as
  select r.old_key_id, r.new_key_id, r.rotated_at, r.grace_until, r.rotated_by, (r.grace_until > now()) as in_grace
    from private.key_rotations r;
comment on view admin.key_rotations is
  E'Which key replaced which (admin.key_rotate), when, who rotated it, and until when the old key keeps working.';

-- admin.key_update: changes a key's label and limits; a field given as null clears that limit.
create or replace function admin.key_update(p_key_id bigint, p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_key private.api_keys;
begin
  perform private.args_check(p_args, array['name', 'expires_at', 'allowed_models', 'allowed_ips', 'quota_micros',
    'rpm_limit', 'tpm_limit', 'concurrency_limit', 'cache_enabled', 'cache_mode'], 'admin.key_update');
  perform private.key_fields_check(p_args);
  update private.api_keys k set
    name = coalesce(p_args ->> 'name', k.name),
    expires_at = case when p_args ? 'expires_at' then private.arg_time(p_args, 'expires_at') else k.expires_at end,
    allowed_models = case when p_args ? 'allowed_models' then private.json_text_array(p_args -> 'allowed_models', 'allowed_models') else k.allowed_models end,
    allowed_ips = case when p_args ? 'allowed_ips' then private.json_text_array(p_args -> 'allowed_ips', 'allowed_ips')::cidr[] else k.allowed_ips end,
    quota_micros = case when p_args ? 'quota_micros' then private.arg_int(p_args, 'quota_micros', 0, 9223372036854775807) else k.quota_micros end,
    rpm_limit = case when p_args ? 'rpm_limit' then private.arg_int(p_args, 'rpm_limit', 1, 2147483647) else k.rpm_limit end,
    tpm_limit = case when p_args ? 'tpm_limit' then private.arg_int(p_args, 'tpm_limit', 1, 2147483647) else k.tpm_limit end,
    concurrency_limit = case when p_args ? 'concurrency_limit' then private.arg_int(p_args, 'concurrency_limit', 1, 2147483647) else k.concurrency_limit end,
    cache_enabled = coalesce((p_args ->> 'cache_enabled')::boolean, k.cache_enabled),
    cache_mode = case when p_args ? 'cache_mode' then private.arg_cache_mode(p_args) else k.cache_mode end
  where k.id = p_key_id
  returning * into v_key;
  if not found then
    raise exception using errcode = 'BADIN', message = format('No key with id %s.', p_key_id);
  end if;
  return jsonb_build_object('id', v_key.id, 'name', v_key.name, 'status', v_key.status);
exception
  when invalid_text_representation or invalid_datetime_format or datetime_field_overflow or numeric_value_out_of_range then
    raise exception using errcode = 'BADIN', message = format('admin.key_update: %s', sqlerrm);
  when check_violation then
    raise exception using errcode = 'BADIN', message = format('admin.key_update: invalid value (%s).', sqlerrm);
end
$$;

comment on function admin.key_update(bigint, jsonb) is
  E'Updates a key: {"name", "expires_at", "allowed_models", "allowed_ips", "quota_micros", "rpm_limit", "tpm_limit", "concurrency_limit", "cache_enabled", "cache_mode"}; null clears a limit (and a cache_mode: the model''s, else the CacheMode option, applies).';
