-- Routing: which channels may serve a request, in what order, with which key; channel config
-- checks. The circuit breaker that moves channels in and out of the plan is
-- sql/41_breaker.sql.

-- private.route_plans: the ordered candidates of each request's model and group (called by
-- relay_begin and relay_begin_batch); private.route_plan: the same for one.
create or replace function private.route_plans(p_models text[], p_groups text[])
returns private.route_choice[]
language plpgsql volatile
/* Its callers run with plan_cache_mode = force_generic_plan: for a one-element call PostgreSQL
   would otherwise plan this statement again at every call (its custom plan looks cheaper than the
   generic one), which costs four times running it. (Not a SET clause here: that costs each call a
   GUC save and restore.) */
as $$
/* plpgsql, not sql: the statement's plan is cached for the session instead of being made on
   every call. Not security definer: it runs inside the gateway.* functions (relay_begin,
   relay_begin_batch) and private.route_plan, and every name is qualified. */
begin
  /* why: the route plan is decided here, not in the gateway, so every instance routes alike.
     Candidates go by priority tier (higher first); inside a tier by weighted random order
     (Efraimidis-Spirakis: ascending -ln(U)/weight), so a channel with twice the weight is picked
     first twice as often. Weight 0 channels are a last resort inside their tier.
     The key of a multi-key channel is chosen here too: config.key_selection "random" (default) or
     "round_robin", which rotates through the enabled keys with a sequence (nextval takes no row
     lock and is not rolled back, so it adds no contention). key_index counts enabled keys in
     ordinal order, the order gateway.channel_credentials hands them to the gateway. Each candidate
     carries its channel's cost multiplier, and the result has them by channel with their maximum,
     so admission prices the route without reading channels or the plan again.
     Skipped channels carry the reason: manually_disabled (an operator), breaker_open (the circuit
     breaker, with its stored reason as detail), no_enabled_key (every key disabled).
     why every request of a batch at once: relay_begin_batch plans them all in this one
     statement, not one per request (an executor start-up each); the shuffle
     and the key stay per request.
     why the "channel-test.<id>" groups: the admin panel's Test button must reach exactly the
     channel under test, never another candidate that would answer for a dead one. Its key belongs
     to an internal user in group channel-test.<id> (admin.channel_test_key), and that group's plan
     is that one channel, even when it is disabled: the operator asked to try it.
     why archived channels are left out rather than skipped: an archive is for good; listing it
     as skipped in every plan would only clutter the routing traces. */
  return array(
  /* why materialized: the channels of each (model, group) pair are read once per call; a
     correlated scan of private.channels per request asked the kernel for the table's size at
     every rescan (an lseek), a twentieth of a batch's time. */
  with c as materialized (
    select pr.model, pr.grp, c.id, c.version, c.priority, c.weight,
           case when pr.pin is not null then 'enabled' else c.status end as status, c.status_reason, c.cost_multiplier,
           c.config ->> 'key_selection' as key_selection,
           coalesce(c.model_mapping ->> pr.model, pr.model) as upstream_model, k.n_keys, k.ordinals
      from (select distinct u.model, u.grp,
                   case when left(u.grp, 13) = 'channel-test.' and substr(u.grp, 14) ~ '^[0-9]{1,18}$'
                        then substr(u.grp, 14)::bigint end as pin
              from unnest(p_models, p_groups) u(model, grp)) pr
      join private.channels c on pr.model = any(c.models)
                             and (case when pr.pin is null then pr.grp = any(c.groups) else c.id = pr.pin end)
                             and c.status <> 'archived'   -- never routed, not even by the panel's test
      cross join lateral (
        select count(*)::integer as n_keys, array_agg(ck.ordinal order by ck.ordinal) as ordinals
          from private.channel_keys ck
         where ck.channel_id = c.id and ck.status = 'enabled') k
  )
  select (
    select row(count(*)::integer,
               jsonb_agg(jsonb_build_object('channel_id', p.id, 'version', p.version, 'model', p.upstream_model,
                                            'key_index', p.key_index, 'key_ordinal', p.ordinals[p.key_index + 1],
                                            'multiplier', p.cost_multiplier::text)
                         order by p.priority desc, (p.weight = 0), -ln(1.0 - random()) / greatest(p.weight, 1))
                 filter (where p.key_index is not null),
               coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                          'channel_id', p.id,
                          'reason', case p.status when 'enabled' then 'no_enabled_key'
                                                  when 'auto_disabled' then 'breaker_open'
                                                  else p.status end,
                          'detail', p.status_reason)))
                          filter (where p.key_index is null), '[]'::jsonb),
               jsonb_object_agg(p.id::text, p.cost_multiplier::text) filter (where p.key_index is not null),
               max(p.cost_multiplier) filter (where p.key_index is not null))::private.route_choice
      from (
        select c.*,
               case when c.status = 'enabled' and c.n_keys > 0 then
                 case when c.key_selection = 'round_robin'
                      then (nextval('private.channel_key_rotation') % c.n_keys)::integer
                      else floor(random() * c.n_keys)::integer
                 end
               end as key_index
          from c where c.model = e.model and c.grp = e.grp) p)
    from unnest(p_models, p_groups) with ordinality e(model, grp, i)
   order by e.i);
