-- Admission, part 2: the reading half. private.admit_prepare turns a verified key, a route plan and
-- the request's estimate into a plan (private.admit_plan): the price card, the reservation, the
-- limits to check, the cache decision. It writes nothing; private.admit_write (sql/33) does.

create or replace function private.admit_prepare(
  p_opt           jsonb,
  p_auth          private.key_auth,       -- private.key_auth_of(p_key_hash, p_model)
  p_route         private.route_choice,   -- private.route_plans for p_model and the key's group
  p_request_id    uuid,
  p_key_hash      bytea,
  p_model         text,
  p_endpoint      text,
  p_stream        boolean,
  p_client_ip     inet,
  p_prompt_tokens integer,
  p_max_tokens    integer,
  p_cache         jsonb,   -- {"exact": hex sha256, "context": hex sha256, "semantic": bool, "sampling": {..}}; null: no cache key
  p_units         jsonb default null)  -- a media endpoint's units as the gateway read them: {"count", "size", "quality"}
returns private.admit_plan
language plpgsql volatile
as $$
declare
  v_auth private.key_auth;
  v_route private.route_choice := p_route;
  v_key private.api_keys;
  v_price private.models;
  v_out_tokens integer;
  v_cap integer;
  v_reserve bigint := 0;
  v_cache jsonb;
  v_card private.price_card;
  v_fallbacks jsonb;   -- the fallback models' prices by name (private.route_fallbacks); null: none
  v_fb record;
  v_unit_price bigint;   -- a media endpoint's unit price (private.unit_price); null: none
  v_units integer := 0;  -- the units reserved for
  v_budget_ids bigint[];   -- the budgets and model limits that apply (private.limits_of)
  v_limit_ids bigint[];
