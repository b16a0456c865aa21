-- The gateway's API: what the elygate_gateway role may execute. Everything that decides who may
-- use what lives here; the gateway only parses, streams and reports.

-- private.key_check: authenticates a client key (by sha256) for a request from p_client_ip, and
-- reads in the same statement what admission needs next: the model's price row and the owner's
-- group multiplier (relay_begin passes p_model; models_list does not).
-- Called by gateway.relay_begin and gateway.models_list. Raises NOKEY/KREVK/KEXPD/UDSBL/IPDNY.
-- (The signature gained p_model and two OUT columns; the old one goes.)
drop function if exists private.key_check(bytea, inet);
create or replace function private.key_check(p_key_hash bytea, p_client_ip inet, p_model text default null,
                                             out key private.api_keys, out user_group text,
                                             out model private.models, out group_multiplier numeric)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row record;
begin
  if p_key_hash is null then
    raise exception using errcode = 'NOKEY',
      message = 'You didn''t provide an API key. Send it as "Authorization: Bearer <key>" or "x-api-key: <key>".';
  end if;
  /* why one statement: each statement a PL/pgSQL function runs costs an executor start-up, and
     this runs once per request; key, owner, price and group used to be four. */
  select k as key, u.status as user_status, u.group_name, m as model, g.price_multiplier
    into v_row
    from private.api_keys k
    join private.users u on u.id = k.user_id
    left join private.models m on m.name = p_model
    left join private.groups g on g.name = u.group_name
   where k.key_hash = p_key_hash;
  if not found then
    raise exception using errcode = 'NOKEY', message = 'Incorrect API key provided.',
      hint = 'Create a key with admin.key_create(), or check for a truncated copy.';
  end if;
  key := v_row.key;
  user_group := v_row.group_name;
  model := v_row.model;
  group_multiplier := v_row.price_multiplier;
  if key.status <> 'active' then
    raise exception using errcode = 'KREVK', message = format('This API key (%s) has been revoked.', key.key_prefix);
  end if;
  if key.expires_at is not null and key.expires_at <= now() then
    raise exception using errcode = 'KEXPD',
      message = format('This API key (%s) expired at %s.', key.key_prefix,
                       to_char(key.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
  end if;
  if v_row.user_status <> 'active' then
    raise exception using errcode = 'UDSBL', message = 'The account that owns this API key is disabled.';
  end if;
  if key.allowed_ips is not null
     and (p_client_ip is null or not exists (select 1 from unnest(key.allowed_ips) c where p_client_ip <<= c)) then
    raise exception using errcode = 'IPDNY',
      message = format('This API key may not be used from %s.', coalesce(host(p_client_ip), 'an unknown address'));
  end if;
end
$$;
comment on function private.key_check(bytea, inet, text) is
  E'Authenticates a client key by its sha256: status, expiry, owner status and IP/CIDR allowlist. Also returns the owner''s group, its price multiplier and the price row of p_model (null when unknown).';

-- private.admit: the body of gateway.relay_begin (and of each element of relay_begin_batch), given
-- the options it reads (private.admission_options()), so a batch reads them once.
-- Authenticates, checks the model allowlist, plans the route, admits (wallet, key quota, RPM, TPM,
-- concurrency), reserves the estimated cost and records the admission until settlement.
-- Not security definer and no search_path of its own: it runs only inside the gateway.* functions
-- (which pin search_path = pg_catalog, pg_temp) and nobody else may execute it. The options are
-- an argument of this private function only: the gateway role cannot pass options of its own.
create or replace function private.admit(
  p_opt           jsonb,
  p_request_id    uuid,
  p_key_hash      bytea,
  p_model         text,
  p_endpoint      text,
  p_stream        boolean,
  p_client_ip     inet,
  p_prompt_tokens integer,
  p_max_tokens    integer,
  p_cache         jsonb)   -- {"exact": hex sha256, "context": hex sha256, "semantic": bool}; null: not cacheable
returns gateway.relay_ticket
language plpgsql volatile
as $$
declare
  v_auth record;
  v_route record;
  v_key private.api_keys;
  v_price private.models;
  v_opt jsonb := p_opt;
  v_plan jsonb;
  v_skipped jsonb;
  v_served integer;
  v_created timestamptz;
  v_channel_multipliers jsonb;
  v_max_channel_multiplier numeric;
  v_out_tokens integer;
  v_tokens integer;
  v_reserve bigint := 0;
  v_counted boolean;
  v_wallet record;
  v_counter record;
  v_minute timestamptz := date_trunc('minute', now());
  v_window numeric;
  v_retry integer;
  v_cache jsonb;
begin
  if p_model is null or p_model = '' then
    raise exception using errcode = 'BADRQ', message = 'you must provide a model parameter', column = 'model';
  end if;
  /* why: on most disks the WAL flush is the dearest part of admission, and it is paid per request
     on the hot path. Admission commits asynchronously (unless DurableAdmission): the row locks are
     released at commit, the flush follows within wal_writer_delay, and the request's own
     relay_finish (synchronous) flushes it anyway. A crash in between loses the admission, never the
     bill: the outcome carries the ticket and private.settle re-creates a missing admission. */
  if not (v_opt ->> 'DurableAdmission')::boolean then
    perform set_config('synchronous_commit', 'off', true);
  end if;
  v_auth := private.key_check(p_key_hash, p_client_ip, p_model);
  v_key := v_auth.key;

  if v_key.allowed_models is not null and not (p_model = any(v_key.allowed_models)) then
    raise exception using errcode = 'MDENY', column = 'model',
      message = format('This API key is not allowed to use the model `%s`.', p_model);
  end if;

  -- An assignment, not "select ... from route_plan()": PL/pgSQL evaluates it as a simple expression,
  -- without the executor start-up and tuplestore of a set-returning call.
  v_route := private.route_plan(p_model, v_auth.user_group);
  v_served := v_route.served;
  v_plan := v_route.candidates;
  v_skipped := v_route.skipped;

  if v_served = 0 then
    raise exception using errcode = 'NOMDL', column = 'model',
      message = format('The model `%s` does not exist or you do not have access to it.', p_model);
  end if;
  if v_plan is null then
    raise exception using errcode = 'NOCHN',
      message = format('No channel is available for the model `%s` right now (%s disabled).', p_model, v_served),
      hint = 'An operator can see why in admin.channels (status, status_reason).';
  end if;

  ---------------------------------------------------------------------------------------------
  -- Price and reservation: prompt estimate + max_tokens (or DefaultMaxTokens), at the most
  -- expensive candidate channel's multiplier, so failover never costs more than was held.
  ---------------------------------------------------------------------------------------------
  v_price := v_auth.model;
  if v_price.name is null or num_nonnulls(v_price.input_price, v_price.output_price, v_price.per_call_price) = 0 then
    if not (v_opt ->> 'AllowUnpricedModels')::boolean then
      raise exception using errcode = 'NOPRC', column = 'model',
        message = format('The model `%s` has no price configured, so it cannot be billed.', p_model),
        hint = 'An operator sets one with admin.model_upsert(...), or allows free use with admin.option_set(''AllowUnpricedModels'', ''true'').';
    end if;
    v_price := null;
  end if;
  v_out_tokens := case when p_endpoint = 'embeddings' then 0
                       else coalesce(p_max_tokens, (v_opt ->> 'DefaultMaxTokens')::integer) end;
  v_tokens := coalesce(p_prompt_tokens, 0) + v_out_tokens;

  if v_price.name is not null then
    -- The candidates' cost multipliers come with the plan (private.route_plan).
    v_channel_multipliers := v_route.multipliers;
    v_max_channel_multiplier := v_route.max_multiplier;
    v_reserve := private.cost_micros(p_prompt_tokens, v_out_tokens, 0, 0, v_price.input_price, v_price.output_price,
                                     v_price.cached_input_price, v_price.cache_write_price, v_price.per_call_price,
                                     v_auth.group_multiplier, v_max_channel_multiplier);
  end if;

  -- Cache: an exact hit is served without the upstream and reserves only its hit price.
  if p_cache is not null and v_key.cache_enabled then
    v_cache := private.cache_plan(p_cache, v_key, v_auth.user_group, p_model);
    if v_cache ->> 'result' = 'exact' then
      v_reserve := case when v_price.name is null then 0 else round(private.cost_micros(
                     (v_cache -> 'usage' ->> 'prompt_tokens')::integer, (v_cache -> 'usage' ->> 'completion_tokens')::integer,
                     (v_cache -> 'usage' ->> 'cached_tokens')::integer, (v_cache -> 'usage' ->> 'cache_write_tokens')::integer,
                     v_price.input_price, v_price.output_price, v_price.cached_input_price, v_price.cache_write_price,
                     v_price.per_call_price, v_auth.group_multiplier, 1)
                     * (v_opt ->> 'SemanticCacheHitPriceRatio')::numeric)::bigint end;
    end if;
  end if;

  -- Wallet: the one atomic write of admission. Balance minus open reservations must cover it.
  if v_reserve > 0 then
    update private.wallets w
       set reserved_micros = w.reserved_micros + v_reserve
     where w.user_id = v_key.user_id
       and w.balance_micros - w.reserved_micros - v_reserve >= -w.credit_limit_micros
    returning w.balance_micros, w.reserved_micros into v_wallet;
    if not found then
      select w.balance_micros - w.reserved_micros + w.credit_limit_micros as available into v_wallet
        from private.wallets w where w.user_id = v_key.user_id;
      raise exception using errcode = 'QUOTA',
        message = format('You exceeded your current quota: this request needs up to %s micro-USD and %s is available. Top up, lower max_tokens, or ask your operator.',
                         v_reserve, coalesce(v_wallet.available, 0)),
        hint = 'Top up with admin.wallet_credit(...) or a redemption code.';
    end if;
  end if;

  -- Key quota, concurrency, RPM and TPM (only for keys that have them): one row, one UPDATE.
  v_counted := num_nonnulls(v_key.quota_micros, v_key.rpm_limit, v_key.tpm_limit, v_key.concurrency_limit) > 0;
  if v_counted then
    /* why: RPM/TPM are a sliding window over this minute's counts and the previous minute's,
       kept on the key's counters row and rolled over by this same UPDATE, so a limited key costs
       one contended row write per request. A refusal below raises, which undoes the increment. */
    update private.key_counters k
       set reserved_micros = k.reserved_micros + v_reserve,
           inflight = k.inflight + 1,
           prev_requests = case when k.rate_minute = v_minute then k.prev_requests
                                when k.rate_minute = v_minute - interval '1 minute' then k.minute_requests else 0 end,
           prev_tokens = case when k.rate_minute = v_minute then k.prev_tokens
                              when k.rate_minute = v_minute - interval '1 minute' then k.minute_tokens else 0 end,
           minute_requests = case when k.rate_minute = v_minute then k.minute_requests else 0 end + 1,
           minute_tokens = case when k.rate_minute = v_minute then k.minute_tokens else 0 end + v_tokens,
           rate_minute = v_minute
     where k.key_id = v_key.id
       and (v_key.quota_micros is null or k.used_micros + k.reserved_micros + v_reserve <= v_key.quota_micros)
       and (v_key.concurrency_limit is null or k.inflight < v_key.concurrency_limit)
    returning k.minute_requests, k.minute_tokens, k.prev_requests, k.prev_tokens into v_counter;
    if not found then
      select k.used_micros, k.reserved_micros, k.inflight into v_counter from private.key_counters k where k.key_id = v_key.id;
      if v_key.concurrency_limit is not null and v_counter.inflight >= v_key.concurrency_limit then
        -- reason=concurrency: the gateway may settle answered requests of this key and ask again.
        raise exception using errcode = 'RLIMT', detail = 'retry_after=1 reason=concurrency',
          message = format('Rate limit reached: this key allows %s concurrent requests and %s are in flight.',
                           v_key.concurrency_limit, v_counter.inflight);
      end if;
      raise exception using errcode = 'QUOTA',
        message = format('This API key''s quota of %s micro-USD is used up (%s spent, %s reserved).',
                         v_key.quota_micros, v_counter.used_micros, v_counter.reserved_micros),
        hint = 'Raise the key''s quota_micros, or use another key.';
    end if;

    if v_key.rpm_limit is not null or v_key.tpm_limit is not null then
      v_window := 1 - extract(epoch from now() - v_minute) / 60;   -- share of the previous minute still in the window
      v_retry := greatest(ceil(60 - extract(epoch from now() - v_minute))::integer, 1);
      if v_key.rpm_limit is not null and v_counter.minute_requests + v_counter.prev_requests * v_window > v_key.rpm_limit then
        raise exception using errcode = 'RLIMT', detail = format('retry_after=%s', v_retry),
          message = format('Rate limit reached for requests: this key allows %s requests per minute.', v_key.rpm_limit);
      end if;
      if v_key.tpm_limit is not null and v_counter.minute_tokens + v_counter.prev_tokens * v_window > v_key.tpm_limit then
        raise exception using errcode = 'TLIMT', detail = format('retry_after=%s', v_retry),
          message = format('Rate limit reached for tokens: this key allows %s tokens per minute, and this request may use %s.',
                           v_key.tpm_limit, v_tokens);
      end if;
    end if;
  end if;

  /* why a row of its own: the request log is partitioned and indexed for reading; the in-flight
     row is small, has one index, and is deleted when settlement writes the finished request. */
  insert into private.admissions (id, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                  prompt_tokens, route_plan, reserved_micros, reserved_tokens, counted,
                                  cache, cache_entry_id, cache_similarity)
  values (p_request_id, v_key.id, v_key.user_id, v_auth.user_group, p_endpoint, p_model,
          coalesce(p_stream, false), p_client_ip, p_prompt_tokens,
          jsonb_build_object('candidates', v_plan, 'skipped', v_skipped),
          v_reserve, v_tokens, v_counted,
          case when p_cache is null then null when v_cache is null then 'bypass' else v_cache ->> 'result' end,
          (v_cache ->> 'entry_id')::bigint, (v_cache ->> 'similarity')::real)
  returning created_at into v_created;

  return row(p_request_id, v_created, v_key.user_id, v_key.id, v_auth.user_group, v_reserve, v_plan,
             case when v_price.name is null then null else jsonb_build_object(
               'input', v_price.input_price, 'output', v_price.output_price,
               'cached_input', v_price.cached_input_price, 'cache_write', v_price.cache_write_price,
               'per_call', v_price.per_call_price, 'group_multiplier', v_auth.group_multiplier::text,
               'channel_multipliers', v_channel_multipliers,
               'cache_hit_ratio', v_opt ->> 'SemanticCacheHitPriceRatio',
               'embedding', case when v_opt ->> 'SemanticCacheEmbeddingModel' <> '' then
                              (select jsonb_build_object('input', em.input_price, 'per_call', em.per_call_price)
                                 from private.models em where em.name = v_opt ->> 'SemanticCacheEmbeddingModel') end)
             end,
             v_cache)::gateway.relay_ticket;
end
$$;
comment on function private.admit(jsonb, uuid, bytea, text, text, boolean, inet, integer, integer, jsonb) is
  E'The admission of one request (gateway.relay_begin''s body), given the options private.admission_options() read.';

-- private.admission_options: every option admission may need, in one read.
create or replace function private.admission_options()
returns jsonb
language plpgsql stable
as $$
begin
  return private.options_pick('DurableAdmission', 'AllowUnpricedModels', 'DefaultMaxTokens',
                              'SemanticCacheHitPriceRatio', 'SemanticCacheEmbeddingModel');
end
$$;
comment on function private.admission_options() is E'The options private.admit reads, as one JSON object.';

-- gateway.relay_begin: the one call a request makes before the upstream (private.admit).
create or replace function gateway.relay_begin(
  p_request_id    uuid,
  p_key_hash      bytea,
  p_model         text,
  p_endpoint      text,
  p_stream        boolean,
  p_client_ip     inet,
  p_prompt_tokens integer,
  p_max_tokens    integer,
  p_cache         jsonb default null)   -- {"exact": hex sha256, "context": hex sha256, "semantic": bool}; null: not cacheable
returns gateway.relay_ticket
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return private.admit(private.admission_options(), p_request_id, p_key_hash, p_model, p_endpoint, p_stream,
                       p_client_ip, p_prompt_tokens, p_max_tokens, p_cache);
end
$$;
comment on function gateway.relay_begin(uuid, bytea, text, text, boolean, inet, integer, integer, jsonb) is
  E'One round trip before the upstream: authenticates the key (sha256), checks IP and model allowlists, plans the route, admits the request (wallet balance minus open reservations, key quota, RPM, TPM, concurrency), reserves its estimated cost, looks up the exact cache layer, and records the admission (private.admissions) until settlement. Returns a gateway.relay_ticket; refusals raise the SQLSTATEs in sql/ERRORS.md.';

-- gateway.relay_begin_batch: several admissions in one round trip, for a gateway whose admission
-- calls are all in flight when more requests arrive (its natural batching; AdmissionConcurrency).
-- Each element is relay_begin's arguments as JSON: {"id", "key_hash" (hex), "model", "endpoint",
-- "stream", "client_ip", "prompt_tokens", "max_tokens", "cache"}. One row per element, in any
-- order, matched by idx (1-based); a refusal is that row's error (its SQLSTATE, message, detail,
-- hint and column), never the batch's.
create or replace function gateway.relay_begin_batch(p_requests jsonb)
returns table (idx integer, request_id uuid, created_at timestamptz, user_id bigint, key_id bigint, group_name text,
               reserved_micros bigint, plan jsonb, price jsonb, cache jsonb, error jsonb)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_max integer := private.option_int('AdmissionBatchMax');
  v_opt jsonb := private.admission_options();   -- once for the batch
  v_req record;
  v_ticket gateway.relay_ticket;
  v_state text;
  v_message text;
  v_detail text;
  v_hint text;
  v_column text;
