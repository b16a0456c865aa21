-- The admin panel's SQL: login and sessions, bootstrap of the first admin, the dashboard, jobs and
-- partition views, a few more admin.* mutations, and the self-service schema `me`.
-- Called by the admin server (admin/src/lib/server/), which logs in as elygate_admin. Documented in
-- admin/README.md and docs/admin/README.md.
/*
  Who may see what (DESIGN §7, issue #6):
  - The admin server verifies the browser's session token with admin.session_get() (SQL), then runs
    the page's queries in one transaction. For a session whose user is not an admin (or that still
    owes a password change or a TOTP code) it first does `set local role elygate_user`: that role has
    no grant on schema admin, so every admin view and function answers 42501 (HTTP 403).
  - elygate_user may use schema `me` only. Its views and functions take the user from the session
    token in the transaction setting elygate.session, checked here against private.sessions
    (sha256, expiry, stage, password not owed); a user can only ever reach rows of their own.
  - Passwords are argon2id, hashed and verified by the admin server (PostgreSQL has no argon2);
    SQL keeps the PHC strings, decides throttling, the loopback rule, sessions and TOTP.
*/

-- The least-privileged role a regular user's page runs as. Cluster-wide, idempotent; the admin
-- login role must be a member to switch to it.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'elygate_user') then
    create role elygate_user nologin;
  end if;
  if not pg_has_role('elygate_admin', 'elygate_user', 'member') then
    grant elygate_user to elygate_admin;
  end if;
end
$$;

------------------------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------------------------

-- private.token_new: 32 random bytes as URL-safe base64 (a session or setup token).
create or replace function private.token_new()
returns text
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
  select rtrim(translate(encode(public.gen_random_bytes(32), 'base64'), '+/', '-_'), '=')
$$;

create or replace function private.token_hash(p_token text)
returns bytea
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select public.digest(coalesce(p_token, ''), 'sha256')
$$;

create or replace function private.is_loopback(p_ip inet)
returns boolean
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select p_ip is not null and (p_ip <<= inet '127.0.0.0/8' or p_ip = inet '::1' or p_ip <<= inet '::ffff:127.0.0.0/104')
$$;

-- private.base32: RFC 4648 base32 without padding (TOTP secrets for authenticator apps).
create or replace function private.base32(p_data bytea)
returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_alpha constant text := 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  v_bits text := '';
  v_out text := '';
  i integer;
begin
  for i in 0 .. length(p_data) - 1 loop
    v_bits := v_bits || get_byte(p_data, i)::bit(8)::text;
  end loop;
  while length(v_bits) % 5 <> 0 loop
    v_bits := v_bits || '0';
  end loop;
  for i in 0 .. length(v_bits) / 5 - 1 loop
    v_out := v_out || substr(v_alpha, ('b' || substr(v_bits, i * 5 + 1, 5))::text::bit(5)::integer + 1, 1);
  end loop;
  return v_out;
end
$$;

-- private.totp_code: RFC 6238 TOTP (HMAC-SHA1, 6 digits) for one 30-second step.
create or replace function private.totp_code(p_secret bytea, p_step bigint)
returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_h bytea := public.hmac(int8send(p_step), p_secret, 'sha1');
  v_o integer := get_byte(v_h, 19) & 15;
  v_bin bigint;
begin
  v_bin := ((get_byte(v_h, v_o) & 127)::bigint << 24) | (get_byte(v_h, v_o + 1)::bigint << 16)
         | (get_byte(v_h, v_o + 2)::bigint << 8) | get_byte(v_h, v_o + 3)::bigint;
  return lpad((v_bin % 1000000)::text, 6, '0');
end
$$;

-- private.totp_check: accepts the code of the current step or one step either side, never a step
-- at or before the last one accepted (no replay). Returns the accepted step, or null.
create or replace function private.totp_check(p_secret bytea, p_code text, p_last_step bigint, p_now timestamptz default now())
returns bigint
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select s from generate_series(floor(extract(epoch from p_now) / 30)::bigint - 1,
                                floor(extract(epoch from p_now) / 30)::bigint + 1) s
   where private.totp_code(p_secret, s) = btrim(coalesce(p_code, ''))
     and (p_last_step is null or s > p_last_step)
   order by s limit 1
