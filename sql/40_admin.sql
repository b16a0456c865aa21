-- The operator's API (psql and the admin panel): mutations as admin.* functions, reads as views.
-- Documented in docs/psql.md.

-- private.args_check: rejects unknown fields, so a typo in psql is an error, not a silent default.
create or replace function private.args_check(p_args jsonb, p_allowed text[], p_what text)
returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_unknown text[];
begin
  if p_args is null or jsonb_typeof(p_args) <> 'object' then
    raise exception using errcode = 'BADIN', message = format('%s expects a JSON object.', p_what);
  end if;
  select array_agg(k order by k) into v_unknown from jsonb_object_keys(p_args) k where not (k = any(p_allowed));
  if v_unknown is not null then
    raise exception using errcode = 'BADIN', column = v_unknown[1],
      message = format('%s: unknown field(s) %s.', p_what, array_to_string(v_unknown, ', ')),
      hint = format('Allowed fields: %s.', array_to_string(p_allowed, ', '));
  end if;
end
$$;

-- private.arg_int / arg_numeric / arg_time: one field of a JSON argument, checked, with a message
-- that names the field and says what is allowed (the panel shows it next to the form). Null when
-- the field is absent or null.
create or replace function private.arg_int(p_args jsonb, p_field text, p_min bigint, p_max bigint)
returns bigint
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_text text := btrim(p_args ->> p_field);
begin
  if v_text is null then
    return null;
  end if;
  if v_text !~ '^-?[0-9]{1,19}$' or v_text::numeric not between p_min and p_max then
    raise exception using errcode = 'BADIN', column = p_field,
      message = format('"%s" must be a whole number from %s to %s, got "%s".', p_field, p_min, p_max, left(v_text, 40));
  end if;
  return v_text::bigint;
end
$$;

create or replace function private.arg_numeric(p_args jsonb, p_field text, p_min numeric, p_max numeric)
returns numeric
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_text text := btrim(p_args ->> p_field);
begin
  if v_text is null then
    return null;
  end if;
  if v_text !~ '^-?([0-9]{1,15}(\.[0-9]*)?|\.[0-9]+)$' or v_text::numeric not between p_min and p_max then
    raise exception using errcode = 'BADIN', column = p_field,
      message = format('"%s" must be a number from %s to %s, got "%s".', p_field, p_min, p_max, left(v_text, 40));
  end if;
  return v_text::numeric;
end
$$;

create or replace function private.arg_time(p_args jsonb, p_field text)
returns timestamptz
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return (p_args ->> p_field)::timestamptz;
exception when invalid_text_representation or invalid_datetime_format or datetime_field_overflow then
  raise exception using errcode = 'BADIN', column = p_field,
    message = format('"%s" must be a date and time such as 2030-01-31T12:00:00Z, got "%s".', p_field, left(p_args ->> p_field, 40));
end
$$;

-- private.key_fields_check: the rules of a key's label and model list, shared by key_create and
-- key_update. A label is shown in lists: a few words, not a document. An allowed model must be one
-- the gateway knows (priced, or served by a channel): a typo would otherwise make a key that is
-- refused for every request.
create or replace function private.key_fields_check(p_args jsonb)
returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_unknown text;
begin
  if length(p_args ->> 'name') > 100 then
    raise exception using errcode = 'BADIN', column = 'name',
      message = format('A key''s label ("name") may have at most 100 characters, got %s.', length(p_args ->> 'name'));
  end if;
  select string_agg(format('"%s"', m), ', ') into v_unknown
    from unnest(private.json_text_array(p_args -> 'allowed_models', 'allowed_models')) m
   where not exists (select 1 from private.models pm where pm.name = m)
     and not exists (select 1 from private.channels c where m = any(c.models));
  if v_unknown is not null then
    raise exception using errcode = 'BADIN', column = 'allowed_models',
      message = format('Unknown model(s) in "allowed_models": %s. Allow models that have a price or that a channel serves.', v_unknown);
  end if;
end
$$;

