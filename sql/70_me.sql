-- The self-service schema `me`: what a logged-in user of the panel sees and does about their own
-- account (profile, keys, requests, daily usage, redeeming a code). Every view and function takes
-- the user from the session in the transaction setting elygate.session (me.current_user_id); the
-- role elygate_user may use nothing else (grants: sql/80_grants.sql).

-- me.current_user_id: the user of the fully logged-in session in the transaction setting
-- elygate.session (password not owed, TOTP passed); null otherwise. Every view and function in
-- schema me uses it. (In schema me, not private: functions in a view run with the caller's
-- execute privilege, and elygate_user may use nothing in private.)
create or replace function me.current_user_id()
returns bigint
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select s.user_id from private.session_row(current_setting('elygate.session', true)) s
    join private.credentials c on c.user_id = s.user_id
   where s.stage = 'full' and not c.must_change
$$;

comment on function me.current_user_id() is E'The user id of the session in the setting elygate.session (fully logged in), or null.';

create or replace function private.me_require()
returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id bigint := me.current_user_id();
begin
  if v_id is null then
    raise exception using errcode = 'NOSES', message = 'Not logged in, or the session has ended.',
      hint = 'Log in to the admin panel again.';
  end if;
  return v_id;
end
$$;

create or replace view me.profile as
  select u.id, u.username, u.display_name, u.email, u.group_name, u.role,
         coalesce(w.balance_micros, 0) as balance_micros, coalesce(w.reserved_micros, 0) as reserved_micros,
         coalesce(w.credit_limit_micros, 0) as credit_limit_micros, c.totp_enabled, u.created_at
    from private.users u join private.credentials c on c.user_id = u.id
    left join private.wallets w on w.user_id = u.id
   where u.id = me.current_user_id();

create or replace view me.api_keys as
  select k.id, k.name, k.key_prefix, k.status, k.expires_at, k.allowed_models, k.allowed_ips, k.quota_micros,
         k.rpm_limit, k.tpm_limit, k.concurrency_limit, k.created_at, k.revoked_at
    from private.api_keys k
   where k.user_id = me.current_user_id();

create or replace view me.requests as
  select r.id, r.created_at, r.status, r.http_status, r.endpoint, r.model, r.stream, r.key_id,
         r.prompt_tokens, r.completion_tokens, r.total_tokens, r.usage_source, r.cost_micros, r.latency_ms, r.error_code
    from admin.requests r   -- in-flight requests too
   where r.user_id = me.current_user_id();

create or replace view me.usage_daily as
  select date_trunc('day', r.created_at) as day, r.model, count(*) as requests,
         coalesce(sum(r.total_tokens), 0) as tokens, coalesce(sum(r.cost_micros), 0) as cost_micros
    from private.requests r
   where r.user_id = me.current_user_id()
   group by 1, 2;

-- The budgets that apply to the user's own requests: on one of their keys, on them, or on their
-- group (a group budget's spend is the group's, which is what decides whether they are refused).
create or replace view me.budgets as
  select b.id, b.scope, b.key_prefix, b.key_name, b.model, b.period, b.amount_micros, b.spent_micros,
         b.reserved_micros, b.remaining_micros, b.resets_at
    from admin.budgets b
    join private.users u on u.id = me.current_user_id()
   where (b.scope = 'key' and b.key_id in (select k.id from private.api_keys k where k.user_id = u.id))
      or (b.scope = 'user' and b.user_id = u.id)
      or (b.scope = 'group' and b.group = u.group_name);

create or replace function me.key_create(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- (cache_mode: which of the user's own requests use the response cache; entries are theirs)
  perform private.args_check(p_args, array['name', 'expires_at', 'allowed_models', 'allowed_ips', 'quota_micros',
    'rpm_limit', 'tpm_limit', 'concurrency_limit', 'cache_mode'], 'me.key_create');
  return admin.key_create(p_args || jsonb_build_object('user_id', private.me_require()));
end
$$;

comment on function me.key_create(jsonb) is E'Creates a key for the session''s own user (same fields as admin.key_create but no owner); the plaintext is returned once.';

create or replace function me.key_revoke(p_key_id bigint)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_me bigint := private.me_require();
begin
  update private.api_keys k set status = 'revoked', revoked_at = now()
   where k.id = p_key_id and k.user_id = v_me and k.status = 'active';
  return found;
end
$$;

comment on function me.key_revoke(bigint) is E'Revokes one of the session user''s own keys; false for any other key.';

-- me.redeem: admin.code_redeem for the session's own user.
create or replace function me.redeem(p_code text)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return admin.code_redeem(private.me_require(), p_code);
end
$$;

comment on function me.redeem(text) is E'Redeems a code for the session''s own user (admin.code_redeem).';