begin
  if p_model is null or p_model = '' then
    raise exception using errcode = 'BADRQ', message = 'you must provide a model parameter', column = 'model';
  end if;
  if p_request_id is null then
    raise exception using errcode = 'BADRQ', message = 'An admission needs a request id.';
  end if;
  v_auth := private.key_verify(p_key_hash, p_auth, p_client_ip);
  v_key := v_auth.key;

  if v_key.allowed_models is not null and not (p_model = any(v_key.allowed_models)) then
    raise exception using errcode = 'MDENY', column = 'model',
      message = format('This API key is not allowed to use the model `%s`.', p_model);
  end if;
  -- An archived model is gone for good: its prices and history stay, requests for it are refused.
  if (v_auth.model).archived_at is not null then
    raise exception using errcode = 'NOMDL', column = 'model',
      message = format('The model `%s` has been archived and is no longer served.', p_model);
  end if;

  -- Budgets and model limits (sql/36_budgets.sql), looked up only when one names the key, its owner
  -- or their group (a flag read with the key).
  if v_auth.scoped_limits then
    select l.budget_ids, l.limit_ids into v_budget_ids, v_limit_ids
      from private.limits_of(v_key.id, v_key.user_id, v_auth.user_group, p_model) l;
  end if;

  -- A model with fallbacks: their candidates after its own (planned here, never cached). why an IF
  -- on the row read with the key: a model without fallbacks costs no statement more.
  if (v_auth.model).fallbacks is not null then
    select * into v_fb from private.route_fallbacks(p_opt, v_key, v_auth.user_group, p_model, v_route, (v_auth.model).fallbacks,
                                                    p_endpoint, p_units);
    v_route := v_fb.route;
    v_fallbacks := v_fb.prices;
  end if;

  if v_route.served = 0 then
    raise exception using errcode = 'NOMDL', column = 'model',
      message = format('The model `%s` does not exist or you do not have access to it.', p_model);
  end if;
  if v_route.candidates is null then
    raise exception using errcode = 'NOCHN',
      message = format('No channel is available for the model `%s` right now (%s disabled).', p_model, v_route.served),
      hint = 'An operator can see why in admin.channels (status, status_reason).';
  end if;

  ---------------------------------------------------------------------------------------------
  -- Price and reservation: prompt estimate + max_tokens (or DefaultMaxTokens), at the most
  -- expensive candidate channel's multiplier, so failover never costs more than was held.
  ---------------------------------------------------------------------------------------------
  v_price := v_auth.model;
  -- Media endpoints bill units (sql/30_cost.sql, private.unit_price): images n at the size's price,
  -- speech the input's characters, transcription TranscriptionReserveSeconds until the upstream
  -- says the duration, rerank the search units estimated from the documents.
  if p_endpoint in ('images/generations', 'audio/speech', 'audio/transcriptions', 'rerank') then
    v_unit_price := private.unit_price(v_price, p_endpoint, p_units);
    v_units := case when p_endpoint = 'audio/transcriptions' then (p_opt ->> 'TranscriptionReserveSeconds')::integer
                    else greatest(coalesce((p_units ->> 'count')::integer, 1), 0) end;
    if v_price.name is not null and num_nonnulls(v_unit_price, v_price.per_call_price,
                                                 case when p_endpoint = 'rerank' then v_price.input_price end) = 0
       and not (p_opt ->> 'AllowUnpricedModels')::boolean then
      raise exception using errcode = 'NOPRC', column = case when p_endpoint = 'images/generations' then 'size' else 'model' end,
        message = case when p_endpoint = 'images/generations'
                       then format('The model `%s` has no price for images of size %s (quality %s), so they cannot be billed.', p_model,
                                   coalesce(p_units ->> 'size', 'default'), coalesce(p_units ->> 'quality', 'default'))
                       else format('The model `%s` has no price for %s, so it cannot be billed.', p_model,
                                   case p_endpoint when 'audio/speech' then 'speech (character_price)'
                                                   when 'audio/transcriptions' then 'transcription (audio_second_price)'
                                                   else 'rerank (search_unit_price)' end) end,
        hint = 'An operator sets one with admin.model_upsert(...): image_prices, character_price, audio_second_price or search_unit_price.';
    end if;
  end if;
  if v_price.name is null or num_nonnulls(v_price.input_price, v_price.output_price, v_price.per_call_price, v_unit_price) = 0 then
    if not (p_opt ->> 'AllowUnpricedModels')::boolean then
      raise exception using errcode = 'NOPRC', column = 'model',
        message = format('The model `%s` has no price configured, so it cannot be billed.', p_model),
        hint = 'An operator sets one with admin.model_upsert(...), or allows free use with admin.option_set(''AllowUnpricedModels'', ''true'').';
    end if;
    v_price := null;
    v_unit_price := null;
  end if;
  v_out_tokens := case when p_endpoint in ('embeddings', 'moderations', 'rerank', 'images/generations', 'audio/speech',
                                           'audio/transcriptions') then 0
                       else coalesce(p_max_tokens, (p_opt ->> 'DefaultMaxTokens')::integer) end;
  /* ReservationPolicy cap: a request that set no output limit gets the one its reservation covers,
     sent to the upstream by the gateway (the ticket's max_tokens), so its answer cannot cost more
     than was held. why only then: a limit the client set is reserved in full, so it is covered as
     it is. Not for embeddings (no output) nor the legacy completions endpoint, whose upstreams
     default to 16 tokens: a cap there would lengthen answers, never bound them. */
  if p_max_tokens is null and v_out_tokens > 0 and p_endpoint <> 'completions' and p_opt ->> 'ReservationPolicy' = 'cap' then
    v_cap := v_out_tokens;
  end if;

  /* why the card: what this admission reserves with is what it is billed with (private.settle
     reads it back from the admission row) and what the gateway's receipt is computed from (the
     ticket's copy), whatever the price table says by the time the outcome arrives. A free model's
     card has no model prices (its answer costs nothing) but does have the embedding model's, so
     the semantic cache's embedding call is billed for it too, and its ticket carries that card. */
  v_card := row(v_price.input_price, v_price.output_price, v_price.cached_input_price, v_price.cache_write_price,
                v_price.per_call_price, coalesce(v_auth.group_multiplier, 1),
                (p_opt ->> 'SemanticCacheHitPriceRatio')::numeric, null, null, v_unit_price)::private.price_card;
  if v_price.name is not null then
    -- The candidates' cost multipliers come with the plan (private.route_plan).
    v_reserve := private.card_cost_micros(v_card, 'answer', v_route.max_multiplier, p_prompt_tokens, v_out_tokens, 0, 0, v_units);
  end if;
  -- With fallbacks, the dearest of the models at the dearest candidate's multiplier: whichever
  -- serves, the reservation covers it.
  if v_fallbacks is not null then
    select greatest(v_reserve, max(private.card_cost_micros(
             row((f.p ->> 'input')::bigint, (f.p ->> 'output')::bigint, (f.p ->> 'cached_input')::bigint,
                 (f.p ->> 'cache_write')::bigint, (f.p ->> 'per_call')::bigint, v_card.group_multiplier, null, null, null, (f.p ->> 'unit_price')::bigint)::private.price_card,
             'answer', v_route.max_multiplier, p_prompt_tokens, v_out_tokens, 0, 0, v_units)))
      into v_reserve
      from jsonb_each(v_fallbacks) f(name, p);
  end if;

  -- Cache: an exact hit is served without the upstream and reserves only its hit price.
  -- (A request the cache does not apply to gets {"result": "bypass", "reason"}: the gateway's header says why.)
  if p_cache is not null then
    v_cache := private.cache_plan(p_opt, p_cache, v_key, v_auth.user_group, p_model, v_auth.model);
    if v_cache ->> 'result' = 'exact' then
      v_reserve := private.card_cost_micros(v_card, 'hit', null,
                     (v_cache -> 'usage' ->> 'prompt_tokens')::integer, (v_cache -> 'usage' ->> 'completion_tokens')::integer,
                     (v_cache -> 'usage' ->> 'cached_tokens')::integer, (v_cache -> 'usage' ->> 'cache_write_tokens')::integer);
    end if;
  end if;

  /* why apart from the return: an expression with a subquery is run as a query (an executor
     start-up) whenever it is evaluated, even when its branch is not taken; the return below is a
     plain expression. */
  if p_opt ->> 'SemanticCacheEmbeddingModel' <> '' then
    select em.input_price, em.per_call_price into v_card.embedding_input, v_card.embedding_per_call
      from private.models em where em.name = p_opt ->> 'SemanticCacheEmbeddingModel';
  end if;

  return row(p_request_id, v_key.id, v_key.user_id, v_auth.user_group, p_endpoint, p_model,
             coalesce(p_stream, false), p_client_ip, p_prompt_tokens,
             case when v_fallbacks is null then jsonb_build_object('candidates', v_route.candidates, 'skipped', v_route.skipped)
                  else jsonb_build_object('candidates', v_route.candidates, 'skipped', v_route.skipped, 'fallbacks', v_fallbacks) end,
             v_route.candidates,
             v_reserve, coalesce(p_prompt_tokens, 0) + v_out_tokens,
             num_nonnulls(v_key.quota_micros, v_key.rpm_limit, v_key.tpm_limit, v_key.concurrency_limit) > 0,
             v_key.quota_micros, v_key.rpm_limit, v_key.tpm_limit, v_key.concurrency_limit,
             case when p_cache is null then null else coalesce(v_cache ->> 'result', 'bypass') end,
             (v_cache ->> 'entry_id')::bigint, (v_cache ->> 'similarity')::real, v_cache,
             -- (null for a free model, unless the semantic cache's embedding call has a price)
             case when v_price.name is null and num_nonnulls(v_card.embedding_input, v_card.embedding_per_call) = 0
                       and v_fallbacks is null
                  then null else jsonb_build_object(
               'input', v_card.input, 'output', v_card.output,
               'cached_input', v_card.cached_input, 'cache_write', v_card.cache_write,
               'per_call', v_card.per_call, 'group_multiplier', v_card.group_multiplier::text,
               'channel_multipliers', v_route.multipliers,
               'cache_hit_ratio', v_card.hit_ratio::text,
               'unit_price', v_card.unit_price,
               'embedding', case when num_nonnulls(v_card.embedding_input, v_card.embedding_per_call) > 0 then
                              jsonb_build_object('input', v_card.embedding_input, 'per_call', v_card.embedding_per_call) end,
               -- the fallback models' prices, by name: a request a fallback served is priced with them
               'fallbacks', v_fallbacks)
             end, v_card, v_cap, v_budget_ids, v_limit_ids)::private.admit_plan;
end
$$;

comment on function private.admit_prepare(jsonb, private.key_auth, private.route_choice, uuid, bytea, text, text, boolean, inet, integer, integer, jsonb, jsonb) is
  E'The reading half of an admission, given the key and route its caller read: authenticates, checks the model allowlist and the route, prices the reservation and looks the cache up. Raises the refusals that depend on nothing a request writes.';

-- private.admit_prepare_element: private.admit_prepare for one element of a batch (relay_begin's
-- arguments as JSON; see gateway.relay_begin_batch).
create or replace function private.admit_prepare_element(p_opt jsonb, p_auth private.key_auth,
                                                         p_route private.route_choice, p_req jsonb)
returns private.admit_plan
language plpgsql volatile
as $$
begin
  return private.admit_prepare(p_opt, p_auth, p_route, (p_req ->> 'id')::uuid, decode(p_req ->> 'key_hash', 'hex'),
                               p_req ->> 'model', p_req ->> 'endpoint', (p_req ->> 'stream')::boolean,
                               (p_req ->> 'client_ip')::inet, (p_req ->> 'prompt_tokens')::integer,
                               (p_req ->> 'max_tokens')::integer, nullif(p_req -> 'cache', 'null'::jsonb),
                               nullif(p_req -> 'units', 'null'::jsonb));
end
$$;

comment on function private.admit_prepare_element(jsonb, private.key_auth, private.route_choice, jsonb) is
  E'private.admit_prepare for one element of gateway.relay_begin_batch''s JSON array.';