create or replace function private.json_text_array(p_value jsonb, p_field text)
returns text[]
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_value is null or p_value = 'null'::jsonb then
    return null;
  end if;
  if jsonb_typeof(p_value) <> 'array' or exists (select 1 from jsonb_array_elements(p_value) e where jsonb_typeof(e) <> 'string') then
    raise exception using errcode = 'BADIN', column = p_field, message = format('"%s" must be an array of strings.', p_field);
  end if;
  return array(select jsonb_array_elements_text(p_value));
end
$$;

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

-- private.arg_cache_mode: the "cache_mode" argument of a key or model (null: inherit), refused
-- clearly when it is not one of the modes (private.cache_eligibility).
create or replace function private.arg_cache_mode(p_args jsonb)
returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_args ->> 'cache_mode' is not null and p_args ->> 'cache_mode' not in ('deterministic', 'always', 'off') then
    raise exception using errcode = 'BADIN', column = 'cache_mode',
      message = format('"cache_mode" must be "deterministic", "always", "off" or null (inherit), got "%s".', left(p_args ->> 'cache_mode', 100));
  end if;
  return p_args ->> 'cache_mode';
end
$$;

-- private.arg_fallbacks: a model's "fallbacks" argument: model names, each one the gateway knows
-- (priced, or served by a channel), none twice and not the model itself; [] or null: none.
create or replace function private.arg_fallbacks(p_args jsonb)
returns text[]
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_list text[] := private.json_text_array(p_args -> 'fallbacks', 'fallbacks');
  v_bad text;
begin
  if cardinality(v_list) = 0 then
    return null;
  end if;
  if p_args ->> 'name' = any(v_list) then
    raise exception using errcode = 'BADIN', column = 'fallbacks',
      message = format('A model cannot be its own fallback ("%s").', p_args ->> 'name');
  end if;
  if (select count(distinct f) from unnest(v_list) f) <> cardinality(v_list) then
    raise exception using errcode = 'BADIN', column = 'fallbacks', message = '"fallbacks" names a model twice.';
  end if;
  select string_agg(format('"%s"', f), ', ') into v_bad
    from unnest(v_list) f
   where not exists (select 1 from private.models pm where pm.name = f)
     and not exists (select 1 from private.channels c where f = any(c.models));
  if v_bad is not null then
    raise exception using errcode = 'BADIN', column = 'fallbacks',
      message = format('Unknown model(s) in "fallbacks": %s. Name models that have a price or that a channel serves.', v_bad);
  end if;
  return v_list;
end
$$;

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

-- private.channel_numbers_check: a channel's numeric fields, refused as BADCH (a channel error, like
-- the rest of its checks) with the field checks' messages.
create or replace function private.channel_numbers_check(p_args jsonb)
returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  ex_column text;
  ex_message text;
begin
  perform private.arg_int(p_args, 'priority', -1000000, 1000000);
  perform private.arg_int(p_args, 'weight', 0, 1000000);
  perform private.arg_numeric(p_args, 'cost_multiplier', 0.000001, 999999);
exception when sqlstate 'BADIN' then
  get stacked diagnostics ex_column = column_name, ex_message = message_text;
  raise exception using errcode = 'BADCH', column = ex_column, message = ex_message;
end
$$;

