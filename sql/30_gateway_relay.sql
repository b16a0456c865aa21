-- The gateway's API: what the elygate_gateway role may execute. Everything that decides who may
-- use what lives here; the gateway only parses, streams and reports.

-- private.key_auth_of: the one lookup that authenticates a client key by its sha256, and reads what
-- admission needs next: the owner's status and group, the group's price multiplier, p_model's
-- price row and, when it has nothing random in it, the route of p_model for that group
-- (private.route_cache). A set-returning SQL function so it is inlined: relay_begin_batch reads every request
-- of a batch in one statement with it. private.key_verify checks what it read.
create or replace function private.key_auth_of(p_key_hash bytea, p_model text)
returns setof private.key_auth
language sql stable
-- (limit 1: the key hash is unique; the limit also keeps the lookup a subquery, an index lookup
-- per request, where a plain join made the planner hash the whole key table for a batch)
as $$
  -- (an archived group's users are refused as their account would be: user_status says why)
  select k, case when g.archived_at is not null and u.status = 'active' then 'group_archived' else u.status end,
         u.group_name, m, g.price_multiplier,
         case when rc.model is not null then
           row(rc.served, rc.candidates, rc.skipped, rc.multipliers, rc.max_multiplier)::private.route_choice end
    from private.api_keys k
    join private.users u on u.id = k.user_id
    left join private.models m on m.name = p_model
    left join private.groups g on g.name = u.group_name
    left join private.route_cache rc on rc.model = p_model and rc.grp = u.group_name
   where k.key_hash = p_key_hash
   limit 1
$$;
comment on function private.key_auth_of(bytea, text) is
  E'A client key (by sha256) with its owner''s status and group, the group''s price multiplier and p_model''s price row; no row when unknown. Checked by private.key_verify.';

-- private.key_verify: raises NOKEY/KREVK/KEXPD/UDSBL/IPDNY unless p_auth (what key_auth_of read
-- for p_key_hash) may make a request from p_client_ip; returns p_auth.
create or replace function private.key_verify(p_key_hash bytea, p_auth private.key_auth, p_client_ip inet)
returns private.key_auth
language plpgsql stable
as $$
declare
  v_key private.api_keys := p_auth.key;
begin
  if p_key_hash is null then
    raise exception using errcode = 'NOKEY',
      message = 'You didn''t provide an API key. Send it as "Authorization: Bearer <key>" or "x-api-key: <key>".';
  end if;
  if v_key.id is null then
    raise exception using errcode = 'NOKEY', message = 'Incorrect API key provided.',
      hint = 'Create a key with admin.key_create(), or check for a truncated copy.';
  end if;
  if v_key.status <> 'active' then
    -- Archived (an operator's "keep the history, never use it again") refuses like revoked.
    raise exception using errcode = 'KREVK', message = format('This API key (%s) has been %s.', v_key.key_prefix,
      case v_key.status when 'archived' then 'archived' else 'revoked' end);
  end if;
  if v_key.expires_at is not null and v_key.expires_at <= now() then
    -- A rotated key's grace period ends as an expiry (admin.key_rotate); its refusal says so.
    if exists (select 1 from private.key_rotations r where r.old_key_id = v_key.id) then
      raise exception using errcode = 'KEXPD',
        message = format('This API key (%s) was rotated: it was replaced by a new key, and its grace period ended at %s. Use the new key.',
                         v_key.key_prefix, to_char(v_key.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    end if;
    raise exception using errcode = 'KEXPD',
      message = format('This API key (%s) expired at %s.', v_key.key_prefix,
                       to_char(v_key.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
  end if;
  if p_auth.user_status <> 'active' then
    raise exception using errcode = 'UDSBL', message = format('The account that owns this API key is %s.',
      case p_auth.user_status when 'archived' then 'archived'
                              when 'group_archived' then format('in the group `%s`, which has been archived', p_auth.user_group)
                              else 'disabled' end);
  end if;
  /* why nested: a condition with a subquery is run as a query (an executor start-up) whenever it
     is evaluated; nested, it is evaluated only for a key with an allowlist. */
  if v_key.allowed_ips is not null then
    if p_client_ip is null or not exists (select 1 from unnest(v_key.allowed_ips) c where p_client_ip <<= c) then
      raise exception using errcode = 'IPDNY',
        message = format('This API key may not be used from %s.', coalesce(host(p_client_ip), 'an unknown address'));
    end if;
  end if;
  return p_auth;
end
$$;
comment on function private.key_verify(bytea, private.key_auth, inet) is
  E'Raises unless the key read by private.key_auth_of is active, unexpired, owned by an active account and allowed from the client IP.';

-- private.key_check: private.key_auth_of and private.key_verify for one key (gateway.models_list).
create or replace function private.key_check(p_key_hash bytea, p_client_ip inet, p_model text default null,
                                             out key private.api_keys, out user_group text,
                                             out model private.models, out group_multiplier numeric)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_auth private.key_auth;
begin
  select a.* into v_auth from private.key_auth_of(p_key_hash, p_model) a;
  v_auth := private.key_verify(p_key_hash, v_auth, p_client_ip);
  key := v_auth.key;
  user_group := v_auth.user_group;
  model := v_auth.model;
  group_multiplier := v_auth.group_multiplier;
end
$$;
comment on function private.key_check(bytea, inet, text) is
  E'Authenticates a client key by its sha256: status, expiry, owner status and IP/CIDR allowlist. Also returns the owner''s group, its price multiplier and the price row of p_model (null when unknown).';

-- Admission in two steps, so a batch can do the second once per owner and key:
--   private.admit_prepare: everything that reads (key checks, model allowlist, route, price,
--     reservation size, cache); its refusals depend on nothing another request of the batch
--     writes. Its caller reads the key (private.key_auth_of) and the route (private.route_plans),
--     so that a batch reads them for all its requests in one statement each.
--   private.admit_write: the writes and the checks that depend on them (wallet, key quota,
--     concurrency, RPM, TPM), then the admission rows, for one request or a batch alike: the only
--     code that writes an admission. Its refusals are values (private.refusal_json).
-- gateway.relay_begin calls the one after the other for one request (and raises a refusal);
-- gateway.relay_begin_batch for all of its requests (and answers each refusal in its row). These functions are not
-- security definer and set no search_path: they run only inside the gateway.* functions (which pin
-- search_path = pg_catalog, pg_temp) and nobody else may execute them. The options are an argument
-- of these private functions only: the gateway role cannot pass options of its own.

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
  p_cache         jsonb)   -- {"exact": hex sha256, "context": hex sha256, "semantic": bool, "sampling": {..}}; null: no cache key
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

  -- A model with fallbacks: their candidates after its own (planned here, never cached). why an IF
  -- on the row read with the key: a model without fallbacks costs no statement more.
  if (v_auth.model).fallbacks is not null then
    select * into v_fb from private.route_fallbacks(p_opt, v_key, v_auth.user_group, p_model, v_route, (v_auth.model).fallbacks);
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
  if v_price.name is null or num_nonnulls(v_price.input_price, v_price.output_price, v_price.per_call_price) = 0 then
    if not (p_opt ->> 'AllowUnpricedModels')::boolean then
      raise exception using errcode = 'NOPRC', column = 'model',
        message = format('The model `%s` has no price configured, so it cannot be billed.', p_model),
        hint = 'An operator sets one with admin.model_upsert(...), or allows free use with admin.option_set(''AllowUnpricedModels'', ''true'').';
    end if;
    v_price := null;
  end if;
  v_out_tokens := case when p_endpoint = 'embeddings' then 0
                       else coalesce(p_max_tokens, (p_opt ->> 'DefaultMaxTokens')::integer) end;
  /* ReservationPolicy cap: a request that set no output limit gets the one its reservation covers,
     sent to the upstream by the gateway (the ticket's max_tokens), so its answer cannot cost more
     than was held. why only then: a limit the client set is reserved in full, so it is covered as
     it is. Not for embeddings (no output) nor the legacy completions endpoint, whose upstreams
     default to 16 tokens: a cap there would lengthen answers, never bound them. */
  if p_max_tokens is null and p_endpoint not in ('embeddings', 'completions') and p_opt ->> 'ReservationPolicy' = 'cap' then
    v_cap := v_out_tokens;
  end if;

  /* why the card: what this admission reserves with is what it is billed with (private.settle
     reads it back from the admission row) and what the gateway's receipt is computed from (the
     ticket's copy), whatever the price table says by the time the outcome arrives. A free model's
     card has no model prices (its answer costs nothing) but does have the embedding model's, so
     the semantic cache's embedding call is billed for it too, and its ticket carries that card. */
  v_card := row(v_price.input_price, v_price.output_price, v_price.cached_input_price, v_price.cache_write_price,
                v_price.per_call_price, coalesce(v_auth.group_multiplier, 1),
                (p_opt ->> 'SemanticCacheHitPriceRatio')::numeric, null, null)::private.price_card;
  if v_price.name is not null then
    -- The candidates' cost multipliers come with the plan (private.route_plan).
    v_reserve := private.card_cost_micros(v_card, 'answer', v_route.max_multiplier, p_prompt_tokens, v_out_tokens, 0, 0);
  end if;
  -- With fallbacks, the dearest of the models at the dearest candidate's multiplier: whichever
  -- serves, the reservation covers it.
  if v_fallbacks is not null then
    select greatest(v_reserve, max(private.card_cost_micros(
             row((f.p ->> 'input')::bigint, (f.p ->> 'output')::bigint, (f.p ->> 'cached_input')::bigint,
                 (f.p ->> 'cache_write')::bigint, (f.p ->> 'per_call')::bigint, v_card.group_multiplier, null, null, null)::private.price_card,
             'answer', v_route.max_multiplier, p_prompt_tokens, v_out_tokens, 0, 0)))
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
               'embedding', case when num_nonnulls(v_card.embedding_input, v_card.embedding_per_call) > 0 then
                              jsonb_build_object('input', v_card.embedding_input, 'per_call', v_card.embedding_per_call) end,
               -- the fallback models' prices, by name: a request a fallback served is priced with them
               'fallbacks', v_fallbacks)
             end, v_card, v_cap)::private.admit_plan;
end
$$;
comment on function private.admit_prepare(jsonb, private.key_auth, private.route_choice, uuid, bytea, text, text, boolean, inet, integer, integer, jsonb) is
  E'The reading half of an admission, given the key and route its caller read: authenticates, checks the model allowlist and the route, prices the reservation and looks the cache up. Raises the refusals that depend on nothing a request writes.';

-- private.admit_write: the writing half of admission, for one request or a batch (see
-- private.admit_prepare). gateway.relay_begin calls it with one plan, gateway.relay_begin_batch
-- with the batch's; it is the only code that reserves on wallets, counts keys and records
-- admissions. Returns one refusal per plan (null: admitted; the whole array null: none refused),
-- as private.refusal_json makes them: QUOTA (wallet or key quota), RLIMT (concurrency, RPM), TLIMT.
-- A plan whose request_id is null (refused by the reading half) is skipped.
create or replace function private.admit_write(p_plans private.admit_plan[])
returns jsonb[]
language plpgsql volatile
as $$
declare
  v_minute timestamptz := date_trunc('minute', now());
  v_window numeric;   -- share of the previous minute still in the window (set when a key is counted)
  -- per owner and per key: what this call adds (ids in order), and each key's limits
  v_need_users bigint[];
  v_need_amounts bigint[];
  v_need_keys bigint[];
  v_key_n integer[];
  v_key_amounts bigint[];
  v_key_tokens bigint[];
  v_quota bigint[];
  v_concurrency integer[];
  v_rpm integer[];
  v_tpm integer[];
  v_fits boolean := true;
  v_keys_fit boolean := true;
  -- when something does not fit: per owner, balance - reserved + credit as it was before this call
  v_users bigint[];
  v_avail bigint[];
  -- ... and per key, its counters as they were
  v_keys bigint[];
  v_used bigint[];
  v_kres bigint[];
  v_inflight integer[];
  v_mreq integer[];
  v_mtok bigint[];
  v_preq integer[];
  v_ptok bigint[];
  -- what the refused requests take back, per owner and per key
  v_user_undo bigint[];
  v_key_undo_n integer[];
  v_key_undo_amount bigint[];
  v_key_undo_tokens bigint[];
  v_errors jsonb[];
  v_error jsonb;
  v_retry integer;
  v_p private.admit_plan;
  u integer;
  k integer;
begin
  /* The owners whose wallets and the keys whose counters this call writes. why the explicit locks
     for a batch: an UPDATE locks rows in whatever order its plan reads them (a bitmap scan reads
     them in heap order). Every wallet of a batch, then every key, in id order, as settlement takes
     them, or the two deadlock. One request locks one wallet, then one key, in that order anyway;
     its ids are read off its plan (a statement less for the call most admissions are). */
  if cardinality(p_plans) > 1 then
    select u.ids, u.amounts, k.ids, k.n, k.amounts, k.tokens, k.quotas, k.concurrencies, k.rpms, k.tpms
      into v_need_users, v_need_amounts, v_need_keys, v_key_n, v_key_amounts, v_key_tokens,
           v_quota, v_concurrency, v_rpm, v_tpm
      from (select array_agg(s.user_id order by s.user_id) as ids, array_agg(s.amount order by s.user_id) as amounts
              from (select p.user_id, sum(p.reserved_micros)::bigint as amount
                      from unnest(p_plans) p where p.request_id is not null and p.reserved_micros > 0
                     group by p.user_id) s) u,
           (select array_agg(s.key_id order by s.key_id) as ids, array_agg(s.n order by s.key_id) as n,
                   array_agg(s.amount order by s.key_id) as amounts, array_agg(s.tokens order by s.key_id) as tokens,
                   array_agg(s.quota order by s.key_id) as quotas, array_agg(s.concurrency order by s.key_id) as concurrencies,
                   array_agg(s.rpm order by s.key_id) as rpms, array_agg(s.tpm order by s.key_id) as tpms
              from (select p.key_id, count(*)::integer as n, sum(p.reserved_micros)::bigint as amount,
                           sum(p.reserved_tokens)::bigint as tokens, min(p.quota_micros) as quota,
                           min(p.concurrency_limit) as concurrency, min(p.rpm_limit) as rpm, min(p.tpm_limit) as tpm
                      from unnest(p_plans) p where p.request_id is not null and p.counted
                     group by p.key_id) s) k;
    perform 1 from private.wallets w where w.user_id = any(v_need_users) order by w.user_id for no key update;
  else
    v_p := p_plans[1];
    if v_p.request_id is not null and v_p.reserved_micros > 0 then
      v_need_users := array[v_p.user_id];
      v_need_amounts := array[v_p.reserved_micros];
    end if;
    if v_p.request_id is not null and v_p.counted then
      v_need_keys := array[v_p.key_id];
      v_key_n := array[1];
      v_key_amounts := array[v_p.reserved_micros];
      v_key_tokens := array[v_p.reserved_tokens];
      v_quota := array[v_p.quota_micros];
      v_concurrency := array[v_p.concurrency_limit];
      v_rpm := array[v_p.rpm_limit];
      v_tpm := array[v_p.tpm_limit];
    end if;
  end if;

  /* why sums, written unconditionally, then checked: the requests of one owner (or key) update its
     row once per call, not once each (a chain of row versions that every next update walked), and
     a call that refuses nothing (nearly all) costs one statement per table. Every count only grows,
     so the sums fit exactly when every request would in turn. When one does not fit, the requests
     are decided one by one, in order, from the row as it was (the row less the sums; the rows stay
     locked), exactly as if each had been admitted alone, and what the refused ones added is taken
     back. No subtransaction: a refusal is a value, not an undone write. */
  if v_need_users is not null then
    with w as (
      update private.wallets w
         set reserved_micros = w.reserved_micros + x.amount
        from unnest(v_need_users, v_need_amounts) x(user_id, amount)
       where w.user_id = any(v_need_users) and w.user_id = x.user_id   -- (any: an index lookup in the generic plan)
      returning w.balance_micros - w.reserved_micros + w.credit_limit_micros >= 0 as fits
    )
    select coalesce(bool_and(w.fits), true) and count(*) = cardinality(v_need_users) into v_fits from w;
  end if;

  -- Key quota, concurrency, RPM and TPM (only for keys that have them).
  /* why: RPM/TPM are a sliding window over this minute's counts and the previous minute's, kept
     on the key's counters row and rolled over by this same UPDATE, so a limited key costs one
     contended row write per call. The row's minute never goes back: a transaction that started
     in the previous minute but updates after one of the new minute counts into the new one
     (settlement relies on rate_minute being the latest). */
  if v_need_keys is not null then
    v_window := 1 - extract(epoch from now() - v_minute) / 60;
    if cardinality(p_plans) > 1 then
      perform 1 from private.key_counters k where k.key_id = any(v_need_keys) order by k.key_id for no key update;
    end if;
    with c as (
      update private.key_counters k
         set reserved_micros = k.reserved_micros + x.amount,
             inflight = k.inflight + x.n,
             prev_requests = case when k.rate_minute >= v_minute then k.prev_requests
                                  when k.rate_minute = v_minute - interval '1 minute' then k.minute_requests else 0 end,
             prev_tokens = case when k.rate_minute >= v_minute then k.prev_tokens
                                when k.rate_minute = v_minute - interval '1 minute' then k.minute_tokens else 0 end,
             minute_requests = case when k.rate_minute >= v_minute then k.minute_requests else 0 end + x.n,
             minute_tokens = case when k.rate_minute >= v_minute then k.minute_tokens else 0 end + x.tokens,
             rate_minute = greatest(k.rate_minute, v_minute)
        from unnest(v_need_keys, v_key_n, v_key_amounts, v_key_tokens, v_quota, v_concurrency, v_rpm, v_tpm)
               x(key_id, n, amount, tokens, quota_micros, concurrency_limit, rpm_limit, tpm_limit)
       where k.key_id = any(v_need_keys) and k.key_id = x.key_id
      returning (x.quota_micros is null or k.used_micros + k.reserved_micros <= x.quota_micros)
                and (x.concurrency_limit is null or k.inflight <= x.concurrency_limit)
                and (x.rpm_limit is null or k.minute_requests + k.prev_requests * v_window <= x.rpm_limit)
                and (x.tpm_limit is null or k.minute_tokens + k.prev_tokens * v_window <= x.tpm_limit) as fits
    )
    select coalesce(bool_and(c.fits), true) and count(*) = cardinality(v_need_keys) into v_keys_fit from c;
  end if;

  if not (v_fits and v_keys_fit) then
    -- The rows as they were before this call's sums: each was updated above (so it is locked), less
    -- what was added. (The rollover of the rate window stays: it depends on the clock alone.) A
    -- row that is missing is not here, and the requests that need it are refused below.
    select array_agg(w.user_id), array_agg(w.balance_micros - w.reserved_micros + w.credit_limit_micros + x.amount),
           array_agg(0::bigint)
      into v_users, v_avail, v_user_undo
      from unnest(v_need_users, v_need_amounts) x(user_id, amount)
      join private.wallets w on w.user_id = x.user_id;
    select array_agg(k.key_id), array_agg(k.used_micros), array_agg(k.reserved_micros - x.amount), array_agg(k.inflight - x.n),
           array_agg(k.minute_requests - x.n), array_agg(k.minute_tokens - x.tokens), array_agg(k.prev_requests),
           array_agg(k.prev_tokens), array_agg(0), array_agg(0::bigint), array_agg(0::bigint)
      into v_keys, v_used, v_kres, v_inflight, v_mreq, v_mtok, v_preq, v_ptok, v_key_undo_n, v_key_undo_amount, v_key_undo_tokens
      from unnest(v_need_keys, v_key_n, v_key_amounts, v_key_tokens) x(key_id, n, amount, tokens)
      join private.key_counters k on k.key_id = x.key_id;
    v_retry := greatest(ceil(60 - extract(epoch from now() - v_minute))::integer, 1);
    v_errors := array_fill(null::jsonb, array[cardinality(p_plans)]);
    for i in 1 .. cardinality(p_plans) loop
      v_p := p_plans[i];
      continue when v_p.request_id is null;
      v_error := null;
      u := case when v_p.reserved_micros > 0 then array_position(v_users, v_p.user_id) end;
      k := case when v_p.counted then array_position(v_keys, v_p.key_id) end;
      -- Wallet: balance minus open reservations (plus the credit limit) must cover it.
      if v_p.reserved_micros > 0 and coalesce(v_avail[u], 0) < 0 then
        /* A wallet already past its credit limit: a settled bill outgrew its reservation
           (ReservationPolicy allow, or a prompt larger than its estimate). Nothing is admitted
           for it until it is covered again. */
        v_error := private.refusal_json('QUOTA',
          format('This account is %s micro-USD past its credit limit: a request was billed more than was reserved for it (one without max_tokens, under ReservationPolicy allow). No request is admitted until the wallet is topped up by at least that much.',
                 -v_avail[u]),
          null, 'Top up with admin.wallet_credit(...) or a redemption code; send max_tokens to be billed no more than you reserve.', null, null, null);
      elsif v_p.reserved_micros > 0 and coalesce(v_avail[u], 0) < v_p.reserved_micros then
        v_error := private.refusal_json('QUOTA',
          format('You exceeded your current quota: this request needs up to %s micro-USD and %s is available. Top up, lower max_tokens, or ask your operator.',
                 v_p.reserved_micros, coalesce(v_avail[u], 0)),
          null, 'Top up with admin.wallet_credit(...) or a redemption code.', null, null, null);
      elsif v_p.counted and k is null then
        v_error := private.refusal_json('QUOTA', 'This API key has no counters.', null, null, null, null, null);
      elsif v_p.counted and v_p.concurrency_limit is not null and v_inflight[k] >= v_p.concurrency_limit then
        -- reason concurrency: the gateway may settle answered requests of this key and ask again.
        v_error := private.refusal_json('RLIMT',
          format('Rate limit reached: this key allows %s concurrent requests and %s are in flight.', v_p.concurrency_limit, v_inflight[k]),
          null, null, null, 'concurrency', 1);
      elsif v_p.counted and v_p.quota_micros is not null and v_used[k] + v_kres[k] + v_p.reserved_micros > v_p.quota_micros then
        v_error := private.refusal_json('QUOTA',
          format('This API key''s quota of %s micro-USD is used up (%s spent, %s reserved).', v_p.quota_micros, v_used[k], v_kres[k]),
          null, 'Raise the key''s quota_micros, or use another key.', null, null, null);
      elsif v_p.counted and v_p.rpm_limit is not null and v_mreq[k] + 1 + v_preq[k] * v_window > v_p.rpm_limit then
        v_error := private.refusal_json('RLIMT',
          format('Rate limit reached for requests: this key allows %s requests per minute.', v_p.rpm_limit),
          null, null, null, 'rpm', v_retry);
      elsif v_p.counted and v_p.tpm_limit is not null and v_mtok[k] + v_p.reserved_tokens + v_ptok[k] * v_window > v_p.tpm_limit then
        v_error := private.refusal_json('TLIMT',
          format('Rate limit reached for tokens: this key allows %s tokens per minute, and this request may use %s.',
                 v_p.tpm_limit, v_p.reserved_tokens),
          null, null, null, 'tpm', v_retry);
      end if;
      if v_error is null then
        if u is not null then
          v_avail[u] := v_avail[u] - v_p.reserved_micros;
        end if;
        if k is not null then
          v_kres[k] := v_kres[k] + v_p.reserved_micros;
          v_inflight[k] := v_inflight[k] + 1;
          v_mreq[k] := v_mreq[k] + 1;
          v_mtok[k] := v_mtok[k] + v_p.reserved_tokens;
        end if;
      else
        v_errors[i] := v_error;
        p_plans[i] := null;
        if u is not null then
          v_user_undo[u] := v_user_undo[u] + v_p.reserved_micros;
        end if;
        if k is not null then
          v_key_undo_n[k] := v_key_undo_n[k] + 1;
          v_key_undo_amount[k] := v_key_undo_amount[k] + v_p.reserved_micros;
          v_key_undo_tokens[k] := v_key_undo_tokens[k] + v_p.reserved_tokens;
        end if;
      end if;
    end loop;
    -- What the refused requests added comes off again (their rows are still locked).
    update private.wallets w
       set reserved_micros = w.reserved_micros - x.amount
      from unnest(v_users, v_user_undo) x(user_id, amount)
     where w.user_id = x.user_id and x.amount <> 0;
    update private.key_counters c
       set reserved_micros = c.reserved_micros - x.amount,
           inflight = c.inflight - x.n,
           minute_requests = c.minute_requests - x.n,
           minute_tokens = c.minute_tokens - x.tokens
      from unnest(v_keys, v_key_undo_n, v_key_undo_amount, v_key_undo_tokens) x(key_id, n, amount, tokens)
     where c.key_id = x.key_id and x.n <> 0;
  end if;

  /* why a row of its own: the request log is partitioned and indexed for reading; the in-flight
     row is small, has one index, and is deleted when settlement writes the finished request. It
     keeps the price card (settlement bills with it). */
  insert into private.admissions (id, created_at, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                  prompt_tokens, route_plan, reserved_micros, reserved_tokens, counted,
                                  cache, cache_entry_id, cache_similarity,
                                  input_price, output_price, cached_input_price, cache_write_price, per_call_price,
                                  group_multiplier, hit_ratio, embedding_price, embedding_per_call)
  select p.request_id, now(), p.key_id, p.user_id, p.group_name, p.endpoint, p.model, p.stream, p.client_ip,
         p.prompt_tokens, p.route_plan, p.reserved_micros, p.reserved_tokens, p.counted,
         p.cache_state, p.cache_entry_id, p.cache_similarity,
         (p.card).input, (p.card).output, (p.card).cached_input, (p.card).cache_write, (p.card).per_call,
         (p.card).group_multiplier, (p.card).hit_ratio, (p.card).embedding_input, (p.card).embedding_per_call
    from unnest(p_plans) p
   where p.request_id is not null;

  return v_errors;
end
$$;
comment on function private.admit_write(private.admit_plan[]) is
  E'The writing half of admission, for one request or a batch: reserves on wallets, counts keys (quota, concurrency, RPM, TPM) once per owner and key, and records the admitted requests with their price card. Returns a refusal (private.refusal_json: QUOTA, RLIMT or TLIMT) per refused plan, null when none is refused; refuses exactly the requests that would be refused one at a time, in order.';


-- private.admission_options: every option admission may need, in one read.
create or replace function private.admission_options()
returns jsonb
language plpgsql stable
as $$
begin
  return private.options_pick('DurableAdmission', 'AllowUnpricedModels', 'DefaultMaxTokens', 'ReservationPolicy', 'AdmissionBatchMax',
                              'SemanticCacheEnabled', 'CacheMode', 'SemanticCacheScope', 'SemanticCacheHitPriceRatio',
                              'SemanticCacheEmbeddingModel', 'SemanticCacheEmbeddingChannel');
end
$$;
comment on function private.admission_options() is E'The options an admission reads (private.admit_prepare, gateway.relay_begin_batch), as one JSON object.';

-- private.admission_durability: admission commits asynchronously unless DurableAdmission.
create or replace function private.admission_durability(p_opt jsonb)
returns boolean
language plpgsql volatile
as $$
begin
  /* why: on most disks the WAL flush is the dearest part of admission, and it is paid per request
     on the hot path. Admission commits asynchronously (unless DurableAdmission): the row locks are
     released at commit, the flush follows within wal_writer_delay, and the request's own
     relay_finish (synchronous) flushes it anyway. A crash in between loses the admission, never the
     bill: the outcome carries the ticket and private.settle re-creates a missing admission.
     Callers assign its result rather than PERFORM it: a simple expression, no executor start-up. */
  if (p_opt ->> 'DurableAdmission')::boolean then
    return true;
  end if;
  return set_config('synchronous_commit', 'off', true) is null;
end
$$;
comment on function private.admission_durability(jsonb) is
  E'Makes the admission''s transaction commit asynchronously unless the DurableAdmission option is on; returns whether it stays durable.';

-- gateway.relay_begin: the one call a request makes before the upstream.
create or replace function gateway.relay_begin(
  p_request_id    uuid,
  p_key_hash      bytea,
  p_model         text,
  p_endpoint      text,
  p_stream        boolean,
  p_client_ip     inet,
  p_prompt_tokens integer,
  p_max_tokens    integer,
  p_cache         jsonb default null)   -- {"exact", "context", "semantic", "sampling" (private.cache_eligibility)}; null: no cache key
returns gateway.relay_ticket
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- Generic plans, as relay_begin_batch: private.route_plans' statement would otherwise be planned
-- again at every call.
set plan_cache_mode = force_generic_plan
as $$
declare
  v_opt jsonb := private.admission_options();
  v_durable boolean := private.admission_durability(v_opt);
  v_auth private.key_auth;
  v_route private.route_choice;
  v_plan private.admit_plan;
  v_errors jsonb[];
begin
  -- The key, with the route when it has nothing random in it (private.route_cache); else the
  -- route is planned for this request.
  select a.* into v_auth from private.key_auth_of(p_key_hash, p_model) a;
  v_route := v_auth.route;
  if v_route.served is null then
    v_route := (private.route_plans(array[p_model], array[v_auth.user_group]))[1];
  end if;
  -- The reading half raises its refusals itself; the writing half is relay_begin_batch's, for a
  -- batch of one, and its refusal is raised here.
  v_plan := private.admit_prepare(v_opt, v_auth, v_route, p_request_id, p_key_hash, p_model, p_endpoint, p_stream,
                                  p_client_ip, p_prompt_tokens, p_max_tokens, p_cache);
  v_errors := private.admit_write(array[v_plan]);
  if v_errors[1] is not null then
    perform private.refusal_raise(v_errors[1]);
  end if;
  return row(v_plan.request_id, now(), v_plan.user_id, v_plan.key_id, v_plan.group_name, v_plan.reserved_micros,
             v_plan.plan, v_plan.price, v_plan.cache, v_plan.max_tokens)::gateway.relay_ticket;
end
$$;
comment on function gateway.relay_begin(uuid, bytea, text, text, boolean, inet, integer, integer, jsonb) is
  E'One round trip before the upstream: authenticates the key (sha256), checks IP and model allowlists, plans the route, admits the request (wallet balance minus open reservations, key quota, RPM, TPM, concurrency), reserves its estimated cost, looks up the exact cache layer, and records the admission (private.admissions) until settlement. Returns a gateway.relay_ticket; refusals raise the SQLSTATEs in sql/ERRORS.md.';

-- private.refusal_json: a refusal as a value: a refused element's answer in
-- gateway.relay_begin_batch (from the reading half's raised error, or from private.admit_write),
-- shaped like the error of a single call plus what the gateway acts on: reason (concurrency, rpm,
-- tpm: which limit) and retry_after (seconds, for Retry-After). Empty fields are null.
-- (Its older form took no reason nor retry_after: the migration that added them dropped it.)
create or replace function private.refusal_json(p_code text, p_message text, p_detail text, p_hint text, p_column text,
                                                p_reason text, p_retry_after integer)
returns jsonb
language sql immutable
as $$
  select jsonb_build_object('code', p_code, 'message', p_message, 'detail', nullif(p_detail, ''),
                            'hint', nullif(p_hint, ''), 'column', nullif(p_column, ''),
                            'reason', p_reason, 'retry_after', p_retry_after)
$$;
comment on function private.refusal_json(text, text, text, text, text, text, integer) is
  E'{code, message, detail, hint, column, reason, retry_after} of a refusal, empty fields as null (gateway.relay_begin_batch, private.admit_write).';

-- private.refusal_raise: raises a refusal of private.admit_write as an error (gateway.relay_begin,
-- whose refusals are errors): its SQLSTATE, message and hint, and its reason and retry_after as a
-- JSON object in the detail, e.g. {"reason": "concurrency", "retry_after": 1}.
/* why JSON in the detail: an error has no field of its own for them, and the gateway's single
   call stays one round trip to relay_begin; the gateway reads the fields from it
   (gateway/src/admission.ts). */
create or replace function private.refusal_raise(p_error jsonb)
returns void
language plpgsql immutable
as $$
declare
  v_code text := p_error ->> 'code';
  v_message text := p_error ->> 'message';
  v_detail text := case when p_error ->> 'reason' is not null or p_error ->> 'retry_after' is not null then
                     jsonb_build_object('reason', p_error -> 'reason', 'retry_after', p_error -> 'retry_after')::text end;
begin
  -- (RAISE refuses a null option, and an empty one would reach the client as an empty field.)
  if v_detail is not null and p_error ->> 'hint' is not null then
    raise exception using errcode = v_code, message = v_message, detail = v_detail, hint = p_error ->> 'hint';
  elsif v_detail is not null then
    raise exception using errcode = v_code, message = v_message, detail = v_detail;
  elsif p_error ->> 'hint' is not null then
    raise exception using errcode = v_code, message = v_message, hint = p_error ->> 'hint';
  end if;
  raise exception using errcode = v_code, message = v_message;
end
$$;
comment on function private.refusal_raise(jsonb) is
  E'Raises a refusal made by private.admit_write as an error (gateway.relay_begin): SQLSTATE, message, hint, and {reason, retry_after} as JSON in the detail.';

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
                               (p_req ->> 'max_tokens')::integer, nullif(p_req -> 'cache', 'null'::jsonb));
end
$$;
comment on function private.admit_prepare_element(jsonb, private.key_auth, private.route_choice, jsonb) is
  E'private.admit_prepare for one element of gateway.relay_begin_batch''s JSON array.';

-- gateway.relay_begin_batch: several admissions in one round trip, for a gateway whose admission
-- calls are all in flight when more requests arrive (its natural batching; AdmissionConcurrency).
-- Each element is relay_begin's arguments as JSON: {"id", "key_hash" (hex), "model", "endpoint",
-- "stream", "client_ip", "prompt_tokens", "max_tokens", "cache"}. One row per element, in any
-- order, matched by idx (1-based); a refusal is that row's error (private.refusal_json: its
-- SQLSTATE, message, detail, hint, column, and reason and retry_after for a rate limit), never the
-- batch's.
create or replace function gateway.relay_begin_batch(p_requests jsonb)
returns table (idx integer, request_id uuid, created_at timestamptz, user_id bigint, key_id bigint, group_name text,
               reserved_micros bigint, plan jsonb, price jsonb, cache jsonb, max_tokens integer, error jsonb)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- Generic plans: a custom plan (PostgreSQL's pick for these array-parameter statements) is made
-- again at every call, which cost more than running the statement. (As private.settle.)
set plan_cache_mode = force_generic_plan
as $$
declare
  v_opt jsonb := private.admission_options();   -- once for the batch
  v_max integer := (v_opt ->> 'AdmissionBatchMax')::integer;
  v_reqs jsonb[];
  v_ords integer[];
  v_auths private.key_auth[];
  v_models text[];
  v_groups text[];
  v_routes private.route_choice[];
  v_plans private.admit_plan[];
  v_errors jsonb[];
  v_written jsonb[];
  v_n integer;
  v_durable boolean;
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
  v_durable := private.admission_durability(v_opt);
  /* why one statement: each statement costs an executor start-up; the key lookups of the whole
     batch are this one (and the route plans the next), not one per request.
     The arrays come from one aggregate pass, so they stay aligned (v_ords says which request
     each element is). Their order does not matter: the writes below lock every wallet, then
     every key, explicitly in id order, as settlement does, before any row is written. */
  select array_agg(x.r), array_agg(x.ord), array_agg(x.auth), array_agg(x.model), array_agg(x.user_group)
    into v_reqs, v_ords, v_auths, v_models, v_groups
    from (select e.r, e.ord::integer as ord, e.r ->> 'model' as model, a.user_group,
                 row(a.key, a.user_status, a.user_group, a.model, a.group_multiplier, a.route)::private.key_auth as auth
            from jsonb_array_elements(p_requests) with ordinality e(r, ord)
            -- (a key_hash that is not hex finds no key here and is refused in its own block below)
            left join lateral private.key_auth_of(
              case when e.r ->> 'key_hash' ~ '^([0-9a-fA-F]{2})*$' then decode(e.r ->> 'key_hash', 'hex') end,
              e.r ->> 'model') a on true) x;
  v_n := coalesce(cardinality(v_reqs), 0);
  v_routes := private.route_plans(v_models, v_groups);

  /* 1. The reading half, per element. A refusal here depends on nothing the batch writes, so it is
     that element's answer. why one block first: a block per element costs a subtransaction each,
     and most batches refuse nothing; when one does, the block is undone and every element goes
     again in a block of its own. */
  begin
    for i in 1 .. v_n loop
      v_plans[i] := private.admit_prepare_element(v_opt, v_auths[i], v_routes[i], v_reqs[i]);
    end loop;
  exception when others then
    for i in 1 .. v_n loop
      begin
        v_plans[i] := private.admit_prepare_element(v_opt, v_auths[i], v_routes[i], v_reqs[i]);
      exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text, v_detail = pg_exception_detail,
                                v_hint = pg_exception_hint, v_column = column_name;
        v_plans[i] := null;
        v_errors[i] := private.refusal_json(v_state, v_message, v_detail, v_hint, v_column, null, null);
      end;
    end loop;
  end;

  /* 2. The writing half: private.admit_write, as for relay_begin (once per owner and key; exactly
     the requests that would be refused one by one are). */
  v_written := private.admit_write(v_plans);
  if v_written is not null then
    for i in 1 .. v_n loop
      if v_written[i] is not null then
        v_plans[i] := null;
        v_errors[i] := v_written[i];
      end if;
    end loop;
  end if;

  -- The tickets: an admitted element's is its plan's (as admit_write returns it); a refused
  -- element's plan is null and its error is set.
  return query
    select v_ords[g.i], (p).request_id, case when (p).request_id is not null then now() end, (p).user_id, (p).key_id,
           (p).group_name, (p).reserved_micros, (p).plan, (p).price, (p).cache, (p).max_tokens, v_errors[g.i]
      from generate_subscripts(v_ords, 1) g(i)
      cross join lateral (select v_plans[g.i] as p) x;
end
$$;
comment on function gateway.relay_begin_batch(jsonb) is
  E'relay_begin for up to AdmissionBatchMax requests in one round trip and one transaction: one row per request (idx = its 1-based position), with the ticket or, for a refused request, error = {code, message, detail, hint, column, reason, retry_after}. The wallet and key counters of the batch are written once per owner and key (private.admit_write); when a sum does not fit, exactly the requests that would be refused one by one are.';

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
    with served as (
      select m.model, coalesce(md.owned_by, 'elygate') as owned_by,
             extract(epoch from coalesce(md.created_at, min(c.created_at)))::bigint as created
        from private.channels c
        cross join lateral unnest(c.models) as m(model)
        left join private.models md on md.name = m.model
       where v_auth.user_group = any(c.groups)
         and c.status = 'enabled'
         and ((v_auth.key).allowed_models is null or m.model = any((v_auth.key).allowed_models))
         and md.archived_at is null
       group by m.model, md.owned_by, md.created_at
    )
    select s.model, s.owned_by, s.created from served s
    union all
    -- A model with no channel of its own is served through its fallbacks (private.route_fallbacks):
    -- listed when one of them is served to this key, and the key may ask for it.
    select md.name, coalesce(md.owned_by, 'elygate'), extract(epoch from md.created_at)::bigint
      from private.models md
     where md.fallbacks && array(select s.model from served s)
       and md.archived_at is null
       and not exists (select 1 from served s where s.model = md.name)
       and ((v_auth.key).allowed_models is null or md.name = any((v_auth.key).allowed_models))
     order by 1;
end
$$;
comment on function gateway.models_list(bytea, inet) is
  E'The models this key may use right now: served by an enabled channel of the owner''s group (or through a fallback that is) and allowed for the key.';

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
