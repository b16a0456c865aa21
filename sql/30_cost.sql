-- The cost formula, in one place: private.cost_micros, and private.card_cost_micros over an
-- admission's price card (sql/10_types.sql, private.price_card). Settlement, cache hits, the
-- reaper and admin.price_preview all bill through it. Money is integer micro-USD everywhere;
-- numeric appears only inside the one rounding below.

-- private.cost_micros: THE cost formula. Prices are micro-USD per 1M tokens (or per call); the
-- group and channel multipliers scale everything; rounding is half-up to the micro-dollar, once.
-- Cached input tokens are part of prompt_tokens (OpenAI's accounting) and are priced at the
-- cached-input price; cache writes likewise at the cache-write price; both fall back to the input
-- price when unset. Media endpoints bill units beside tokens (images, input characters, audio
-- seconds, search units: private.unit_price), p_units at p_unit_price micro-USD per 1M units.
-- (The gateway mirrors this formula for its receipt header: see gateway/src/receipt.ts; a test
-- checks the two agree to the micro-dollar.)
create or replace function private.cost_micros(
  p_prompt integer, p_completion integer, p_cached integer, p_cache_write integer,
  p_input bigint, p_output bigint, p_cached_price bigint, p_cache_write_price bigint, p_per_call bigint,
  p_group_multiplier numeric, p_channel_multiplier numeric,
  p_units integer default 0, p_unit_price bigint default null)
returns bigint
language sql immutable parallel safe
-- No "set search_path": that would stop PostgreSQL inlining it into settlement's statement (it is
-- called per row). It is not security definer and names only pg_catalog functions.
as $$
  select round(
           (  greatest(coalesce(p_prompt, 0) - coalesce(p_cached, 0) - coalesce(p_cache_write, 0), 0)::numeric * coalesce(p_input, 0)
            + coalesce(p_cached, 0)::numeric * coalesce(p_cached_price, p_input, 0)
            + coalesce(p_cache_write, 0)::numeric * coalesce(p_cache_write_price, p_input, 0)
            + coalesce(p_completion, 0)::numeric * coalesce(p_output, 0)
            + coalesce(p_units, 0)::numeric * coalesce(p_unit_price, 0)
            + coalesce(p_per_call, 0)::numeric * 1000000)
           * coalesce(p_group_multiplier, 1) * coalesce(p_channel_multiplier, 1) / 1000000
         )::bigint
$$;

comment on function private.cost_micros(integer, integer, integer, integer, bigint, bigint, bigint, bigint, bigint, numeric, numeric, integer, bigint) is
  E'Cost in micro-USD of a usage at the given prices (micro-USD per 1M tokens or units, per call) and multipliers; half-up rounding.';

-- private.card_cost_micros: what a usage costs at one admission's price card (private.price_card),
-- through private.cost_micros. p_kind says which price of the card applies:
--   'answer'    the model's prices at the group's and the serving channel's multipliers
--   'hit'       a cache hit: the answer's price without a channel multiplier, times hit_ratio
--   'embedding' the semantic cache's embedding call: p_prompt tokens at the embedding model's price
-- p_units: a media endpoint's units (images, characters, audio seconds, search units), at the card's
-- unit_price, beside the tokens.
-- Admission reserves with it, settlement bills with it (private.settle); the gateway's receipt
-- (gateway/src/receipt.ts: costMicros, hitCostMicros, embeddingCostMicros) mirrors each kind over
-- the ticket's copy of the same card.
create or replace function private.card_cost_micros(
  p_card private.price_card, p_kind text, p_channel_multiplier numeric,
  p_prompt integer, p_completion integer, p_cached integer, p_cache_write integer,
  p_units integer default 0)
returns bigint
language sql immutable parallel safe
-- (No "set search_path", as private.cost_micros: it is inlined into settlement's statement.)
as $$
  select case p_kind
           when 'embedding' then
             private.cost_micros(p_prompt, 0, 0, 0, (p_card).embedding_input, 0, null, null, (p_card).embedding_per_call,
                                 (p_card).group_multiplier, 1)
           when 'hit' then
             round(private.cost_micros(p_prompt, p_completion, p_cached, p_cache_write, (p_card).input, (p_card).output,
                                       (p_card).cached_input, (p_card).cache_write, (p_card).per_call,
                                       (p_card).group_multiplier, 1, p_units, (p_card).unit_price)
                   * coalesce((p_card).hit_ratio, 0))::bigint
           else
             private.cost_micros(p_prompt, p_completion, p_cached, p_cache_write, (p_card).input, (p_card).output,
                                 (p_card).cached_input, (p_card).cache_write, (p_card).per_call,
                                 (p_card).group_multiplier, p_channel_multiplier, p_units, (p_card).unit_price)
         end
$$;

comment on function private.card_cost_micros(private.price_card, text, numeric, integer, integer, integer, integer, integer) is
  E'Cost in micro-USD of a usage at an admission''s price card: p_kind ''answer'' (at p_channel_multiplier), ''hit'' (a cache hit, at the card''s hit ratio) or ''embedding'' (p_prompt tokens of the semantic cache''s embedding call); p_units at the card''s unit_price.';

-- private.unit_price: the price of one media endpoint's unit for a model, in micro-USD per 1M units
-- (the card's unit_price), from the model's unit prices; null when the endpoint has no unit or the
-- model no price for it. p_units: what the gateway read off the request ({"size", "quality"} for
-- images). Units: images/generations an image (priced by "size/quality", else "size", else
-- "default" in image_prices), audio/speech an input character, audio/transcriptions a second of
-- audio, rerank a search unit.
create or replace function private.unit_price(p_model private.models, p_endpoint text, p_units jsonb)
returns bigint
language sql immutable parallel safe
as $$
  select case p_endpoint
           when 'images/generations' then
             (coalesce((p_model).image_prices -> ((p_units ->> 'size') || '/' || (p_units ->> 'quality')),
                       (p_model).image_prices -> (p_units ->> 'size'),
                       (p_model).image_prices -> 'default') #>> '{}')::bigint * 1000000
           when 'audio/speech' then (p_model).character_price
           when 'audio/transcriptions' then (p_model).audio_second_price * 1000000
           when 'rerank' then (p_model).search_unit_price * 1000000
         end
$$;

comment on function private.unit_price(private.models, text, jsonb) is
  E'A media endpoint''s unit price for a model in micro-USD per 1M units (image by size/quality, input character, audio second, search unit); null: no unit or no price.';