end
$$;

comment on function private.route_plans(text[], text[]) is
  E'The route plan of each request of a batch: element i for p_models[i] and p_groups[i] (see private.route_plan).';

-- private.route_plan: the ordered candidates for one model and group (psql, tests).
create or replace function private.route_plan(p_model text, p_group text,
                                              out served integer, out candidates jsonb, out skipped jsonb,
                                              out multipliers jsonb, out max_multiplier numeric)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan   -- (see private.route_plans)
as $$
declare
  v_route private.route_choice := (private.route_plans(array[p_model], array[p_group]))[1];
begin
  served := v_route.served;
  candidates := v_route.candidates;
  skipped := v_route.skipped;
  multipliers := v_route.multipliers;
  max_multiplier := v_route.max_multiplier;
end
$$;

comment on function private.route_plan(text, text) is
  E'Channels serving p_model for p_group: how many, the usable ones in try order (priority tiers, weighted random inside a tier, with the key to use), the skipped ones with the reason (manually_disabled, breaker_open, no_enabled_key), and the usable ones'' cost multipliers (by channel id, and their maximum).';

-- private.route_fallbacks: a model's route with its fallbacks' after it (private.admit_prepare
-- calls it only for a model whose models.fallbacks is set, so the common path pays nothing).
-- The fallback models are taken in their declared order, each once, leaving out the model itself,
-- a model the key may not use (allowed_models) and one without a price for the request (a token or
-- call price, or the unit price of p_endpoint's unit for p_units; unless AllowUnpricedModels).
-- Only the asked-for model's own list counts: a fallback's fallbacks are not followed.
-- Each fallback candidate (and skipped channel) carries "fallback": the model it serves; served,
-- multipliers and max_multiplier cover them all. prices: each fallback model's prices by name,
-- {"model", "input", "output", "cached_input", "cache_write", "per_call", "unit_price"}: the admission keeps them in its
-- route plan and its ticket's price card, and a request a fallback served is billed with them
-- (private.settle), as its receipt is (gateway/src/receipt.ts).
/* why not in private.route_cache: a route's cache entry is the model's own channels (its
   triggers watch channels and keys); the fallbacks are planned per request, by private.route_plans
   like any route, so a change of a fallback list or of a fallback's channels needs no rebuild. */
create or replace function private.route_fallbacks(p_opt jsonb, p_key private.api_keys, p_group text, p_model text,
                                                   p_route private.route_choice, p_fallbacks text[],
                                                   p_endpoint text, p_units jsonb,
                                                   out route private.route_choice, out prices jsonb)
language plpgsql volatile
as $$
declare
  v_models text[];
  v_routes private.route_choice[];
  v_r private.route_choice;
begin
  route := p_route;
  select array_agg(f.name order by f.ord),
         jsonb_object_agg(f.name, jsonb_build_object('model', f.name, 'input', m.input_price, 'output', m.output_price,
                                                     'cached_input', m.cached_input_price, 'cache_write', m.cache_write_price,
                                                     'per_call', m.per_call_price, 'unit_price', u.unit_price))
    into v_models, prices
    from (select distinct on (u.name) u.name, u.ord from unnest(p_fallbacks) with ordinality u(name, ord)
           order by u.name, u.ord) f
    left join private.models m on m.name = f.name
    -- (a media endpoint's unit, priced as the request's: an image model may have only image prices)
    cross join lateral (select private.unit_price(m, p_endpoint, p_units) as unit_price) u
   where f.name <> p_model
     and m.archived_at is null   -- (an archived model serves nobody, not even as a fallback)
     and (p_key.allowed_models is null or f.name = any(p_key.allowed_models))
     and (num_nonnulls(m.input_price, m.output_price, m.per_call_price, u.unit_price) > 0 or (p_opt ->> 'AllowUnpricedModels')::boolean);
  if v_models is null then
    return;
  end if;
  v_routes := private.route_plans(v_models, array_fill(p_group, array[cardinality(v_models)]));
  for i in 1 .. cardinality(v_models) loop
    v_r := v_routes[i];
    route.served := coalesce(route.served, 0) + coalesce(v_r.served, 0);
    if v_r.candidates is not null then
      route.candidates := coalesce(route.candidates, '[]'::jsonb)
        || (select jsonb_agg(c.e || jsonb_build_object('fallback', v_models[i]) order by c.ord)
              from jsonb_array_elements(v_r.candidates) with ordinality c(e, ord));
      route.multipliers := coalesce(route.multipliers, '{}'::jsonb) || v_r.multipliers;
      route.max_multiplier := greatest(route.max_multiplier, v_r.max_multiplier);
    end if;
    route.skipped := coalesce(route.skipped, '[]'::jsonb)
      || (select coalesce(jsonb_agg(k.e || jsonb_build_object('fallback', v_models[i]) order by k.ord), '[]'::jsonb)
            from jsonb_array_elements(v_r.skipped) with ordinality k(e, ord));
  end loop;
end
$$;

comment on function private.route_fallbacks(jsonb, private.api_keys, text, text, private.route_choice, text[], text, jsonb) is
  E'The route of p_model with its fallback models'' candidates after its own (each marked with "fallback": the model it serves), and the fallbacks'' prices by model, with the unit price of p_endpoint''s unit (p_units) for a media request. Fallbacks the key may not use, or without a price for the request, are left out.';

-- private.route_cache_rebuild: private.route_cache from scratch: every (model, group) a channel
-- serves whose plan has nothing random in it, with the plan private.route_plans makes for it.
-- Called by the statement triggers on private.channels and private.channel_keys, in the
-- transaction that changed them, so a committed change and its cache are never apart.
/* why: planning a route is a statement of some fifteen plan nodes per request (about a fifth of
   relay_begin, docs/performance.md finding 50), and most pairs have one answer: a model with one
   channel, or channels in distinct priority tiers, each with one enabled key. Those plans are
   computed here, by private.route_plans itself (one rule, one place), when a channel or key
   changes; a pair with a random choice in it (two usable channels in one tier and weight class,
   or a channel with several enabled keys) is left out and planned per request as before. */
create or replace function private.route_cache_rebuild()
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan   -- (see private.route_plans)
as $$
declare
  v_models text[];
  v_groups text[];
begin
  -- One rebuild at a time; each statement below then sees every change committed before it.
  perform pg_advisory_xact_lock(hashtext('elygate.route_cache'));
  select array_agg(p.model order by p.model, p.grp), array_agg(p.grp order by p.model, p.grp)
    into v_models, v_groups
    from (select distinct m.model, g.grp
            from private.channels c
            cross join lateral unnest(c.models) m(model)
            cross join lateral unnest(c.groups) g(grp)
           where c.status <> 'archived') p
   where not exists (
           -- a random choice: two usable channels of the pair in one priority tier and weight class ...
           select 1
             from private.channels c
            where p.model = any(c.models) and p.grp = any(c.groups) and c.status = 'enabled'
              and exists (select 1 from private.channel_keys k where k.channel_id = c.id and k.status = 'enabled')
            group by c.priority, (c.weight = 0)
           having count(*) > 1)
     and not exists (
           -- ... or a usable channel with several enabled keys
           select 1
             from private.channels c
            where p.model = any(c.models) and p.grp = any(c.groups) and c.status = 'enabled'
              and (select count(*) from private.channel_keys k where k.channel_id = c.id and k.status = 'enabled') > 1);
  delete from private.route_cache;
  insert into private.route_cache (model, grp, served, candidates, skipped, multipliers, max_multiplier)
  select v_models[x.i], v_groups[x.i], x.served, x.candidates, x.skipped, x.multipliers, x.max_multiplier
    from unnest(private.route_plans(v_models, v_groups)) with ordinality x(served, candidates, skipped, multipliers, max_multiplier, i);
end
$$;

comment on function private.route_cache_rebuild() is
  E'Rebuilds private.route_cache: the route plans with no random choice in them, per model and group, as private.route_plans makes them.';

create or replace function private.tg_channels__route_cache()
returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform private.route_cache_rebuild();
  return null;
end
$$;

comment on function private.tg_channels__route_cache() is E'Statement trigger: rebuilds private.route_cache after channels or their keys change.';

create or replace trigger _300_route_cache after insert or update or delete on private.channels
  for each statement execute function private.tg_channels__route_cache();

create or replace trigger _301_route_cache after truncate on private.channels
  for each statement execute function private.tg_channels__route_cache();

create or replace trigger _300_route_cache after insert or update or delete on private.channel_keys
  for each statement execute function private.tg_channels__route_cache();

create or replace trigger _301_route_cache after truncate on private.channel_keys
  for each statement execute function private.tg_channels__route_cache();

-- private.channel_config_check: validates channels.config, the adapter and routing settings.
create or replace function private.channel_config_check(p_config jsonb)
returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_allowed constant text[] := array['key_selection', 'param_override', 'header_override', 'status_code_mapping',
                                     'api_version', 'anthropic_version', 'deployments', 'probe_model', 'responses_api',
                                     'max_tokens_field'];
  v_key text;
begin
  select array_to_string(array_agg(k order by k), ', ') into v_key
    from jsonb_object_keys(p_config) k where not (k = any(v_allowed));
  if v_key is not null then
    raise exception using errcode = 'BADCH', column = 'config',
      message = format('Unknown channel config field(s): %s.', v_key),
      hint = format('Allowed: %s.', array_to_string(v_allowed, ', '));
  end if;
  if p_config ? 'key_selection' and not (p_config ->> 'key_selection' = any(array['random', 'round_robin'])) then
    raise exception using errcode = 'BADCH', column = 'config',
      message = '"config.key_selection" must be "random" or "round_robin".';
  end if;
  -- responses_api: /v1/responses passed on as it is (native) or converted to chat completions
  -- (convert); unset, the gateway takes it natively only where the upstream is OpenAI's own API.
  if p_config ? 'responses_api' and not (p_config ->> 'responses_api' = any(array['native', 'convert'])) then
    raise exception using errcode = 'BADCH', column = 'config',
      message = '"config.responses_api" must be "native" (the upstream implements /v1/responses) or "convert" (to chat completions).';
  end if;
  -- max_tokens_field: where an OpenAI-type channel takes the output limit the gateway sets
  -- (ReservationPolicy cap); unset, max_completion_tokens on OpenAI's own API and Azure, else max_tokens.
  if p_config ? 'max_tokens_field' and not (p_config ->> 'max_tokens_field' = any(array['max_tokens', 'max_completion_tokens'])) then
    raise exception using errcode = 'BADCH', column = 'config',
      message = '"config.max_tokens_field" must be "max_tokens" or "max_completion_tokens".';
  end if;
  foreach v_key in array array['param_override', 'header_override', 'status_code_mapping', 'deployments'] loop
    if p_config ? v_key and jsonb_typeof(p_config -> v_key) <> 'object' then
      raise exception using errcode = 'BADCH', column = 'config', message = format('"config.%s" must be an object.', v_key);
    end if;
  end loop;
  if exists (select 1 from jsonb_each(coalesce(p_config -> 'header_override', '{}')) e
              where jsonb_typeof(e.value) <> 'string' or e.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$'
                 or lower(e.key) in ('host', 'content-length', 'transfer-encoding', 'connection')) then
    raise exception using errcode = 'BADCH', column = 'config',
      message = '"config.header_override" maps header names to strings (and may not set host, content-length, transfer-encoding or connection).';
  end if;
  if exists (select 1 from jsonb_each(coalesce(p_config -> 'status_code_mapping', '{}')) e
              where e.key !~ '^[1-5][0-9][0-9]$' or (e.value #>> '{}') !~ '^[1-5][0-9][0-9]$') then
    raise exception using errcode = 'BADCH', column = 'config',
      message = '"config.status_code_mapping" maps upstream statuses to statuses, e.g. {"404": 500}.';
  end if;
  foreach v_key in array array['api_version', 'anthropic_version', 'probe_model'] loop
    if p_config ? v_key and jsonb_typeof(p_config -> v_key) <> 'string' then
      raise exception using errcode = 'BADCH', column = 'config', message = format('"config.%s" must be a string.', v_key);
    end if;
  end loop;
end
$$;

comment on function private.channel_config_check(jsonb) is
  E'Raises BADCH unless channels.config holds only known adapter and routing settings of the right types.';

create or replace function private.tg_channels__check_config()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform private.channel_config_check(new.config);
  return new;
end
$$;

create or replace trigger _050_check_config before insert or update of config on private.channels
  for each row execute function private.tg_channels__check_config();

-- The routing trace view (admin.request_routes) is in 57_admin_usage.sql, after admin.requests it reads.
