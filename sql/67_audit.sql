-- The audit log of admin mutations: who (the panel user of the transaction's session, else the
-- database role), what (the function that made the change, and the row it changed), before and
-- after as JSON, when. Read through admin.audit_log; private.audit_log is granted to nobody, so
-- elygate_admin can neither write nor erase it (only the functions below write it).
/* why row triggers on the tables the operator manages, plus explicit calls for wallets: a trigger
   sees the exact row before and after whichever function (or psql statement) changed it, with no
   call to forget in the twenty-odd admin.* functions. Wallets are written by the hot path (relay
   settlement folds usage into them), so they get no trigger: private.wallet_adjust and
   admin.wallet_update call private.audit themselves. The other tables the hot path writes
   (key_counters, admissions, requests, ledger) are not audited at all; sessions and login attempts
   have their own views (admin.sessions, admin.login_attempts). */

-- private.audit_actor: the panel user whose session the transaction carries (elygate.session, set
-- by the admin server's run()/act()), else the database role that connected (psql, a script).
create or replace function private.audit_actor(out actor text, out actor_user_id bigint)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(u.username, session_user::text), u.id
    from (select 1) one
    left join private.sessions s
      on s.token_hash = private.token_hash(nullif(current_setting('elygate.session', true), ''))
     and s.expires_at > now()
    left join private.users u on u.id = s.user_id
$$;

-- private.audit_action: the outermost function on the call stack (the one the client called:
-- admin.channel_update, me.key_revoke, gateway.relay_finish, ...), or 'SQL' for a statement typed
-- in psql. Read from the PL/pgSQL call stack, so no function has to pass its own name.
create or replace function private.audit_action()
returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_stack text;
  v_name text;
  v_line text;
begin
  get diagnostics v_stack = pg_context;
  foreach v_line in array string_to_array(v_stack, E'\n') loop
    v_name := coalesce(substring(v_line from '^PL/pgSQL function ([a-z_]+\.[a-z_0-9]+)\('),
                       substring(v_line from '^SQL function "([a-z_0-9]+)"'),
                       v_name);
  end loop;
  if v_name is null or v_name like 'private.audit%' or v_name like 'private.tg\_%' then
    return 'SQL';
  end if;
  if v_name not like '%.%' then
    -- A SQL-language function's frame names no schema: the API schema that has it.
    select n.nspname || '.' || v_name into v_name
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where p.proname = v_name and n.nspname in ('admin', 'me', 'gateway', 'private')
     order by array_position(array['admin', 'me', 'gateway', 'private']::name[], n.nspname)
     limit 1;
  end if;
  return coalesce(v_name, 'SQL');
end
$$;

-- private.audit: appends one entry. Called by the trigger below, by the wallet functions and by
-- admin.session_revoke.
create or replace function private.audit(p_target text, p_before jsonb, p_after jsonb)
returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into private.audit_log (actor, actor_user_id, action, target, before, after)
  select a.actor, a.actor_user_id, private.audit_action(), p_target, p_before, p_after
    from private.audit_actor() a;
end
$$;

-- private.audit_redact: a row as JSON with its secrets replaced by a short digest (so a change of
-- password or key still shows, but never the value) and bookkeeping columns dropped (so a row
-- whose only change is bookkeeping is not logged).
create or replace function private.audit_redact(p_row jsonb)
returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(jsonb_object_agg(e.key,
           case when e.key in ('password_hash', 'totp_secret', 'key_hash', 'code_hash', 'ciphertext', 'nonce', 'tag')
                 and e.value <> 'null'::jsonb
                then to_jsonb('sha256:' || left(encode(public.digest(e.value::text, 'sha256'), 'hex'), 12))
                else e.value end), '{}'::jsonb)
    from jsonb_each(p_row) e
   where e.key not in ('updated_at', 'version', 'totp_last_step', 'scoped_limits')   -- bookkeeping (totp_last_step: replay guard of every TOTP login; scoped_limits: kept by sql/36_budgets.sql, audited as the budget's change)
$$;

-- private.tg_audit__row: one audit entry per changed row (an update that changes nothing but
-- bookkeeping columns writes none).
create or replace function private.tg_audit__row()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_before jsonb := case when tg_op <> 'INSERT' then private.audit_redact(to_jsonb(old)) end;
  v_after jsonb := case when tg_op <> 'DELETE' then private.audit_redact(to_jsonb(new)) end;
  v_row jsonb := coalesce(v_after, v_before);
begin
  if v_before is not distinct from v_after then
    return null;
  end if;
  perform private.audit(tg_table_name || ':' || coalesce(v_row ->> 'id', v_row ->> 'key', v_row ->> 'name', v_row ->> 'user_id', '?'),
                        v_before, v_after);
  return null;
end
$$;

/* why the guard: until migrations/current.sql is committed, the first pass of sql/ (after the
   committed migrations) runs before private.audit_log exists; the triggers and the view are made by
   the pass after it. Once the table is in a committed migration the guard always holds. This file
   loads after every option default (20-60), so a fresh install logs none of them; options a later
   deploy adds are logged as the deploying role's SQL. */
do $$
declare
  t text;
begin
  if to_regclass('private.audit_log') is null then
    return;
  end if;
  foreach t in array array['users', 'groups', 'credentials', 'api_keys', 'channels', 'channel_keys', 'models',
                           'options', 'redemption_codes'] loop
    execute format('create or replace trigger _900_audit after insert or update or delete on private.%I
                      for each row execute function private.tg_audit__row()', t);
  end loop;
  -- admin.audit_log: the log. Read-only for elygate_admin (select is all it is granted, and the
  -- view's table is granted to nobody).
  execute $v$
    create or replace view admin.audit_log as
      select a.id, a.at, a.actor, (a.actor_user_id is not null) as by_panel_user, a.actor_user_id, a.db_role,
             a.action, split_part(a.target, ':', 1) as target_kind, a.target, a.before, a.after
        from private.audit_log a
  $v$;
  comment on view admin.audit_log is
    E'Every admin mutation: who (actor: the panel user, by_panel_user true; else the database role), what (action: the function called, or SQL; target: table:id), before/after as JSON (secrets as digests), when. Nobody can edit it.';
end
$$;