-- private.channel_check: validates channel fields shared by create and update.
create or replace function private.channel_check(p_args jsonb)
returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  perform private.args_check(p_args, array['name', 'type', 'base_url', 'api_key', 'api_keys', 'models',
    'model_mapping', 'groups', 'priority', 'weight', 'config', 'status', 'status_reason', 'cost_multiplier'], 'channel');
  if p_args ? 'type' and not (p_args ->> 'type' = any(array['openai', 'azure', 'anthropic', 'gemini'])) then
    raise exception using errcode = 'BADCH', column = 'type',
      message = format('Unknown channel type "%s"; expected openai, azure, anthropic or gemini.', p_args ->> 'type');
  end if;
  if p_args ? 'base_url' and (p_args ->> 'base_url') !~ '^https?://[^\s/]+' then
    raise exception using errcode = 'BADCH', column = 'base_url',
      message = format('"base_url" must be an http(s) URL, got "%s".', left(p_args ->> 'base_url', 200));
  end if;
  -- The gateway appends the endpoint's path to base_url: a space or a "#fragment" would make every
  -- call go somewhere else than the operator meant.
  if p_args ? 'base_url' and (p_args ->> 'base_url') ~ '[\s#[:cntrl:]]' then
    raise exception using errcode = 'BADCH', column = 'base_url',
      message = '"base_url" may not contain spaces, control characters or a "#fragment", e.g. https://api.openai.com';
  end if;
  if p_args ? 'groups' and exists (select 1 from unnest(private.json_text_array(p_args -> 'groups', 'groups')) g
                                    where not exists (select 1 from private.groups pg where pg.name = g)) then
    raise exception using errcode = 'BADCH', column = 'groups',
      message = format('Unknown group(s) in "groups": %s. Create the group first (Users & groups) or use an existing one.',
                       (select string_agg(format('"%s"', g), ', ') from unnest(private.json_text_array(p_args -> 'groups', 'groups')) g
                         where not exists (select 1 from private.groups pg where pg.name = g)));
  end if;
  perform private.channel_numbers_check(p_args);
  -- A channel's models are matched to requests by exact name: a blank, padded or repeated name (a
  -- slip in the models box, or in a list imported from the upstream) would never match or match twice.
  if p_args ? 'models' and exists (select 1 from unnest(private.json_text_array(p_args -> 'models', 'models')) m
                                    where m !~ '^\S(.*\S)?$' or length(m) > 256) then
    raise exception using errcode = 'BADCH', column = 'models',
      message = 'Every model name in "models" must be 1 to 256 characters without leading or trailing spaces.';
  end if;
  if p_args ? 'models' and (select count(*) <> count(distinct m) from unnest(private.json_text_array(p_args -> 'models', 'models')) m) then
    raise exception using errcode = 'BADCH', column = 'models',
      message = format('"models" lists a model more than once: %s.',
                       (select string_agg(format('"%s"', d.m), ', ')
                          from (select m from unnest(private.json_text_array(p_args -> 'models', 'models')) m group by m having count(*) > 1) d));
  end if;
  if p_args ? 'name' and length(p_args ->> 'name') > 128 then
    raise exception using errcode = 'BADCH', column = 'name', message = 'A channel''s "name" may have at most 128 characters.';
  end if;
  if p_args ? 'model_mapping' and jsonb_typeof(p_args -> 'model_mapping') <> 'object' then
    raise exception using errcode = 'BADCH', column = 'model_mapping',
      message = '"model_mapping" must be an object such as {"gpt-4o": "gpt-4o-2024-08-06"}.';
  end if;
  if p_args ? 'model_mapping' and exists (select 1 from jsonb_each(p_args -> 'model_mapping') e where jsonb_typeof(e.value) <> 'string') then
    raise exception using errcode = 'BADCH', column = 'model_mapping', message = 'Every "model_mapping" value must be a string.';
  end if;
  if p_args ? 'config' and jsonb_typeof(p_args -> 'config') <> 'object' then
    raise exception using errcode = 'BADCH', column = 'config', message = '"config" must be an object.';
  end if;
  if p_args ? 'status' and not (p_args ->> 'status' = any(array['enabled', 'manually_disabled', 'archived'])) then
    raise exception using errcode = 'BADCH', column = 'status',
      message = '"status" may be set to "enabled", "manually_disabled" or "archived".';
  end if;
end
$$;

create or replace function private.channel_keys_from_args(p_args jsonb)
returns text[]
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_args ? 'api_keys' then
    return private.json_text_array(p_args -> 'api_keys', 'api_keys');
  elsif p_args ? 'api_key' then
    -- new-api style: several keys in one string, one per line.
    return array(select btrim(k) from regexp_split_to_table(p_args ->> 'api_key', '\n') k where btrim(k) <> '');
  end if;
  return null;
end
$$;