begin
  if jsonb_typeof(p_requests) is distinct from 'array' or jsonb_array_length(p_requests) > v_max then
    raise exception using errcode = 'BADRQ',
      message = format('relay_begin_batch takes a JSON array of at most AdmissionBatchMax (%s) requests.', v_max);
  end if;
  /* why this order: every admission locks its owner's wallet, then its key's counters, and holds
     them to the end of the batch. Taken in (owner, key) order, as settlement takes wallets then
     keys in id order, two batches or a batch and a settlement can never wait on each other in a
     circle. */
  for v_req in
    select e.ord::integer as ord, e.r, k.user_id
      from jsonb_array_elements(p_requests) with ordinality e(r, ord)
      -- (a key_hash that is not hex finds no key here and is refused in its own block below)
      left join private.api_keys k
             on k.key_hash = case when e.r ->> 'key_hash' ~ '^([0-9a-fA-F]{2})*$' then decode(e.r ->> 'key_hash', 'hex') end
     order by k.user_id nulls last, k.id, e.ord
  loop
    /* why a block per element: a refusal raises inside private.admit, and the block's subtransaction
       undoes that element's writes alone. (At most AdmissionBatchMax of them, within PostgreSQL's
       64 cached subtransactions per transaction.) */
    begin
      v_ticket := private.admit(v_opt, (v_req.r ->> 'id')::uuid, decode(v_req.r ->> 'key_hash', 'hex'),
                                      v_req.r ->> 'model', v_req.r ->> 'endpoint', (v_req.r ->> 'stream')::boolean,
                                      (v_req.r ->> 'client_ip')::inet, (v_req.r ->> 'prompt_tokens')::integer,
                                      (v_req.r ->> 'max_tokens')::integer, nullif(v_req.r -> 'cache', 'null'::jsonb));
      idx := v_req.ord;
      request_id := v_ticket.request_id;
      created_at := v_ticket.created_at;
      user_id := v_ticket.user_id;
      key_id := v_ticket.key_id;
      group_name := v_ticket.group_name;
      reserved_micros := v_ticket.reserved_micros;
      plan := v_ticket.plan;
      price := v_ticket.price;
      cache := v_ticket.cache;
      error := null;
    exception when others then
      get stacked diagnostics v_state = returned_sqlstate, v_message = message_text, v_detail = pg_exception_detail,
                              v_hint = pg_exception_hint, v_column = column_name;
      idx := v_req.ord;
      request_id := null; created_at := null; user_id := null; key_id := null; group_name := null;
      reserved_micros := null; plan := null; price := null; cache := null;
      error := jsonb_build_object('code', v_state, 'message', v_message, 'detail', nullif(v_detail, ''),
                                  'hint', nullif(v_hint, ''), 'column', nullif(v_column, ''));
    end;
    return next;
  end loop;
