-- Channels, for operators: create and edit (config, base URL and keys checked on save; keys sealed
-- by sql/21_crypto.sql), test now, the panel's short-lived test key, and the health views.

-- admin.channel_test: queues a test request to a channel now; the result appears in admin.channel_probes.
create or replace function admin.channel_test(p_channel_id bigint, p_model text default null)
returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ch private.channels;
  v_id bigint;
begin
  select * into v_ch from private.channels c where c.id = p_channel_id;
  if not found then
    raise exception using errcode = 'BADCH', message = format('No channel with id %s.', p_channel_id);
  end if;
  if v_ch.status = 'archived' then   -- archived is for good: nothing calls it any more
    raise exception using errcode = 'BADCH', column = 'status',
      message = format('Channel "%s" is archived; restore it (status manually_disabled) to test it.', v_ch.name);
  end if;
  if coalesce(p_model, v_ch.config ->> 'probe_model', v_ch.models[1]) is null then
    raise exception using errcode = 'BADCH', column = 'model', message = 'The channel serves no model; name one to test.';
  end if;
  insert into private.channel_probes (channel_id, kind, model)
  values (p_channel_id, 'test', coalesce(p_model, v_ch.config ->> 'probe_model', v_ch.models[1]))
  returning id into v_id;
  perform pg_notify('elygate_probe', '1');
  return v_id;
end
$$;

comment on function admin.channel_test(bigint, text) is
  E'Queues a test request (a one-token chat completion) to the channel; a gateway runs it within a moment. Returns the probe id: select * from admin.channel_probes where id = ...';

create or replace view admin.channel_probes as
  select p.id, p.channel_id, c.name as channel_name, p.kind, p.model, p.requested_at, p.claimed_at, p.claimed_by,
         p.finished_at, p.ok, p.http_status, p.ms, p.error
    from private.channel_probes p
    left join private.channels c on c.id = p.channel_id;

create or replace view admin.channel_health as
  select c.id, c.name, c.type, c.status, c.status_reason, c.status_changed_at,
         coalesce(b.state, 'closed') as breaker_state, b.opened_at, b.next_probe_at, b.probe_failures, b.last_error,
         coalesce(w.ok, 0) as window_ok, coalesce(w.failed, 0) as window_failed,
         (select count(*) from private.channel_keys k where k.channel_id = c.id and k.status = 'enabled') as keys_enabled,
         (select count(*) from private.channel_keys k where k.channel_id = c.id and k.status <> 'enabled') as keys_disabled,
         lp.finished_at as last_probe_at, lp.ok as last_probe_ok, lp.error as last_probe_error
    from private.channels c
    left join private.channel_breakers b on b.channel_id = c.id
    left join lateral (
      select sum(o.ok)::integer as ok, sum(o.failed)::integer as failed from private.channel_outcomes o
       -- (the option read inline: a view runs functions as its reader, who may not call private.*)
       where o.channel_id = c.id
         and o.bucket > now() - make_interval(secs => (select op.value::integer from private.options op where op.key = 'BreakerWindowSeconds'))) w on true
    left join lateral (
      select p.finished_at, p.ok, p.error from private.channel_probes p
       where p.channel_id = c.id and p.finished_at is not null order by p.finished_at desc limit 1) lp on true;

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

create or replace view admin.channels as
  select c.id, c.name, c.type, c.base_url, c.models, c.model_mapping, c.groups, c.priority, c.weight,
         c.status, c.status_reason, c.status_changed_at, c.config, c.version,
         (select count(*) from private.channel_keys k where k.channel_id = c.id and k.status = 'enabled') as key_count,
         c.created_at, c.updated_at, c.cost_multiplier
    from private.channels c;

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
