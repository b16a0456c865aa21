-- Admin panel sessions: look one up (sliding expiry), end it, the password and TOTP steps a session
-- may still owe, and the operator's view of every session with revoke, and of login attempts.

-- admin.session_get: who a session token belongs to (null when it is unknown or has ended).
-- Slides the expiry at most once a minute, so page views do not write on every request.
create or replace function admin.session_get(p_token text)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s private.sessions;
  v_out jsonb;
begin
  select * into v_s from private.session_row(p_token);
  if v_s.token_hash is null then
    return null;
  end if;
  if v_s.last_seen_at < now() - interval '1 minute' then
    update private.sessions s set last_seen_at = now(),
           expires_at = now() + make_interval(hours => private.option_int('SessionTtlHours'))
     where s.token_hash = v_s.token_hash;
  end if;
  select jsonb_build_object('user_id', u.id, 'username', u.username, 'display_name', u.display_name,
                            'role', u.role, 'stage', v_s.stage, 'must_change', c.must_change,
                            'is_default', c.is_default, 'totp_enabled', c.totp_enabled,
                            'expires_at', v_s.expires_at)
    into v_out
    from private.users u join private.credentials c on c.user_id = u.id
   where u.id = v_s.user_id;
  return v_out;
end
$$;

comment on function admin.session_get(text) is
  E'The session behind a token: {"user_id", "username", "role", "stage": full|totp, "must_change", "totp_enabled", "expires_at"}, or null.';

create or replace function admin.session_end(p_token text)
returns boolean
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  with d as (delete from private.sessions s where s.token_hash = private.token_hash(p_token) returning 1)
  select exists (select 1 from d)
$$;

comment on function admin.session_end(text) is E'Logs a session out. Returns whether it existed.';

-- admin.session_password: the session user's own hash, so the server can check the current
-- password before a voluntary change. Never another user's.
create or replace function admin.session_password(p_token text)
returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select c.password_hash from private.session_row(p_token) s join private.credentials c on c.user_id = s.user_id
   where s.stage = 'full'
$$;

comment on function admin.session_password(text) is E'The argon2id hash of the session''s own user (to verify the current password before a change); null for an unknown session.';

