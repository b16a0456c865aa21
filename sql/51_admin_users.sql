-- Users and groups, for operators: create, edit, set a password, archive a group; the system's own
-- internal users (channel tests) kept out of every list and edit.

-- private.user_is_internal: users the system owns, not an operator: "channel-test.<id>" (the admin
-- panel's channel tests, see admin.channel_test_key) and the older single "channel-test". Hidden
-- from the panel's lists and totals, refused by every edit. (admin.internal_users is the same rule
-- as a view: views run functions with their reader's rights, and readers may not call private.*.)
create or replace function private.user_is_internal(p_username text)
returns boolean
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(p_username ~ '^channel-test(\.[0-9]+)?$', false)
$$;

comment on function private.user_is_internal(text) is E'True for the system''s own users (the admin panel''s channel tests), which operators cannot edit.';

-- private.user_editable: raises BADIN for an unknown or internal user; called by every mutation of
-- a user, their wallet or their password.
create or replace function private.user_editable(p_user_id bigint)
returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_name text;
begin
  select u.username into v_name from private.users u where u.id = p_user_id;
  if not found then
    raise exception using errcode = 'BADIN', column = 'user_id', message = format('No user with id %s.', p_user_id);
  end if;
  if private.user_is_internal(v_name) then
    raise exception using errcode = 'BADIN', column = 'user_id',
      message = format('User "%s" is internal (the admin panel''s channel tests) and cannot be changed.', v_name);
  end if;
end
$$;

-- admin.user_create: creates a user. Fields: username (required), display_name, email, group, role, status.
create or replace function admin.user_create(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user private.users;
begin
  perform private.args_check(p_args, array['username', 'display_name', 'email', 'group', 'role', 'status'], 'admin.user_create');
  if coalesce(p_args ->> 'username', '') = '' then
    raise exception using errcode = 'BADIN', column = 'username', message = 'A user needs a "username".';
  end if;
  if (p_args ->> 'username') !~ '^[A-Za-z0-9_.@+-]{1,64}$' then
    raise exception using errcode = 'BADIN', column = 'username',
      message = 'A username is 1 to 64 characters: letters, digits and _ . @ + - (no spaces).';
  end if;
  if p_args ->> 'username' like 'channel-test%' then
    raise exception using errcode = 'BADIN', column = 'username',
      message = 'Usernames starting with "channel-test" are reserved for the admin panel''s channel tests.';
  end if;
  if p_args ? 'group' and not exists (select 1 from private.groups g where g.name = p_args ->> 'group') then
    raise exception using errcode = 'BADIN', column = 'group', message = format('Unknown group "%s".', p_args ->> 'group');
  end if;
  if p_args ? 'group' and exists (select 1 from private.groups g where g.name = p_args ->> 'group' and g.archived_at is not null) then
    raise exception using errcode = 'BADIN', column = 'group', message = format('The group "%s" has been archived: choose another.', p_args ->> 'group');
  end if;
  insert into private.users (username, display_name, email, group_name, role, status)
  values (p_args ->> 'username', coalesce(p_args ->> 'display_name', ''), p_args ->> 'email',
          coalesce(p_args ->> 'group', 'default'), coalesce(p_args ->> 'role', 'user'),
          coalesce(p_args ->> 'status', 'active'))
  returning * into v_user;
  return jsonb_build_object('id', v_user.id, 'username', v_user.username, 'group', v_user.group_name,
                            'role', v_user.role, 'status', v_user.status);
exception
  when unique_violation then
    raise exception using errcode = 'BADIN', column = 'username',
      message = format('A user named "%s" already exists.', p_args ->> 'username');
  when check_violation then
    raise exception using errcode = 'BADIN', message = format('Invalid user: %s', sqlerrm);
end
$$;

comment on function admin.user_create(jsonb) is
  E'Creates a user. {"username": required, "display_name", "email", "group" (default "default"), "role": user|admin, "status": active|disabled}. Returns the user as JSON.';

------------------------------------------------------------------------------------------------
-- Views (what the admin role reads). Secrets never appear: keys show their prefix only.
------------------------------------------------------------------------------------------------
-- The system's own users (see private.user_is_internal): listed here, left out of admin.users,
-- admin.api_keys, admin.wallets, admin.groups and the dashboard's usage views, so the panel's
-- channel tests neither clutter the lists nor count in the totals.
create or replace view admin.internal_users as
  select u.id, u.username, u.group_name, u.created_at
    from private.users u
   where u.username ~ '^channel-test(\.[0-9]+)?$';   -- = private.user_is_internal(u.username)

comment on view admin.internal_users is 'Users the system owns (the admin panel''s channel tests): hidden from the other admin views and their totals, and not editable.';

create or replace view admin.users as
  select u.id, u.username, u.display_name, u.email, u.group_name, u.role, u.status,
         w.balance_micros, w.credit_limit_micros, u.created_at, u.updated_at,
         w.reserved_micros, w.balance_micros - w.reserved_micros + w.credit_limit_micros as available_micros
    from private.users u
    left join private.wallets w on w.user_id = u.id
   where u.id not in (select i.id from admin.internal_users i);

-- admin.group_upsert: user groups and their price multiplier.
create or replace function admin.group_upsert(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_g private.groups;
begin
  perform private.args_check(p_args, array['name', 'price_multiplier', 'description'], 'admin.group_upsert');
  if coalesce(p_args ->> 'name', '') !~ '^[A-Za-z0-9_.-]{1,64}$' then
    raise exception using errcode = 'BADIN', column = 'name',
      message = 'A group name is 1 to 64 characters: letters, digits and _ . - (no spaces).';
  end if;
  if p_args ->> 'name' like 'channel-test%' then
    raise exception using errcode = 'BADIN', column = 'name',
      message = 'Group names starting with "channel-test" are reserved for the admin panel''s channel tests.';
  end if;
  perform private.arg_numeric(p_args, 'price_multiplier', 0.000001, 999999);
  insert into private.groups as g (name, price_multiplier, description)
  values (p_args ->> 'name', coalesce((p_args ->> 'price_multiplier')::numeric, 1), coalesce(p_args ->> 'description', ''))
  on conflict (name) do update
    set price_multiplier = coalesce((p_args ->> 'price_multiplier')::numeric, g.price_multiplier),
        description = coalesce(p_args ->> 'description', g.description)
  returning * into v_g;
  return to_jsonb(v_g);
exception
  when invalid_text_representation or numeric_value_out_of_range or check_violation or not_null_violation then
    raise exception using errcode = 'BADIN', message = format('admin.group_upsert: %s', sqlerrm);
end
$$;

comment on function admin.group_upsert(jsonb) is
  E'Creates or updates a group: {"name", "price_multiplier" (> 0; 1.2 = 20% surcharge), "description"}.';

create or replace view admin.groups as
  select g.name, g.price_multiplier, g.description, g.created_at,
         (select count(*) from private.users u where u.group_name = g.name) as users, g.archived_at
    from private.groups g
   where g.name not like 'channel-test.%';   -- the channel tests' internal groups (admin.channel_test_key)

create or replace function admin.group_archive(p_name text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_name = 'default' then
    raise exception using errcode = 'BADIN', column = 'name',
      message = 'The group "default" cannot be archived: new users join it. Move its users and channels elsewhere instead.';
  end if;
  update private.groups g set archived_at = now() where g.name = p_name and g.archived_at is null;
  return found;
end
$$;

comment on function admin.group_archive(text) is
  E'Archives a group for good: its users'' requests are refused (UDSBL, "in the group ..., which has been archived"); its history stays. The default group cannot be archived. Returns whether it was archived now.';

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
