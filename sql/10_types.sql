-- Composite return shapes of the gateway API. Created once; a change of shape needs a migration
-- that drops the type (and the functions returning it) first.

do $$
begin
  if to_regtype('gateway.relay_ticket') is null then
    create type gateway.relay_ticket as (
      request_id      uuid,         -- echoed back; the gateway's X-Request-Id
      created_at      timestamptz,  -- admission time, the request row's partition key (relay_finish restores a lost admission with it)
      user_id         bigint,
      key_id          bigint,
      group_name      text,
      reserved_micros bigint,       -- money held for this request until it settles
      plan            jsonb,        -- ordered candidates: [{channel_id, version, model}]
      price           jsonb,        -- price card for the usage receipt (null: free model, no embedding price)
      cache           jsonb         -- cache result: exact hit (with the answer), or miss (+ semantic plan)
    );
  end if;
end
$$;

-- The prices and multipliers an admission reserved with (private.admit_prepare), kept on its
-- admission row and billed with at settlement (private.card_cost_micros), so the ledger equals the
-- receipt the gateway computed from the ticket's card. Private; the ticket carries it as jsonb
-- (with the candidates' channel multipliers, which the admission row keeps in route_plan).
do $$
begin
  if to_regtype('private.price_card') is null then
    create type private.price_card as (
      input              bigint,    -- micro-USD per 1M tokens (null: unpriced)
      output             bigint,
      cached_input       bigint,    -- null: the input price
      cache_write        bigint,    -- null: the input price
      per_call           bigint,    -- micro-USD per call
      group_multiplier   numeric,   -- the owner's group price_multiplier
      hit_ratio          numeric,   -- SemanticCacheHitPriceRatio
      embedding_input    bigint,    -- the semantic cache's embedding model
      embedding_per_call bigint
    );
  end if;
end
$$;

-- What the reading half of an admission (private.admit_prepare) hands to the writing half
-- (private.admit_write, or relay_begin_batch's writes per owner and key). Private: never returned
-- to the gateway.
do $$
begin
  if to_regtype('private.admit_plan') is null then
    create type private.admit_plan as (
      request_id        uuid,
      key_id            bigint,
      user_id           bigint,
      group_name        text,
      endpoint          text,
      model             text,
      stream            boolean,
      client_ip         inet,
      prompt_tokens     integer,
      route_plan        jsonb,    -- {candidates, skipped}, as recorded on the admission
      plan              jsonb,    -- the candidates, as the ticket carries them
      reserved_micros   bigint,
      reserved_tokens   integer,
      counted           boolean,  -- the key has a quota or limits: its counters are written
      quota_micros      bigint,   -- the key's limits, checked against its counters
      rpm_limit         integer,
      tpm_limit         integer,
      concurrency_limit integer,
      cache_state       text,     -- admissions.cache: miss, exact, semantic, bypass (null: not cacheable)
      cache_entry_id    bigint,
      cache_similarity  real,
      cache             jsonb,    -- the cache result for the ticket
      price             jsonb,    -- the price card for the ticket (null: free model, no embedding price)
      card              private.price_card   -- the same card, as the admission row stores it
    );
  end if;
end
$$;

-- What admission reads about a client key in one lookup (private.key_auth_of), checked by
-- private.key_verify. Private.
do $$
begin
  if to_regtype('private.key_auth') is null then
    create type private.key_auth as (
      key              private.api_keys,
      user_status      text,
      user_group       text,
      model            private.models,   -- the requested model's price row (null: unknown model)
      group_multiplier numeric           -- the owner's group price multiplier
      -- route (added below, after private.route_choice): the cached route of the model for the
      -- owner's group (private.route_cache), null when it is planned per request
    );
  end if;
end
$$;

-- One request's route plan (private.route_plans), as private.admit_prepare takes it. Private.
do $$
begin
  if to_regtype('private.route_choice') is null then
    create type private.route_choice as (
      served         integer,   -- channels serving the model for the group, usable or not
      candidates     jsonb,     -- the usable ones in try order (null: none)
      skipped        jsonb,     -- the others, with the reason
      multipliers    jsonb,     -- the usable ones' cost multipliers by channel id
      max_multiplier numeric
    );
  end if;
end
$$;

-- private.key_auth gained the cached route (private.key_auth_of reads private.route_cache).
do $$
begin
  if not exists (select 1 from pg_attribute
                  where attrelid = 'private.key_auth'::regclass and attname = 'route' and not attisdropped) then
    alter type private.key_auth add attribute route private.route_choice;
  end if;
end
$$;

-- The ticket and the admission plan gained max_tokens: the output tokens the gateway sends the
-- upstream as its limit (ReservationPolicy cap, for a request that set none), null when the
-- request's own limit stands. (Added, not re-created: nothing stores these types.)
do $$
begin
  if not exists (select 1 from pg_attribute
                  where attrelid = 'gateway.relay_ticket'::regclass and attname = 'max_tokens' and not attisdropped) then
    alter type gateway.relay_ticket add attribute max_tokens integer;
  end if;
  if not exists (select 1 from pg_attribute
                  where attrelid = 'private.admit_plan'::regclass and attname = 'max_tokens' and not attisdropped) then
    alter type private.admit_plan add attribute max_tokens integer;
  end if;
end
$$;