-- admin.session_password_set: the session's user gets a new password (argon2id hash); their other
-- sessions end. Clears a forced change; a changed default password is no longer the default.
create or replace function admin.session_password_set(p_token text, p_password_hash text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s private.sessions;
begin
  select * into v_s from private.session_row(p_token) where stage = 'full';
  if v_s.token_hash is null then
    raise exception using errcode = 'NOSES', message = 'Not logged in, or the session has ended.';
  end if;
  update private.credentials c set password_hash = p_password_hash, must_change = false, is_default = false,
         updated_at = now()
   where c.user_id = v_s.user_id;
  delete from private.sessions s where s.user_id = v_s.user_id and s.token_hash <> v_s.token_hash;
  delete from private.setup_tokens t where t.used_at is null
     and (admin.bootstrap_status() ->> 'admins')::integer > 0;
  return true;
exception
  when check_violation then
    raise exception using errcode = 'BADIN', message = 'The password hash must be an argon2id PHC string.';
end
$$;

comment on function admin.session_password_set(text, text) is
  E'Sets the session user''s password (argon2id hash), clears a forced change and ends their other sessions.';

-- admin.session_totp_setup: a fresh secret for the session's user (not yet enabled).
create or replace function admin.session_totp_setup(p_token text)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s private.sessions;
  v_secret bytea := public.gen_random_bytes(20);
  v_user text;
begin
  select * into v_s from private.session_row(p_token) where stage = 'full';
  if v_s.token_hash is null then
    raise exception using errcode = 'NOSES', message = 'Not logged in, or the session has ended.';
  end if;
  update private.credentials c set totp_secret = v_secret, totp_last_step = null
   where c.user_id = v_s.user_id and not c.totp_enabled;
  if not found then
    raise exception using errcode = 'BADIN', message = 'Two-factor authentication is already on; turn it off first.';
  end if;
  select u.username into v_user from private.users u where u.id = v_s.user_id;
  return jsonb_build_object('secret', private.base32(v_secret),
    'uri', format('otpauth://totp/Elygate:%s?secret=%s&issuer=Elygate&digits=6&period=30', v_user, private.base32(v_secret)));
end
$$;

comment on function admin.session_totp_setup(text) is E'Generates a TOTP secret for the session''s user; {"secret" (base32), "uri" (otpauth://)}. Enabled by admin.session_totp_enable with a valid code.';

-- admin.session_totp_enable / _disable: need a valid current code.
create or replace function admin.session_totp_enable(p_token text, p_code text, p_enable boolean default true)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s private.sessions;
  v_c private.credentials;
  v_step bigint;
begin
  select * into v_s from private.session_row(p_token) where stage = 'full';
  select * into v_c from private.credentials c where c.user_id = v_s.user_id for update;
  if v_c.totp_secret is null then
    raise exception using errcode = 'BADIN', message = 'No two-factor secret; set one up first.';
  end if;
  v_step := private.totp_check(v_c.totp_secret, p_code, v_c.totp_last_step);
  if v_step is null then
    raise exception using errcode = 'TOTPX', column = 'code', message = 'That code is not valid (or was already used).';
  end if;
  update private.credentials c set totp_enabled = p_enable, totp_last_step = v_step,
         totp_secret = case when p_enable then c.totp_secret end
   where c.user_id = v_c.user_id;
  return p_enable;
end
$$;

comment on function admin.session_totp_enable(text, text, boolean) is E'Turns TOTP two-factor on (p_enable) or off for the session''s user, given a valid current code.';

-- admin.session_totp_verify: the second step of a login; moves a "totp" session to "full".
-- A wrong code counts as a failed login (throttled like passwords).
create or replace function admin.session_totp_verify(p_token text, p_code text, p_ip inet)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s private.sessions;
  v_c private.credentials;
  v_user text;
  v_step bigint;
begin
  select * into v_s from private.session_row(p_token) where stage = 'totp';
  if v_s.token_hash is null then
    return jsonb_build_object('status', 'invalid');
  end if;
  select u.username into v_user from private.users u where u.id = v_s.user_id;
  if (admin.login_begin(v_user, p_ip) ->> 'status') = 'throttled' then
    return jsonb_build_object('status', 'throttled');
  end if;
  select * into v_c from private.credentials c where c.user_id = v_s.user_id for update;
  v_step := private.totp_check(v_c.totp_secret, p_code, v_c.totp_last_step);
  insert into private.login_attempts (username, ip, ok, reason)
  values (v_user, p_ip, v_step is not null, case when v_step is null then 'bad totp code' else 'totp' end);
  if v_step is null then
    return jsonb_build_object('status', 'invalid');
  end if;
  update private.credentials c set totp_last_step = v_step where c.user_id = v_c.user_id;
  update private.sessions s set stage = 'full' where s.token_hash = v_s.token_hash;
  return jsonb_build_object('status', 'ok', 'must_change', v_c.must_change);
end
$$;

comment on function admin.session_totp_verify(text, text, inet) is E'Second login step for users with TOTP: {"status": ok|invalid|throttled}. Wrong codes count as failed logins.';

------------------------------------------------------------------------------------------------
-- More operator mutations
------------------------------------------------------------------------------------------------

-- session_id: the hex sha256 of the session's token (the token itself is never stored), the handle
-- admin.session_revoke takes; is_current: the session of the transaction (elygate.session).
create or replace view admin.sessions as
  select u.username, s.user_id, s.stage, s.created_at, s.last_seen_at, s.expires_at, host(s.ip) as ip, s.user_agent,
         encode(s.token_hash, 'hex') as session_id,
         s.token_hash = public.digest(coalesce(current_setting('elygate.session', true), ''), 'sha256') as is_current
    from private.sessions s join private.users u on u.id = s.user_id
   where s.expires_at > now();

-- admin.session_revoke: ends a session (any user's) by its session_id; audited.
create or replace function admin.session_revoke(p_session_id text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s private.sessions;
begin
  delete from private.sessions s where encode(s.token_hash, 'hex') = lower(p_session_id) returning * into v_s;
  if v_s.token_hash is null then
    return false;
  end if;
  perform private.audit('sessions:' || left(encode(v_s.token_hash, 'hex'), 12),
                        jsonb_build_object('user_id', v_s.user_id, 'username', (select u.username from private.users u where u.id = v_s.user_id),
                                           'ip', host(v_s.ip), 'user_agent', v_s.user_agent, 'created_at', v_s.created_at,
                                           'last_seen_at', v_s.last_seen_at),
                        null);
  return true;
end
$$;

comment on function admin.session_revoke(text) is
  E'Ends a panel session by its session_id (admin.sessions); the user must log in again. Returns whether it existed. Audited.';

create or replace view admin.login_attempts as
  select a.id, a.at, a.username, host(a.ip) as ip, a.ok, a.reason from private.login_attempts a;

create or replace view admin.panel_users as
  select u.id as user_id, u.username, (c.user_id is not null) as can_log_in, c.must_change, c.totp_enabled, c.updated_at
    from private.users u left join private.credentials c on c.user_id = u.id;
