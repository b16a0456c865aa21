-- The operator's API (psql and the admin panel): mutations as admin.* functions taking jsonb
-- arguments, reads as views; documented in docs/psql.md. This file holds the argument checks they
-- share, each naming the field it refuses (private.args_check, arg_int, arg_numeric, arg_time, ...).

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

-- private.model_known: whether the gateway knows a model name: it has a price row, or a channel
-- serves it. The one rule behind every argument that names models (a key's allowed_models, a
-- model's fallbacks, a budget's or a model limit's model), so that a typo is refused when saved.
create or replace function private.model_known(p_name text)
returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select exists (select 1 from private.models m where m.name = p_name)
      or exists (select 1 from private.channels c where p_name = any(c.models))
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
   where not private.model_known(m);
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
   where not private.model_known(f);
  if v_bad is not null then
    raise exception using errcode = 'BADIN', column = 'fallbacks',
      message = format('Unknown model(s) in "fallbacks": %s. Name models that have a price or that a channel serves.', v_bad);
  end if;
  return v_list;
end
$$;

-- private.user_id_from: the user an argument names ("user_id", or "username").
create or replace function private.user_id_from(p_args jsonb)
returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id bigint;
begin
  select u.id into v_id from private.users u
   where u.id = private.arg_int(p_args, 'user_id', 1, 9223372036854775807) or u.username = p_args ->> 'username';
  if v_id is null then
    raise exception using errcode = 'BADIN', column = 'user_id', message = 'Needs an existing "user_id" or "username".';
  end if;
  return v_id;
end
$$;

-- private.arg_image_prices: a model's "image_prices" argument: micro-USD per image by size, or by
-- "size/quality" (as the request says them; "default" for any size not listed); {} or null: none.
create or replace function private.arg_image_prices(p_args jsonb)
returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  v jsonb := p_args -> 'image_prices';
  v_bad text;
begin
  if v is null or v = 'null'::jsonb or v = '{}'::jsonb then
    return null;
  end if;
  if jsonb_typeof(v) <> 'object' then
    raise exception using errcode = 'BADIN', column = 'image_prices',
      message = '"image_prices" must be an object of micro-USD per image by size, e.g. {"1024x1024": 40000, "1024x1024/hd": 80000}.';
  end if;
  select string_agg(format('"%s": %s', e.key, left(e.value::text, 40)), ', ') into v_bad
    from jsonb_each(v) e
   where e.key !~ '^([0-9]{2,5}x[0-9]{2,5}|auto|default)(/[a-z]{1,16})?$'
      or jsonb_typeof(e.value) <> 'number' or e.value::text !~ '^[0-9]{1,13}$' or e.value::text::bigint > 9000000000000;
  if v_bad is not null then
    raise exception using errcode = 'BADIN', column = 'image_prices',
      message = format('"image_prices" takes sizes ("1024x1024", "1024x1024/hd", "default") with whole micro-USD per image (up to 9000000000000); refused: %s.', v_bad);
  end if;
  return v;
end
$$;