end
$$;
comment on function gateway.relay_begin_batch(jsonb) is
  E'relay_begin for up to AdmissionBatchMax requests in one round trip and one transaction: one row per request (idx = its 1-based position), with the ticket or, for a refused request, error = {code, message, detail, hint, column}. Admissions are taken in owner and key order so batches and settlements cannot deadlock.';

-- gateway.relay_finish: settles a batch of outcomes (the gateway's group commit).
-- Idempotent by request id: a replayed outcome changes nothing.
create or replace function gateway.relay_finish(p_outcomes jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- plpgsql, not sql: a language sql body is planned again at every call.
as $$ begin return private.settle(p_outcomes); end $$;
comment on function gateway.relay_finish(jsonb) is
  E'Settles a batch of request outcomes in one call (see private.settle): request rows, ledger rows, wallets and key counters. Idempotent by request id. Called by the gateway''s group commit.';

-- gateway.models_list: the models a key may use (GET /v1/models), in one round trip.
create or replace function gateway.models_list(p_key_hash bytea, p_client_ip inet)
returns table (id text, owned_by text, created bigint)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_auth record := private.key_check(p_key_hash, p_client_ip);
begin
  return query
    select m.model, coalesce(md.owned_by, 'elygate'),
           extract(epoch from coalesce(md.created_at, min(c.created_at)))::bigint
      from private.channels c
      cross join lateral unnest(c.models) as m(model)
      left join private.models md on md.name = m.model
     where v_auth.user_group = any(c.groups)
       and c.status = 'enabled'
       and ((v_auth.key).allowed_models is null or m.model = any((v_auth.key).allowed_models))
     group by m.model, md.owned_by, md.created_at
     order by m.model;
end
$$;
comment on function gateway.models_list(bytea, inet) is
  E'The models this key may use right now: served by an enabled channel of the owner''s group and allowed for the key.';

-- gateway.options_snapshot: every option, typed, as one JSON object (reloaded on NOTIFY).
create or replace function gateway.options_snapshot()
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(jsonb_object_agg(o.key,
           case o.value_type
             when 'int' then to_jsonb(o.value::bigint)
             when 'number' then to_jsonb(o.value::numeric)
             when 'bool' then to_jsonb(o.value::boolean)
             when 'json' then o.value::jsonb
             else to_jsonb(o.value)
           end), '{}'::jsonb)
    from private.options o
$$;
comment on function gateway.options_snapshot() is E'All options as one typed JSON object; the gateway caches it and reloads on NOTIFY elygate_config.';

-- gateway.channel_credentials: what the gateway needs to call the given channels, keys still sealed.
create or replace function gateway.channel_credentials(p_ids bigint[])
returns table (id bigint, version integer, name text, type text, base_url text, config jsonb, keys jsonb)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select c.id, c.version, c.name, c.type, c.base_url, c.config,
         coalesce((select jsonb_agg(jsonb_build_object(
                             'ordinal', k.ordinal, 'key_id', k.key_id, 'nonce', encode(k.nonce, 'base64'),
                             'ciphertext', encode(k.ciphertext, 'base64'), 'tag', encode(k.tag, 'base64'))
                           order by k.ordinal)
                     from private.channel_keys k
                    where k.channel_id = c.id and k.status = 'enabled'), '[]'::jsonb)
    from private.channels c
   where c.id = any(p_ids)
$$;
comment on function gateway.channel_credentials(bigint[]) is
  E'Channel connection details with AES-256-GCM sealed keys, for the gateway''s credential snapshot.';

-- gateway.ping: readiness probe (GET /readyz).
create or replace function gateway.ping()
returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select true $$;
comment on function gateway.ping() is E'Returns true; proves the database answers (GET /readyz).';
