-- Models and prices, for operators: declare a model and its prices, clear prices, archive a model,
-- export and import a price table. A price preview before applying one: sql/55.

-- admin.model_upsert: declares a model and its prices (micro-USD per 1M tokens, or per call), and the
-- unit prices of the media endpoints (private.unit_price): per image by size, per 1M characters of
-- speech, per second of transcribed audio, per rerank search unit.
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
    'cached_input_price', 'cache_write_price', 'per_call_price', 'cache_enabled', 'cache_mode', 'fallbacks',
    'image_prices', 'character_price', 'audio_second_price', 'search_unit_price'], 'admin.model_upsert');
  if coalesce(p_args ->> 'name', '') = '' then
    raise exception using errcode = 'BADIN', column = 'name', message = 'A model needs a "name".';
  end if;
  v_fallbacks := private.arg_fallbacks(p_args);
  insert into private.models as m (name, owned_by, description, input_price, output_price, cached_input_price,
                              cache_write_price, per_call_price, cache_enabled, cache_mode, fallbacks,
                              image_prices, character_price, audio_second_price, search_unit_price)
  values (p_args ->> 'name', coalesce(p_args ->> 'owned_by', 'elygate'), coalesce(p_args ->> 'description', ''),
          private.arg_int(p_args, 'input_price', 0, 9223372036854775807), private.arg_int(p_args, 'output_price', 0, 9223372036854775807),
          private.arg_int(p_args, 'cached_input_price', 0, 9223372036854775807), private.arg_int(p_args, 'cache_write_price', 0, 9223372036854775807),
          private.arg_int(p_args, 'per_call_price', 0, 9223372036854775807), coalesce((p_args ->> 'cache_enabled')::boolean, true),
          private.arg_cache_mode(p_args), v_fallbacks, private.arg_image_prices(p_args),
          private.arg_int(p_args, 'character_price', 0, 9223372036854775807),
          -- (per unit, billed as micro-USD per 1M units: bounded so that fits a bigint)
          private.arg_int(p_args, 'audio_second_price', 0, 9000000000000), private.arg_int(p_args, 'search_unit_price', 0, 9000000000000))
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
    per_call_price = case when p_args ? 'per_call_price' then excluded.per_call_price else m.per_call_price end,
    image_prices = case when p_args ? 'image_prices' then excluded.image_prices else m.image_prices end,
    character_price = case when p_args ? 'character_price' then excluded.character_price else m.character_price end,
    audio_second_price = case when p_args ? 'audio_second_price' then excluded.audio_second_price else m.audio_second_price end,
    search_unit_price = case when p_args ? 'search_unit_price' then excluded.search_unit_price else m.search_unit_price end
  returning * into v_m;
  return to_jsonb(v_m);
exception
  when invalid_text_representation or numeric_value_out_of_range or check_violation then
    raise exception using errcode = 'BADIN', message = format('admin.model_upsert: %s', sqlerrm);
end
$$;

comment on function admin.model_upsert(jsonb) is
  E'Creates or updates a model and its prices in micro-USD per 1M tokens: {"name", "input_price", "output_price", "cached_input_price", "cache_write_price", "per_call_price", "owned_by", "description", "cache_enabled", "cache_mode" (deterministic | always | off; null: the CacheMode option; a key''s cache_mode overrides it), "fallbacks" (models tried in order when every channel of this one fails before the first byte; null or [] clears), and the media endpoints'' unit prices: "image_prices" (micro-USD per image by "size" or "size/quality", "default" for the rest), "character_price" (per 1M characters of speech input), "audio_second_price" (per second of transcribed audio), "search_unit_price" (per rerank search unit)}.';

create or replace view admin.models as
  select m.name, m.owned_by, m.description, m.input_price, m.output_price, m.cached_input_price,
         m.cache_write_price, m.per_call_price, m.created_at, m.updated_at, m.cache_enabled, m.cache_mode, m.fallbacks,
         m.archived_at, m.image_prices, m.character_price, m.audio_second_price, m.search_unit_price
    from private.models m;

-- admin.prices_export / admin.prices_import: the price table as JSON (docs/psql.md, "Price tables").
create or replace function admin.prices_export()
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
           'format', 'elygate.prices.v1',
           'unit', 'micro-USD per 1M tokens; per_call in micro-USD; image_prices per image, character_price per 1M characters, audio_second_price per second, search_unit_price per search unit',
           'models', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
             'name', m.name, 'owned_by', m.owned_by, 'description', nullif(m.description, ''),
             'input_price', m.input_price, 'output_price', m.output_price,
             'cached_input_price', m.cached_input_price, 'cache_write_price', m.cache_write_price,
             'per_call_price', m.per_call_price, 'image_prices', m.image_prices, 'character_price', m.character_price,
             'audio_second_price', m.audio_second_price, 'search_unit_price', m.search_unit_price)) order by m.name), '[]'::jsonb))
    from private.models m
