-- Composite shapes: what the gateway API returns (gateway.relay_ticket) and what admission's steps
-- hand each other (private.*). Each is declared here in full. private.composite_type_ensure creates
-- it, adds attributes appended at its end, and refuses any other difference with an error naming
-- the type: a change other than appending needs a migration that drops the type (and the functions
-- returning it) first.

-- private.composite_type_ensure: creates the composite type p_name with p_attributes (as written
-- inside "create type ... as (...)", line comments included), or checks an existing one against
-- them: attributes missing at its end are added; any other difference (a name, a type, the order)
-- raises.
create or replace function private.composite_type_ensure(p_name text, p_attributes text)
returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  v_have text[];
  v_want text[];
  i integer;
begin
  if to_regtype(p_name) is null then
    execute format(E'create type %s as (%s\n)', p_name, p_attributes);
    return;
  end if;
  execute format(E'create type pg_temp.elygate_composite_probe as (%s\n)', p_attributes);
  select array_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) order by a.attnum) into v_want
    from pg_attribute a
   where a.attrelid = (select t.typrelid from pg_type t where t.oid = to_regtype('pg_temp.elygate_composite_probe'))
     and a.attnum > 0 and not a.attisdropped;
  select array_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) order by a.attnum) into v_have
    from pg_attribute a
   where a.attrelid = (select t.typrelid from pg_type t where t.oid = to_regtype(p_name))
     and a.attnum > 0 and not a.attisdropped;
  drop type pg_temp.elygate_composite_probe;
  if cardinality(v_have) > cardinality(v_want) or v_want[1:cardinality(v_have)] is distinct from v_have then
    raise exception 'type % differs from sql/10_types.sql: it has (%), the file declares (%); a migration must drop it first',
      p_name, array_to_string(v_have, ', '), array_to_string(v_want, ', ');
  end if;
  for i in cardinality(v_have) + 1 .. cardinality(v_want) loop
    execute format('alter type %s add attribute %s', p_name, v_want[i]);
  end loop;
end
$$;

-- What gateway.relay_begin returns (and relay_begin_batch, per request): the admission ticket.
select private.composite_type_ensure('gateway.relay_ticket', $t$
  request_id      uuid,         -- echoed back; the gateway's X-Request-Id
  created_at      timestamptz,  -- admission time, the request row's partition key (relay_finish restores a lost admission with it)
  user_id         bigint,
  key_id          bigint,
  group_name      text,
  reserved_micros bigint,       -- money held for this request until it settles
  plan            jsonb,        -- ordered candidates: [{channel_id, version, model}]
  price           jsonb,        -- price card for the usage receipt (null: free model, no embedding price)
  cache           jsonb,        -- cache result: exact hit (with the answer), or miss (+ semantic plan)
  max_tokens      integer       -- the output limit sent upstream (ReservationPolicy cap, for a request
                                -- that set none); null: the request's own limit stands
$t$);

-- The prices and multipliers an admission reserved with (private.admit_prepare), kept on its
-- admission row and billed with at settlement (private.card_cost_micros), so the ledger equals the
-- receipt the gateway computed from the ticket's card. Private; the ticket carries it as jsonb
-- (with the candidates' channel multipliers, which the admission row keeps in route_plan).
select private.composite_type_ensure('private.price_card', $t$
  input              bigint,    -- micro-USD per 1M tokens (null: unpriced)
  output             bigint,
  cached_input       bigint,    -- null: the input price
  cache_write        bigint,    -- null: the input price
  per_call           bigint,    -- micro-USD per call
  group_multiplier   numeric,   -- the owner's group price_multiplier
  hit_ratio          numeric,   -- SemanticCacheHitPriceRatio
  embedding_input    bigint,    -- the semantic cache's embedding model
  embedding_per_call bigint,
  unit_price         bigint     -- micro-USD per 1M units of a media endpoint's unit (images, characters,
                                -- audio seconds, search units: private.unit_price); null: none
$t$);

-- What the reading half of an admission (private.admit_prepare) hands to the writing half
-- (private.admit_write, or relay_begin_batch's writes per owner and key). Private: never returned
-- to the gateway.
select private.composite_type_ensure('private.admit_plan', $t$
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
  card              private.price_card,  -- the same card, as the admission row stores it
  max_tokens        integer,  -- as the ticket's
  budget_ids        bigint[], -- the budgets it counts in, in id order (null: none; sql/36_budgets.sql)
  limit_ids         bigint[]  -- the model limits (RPM/TPM) it counts in, in id order (null: none)
$t$);

-- One request's route plan (private.route_plans), as private.admit_prepare takes it. Private.
select private.composite_type_ensure('private.route_choice', $t$
  served         integer,   -- channels serving the model for the group, usable or not
  candidates     jsonb,     -- the usable ones in try order (null: none)
  skipped        jsonb,     -- the others, with the reason
  multipliers    jsonb,     -- the usable ones' cost multipliers by channel id
  max_multiplier numeric
$t$);

-- What admission reads about a client key in one lookup (private.key_auth_of), checked by
-- private.key_verify. Private.
select private.composite_type_ensure('private.key_auth', $t$
  key              private.api_keys,
  user_status      text,
  user_group       text,
  model            private.models,   -- the requested model's price row (null: unknown model)
  group_multiplier numeric,          -- the owner's group price multiplier
  route            private.route_choice, -- the cached route of the model for the owner's group
                                         -- (private.route_cache); null: planned per request
  scoped_limits    boolean               -- a budget or a model limit names the key, its owner or
                                         -- their group (sql/36_budgets.sql)
$t$);
