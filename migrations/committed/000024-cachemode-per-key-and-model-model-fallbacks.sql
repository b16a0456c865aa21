--! Previous: sha1:daf2428970bf306dbc2364c577f10ad0c53dff1a
--! Hash: sha1:3f0619f39500593460a5b7ae7899b559a327927a
--! Message: CacheMode per key and model; model fallbacks

-- Issue 20: the response cache's mode (deterministic | always | off), per key and per model
-- (null: inherit the CacheMode option; see sql/27_private_cache.sql, private.cache_eligibility).
alter table private.api_keys add column if not exists cache_mode text;
alter table private.models add column if not exists cache_mode text;
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'api_keys_cache_mode_check') then
    alter table private.api_keys add constraint api_keys_cache_mode_check
      check (cache_mode in ('deterministic', 'always', 'off'));
  end if;
  if not exists (select 1 from pg_constraint where conname = 'models_cache_mode_check') then
    alter table private.models add constraint models_cache_mode_check
      check (cache_mode in ('deterministic', 'always', 'off'));
  end if;
end
$$;
-- private.cache_plan takes the model's row now (its cache_enabled and cache_mode).
drop function if exists private.cache_plan(jsonb, jsonb, private.api_keys, text, text, boolean);

-- Issue 20: model fallbacks. An ordered list of models tried when every channel of this one fails
-- before the first byte (private.route_fallbacks, sql/31_private_routing.sql). Null: none.
alter table private.models add column if not exists fallbacks text[];