$$;

comment on function admin.prices_export() is E'The price table as JSON ({"format": "elygate.prices.v1", "models": [...]}); feed it to admin.prices_import.';

create or replace function admin.prices_import(p_table jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_model jsonb;
  v_n integer := 0;
begin
  if p_table is null or jsonb_typeof(p_table) <> 'object' or coalesce(jsonb_typeof(p_table -> 'models'), '') <> 'array' then
    raise exception using errcode = 'BADIN', column = 'models',
      message = 'Expected {"format": "elygate.prices.v1", "models": [{"name": ..., "input_price": ..., ...}]}.';
  end if;
  if p_table ? 'format' and p_table ->> 'format' <> 'elygate.prices.v1' then
    raise exception using errcode = 'BADIN', column = 'format', message = format('Unknown price table format "%s".', p_table ->> 'format');
  end if;
  for v_model in select * from jsonb_array_elements(p_table -> 'models') loop
    perform admin.model_upsert(v_model);
    v_n := v_n + 1;
  end loop;
  return v_n;
end
$$;

comment on function admin.prices_import(jsonb) is
  E'Upserts every model of a price table (the admin.prices_export format) in one transaction; returns how many.';

-- admin.model_price_clear: removes a model's prices (all of them, or the named ones).
/* why a function of its own: admin.model_upsert treats an absent field as "unchanged", which is
   what a form with empty fields means, so neither the panel nor an import could ever take a price
   away again. A model left without input, output and per-call price is unpriced: admission refuses
   it (NOPRC) unless AllowUnpricedModels is on, exactly as for a model never priced. */
create or replace function admin.model_price_clear(p_name text, p_fields text[] default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_all constant text[] := array['input_price', 'output_price', 'cached_input_price', 'cache_write_price', 'per_call_price',
                                 'image_prices', 'character_price', 'audio_second_price', 'search_unit_price'];
  v_fields text[] := coalesce(p_fields, v_all);
  v_bad text;
  v_m private.models;
begin
  select string_agg(format('"%s"', f), ', ') into v_bad from unnest(v_fields) f where not (f = any(v_all));
  if v_bad is not null then
    raise exception using errcode = 'BADIN', column = 'fields',
      message = format('Unknown price field(s) %s.', v_bad), hint = format('Price fields: %s.', array_to_string(v_all, ', '));
  end if;
  update private.models m set
    input_price        = case when 'input_price' = any(v_fields) then null else m.input_price end,
    output_price       = case when 'output_price' = any(v_fields) then null else m.output_price end,
    cached_input_price = case when 'cached_input_price' = any(v_fields) then null else m.cached_input_price end,
    cache_write_price  = case when 'cache_write_price' = any(v_fields) then null else m.cache_write_price end,
    per_call_price     = case when 'per_call_price' = any(v_fields) then null else m.per_call_price end,
    image_prices       = case when 'image_prices' = any(v_fields) then null else m.image_prices end,
    character_price    = case when 'character_price' = any(v_fields) then null else m.character_price end,
    audio_second_price = case when 'audio_second_price' = any(v_fields) then null else m.audio_second_price end,
    search_unit_price  = case when 'search_unit_price' = any(v_fields) then null else m.search_unit_price end
  where m.name = p_name
  returning * into v_m;
  if not found then
    raise exception using errcode = 'BADIN', column = 'name', message = format('No model named "%s" has a price to clear.', p_name);
  end if;
  return to_jsonb(v_m);
end
$$;

comment on function admin.model_price_clear(text, text[]) is
  E'Clears a model''s prices: all of them, or only the fields named (input_price, output_price, cached_input_price, cache_write_price, per_call_price). A model with no input, output or per-call price left is unpriced (refused unless AllowUnpricedModels).';

-- admin.model_archive / admin.group_archive: retire a model or a group for good, keeping history.
/* why for good, like a channel's or a key's archive: an operator archives what is finished (a
   model a provider retired, a plan no longer sold). Requests for an archived model are refused
   (NOMDL, "has been archived"), it is left out of /v1/models and of every fallback list; an
   archived group's users are refused (UDSBL, "in the group ..., which has been archived") and
   cannot be moved into it. Prices, usage, ledger and request rows stay. */
create or replace function admin.model_archive(p_name text)
returns boolean
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update private.models m set archived_at = now(), updated_at = now()
   where m.name = p_name and m.archived_at is null
  returning true
$$;

comment on function admin.model_archive(text) is
  E'Archives a model for good: requests for it are refused (NOMDL), it is not listed by /v1/models nor tried as a fallback; its prices and history stay. Returns true, or null if unknown or already archived.';