$$;

-- private.session_row: the live session for a token (any stage), or nothing.
create or replace function private.session_row(p_token text)
returns setof private.sessions
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select s.* from private.sessions s
    join private.users u on u.id = s.user_id
   where s.token_hash = private.token_hash(p_token) and s.expires_at > now() and u.status = 'active'
$$;

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

-- private.session_open: creates a session for a user; returns the token (shown to the browser only).
create or replace function private.session_open(p_user_id bigint, p_ip inet, p_user_agent text)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  v_token text := private.token_new();
  v_cred private.credentials;
  v_stage text;
begin
  select * into v_cred from private.credentials c where c.user_id = p_user_id;
  v_stage := case when v_cred.totp_enabled then 'totp' else 'full' end;
  insert into private.sessions (token_hash, user_id, stage, expires_at, ip, user_agent)
  values (private.token_hash(v_token), p_user_id, v_stage,
          now() + make_interval(hours => private.option_int('SessionTtlHours')), p_ip, left(p_user_agent, 300));
  -- Expired sessions of this user go now; the table never grows with abandoned logins.
  delete from private.sessions s where s.user_id = p_user_id and s.expires_at < now();
  return jsonb_build_object('status', 'ok', 'token', v_token, 'stage', v_stage,
                            'must_change', coalesce(v_cred.must_change, false));
end
$$;

------------------------------------------------------------------------------------------------
-- Bootstrap: the first admin
------------------------------------------------------------------------------------------------

-- admin.bootstrap_status: what the admin server should do at start.
create or replace function admin.bootstrap_status()
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
    'admins', (select count(*) from private.credentials c join private.users u on u.id = c.user_id
                where u.role = 'admin' and u.status = 'active' and not c.is_default),
    'default_pending', exists (select 1 from private.credentials c where c.is_default))
$$;
comment on function admin.bootstrap_status() is
  E'{"admins": admins who can log in with a password of their own, "default_pending": the admin/admin123 credential still exists}. Called by the admin server at start.';

-- admin.bootstrap: while no admin has a password of their own, installs user "admin" with the given
-- argon2id hash: the environment's password (p_is_default false), or admin123 (p_is_default true:
-- usable once, from loopback only, forcing a change). Does nothing once a real admin exists.
create or replace function admin.bootstrap(p_password_hash text, p_is_default boolean)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user_id bigint;
begin
  if (admin.bootstrap_status() ->> 'admins')::integer > 0 then
    return false;
  end if;
  if p_is_default and exists (select 1 from private.credentials c where c.is_default) then
    return false;   -- keep the existing default (and the record of whether it was used)
  end if;
  insert into private.users (username, display_name, role)
  values ('admin', 'Administrator', 'admin')
  on conflict (username) do update set role = 'admin', status = 'active'
  returning id into v_user_id;
  insert into private.credentials (user_id, password_hash, must_change, is_default)
  values (v_user_id, p_password_hash, p_is_default, p_is_default)
  on conflict (user_id) do update set password_hash = excluded.password_hash, must_change = excluded.must_change,
                                      is_default = excluded.is_default, updated_at = now();
  return true;
end
$$;
comment on function admin.bootstrap(text, boolean) is
  E'While no admin has a password of their own, installs user "admin" with this argon2id hash (p_is_default: the original admin/admin123, loopback only, once, forcing a change). Returns whether it did.';

-- admin.setup_token_create: a one-time token that lets whoever holds it set the first admin's
-- password from anywhere. Only while no admin has a password of their own.
create or replace function admin.setup_token_create(p_ttl interval default interval '24 hours')
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_token text;
begin
  if (admin.bootstrap_status() ->> 'admins')::integer > 0 then
    return null;
  end if;
  delete from private.setup_tokens t where t.used_at is null or t.expires_at < now();
  v_token := 'setup-' || private.token_new();
  insert into private.setup_tokens (token_hash, expires_at) values (private.token_hash(v_token), now() + p_ttl);
  return v_token;
end
$$;
comment on function admin.setup_token_create(interval) is
  E'Returns a one-time setup token (printed by the admin server at start) while no admin has a password of their own; null otherwise.';