-- admin.channel_create: adds an upstream channel; its key(s) are sealed with AES-256-GCM.
create or replace function admin.channel_create(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ch private.channels;
  v_keys text[];
begin
  perform private.channel_check(p_args);
  perform private.channel_url_check(p_args ->> 'base_url');
  if coalesce(p_args ->> 'name', '') = '' or coalesce(p_args ->> 'base_url', '') = '' then
    raise exception using errcode = 'BADCH', column = case when coalesce(p_args ->> 'name', '') = '' then 'name' else 'base_url' end,
      message = 'A channel needs at least "name", "base_url" and "models".';
  end if;
  v_keys := private.channel_keys_from_args(p_args);
  insert into private.channels (name, type, base_url, models, model_mapping, groups, priority, weight, config,
                                status, status_reason, status_changed_at, cost_multiplier)
  values (p_args ->> 'name', coalesce(p_args ->> 'type', 'openai'), rtrim(p_args ->> 'base_url', '/'),
          coalesce(private.json_text_array(p_args -> 'models', 'models'), '{}'),
          coalesce(p_args -> 'model_mapping', '{}'),
          coalesce(private.json_text_array(p_args -> 'groups', 'groups'), '{default}'),
          coalesce((p_args ->> 'priority')::integer, 0), coalesce((p_args ->> 'weight')::integer, 1),
          coalesce(p_args -> 'config', '{}'), coalesce(p_args ->> 'status', 'enabled'),
          p_args ->> 'status_reason', now(), coalesce((p_args ->> 'cost_multiplier')::numeric, 1))
  returning * into v_ch;
  if v_keys is not null then
    perform private.channel_keys_seal(v_ch.id, v_keys);
  end if;
  return jsonb_build_object('id', v_ch.id, 'name', v_ch.name, 'type', v_ch.type, 'base_url', v_ch.base_url,
                            'models', to_jsonb(v_ch.models), 'keys', coalesce(array_length(v_keys, 1), 0));
exception
  when unique_violation then
    raise exception using errcode = 'BADCH', column = 'name',
      message = format('A channel named "%s" already exists.', p_args ->> 'name');
  when invalid_text_representation or numeric_value_out_of_range then
    raise exception using errcode = 'BADCH', message = format('admin.channel_create: %s', sqlerrm);
  when check_violation then
    raise exception using errcode = 'BADCH', message = format('admin.channel_create: invalid value (%s).', sqlerrm);
end
$$;
comment on function admin.channel_create(jsonb) is
  E'Adds a channel. {"name", "type": openai|azure|anthropic|gemini (default openai), "base_url", "api_key" (one per line) or "api_keys" [..], "models" [..], "model_mapping" {requested: upstream}, "groups" [..] (default ["default"]), "priority" (higher first), "weight", "cost_multiplier" (default 1), "config" {}}. Keys are sealed with AES-256-GCM: set elygate.master_key in the session first.';

-- admin.channel_update: changes the given fields of a channel; "api_key(s)" replaces its keys.
create or replace function admin.channel_update(p_channel_id bigint, p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ch private.channels;
  v_keys text[];
begin
  perform private.channel_check(p_args);
  if p_args ? 'base_url' then
    perform private.channel_url_check(p_args ->> 'base_url');
  end if;
  update private.channels c set
    name          = coalesce(p_args ->> 'name', c.name),
    type          = coalesce(p_args ->> 'type', c.type),
    base_url      = coalesce(rtrim(p_args ->> 'base_url', '/'), c.base_url),
    models        = coalesce(private.json_text_array(p_args -> 'models', 'models'), c.models),
    model_mapping = coalesce(p_args -> 'model_mapping', c.model_mapping),
    groups        = coalesce(private.json_text_array(p_args -> 'groups', 'groups'), c.groups),
    priority      = coalesce((p_args ->> 'priority')::integer, c.priority),
    weight        = coalesce((p_args ->> 'weight')::integer, c.weight),
    config        = coalesce(p_args -> 'config', c.config),
    cost_multiplier = coalesce((p_args ->> 'cost_multiplier')::numeric, c.cost_multiplier),
    status        = coalesce(p_args ->> 'status', c.status),
    status_reason = case when p_args ? 'status' then p_args ->> 'status_reason' else c.status_reason end,
    status_changed_at = case when p_args ? 'status' then now() else c.status_changed_at end
  where c.id = p_channel_id
  returning * into v_ch;
  if not found then
    raise exception using errcode = 'BADCH', message = format('No channel with id %s.', p_channel_id);
  end if;
  v_keys := private.channel_keys_from_args(p_args);
  if v_keys is not null then
    perform private.channel_keys_seal(v_ch.id, v_keys);
  end if;
  return jsonb_build_object('id', v_ch.id, 'name', v_ch.name, 'status', v_ch.status, 'version', v_ch.version);
exception
  when unique_violation then
    raise exception using errcode = 'BADCH', column = 'name', message = format('A channel named "%s" already exists.', p_args ->> 'name');
  when invalid_text_representation or numeric_value_out_of_range or check_violation then
    raise exception using errcode = 'BADCH', message = format('admin.channel_update: %s', sqlerrm);
end
$$;
comment on function admin.channel_update(bigint, jsonb) is
  E'Updates a channel with the same fields as admin.channel_create; only the fields given change. "status": enabled|manually_disabled (a manual disable is never undone automatically)|archived (never routed again, history kept).';

-- admin.option_set: validates and stores a setting; every gateway picks it up through NOTIFY.
create or replace function admin.option_set(p_key text, p_value text)
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform private.option_validate(p_key, p_value);
  update private.options set value = p_value where key = p_key;
  return p_value;
end
$$;
comment on function admin.option_set(text, text) is E'Sets an option after checking its type and bounds (see admin.options); gateways reload within milliseconds.';

-- admin.model_upsert: declares a model and its prices (micro-USD per 1M tokens, or per call).
create or replace function admin.model_upsert(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_m private.models;
  v_fallbacks text[];
begin
  perform private.args_check(p_args, array['name', 'owned_by', 'description', 'input_price', 'output_price',
    'cached_input_price', 'cache_write_price', 'per_call_price', 'cache_enabled', 'cache_mode', 'fallbacks'], 'admin.model_upsert');
  if coalesce(p_args ->> 'name', '') = '' then
    raise exception using errcode = 'BADIN', column = 'name', message = 'A model needs a "name".';
  end if;
  v_fallbacks := private.arg_fallbacks(p_args);
  insert into private.models as m (name, owned_by, description, input_price, output_price, cached_input_price,
                              cache_write_price, per_call_price, cache_enabled, cache_mode, fallbacks)
  values (p_args ->> 'name', coalesce(p_args ->> 'owned_by', 'elygate'), coalesce(p_args ->> 'description', ''),
          private.arg_int(p_args, 'input_price', 0, 9223372036854775807), private.arg_int(p_args, 'output_price', 0, 9223372036854775807),
          private.arg_int(p_args, 'cached_input_price', 0, 9223372036854775807), private.arg_int(p_args, 'cache_write_price', 0, 9223372036854775807),
          private.arg_int(p_args, 'per_call_price', 0, 9223372036854775807), coalesce((p_args ->> 'cache_enabled')::boolean, true),
          private.arg_cache_mode(p_args), v_fallbacks)
  on conflict (name) do update set
    fallbacks = case when p_args ? 'fallbacks' then excluded.fallbacks else m.fallbacks end,
    cache_enabled = coalesce((p_args ->> 'cache_enabled')::boolean, m.cache_enabled),
    cache_mode = case when p_args ? 'cache_mode' then excluded.cache_mode else m.cache_mode end,
    owned_by = coalesce(p_args ->> 'owned_by', m.owned_by),
    description = coalesce(p_args ->> 'description', m.description),
    input_price = case when p_args ? 'input_price' then excluded.input_price else m.input_price end,
    output_price = case when p_args ? 'output_price' then excluded.output_price else m.output_price end,
    cached_input_price = case when p_args ? 'cached_input_price' then excluded.cached_input_price else m.cached_input_price end,
    cache_write_price = case when p_args ? 'cache_write_price' then excluded.cache_write_price else m.cache_write_price end,
    per_call_price = case when p_args ? 'per_call_price' then excluded.per_call_price else m.per_call_price end
  returning * into v_m;
  return to_jsonb(v_m);
exception
  when invalid_text_representation or numeric_value_out_of_range or check_violation then
    raise exception using errcode = 'BADIN', message = format('admin.model_upsert: %s', sqlerrm);
end
$$;
comment on function admin.model_upsert(jsonb) is
  E'Creates or updates a model and its prices in micro-USD per 1M tokens: {"name", "input_price", "output_price", "cached_input_price", "cache_write_price", "per_call_price", "owned_by", "description", "cache_enabled", "cache_mode" (deterministic | always | off; null: the CacheMode option; a key''s cache_mode overrides it), "fallbacks" (models tried in order when every channel of this one fails before the first byte; null or [] clears)}.';

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

create or replace view admin.api_keys as
  select k.id, k.user_id, u.username, k.name, k.key_prefix, k.status, k.expires_at, k.allowed_models,
         k.allowed_ips, k.quota_micros, k.rpm_limit, k.tpm_limit, k.concurrency_limit, k.created_at, k.revoked_at,
         coalesce(c.used_micros, 0) as used_micros, coalesce(c.reserved_micros, 0) as reserved_micros,
         coalesce(c.inflight, 0) as inflight, k.cache_enabled, k.cache_mode
    from private.api_keys k
    join private.users u on u.id = k.user_id
    left join private.key_counters c on c.key_id = k.id
   where u.id not in (select i.id from admin.internal_users i);

create or replace view admin.channels as
  select c.id, c.name, c.type, c.base_url, c.models, c.model_mapping, c.groups, c.priority, c.weight,
         c.status, c.status_reason, c.status_changed_at, c.config, c.version,
         (select count(*) from private.channel_keys k where k.channel_id = c.id and k.status = 'enabled') as key_count,
         c.created_at, c.updated_at, c.cost_multiplier
    from private.channels c;

create or replace view admin.options as
  select o.key, o.value, o.value_type, o.min_value, o.max_value, o.description, o.updated_at
    from private.options o;

create or replace view admin.models as
  select m.name, m.owned_by, m.description, m.input_price, m.output_price, m.cached_input_price,
         m.cache_write_price, m.per_call_price, m.created_at, m.updated_at, m.cache_enabled, m.cache_mode, m.fallbacks,
         m.archived_at
    from private.models m;

create or replace view admin.requests as
  select r.id, r.created_at, r.finished_at, r.status, r.http_status, r.endpoint, r.model, r.upstream_model,
         r.stream, r.user_id, r.key_id, r.group_name, r.channel_id, host(r.client_ip) as client_ip,
         r.prompt_tokens, r.completion_tokens, r.total_tokens, r.usage_source, r.reserved_micros, r.cost_micros,
         r.ttfb_ms, r.latency_ms, r.error_code, r.error_message, r.route_plan, r.attempts,
         r.cached_tokens, r.cache_write_tokens, r.reserved_tokens, r.cache, r.cache_similarity, r.cache_entry_id,
         r.embedding_tokens, r.text_altered
    from private.requests r
  union all
  -- In flight: admitted and not settled yet (status 'pending'; settlement moves it to the log).
  select a.id, a.created_at, null, 'pending', null, a.endpoint, a.model, null,
         a.stream, a.user_id, a.key_id, a.group_name, null, host(a.client_ip),
         a.prompt_tokens, null, null, null, a.reserved_micros, null,
         null, null, null, null, a.route_plan, null,
         null, null, a.reserved_tokens, a.cache, a.cache_similarity, a.cache_entry_id,
         null, false
    from private.admissions a;

-- admin.request_routes: the routing trace, one row per step of each request.
create or replace view admin.request_routes as
  select r.id as request_id, r.created_at, r.model, r.status as request_status, r.http_status as request_http_status,
         t.step, t.kind, t.channel_id, ch.name as channel_name, ch.type as channel_type, t.upstream_model,
         t.key_ordinal, t.status, t.ms, t.detail,
         (t.kind = 'attempt' and t.channel_id = r.channel_id and r.status = 'ok'
          and t.step = max(t.step) filter (where t.kind = 'attempt') over (partition by r.id)) as served,
         t.fallback
    from admin.requests r   -- in-flight requests too: their plan is known at admission
    cross join lateral (
      -- 1. channels the plan skipped, and why
      select s.ord::integer as step, 'skipped'::text as kind, (s.e ->> 'channel_id')::bigint as channel_id,
             null::text as upstream_model, null::integer as key_ordinal, null::integer as status, null::integer as ms,
             concat_ws(': ', s.e ->> 'reason', s.e ->> 'detail') as detail, s.e ->> 'fallback' as fallback
        from jsonb_array_elements(coalesce(r.route_plan -> 'skipped', '[]'::jsonb)) with ordinality s(e, ord)
      union all
      -- 2. candidates in the order they were tried (or passed over by the gateway)
      select (jsonb_array_length(coalesce(r.route_plan -> 'skipped', '[]'::jsonb)) + a.ord)::integer,
             case when coalesce((a.e ->> 'skipped')::boolean, false) then 'passed_over' else 'attempt' end,
             (a.e ->> 'channel_id')::bigint,
             (select c.e ->> 'model' from jsonb_array_elements(r.route_plan -> 'candidates') c(e)
               where c.e ->> 'channel_id' = a.e ->> 'channel_id'
                 and c.e ->> 'fallback' is not distinct from a.e ->> 'fallback' limit 1),
             (a.e ->> 'key')::integer, (a.e ->> 'status')::integer, (a.e ->> 'ms')::integer,
             concat_ws('; ', a.e ->> 'error', 'mapped from ' || (a.e ->> 'mapped_from')), a.e ->> 'fallback'
        from jsonb_array_elements(case when jsonb_typeof(r.attempts) = 'array' then r.attempts else '[]'::jsonb end)
             with ordinality a(e, ord)
      union all
      -- 3. candidates never reached (an earlier one answered, or the deadline or MaxAttempts hit)
      select (jsonb_array_length(coalesce(r.route_plan -> 'skipped', '[]'::jsonb))
               + coalesce(jsonb_array_length(case when jsonb_typeof(r.attempts) = 'array' then r.attempts end), 0) + c.ord)::integer,
             'not_tried', (c.e ->> 'channel_id')::bigint, c.e ->> 'model', (c.e ->> 'key_ordinal')::integer,
             null, null, null, c.e ->> 'fallback'
        from jsonb_array_elements(coalesce(r.route_plan -> 'candidates', '[]'::jsonb)) with ordinality c(e, ord)
       where r.status <> 'pending'
         and not exists (select 1 from jsonb_array_elements(case when jsonb_typeof(r.attempts) = 'array' then r.attempts else '[]'::jsonb end) a(e)
                          where a.e ->> 'channel_id' = c.e ->> 'channel_id'
                            and a.e ->> 'fallback' is not distinct from c.e ->> 'fallback')
    ) t
    left join private.channels ch on ch.id = t.channel_id;
comment on view admin.request_routes is
  'The routing trace: for each request, the channels the plan skipped (and why), each attempt in order (status, ms, error, key), the candidates never tried, and which attempt served it; fallback names the fallback model a step serves (null: the model asked for).';

create or replace view admin.ledger as
  select l.id, l.request_id, l.created_at, l.user_id, l.key_id, l.channel_id, l.model, l.prompt_tokens,
         l.completion_tokens, l.input_price, l.output_price, l.per_call_price, l.group_multiplier,
         l.amount_micros, l.usage_source, l.abort_policy, l.cached_tokens, l.cache_write_tokens,
         l.cached_input_price, l.cache_write_price, l.channel_multiplier, l.group_name, l.overrun_micros
    from private.ledger l;
