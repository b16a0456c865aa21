-- The admin panel's login: the first admin (bootstrap, setup tokens), password login in two steps
-- (login_begin hands the PHC string to the admin server, login_finish opens the session),
-- throttled by (username, address) with a global ceiling, and TOTP. Called by the admin server
-- (admin/src/lib/server/), which logs in as elygate_admin; documented in admin/README.md and
-- docs/admin/README.md. Sessions: sql/66_admin_sessions.sql; the self-service schema: sql/70_me.sql.

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