-- admin.setup_token_use: spends a setup token to create (or reset) an admin with this argon2id hash
-- and logs them in. Failures are recorded like failed logins (username "(setup token)") and throttled
-- like them (private.login_throttled).
create or replace function admin.setup_token_use(p_token text, p_username text, p_password_hash text,
                                                 p_ip inet, p_user_agent text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user_id bigint;
begin
  if private.login_throttled('(setup token)', p_ip) then
    return jsonb_build_object('status', 'throttled');
  end if;
  update private.setup_tokens t set used_at = now()
   where t.token_hash = private.token_hash(p_token) and t.used_at is null and t.expires_at > now();
  if not found then
    insert into private.login_attempts (username, ip, ok, reason) values ('(setup token)', p_ip, false, 'bad setup token');
    return jsonb_build_object('status', 'invalid');
  end if;
  if coalesce(p_username, '') !~ '^[A-Za-z0-9_.@+-]{1,64}$' then
    raise exception using errcode = 'BADIN', column = 'username', message = 'A username is 1-64 letters, digits or _.@+-';
  end if;
  insert into private.users (username, display_name, role) values (p_username, p_username, 'admin')
  on conflict (username) do update set role = 'admin', status = 'active'
  returning id into v_user_id;
  insert into private.credentials (user_id, password_hash) values (v_user_id, p_password_hash)
  on conflict (user_id) do update set password_hash = excluded.password_hash, must_change = false,
                                      is_default = false, updated_at = now();
  delete from private.credentials c where c.is_default;     -- admin123 is moot once a real admin exists
  delete from private.setup_tokens t where t.used_at is null;
  insert into private.login_attempts (username, ip, ok, reason) values (p_username, p_ip, true, 'setup token');
  return private.session_open(v_user_id, p_ip, p_user_agent);
end
$$;
comment on function admin.setup_token_use(text, text, text, inet, text) is
  E'Spends a one-time setup token: creates or resets admin p_username with this argon2id hash and opens a session. Returns {"status": ok|invalid|throttled, "token", ...}.';

------------------------------------------------------------------------------------------------
-- Login, sessions, passwords, TOTP
------------------------------------------------------------------------------------------------

-- private.login_throttled: whether a login for this username from this address is refused for now.
/* why by (username, address): counting failures per username alone let anyone lock the real admin
   out by failing on "admin" five times. A username is refused only to the address that failed on
   it (LoginMaxFailures), an address across usernames after LoginMaxFailuresPerIp, and everyone once
   the failures of all addresses together reach LoginMaxFailuresGlobal (a distributed attack). The
   ceiling counts no "throttled" refusals: one address cannot trip it by hammering. */
create or replace function private.login_throttled(p_username text, p_ip inet)
returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  with w as (select now() - make_interval(mins => private.option_int('LoginWindowMinutes')) as since,
                    private.option_int('LoginMaxFailuresGlobal') as ceiling)
  select (select count(*) from private.login_attempts a, w
           where a.username = p_username and a.ip is not distinct from p_ip and not a.ok and a.at > w.since)
           >= private.option_int('LoginMaxFailures')
      or (select count(*) from private.login_attempts a, w
           where a.ip = p_ip and not a.ok and a.at > w.since) >= private.option_int('LoginMaxFailuresPerIp')
      or (select count(*) from (select 1 from private.login_attempts a, w
                                 where not a.ok and a.reason is distinct from 'throttled' and a.at > w.since
                                 limit (select ceiling from w)) f) >= (select ceiling from w)
$$;
comment on function private.login_throttled(text, inet) is
  E'True while a login for p_username from p_ip is refused: LoginMaxFailures per (username, address), LoginMaxFailuresPerIp per address, LoginMaxFailuresGlobal over all addresses, each within LoginWindowMinutes.';

-- admin.login_begin: the stored argon2id hash to verify against (null for an unknown user, so the
-- server still spends the same time on a dummy hash), or "throttled" (private.login_throttled).
create or replace function admin.login_begin(p_username text, p_ip inet)
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select case
    when private.login_throttled(p_username, p_ip)
    then jsonb_build_object('status', 'throttled', 'retry_after_s', private.option_int('LoginWindowMinutes') * 60)
    else jsonb_build_object('status', 'ok', 'password_hash',
           (select c.password_hash from private.credentials c join private.users u on u.id = c.user_id
             where u.username = p_username and u.status = 'active'))
  end
$$;
comment on function admin.login_begin(text, inet) is
  E'First half of a login: {"status": "throttled"} or {"status": "ok", "password_hash": argon2id PHC string or null}. The admin server verifies the password, then calls admin.login_finish.';

-- admin.login_finish: records the attempt and, when the password matched and every rule holds,
-- opens a session. Never raises for a refused login, so the attempt row always survives.
create or replace function admin.login_finish(p_username text, p_ip inet, p_password_ok boolean,
                                              p_user_agent text default null, p_forwarded boolean default false)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user private.users;
  v_cred private.credentials;
  v_status text;
begin
  if (admin.login_begin(p_username, p_ip) ->> 'status') = 'throttled' then
    v_status := 'throttled';
  else
    select * into v_user from private.users u where u.username = p_username and u.status = 'active';
    select * into v_cred from private.credentials c where c.user_id = v_user.id;
    if v_cred.user_id is null or not coalesce(p_password_ok, false) then
      v_status := 'invalid';
    /* why p_forwarded: behind a reverse proxy on the same host every client arrives from
       loopback; a request that came through a proxy (it carries Forwarded, X-Forwarded-For or
       X-Real-IP) is not someone at this machine. */
    elsif v_cred.is_default and (not private.is_loopback(p_ip) or coalesce(p_forwarded, true)) then
      v_status := 'loopback_only';
    elsif v_cred.is_default and (admin.bootstrap_status() ->> 'admins')::integer > 0 then
      v_status := 'default_retired';
    elsif v_cred.is_default and exists (select 1 from private.login_attempts a
                                          where a.username = p_username and a.ok and a.reason = 'default password') then
      v_status := 'default_used';
    else
      v_status := 'ok';
    end if;
  end if;
  insert into private.login_attempts (username, ip, ok, reason)
  values (left(coalesce(p_username, ''), 200), p_ip, v_status = 'ok',
          case when v_status = 'ok' and v_cred.is_default then 'default password' else v_status end);
  if v_status <> 'ok' then
    return jsonb_build_object('status', v_status);
  end if;
  return private.session_open(v_user.id, p_ip, p_user_agent);
end
$$;
comment on function admin.login_finish(text, inet, boolean, text, boolean) is
  E'Second half of a login: records the attempt; returns {"status": ok|invalid|throttled|loopback_only|default_used|default_retired} and, when ok, {"token", "stage": full|totp, "must_change"}. The default admin/admin123 works once, from a direct loopback connection (p_forwarded false), and never once an admin has a password of their own.';

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

-- admin.user_update: changes the given fields of a user.
create or replace function admin.user_update(p_user_id bigint, p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user private.users;
begin
  perform private.args_check(p_args, array['display_name', 'email', 'group', 'role', 'status'], 'admin.user_update');
  perform private.user_editable(p_user_id);
  if p_args ? 'group' and not exists (select 1 from private.groups g where g.name = p_args ->> 'group') then
    raise exception using errcode = 'BADIN', column = 'group', message = format('Unknown group "%s".', p_args ->> 'group');
  end if;
  if p_args ? 'group' and exists (select 1 from private.groups g where g.name = p_args ->> 'group' and g.archived_at is not null) then
    raise exception using errcode = 'BADIN', column = 'group', message = format('The group "%s" has been archived: choose another.', p_args ->> 'group');
  end if;
  update private.users u set
    display_name = coalesce(p_args ->> 'display_name', u.display_name),
    email = case when p_args ? 'email' then nullif(p_args ->> 'email', '') else u.email end,
    group_name = coalesce(p_args ->> 'group', u.group_name),
    role = coalesce(p_args ->> 'role', u.role),
    status = coalesce(p_args ->> 'status', u.status),
    updated_at = now()
  where u.id = p_user_id
  returning * into v_user;
  if not found then
    raise exception using errcode = 'BADIN', message = format('No user with id %s.', p_user_id);
  end if;
  if v_user.status in ('disabled', 'archived') then
    delete from private.sessions s where s.user_id = v_user.id;
  end if;
  return jsonb_build_object('id', v_user.id, 'username', v_user.username, 'group', v_user.group_name,
                            'role', v_user.role, 'status', v_user.status);
exception
  when check_violation then
    raise exception using errcode = 'BADIN', message = format('admin.user_update: invalid value (%s).', sqlerrm);
end
$$;
comment on function admin.user_update(bigint, jsonb) is
  E'Updates a user: {"display_name", "email", "group", "role": user|admin, "status": active|disabled|archived}. Disabling or archiving ends their panel sessions; an archived user''s keys are refused (UDSBL).';

-- admin.user_password_set: an operator sets a user's panel password (argon2id hash from the admin
-- server). By default the user must change it at their next login.
create or replace function admin.user_password_set(p_user_id bigint, p_password_hash text, p_must_change boolean default true)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform private.user_editable(p_user_id);
  insert into private.credentials (user_id, password_hash, must_change) values (p_user_id, p_password_hash, p_must_change)
  on conflict (user_id) do update set password_hash = excluded.password_hash, must_change = excluded.must_change,
                                      is_default = false, updated_at = now();
  delete from private.sessions s where s.user_id = p_user_id;
  return true;
exception
  when check_violation then
    raise exception using errcode = 'BADIN', message = 'The password hash must be an argon2id PHC string.';
end
$$;
comment on function admin.user_password_set(bigint, text, boolean) is
  E'Sets a user''s admin-panel password (argon2id hash); by default they must change it at their next login. Ends their sessions.';

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

-- admin.channel_test_key: a key that lives five minutes, for the panel's "Test" button. The panel
-- calls the gateway with it (never the upstream directly: upstream keys are decrypted only in the
-- gateway, DESIGN §7) and revokes it right after.
/* why an internal user and group per channel, "channel-test.<id>": routing plans that group as
   exactly this channel (private.route_plans), so no other channel can answer for a dead one. One
   user per channel, because a request's group is its owner's at request time: two channels tested
   at once through one user would race for its group. These users, groups and keys are hidden from
   the panel's lists and totals (private.user_is_internal) and cannot be edited. */
create or replace function admin.channel_test_key(p_channel_id bigint, p_model text)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ch private.channels;
  v_name text := format('channel-test.%s', p_channel_id);
  v_user_id bigint;
begin
  select * into v_ch from private.channels c where c.id = p_channel_id;
  if not found then
    raise exception using errcode = 'BADCH', message = format('No channel with id %s.', p_channel_id);
  end if;
  if v_ch.status = 'archived' then   -- never routed (private.route_plans), so a test could only fail
    raise exception using errcode = 'BADCH', column = 'status',
      message = format('Channel "%s" is archived; restore it (status manually_disabled) to test it.', v_ch.name);
  end if;
  if p_model is not null and not (p_model = any(v_ch.models)) then
    raise exception using errcode = 'BADCH', column = 'model',
      message = format('Channel "%s" does not serve model "%s"; it serves: %s.', v_ch.name, p_model,
                       coalesce(nullif(array_to_string(v_ch.models, ', '), ''), 'no model'));
  end if;
  insert into private.groups (name, description)
  values (v_name, format('Internal: the admin panel''s tests of channel %s', p_channel_id))
  on conflict (name) do nothing;
  insert into private.users (username, display_name, group_name, role, status)
  values (v_name, format('Tests of channel %s from the admin panel', p_channel_id), v_name, 'user', 'active')
  on conflict (username) do update set group_name = excluded.group_name, status = 'active'
  returning id into v_user_id;
  -- Test calls are billed like any other (to this user); a small credit limit lets them through
  -- without anyone topping this user up. (The table directly: admin.wallet_update refuses
  -- internal users.)
  update private.wallets w set credit_limit_micros = 1000000, updated_at = now()
   where w.user_id = v_user_id and w.credit_limit_micros <> 1000000;
  -- Old test keys go; they were valid for minutes anyway.
  update private.api_keys k set status = 'revoked', revoked_at = now()
   where k.user_id = v_user_id and k.status = 'active' and k.expires_at < now();
  -- With no model, the key may call no model at all: it only lets the gateway read the channel's
  -- upstream model list for the panel (gateway.channel_models_source).
  return admin.key_create(jsonb_build_object('user_id', v_user_id,
                                             'name', case when p_model is null then format('model list of channel %s', p_channel_id)
                                                          else format('test of channel %s', p_channel_id) end,
                                             'expires_at', now() + interval '5 minutes',
                                             'allowed_models', case when p_model is null then '[]'::jsonb else jsonb_build_array(p_model) end));
end
$$;
comment on function admin.channel_test_key(bigint, text) is
  E'A key valid five minutes for one model that the channel serves, owned by internal user "channel-test.<id>" whose group routes to that channel only: the panel''s channel test calls the gateway with it, then revokes it. With p_model null the key may call no model: the panel''s "Import models" sends it to the gateway''s GET /internal/channels/<id>/upstream-models (gateway.channel_models_source).';

------------------------------------------------------------------------------------------------
-- Views for the panel
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

-- Per hour and dimension; the dashboard filters by hour and sums.
/* why two halves: aggregating the raw log took the dashboard 32 s at 2M requests a day. Hours the
   rollup job (private.usage_rollup, every 5 minutes) finished come from its table; the hour of its
   cut (latency_hourly.covered_to) and later ones from the log, through its primary key
   (created_at, id). The boundary is read in the same statement, so no hour is counted twice or
   missed, and without any rollup (a fresh database, a stopped job) it is all the log: exact either
   way. The dashboard itself reads finer (admin.dashboard); these views are for psql and reports. */
create or replace view admin.usage_hourly as
  with b as (select least(date_trunc('hour', coalesce(max(l.covered_to), '-infinity')), date_trunc('hour', now())) as since
               from (select l.covered_to from private.latency_hourly l order by l.hour desc limit 1) l)
  select u.hour, u.model, nullif(u.user_id, 0) as user_id, nullif(u.key_id, 0) as key_id, nullif(u.channel_id, 0) as channel_id,
         u.requests::bigint as requests, u.errors::bigint as errors, u.prompt_tokens, u.completion_tokens,
         u.cost_micros::numeric as cost_micros
    from private.usage_hourly u
   where u.hour < (select since from b)
     and not exists (select 1 from admin.internal_users i where i.id = u.user_id)   -- channel tests are not traffic
  union all
  select date_trunc('hour', r.created_at), r.model, r.user_id, r.key_id, r.channel_id,
         count(*),
         count(*) filter (where r.status in ('error', 'aborted', 'refused')),
         coalesce(sum(r.prompt_tokens), 0),
         coalesce(sum(r.completion_tokens), 0),
         coalesce(sum(r.cost_micros), 0)
    from private.requests r
   where r.created_at >= (select since from b)
     and not exists (select 1 from admin.internal_users i where i.id = r.user_id)
   group by 1, 2, 3, 4, 5;

-- Per hour: the exact p50/p95 of each hour, halves as in admin.usage_hourly.
create or replace view admin.latency_hourly as
  with b as (select least(date_trunc('hour', coalesce(max(l.covered_to), '-infinity')), date_trunc('hour', now())) as since
               from (select l.covered_to from private.latency_hourly l order by l.hour desc limit 1) l)
  select l.hour, l.requests::bigint as requests, l.errors::bigint as errors, l.p50_ms, l.p95_ms
    from private.latency_hourly l
   where l.hour < (select since from b) and l.requests > 0
  union all
  select date_trunc('hour', r.created_at), count(*),
         count(*) filter (where r.status in ('error', 'aborted', 'refused')),
         percentile_cont(0.5) within group (order by r.latency_ms),
         percentile_cont(0.95) within group (order by r.latency_ms)
    from private.requests r
   where r.created_at >= (select since from b)
     and not exists (select 1 from admin.internal_users i where i.id = r.user_id)
   group by 1;

-- admin.dashboard: everything the panel's home shows for the hours from p_since's on, in one call:
-- totals, top 5 models, keys and channels, the hourly series, p50/p95 and the cache hit rate.
-- Channel tests excluded. Called by admin/src/routes/+page.server.ts.
/* why: aggregating the raw log took this page 32 s at 2M requests a day. Rolled-up data is read up
   to the rollup's cut (private.usage_rollup: the oldest request in flight when it ran, minutes
   ago), the log only after it, once, with the cut as a value the planner sees. Totals and top
   lists are one grouping-sets pass. Latency: complete hours show their exact p50/p95; the hour in
   progress and the range's p50/p95 come from summed histograms (5%-wide log-spaced buckets,
   private.latency_bucket), within 2.5% of the exact value, since percentiles cannot be combined
   from parts. jit is off: compiling costs ~350 ms, more than these aggregations take. */
create or replace function admin.dashboard(p_since timestamptz)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  v_from timestamptz := date_trunc('hour', p_since);
  v_cut timestamptz;
  v_day_from timestamptz;   -- [v_day_from, v_day_to): whole UTC days read by the day
  v_day_to timestamptz;
  v_out jsonb;
begin
  select l.covered_to into v_cut from private.latency_hourly l order by l.hour desc limit 1;
  -- No rollup yet: all from the log. A cut ahead of the clock (a run with a future "now"): from this hour.
  v_cut := greatest(case when v_cut > now() then date_trunc('hour', now()) else coalesce(v_cut, '-infinity') end, v_from);
  -- The range's whole days that private.usage_by_dim holds by the day (up to the last complete day).
  v_day_from := date_trunc('day', v_from + interval '24 hours' - interval '1 microsecond', 'UTC');
  select d.at + interval '24 hours' into v_day_to from private.usage_by_dim d where d.period = 'day' order by d.period, d.at desc limit 1;
  v_day_to := least(coalesce(v_day_to, '-infinity'), date_trunc('day', v_cut, 'UTC'));
  if v_day_to <= v_day_from then
    v_day_from := '-infinity';
    v_day_to := '-infinity';
  end if;
  with raw as materialized (
    select date_trunc('hour', r.created_at) as hour, r.model, r.key_id, r.channel_id, r.latency_ms, r.cache,
           (r.status in ('error', 'aborted', 'refused'))::integer as errors,
           coalesce(r.prompt_tokens, 0) + coalesce(r.completion_tokens, 0) as tokens, coalesce(r.cost_micros, 0) as cost_micros
      from private.requests r
     where r.created_at >= v_cut and not exists (select 1 from admin.internal_users i where i.id = r.user_id)
  ), usage as (   -- per model, key and channel: whole days, the other hours up to the cut, then the log after it
    select d.dim, d.model, d.key_id, d.channel_id, d.requests, d.errors, d.tokens, d.cost_micros,
           d.cache_exact + d.cache_semantic as hits, d.cache_exact + d.cache_semantic + d.cache_miss + d.cache_bypass as cacheable
      from private.usage_by_dim d
     where (d.period = 'day' and d.at >= v_day_from and d.at < v_day_to)
        or (d.period = 'hour' and ((d.at >= v_from and d.at < least(v_day_from, v_cut)) or (d.at >= greatest(v_day_to, v_from) and d.at < v_cut)))
    union all
    select m.dim, case m.dim when 'model' then x.model end, case m.dim when 'key' then x.key_id end,
           case m.dim when 'channel' then x.channel_id end, 1, x.errors, x.tokens, x.cost_micros,
           (x.cache in ('exact', 'semantic'))::integer, (x.cache is not null)::integer
      from raw x cross join (values ('model'), ('key'), ('channel')) m(dim)
  ), agg as (   -- each top list's candidates (g: 3 models, 5 keys, 6 channels, as grouping() numbers them) and the totals (7)
    select case u.dim when 'model' then 3 when 'key' then 5 else 6 end as g, u.model, u.key_id, u.channel_id,
           sum(u.requests) as requests, sum(u.errors) as errors, sum(u.tokens) as tokens, sum(u.cost_micros) as cost_micros,
           sum(u.hits) as hits, sum(u.cacheable) as cacheable
      from usage u group by 1, 2, 3, 4
    union all
    select 7, null, null, null, sum(u.requests), sum(u.errors), sum(u.tokens), sum(u.cost_micros), sum(u.hits), sum(u.cacheable)
      from usage u where u.dim = 'model'
  ), hb as (    -- latency histogram per hour: rolled up, then the log after the cut
    select l.hour, x.i::integer as i, x.n::bigint as n
      from private.latency_hourly l cross join lateral unnest(l.buckets) with ordinality x(n, i)
     where l.hour >= v_from and l.hour < v_cut and x.n > 0
    union all
    select r.hour, private.latency_bucket(r.latency_ms), 1 from raw r where r.latency_ms is not null
  ), cum as (   -- cumulative counts for the whole range (hour null) and per hour in progress
    select null::timestamptz as hour, h.i, sum(sum(h.n)) over (order by h.i) as below, sum(sum(h.n)) over () as total
      from hb h group by h.i
    union all
    select h.hour, h.i, sum(sum(h.n)) over (partition by h.hour order by h.i), sum(sum(h.n)) over (partition by h.hour)
      from hb h where h.hour >= date_trunc('hour', v_cut) group by h.hour, h.i
  ), pct as (
    select c.hour, round(exp((min(c.i) filter (where c.below >= 0.5 * c.total) - 0.5) * ln(1.05)) - 1) as p50,
           round(exp((min(c.i) filter (where c.below >= 0.95 * c.total) - 0.5) * ln(1.05)) - 1) as p95
      from cum c group by 1
  )
  select jsonb_build_object(
    'totals', (select jsonb_build_object('requests', coalesce(requests, 0), 'errors', coalesce(errors, 0), 'tokens', coalesce(tokens, 0),
                                         'cost_micros', coalesce(cost_micros, 0), 'cache_rate', hits::float8 / nullif(cacheable, 0))
                 from agg where g = 7),
    'models', (select coalesce(jsonb_agg(t order by t.requests desc, t.id), '[]') from (
                 select model as id, requests, tokens, cost_micros from agg where g = 3 order by requests desc, model limit 5) t),
    'keys', (select coalesce(jsonb_agg(t order by t.requests desc, t.id), '[]') from (
               select key_id as id, requests, tokens, cost_micros from agg where g = 5 and key_id is not null order by requests desc, key_id limit 5) t),
    'channels', (select coalesce(jsonb_agg(t order by t.requests desc, t.id), '[]') from (
                   select channel_id as id, requests, tokens, cost_micros from agg where g = 6 and channel_id is not null
                    order by requests desc, channel_id limit 5) t),
    'series', (select coalesce(jsonb_agg(s order by s.hour), '[]') from (
                 select l.hour, l.requests, l.errors, l.p50_ms, l.p95_ms from private.latency_hourly l   -- complete hours: exact
                  where l.hour >= v_from and l.hour + interval '1 hour' <= v_cut and l.requests > 0
                 union all
                 select o.hour, sum(o.requests), sum(o.errors), p.p50, p.p95
                   from (select l.hour, l.requests, l.errors from private.latency_hourly l
                          where l.hour >= date_trunc('hour', v_cut) and l.hour < v_cut
                         union all
                         select x.hour, 1, x.errors from raw x) o
                   left join pct p on p.hour = o.hour group by o.hour, p.p50, p.p95 having sum(o.requests) > 0) s),
    'p50_ms', (select p50 from pct where hour is null),
    'p95_ms', (select p95 from pct where hour is null))
  into v_out;
  return v_out;
end
$$;
comment on function admin.dashboard(timestamptz) is
  E'The dashboard from p_since''s hour on: totals (with cache_rate), top 5 models, keys and channels, the hourly series (exact p50/p95 for complete hours, within 2.5% for the hour in progress) and p50_ms/p95_ms of the range (within 2.5%). Per model, key and channel (private.usage_by_dim): whole UTC days by the day, other hours by the hour up to the rollup''s cut, the request log after; channel tests excluded.';

create or replace view admin.partitions as
  select c.relname as name,
         pg_get_expr(c.relpartbound, c.oid) as bounds,
         c.reltuples::bigint as rows_estimate,
         pg_total_relation_size(c.oid) as bytes
    from pg_inherits i join pg_class c on c.oid = i.inhrelid
   where i.inhparent = 'private.requests'::regclass;


------------------------------------------------------------------------------------------------
-- Self-service: schema me (role elygate_user). Every row is the session user's own.
------------------------------------------------------------------------------------------------

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

-- Grants for schema me (80_grants.sql covers private, gateway and admin).
revoke all on schema me from public;
revoke execute on all functions in schema me from public;
alter default privileges in schema me revoke execute on functions from public;
grant usage on schema me to elygate_user, elygate_admin;
grant select on all tables in schema me to elygate_user, elygate_admin;
grant execute on all functions in schema me to elygate_user, elygate_admin;
