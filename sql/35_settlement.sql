-- Settlement: private.settle bills a batch of finished requests (gateway.relay_finish) with the
-- price card each was admitted with (sql/30_cost.sql), writes the request log and the ledger,
-- releases reservations and key slots, and feeds the circuit breaker the batch's attempts
-- (sql/41_breaker.sql), and settles budgets (sql/36_budgets.sql). What no gateway reported back is
-- settled by the reaper (sql/37_reaper.sql). Wallet and key-counter rows exist from the moment their
-- user or key does.

-- Every user has a wallet and every key its counters, from the moment they exist.
create or replace function private.tg_users__wallet()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into private.wallets (user_id) values (new.id) on conflict do nothing;
  return null;
end
$$;
create or replace trigger _500_wallet after insert on private.users
  for each row execute function private.tg_users__wallet();

create or replace function private.tg_api_keys__counters()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into private.key_counters (key_id) values (new.id) on conflict do nothing;
  return null;
end
$$;
create or replace trigger _500_counters after insert on private.api_keys
  for each row execute function private.tg_api_keys__counters();

-- private.settle: settles a batch of outcomes. Shared by gateway.relay_finish (the gateway's group
-- commit) and private.reservations_reap (requests whose gateway died).
--
-- /* why */ One call per batch, whatever its size: the finished request rows and ledger rows are
-- written by one statement, which also deletes the batch's admissions and sums the batch per user
-- and per key; then each touched wallet and key counter is updated ONCE with its sum. Write
-- contention therefore grows with the number of distinct users per batch, not with the request
-- rate. Rows are locked in id order (wallets, then keys) so two gateways settling overlapping
-- batches cannot deadlock; relay_begin locks one wallet, then one key, the same way. The sums
-- travel as typed arrays, so each follow-up statement is an index lookup per user or key (jsonb
-- rows would be re-parsed and estimated at 100 rows each time).
-- Idempotent: an outcome settles only by deleting its admission (private.admissions), and the
-- ledger is unique on request_id.
create or replace function private.settle(p_outcomes jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- Generic plans: with custom ones (PostgreSQL's pick for the array-parameter statements below) every
-- statement is planned again at every call, which cost more than running them.
set plan_cache_mode = force_generic_plan
as $$
declare
  -- The breaker's options come along: one read of the options per batch (private.breaker_record).
  v_opt jsonb := private.options_hot();
  v_hit_ratio numeric := (v_opt ->> 'SemanticCacheHitPriceRatio')::numeric;
  v_embed_model text := nullif(v_opt ->> 'SemanticCacheEmbeddingModel', '');
  v_n integer;
  v_users bigint[];
  v_user_amounts bigint[];
  v_user_reserved bigint[];
  v_keys bigint[];
  v_key_amounts bigint[];
  v_key_reserved bigint[];
  v_key_n integer[];
  v_key_minutes1 timestamptz[];
  v_key_deltas1 bigint[];
  v_key_minutes2 timestamptz[];
  v_key_deltas2 bigint[];
  v_store jsonb;
  v_attempts jsonb;
  v_refused integer;
  v_limits jsonb;   -- per request with budgets or model limits: reservation, bill, tokens (private.limits_settle)
begin
  with o as (
    -- One outcome per request id, should a batch carry a request twice.
    select distinct on (x.id) x.*
      from jsonb_to_recordset(p_outcomes) as x(
        id uuid, status text, http_status integer, channel_id bigint,
        upstream_model text, prompt_tokens integer, completion_tokens integer, cached_tokens integer,
        cache_write_tokens integer, usage_source text, abort_policy text, attempts jsonb, ttfb_ms integer,
        latency_ms integer, error_code text, error_message text, embedding_tokens integer, cache_store jsonb,
        text_altered boolean, fallback text, units integer)
  ),
  /* why the admission is deleted first: the delete is the idempotency check. A replayed outcome,
     or one a second gateway settles at the same moment, finds no row (the delete waits for the
     other transaction's row lock, then sees the row gone) and settles nothing. The ids go as an
     array: joined with "using o", the generic plan hashed o and read the whole table. */
  admitted as (
    delete from private.admissions a where a.id = any(array(select o.id from o))
    returning a.*
  ),
  /* why the card: the admission stored the prices and multipliers it reserved with, and the
     gateway's receipt header was computed from the same card (its ticket's copy). Pricing the
     outcome at the price table of now would make the ledger differ from the receipt whenever a
     price changed while the request was in flight, and could bill more than was reserved. Only a
     row without a card (group_multiplier null: restored by the second pass below, or admitted
     before cards were stored) is priced at the current prices; the lookups behind that are
     skipped for the others. Each price is a column of its own, so that private.card_cost_micros
     is inlined with plain expressions (a composite built per row would be taken apart per use). */
  pre as (
    select o.id, a.created_at, o.status, o.http_status, o.channel_id, o.upstream_model,
           o.prompt_tokens, a.prompt_tokens as admitted_prompt_tokens, o.completion_tokens, o.cached_tokens,
           o.cache_write_tokens, o.usage_source, o.abort_policy, o.attempts, o.ttfb_ms, o.latency_ms,
           o.error_code, o.error_message, o.embedding_tokens, o.cache_store, coalesce(o.text_altered, false) as text_altered,
           o.units,   -- a media endpoint's units (images, characters, audio seconds, search units), billed at unit_price
           case when a.group_multiplier is null then null when fp.model is not null then fp.unit_price else a.unit_price end as unit_price,
           a.user_id, a.key_id, a.model, a.group_name, a.endpoint, a.stream, a.client_ip, a.route_plan,
           a.reserved_micros, a.reserved_tokens, a.counted, a.cache, a.cache_similarity, a.cache_entry_id,
           a.budget_ids, a.limit_ids, coalesce(a.admitted_at, a.created_at) as admitted_at,
           -- A request a fallback model served (o.fallback: its name, as the plan named it) is priced
           -- with that model's prices, which the admission kept in its route plan (fp below).
           case when a.group_multiplier is null then m.input_price when fp.model is not null then fp.input else a.input_price end as input_price,
           case when a.group_multiplier is null then m.output_price when fp.model is not null then fp.output else a.output_price end as output_price,
           case when a.group_multiplier is null then m.cached_input_price when fp.model is not null then fp.cached_input else a.cached_input_price end as cached_input_price,
           case when a.group_multiplier is null then m.cache_write_price when fp.model is not null then fp.cache_write else a.cache_write_price end as cache_write_price,
           case when a.group_multiplier is null then m.per_call_price when fp.model is not null then fp.per_call else a.per_call_price end as per_call_price,
           coalesce(fp.model, a.model) as billed_model,   -- the fallback that served, else the model asked for
           case when a.group_multiplier is null then coalesce(g.price_multiplier, 1) else a.group_multiplier end as group_multiplier,
           case when a.group_multiplier is null then v_hit_ratio else a.hit_ratio end as hit_ratio,
           case when a.group_multiplier is null then em.input_price else a.embedding_price end as embedding_price,
           case when a.group_multiplier is null then em.per_call_price else a.embedding_per_call end as embedding_per_call,
           -- The serving channel's multiplier as the admission's route plan priced it (the ticket's
           -- card has the same values); the channel's current one only without a card.
           coalesce(case when a.group_multiplier is not null and o.channel_id is not null then
                      (jsonb_path_query_first(a.route_plan, '$.candidates[*] ? (@.channel_id == $c).multiplier',
                                              jsonb_build_object('c', o.channel_id)) #>> '{}')::numeric end,
                    c.cost_multiplier, 1) as channel_multiplier
      from o
      join admitted a on a.id = o.id
      -- (A null key, not an "and" beside it: it finds nothing in an index lookup or a hash, where a
      -- condition on the admission alone would be checked after the lookup. The embedding model
      -- is one name for the whole batch: an index lookup by it, filtered, as before.)
      /* why a function scan: its columns are plain values in the expressions above, which the cost
         formula (inlined) repeats; the jsonb lookups written there made each settlement call cost
         half as much again. Without a fallback its argument is null and it finds nothing. */
      left join lateral jsonb_to_record(a.route_plan -> 'fallbacks' -> o.fallback)
             as fp(model text, input bigint, output bigint, cached_input bigint, cache_write bigint, per_call bigint,
                   unit_price bigint) on true
      left join private.models m on m.name = case when a.group_multiplier is null then a.model end
      left join private.groups g on g.name = case when a.group_multiplier is null then a.group_name end
      left join private.channels c on c.id = o.channel_id
      left join private.models em on em.name = v_embed_model and a.group_multiplier is null
                                 and coalesce(o.embedding_tokens, 0) > 0
  ),
  priced as (
    select p2.*, p2.answer_amount + p2.embedding_amount as amount
      from (select pre.*,
                   -- (admin.price_preview reprices ledger rows the same way: sql/55_admin_price_preview.sql)
                   case
                     when not billable then 0
                     when usage_source = 'expired' then reserved_micros
                     -- A cache hit: the original answer's price times the card's hit ratio.
                     when cache in ('exact', 'semantic') then
                       private.card_cost_micros(card, 'hit', null, prompt_tokens, completion_tokens, cached_tokens,
                                                cache_write_tokens, units)
                     else private.card_cost_micros(card, 'answer', channel_multiplier, prompt_tokens, completion_tokens,
                                                   cached_tokens, cache_write_tokens, units)
                   end as answer_amount,
                   -- The embedding call of the semantic layer is billed whatever the answer's fate.
                   case when coalesce(embedding_tokens, 0) > 0 then
                     private.card_cost_micros(card, 'embedding', null, embedding_tokens, 0, 0, 0)
                   else 0 end as embedding_amount
              from (select pre.*,
                           row(pre.input_price, pre.output_price, pre.cached_input_price, pre.cache_write_price,
                               pre.per_call_price, pre.group_multiplier, pre.hit_ratio, pre.embedding_price,
                               pre.embedding_per_call, pre.unit_price)::private.price_card as card,
                           -- Billed only when usage is known and something was delivered: an upstream
                           -- error before any content costs nothing, and error bodies are never billed.
                           (pre.usage_source in ('upstream', 'estimated', 'expired') and pre.prompt_tokens is not null
                            and (pre.status in ('ok', 'expired') or coalesce(pre.completion_tokens, 0) > 0)) as billable
                      from pre) pre) p2
  ),
  -- The request log gets the finished row, once. (Nothing reads its output: a data-modifying
  -- statement in WITH runs to completion whether or not it is read.)
  logged as (
    insert into private.requests (id, created_at, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                  status, http_status, channel_id, upstream_model, route_plan, attempts,
                                  prompt_tokens, completion_tokens, total_tokens, usage_source, reserved_micros,
                                  cost_micros, error_code, error_message, ttfb_ms, latency_ms, finished_at,
                                  reserved_tokens, counted, cached_tokens, cache_write_tokens, cache,
                                  cache_similarity, cache_entry_id, embedding_tokens, text_altered, units)
    select p.id, p.created_at, p.key_id, p.user_id, p.group_name, p.endpoint, p.model, p.stream, p.client_ip,
           p.status, p.http_status, p.channel_id, p.upstream_model, p.route_plan, p.attempts,
           coalesce(p.prompt_tokens, p.admitted_prompt_tokens), p.completion_tokens,
           coalesce(p.prompt_tokens, p.admitted_prompt_tokens, 0) + coalesce(p.completion_tokens, 0),
           case when p.billable then p.usage_source else 'none' end, p.reserved_micros,
           p.amount, p.error_code, left(p.error_message, 2000), p.ttfb_ms, p.latency_ms, now(),
           p.reserved_tokens, p.counted, p.cached_tokens, p.cache_write_tokens, p.cache,
           p.cache_similarity, p.cache_entry_id, p.embedding_tokens, p.text_altered,
           case when p.billable then p.units end
      from priced p
  ),
  booked as (
    insert into private.ledger (request_id, created_at, user_id, key_id, channel_id, model, group_name,
                                prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
                                input_price, output_price, cached_input_price, cache_write_price, per_call_price,
                                group_multiplier, channel_multiplier, amount_micros, usage_source, abort_policy, folded,
                                cache, embedding_tokens, embedding_micros, overrun_micros, units, unit_price)
    select s.id, now(), s.user_id, s.key_id, s.channel_id, s.billed_model, s.group_name,
           case when s.billable then coalesce(s.prompt_tokens, 0) else 0 end,
           case when s.billable then coalesce(s.completion_tokens, 0) else 0 end,
           coalesce(s.cached_tokens, 0), coalesce(s.cache_write_tokens, 0), s.input_price, s.output_price,
           s.cached_input_price, s.cache_write_price, s.per_call_price, s.group_multiplier, s.channel_multiplier,
           s.amount, case when s.billable then s.usage_source else 'none' end, s.abort_policy, true,
           s.cache, coalesce(s.embedding_tokens, 0), s.embedding_amount,
           -- what the bill exceeds its reservation by (ReservationPolicy allow; see admit_prepare)
           greatest(s.amount - coalesce(s.reserved_micros, 0), 0),
           case when s.billable then coalesce(s.units, 0) else 0 end, s.unit_price
      from priced s
     where s.billable or coalesce(s.embedding_tokens, 0) > 0
    on conflict (request_id) do nothing
    returning 1
  ),
  per_user as (
    select s.user_id, sum(s.amount)::bigint as amount, sum(s.reserved_micros)::bigint as reserved
      from priced s group by s.user_id
  ),
  -- Reserved token estimates are replaced with actual usage in the TPM window, in the minute each
  -- request was admitted in. A key's counters hold its latest admission minute and the one before
  -- (rate_minute never goes back, so it is at least every settled request's minute: see
  -- private.admit_write), so only the batch's two latest minutes of each key can still be in the
  -- window: they go along with the key's sums.
  per_minute as (
    select s.key_id, date_trunc('minute', s.created_at) as minute,
           sum(coalesce(s.prompt_tokens, 0) + coalesce(s.completion_tokens, 0) - s.reserved_tokens)::bigint as delta,
           row_number() over (partition by s.key_id order by date_trunc('minute', s.created_at) desc) as latest
      from priced s where s.counted group by 1, 2
  ),
  per_key as (
    select s.key_id, s.amount, s.reserved, s.n,
           min(t.minute) filter (where t.latest = 1) as minute1, min(t.delta) filter (where t.latest = 1) as delta1,
           min(t.minute) filter (where t.latest = 2) as minute2, min(t.delta) filter (where t.latest = 2) as delta2
      from (select s.key_id, sum(s.amount)::bigint as amount, sum(s.reserved_micros)::bigint as reserved,
                   count(*)::integer as n
              from priced s where s.counted group by s.key_id) s
      join per_minute t on t.key_id = s.key_id and t.latest <= 2
     group by s.key_id, s.amount, s.reserved, s.n
  )
  select (select count(*) from priced)::integer,
         u.ids, u.amounts, u.reserved, k.ids, k.amounts, k.reserved, k.n, k.minutes1, k.deltas1, k.minutes2, k.deltas2,
         (select jsonb_agg(s.cache_store || jsonb_build_object(
                   'user_id', s.user_id, 'group_name', s.group_name, 'model', s.model, 'request_id', s.id,
                   'usage', jsonb_build_object('prompt_tokens', s.prompt_tokens, 'completion_tokens', s.completion_tokens,
                                               'cached_tokens', s.cached_tokens, 'cache_write_tokens', s.cache_write_tokens)))
            from priced s where s.cache_store is not null and s.status = 'ok' and s.cache = 'miss'),
         -- The circuit breaker's input: every upstream attempt of the settled requests. A stream that
         -- broke after its first byte was a success at connect time, so its attempt carries no error;
         -- the outcome's error_code says it failed, and its last attempt counts as a failure.
         (select jsonb_agg(case when s.error_code = 'upstream_stream_error' and e.ord = jsonb_array_length(s.attempts)
                                then e.a || '{"failed": true}'::jsonb else e.a end
                           order by s.created_at, e.ord)
            from priced s
            cross join lateral jsonb_array_elements(s.attempts) with ordinality e(a, ord)
           where jsonb_typeof(s.attempts) = 'array'),
         (select jsonb_agg(jsonb_build_object('budgets', s.budget_ids, 'limits', s.limit_ids, 'reserved', s.reserved_micros, 'amount', s.amount,
                   'at', s.admitted_at, 'tokens', coalesce(s.prompt_tokens, 0) + coalesce(s.completion_tokens, 0) - s.reserved_tokens))
            from priced s where s.budget_ids is not null or s.limit_ids is not null)
    into v_n, v_users, v_user_amounts, v_user_reserved, v_keys, v_key_amounts, v_key_reserved, v_key_n,
         v_key_minutes1, v_key_deltas1, v_key_minutes2, v_key_deltas2, v_store, v_attempts, v_limits
    from (select array_agg(user_id order by user_id) as ids, array_agg(amount order by user_id) as amounts,
                 array_agg(reserved order by user_id) as reserved from per_user) u,
         (select array_agg(key_id order by key_id) as ids, array_agg(amount order by key_id) as amounts,
                 array_agg(reserved order by key_id) as reserved, array_agg(n order by key_id) as n,
                 array_agg(minute1 order by key_id) as minutes1, array_agg(delta1 order by key_id) as deltas1,
                 array_agg(minute2 order by key_id) as minutes2, array_agg(delta2 order by key_id) as deltas2
            from per_key) k;

  /* why here and not in a trigger on requests: a statement trigger with transition tables kept a
     copy of every settled row, old and new, to find the attempts again (about a fifth of
     settlement's cost per outcome); settlement is the only path that completes a request. */
  if v_attempts is not null then
    perform private.breaker_record(v_attempts, now(), v_opt);
  end if;

  -- Answers worth keeping go to the cache (the gateway only offers complete, single-choice ones).
  if v_store is not null then
    perform private.cache_store(v_store);
  end if;

  if v_n > 0 then
    -- Fold the batch into the wallets: one update per user, locked in user order (one user needs
    -- no separate lock statement: its update locks one row).
    if cardinality(v_users) > 1 then
      perform 1 from private.wallets w where w.user_id = any(v_users) order by w.user_id for update;
    end if;
    update private.wallets w
       set balance_micros = w.balance_micros - a.amount,
           reserved_micros = w.reserved_micros - a.reserved,
           updated_at = now()
      from unnest(v_users, v_user_amounts, v_user_reserved) as a(user_id, amount, reserved)
     where w.user_id = a.user_id
       and w.user_id = any(v_users);   -- the generic plan then reads wallets by key, not whole

    -- Keys with a quota or limits: one update per key, locked in key order. A request's token
    -- delta lands in the counters' minute it was admitted in, if that is still in the window.
    if v_keys is not null then
      if cardinality(v_keys) > 1 then
        perform 1 from private.key_counters k where k.key_id = any(v_keys) order by k.key_id for update;
      end if;
      update private.key_counters k
         set used_micros = k.used_micros + a.amount,
             reserved_micros = k.reserved_micros - a.reserved,
             inflight = k.inflight - a.n,
             /* why plain expressions: a subquery over every delta of the batch per key compares every
                pair of the batch (quadratic in its keys). */
             minute_tokens = greatest(k.minute_tokens + case when a.minute1 = k.rate_minute then a.delta1
                                                             when a.minute2 = k.rate_minute then a.delta2
                                                             else 0 end, 0),
             prev_tokens = greatest(k.prev_tokens + case when a.minute1 = k.rate_minute - interval '1 minute' then a.delta1
                                                         when a.minute2 = k.rate_minute - interval '1 minute' then a.delta2
                                                         else 0 end, 0),
             updated_at = now()
        from unnest(v_keys, v_key_amounts, v_key_reserved, v_key_n, v_key_minutes1, v_key_deltas1,
                    v_key_minutes2, v_key_deltas2) as a(key_id, amount, reserved, n, minute1, delta1, minute2, delta2)
       where k.key_id = a.key_id
         and k.key_id = any(v_keys);   -- likewise: by key, whatever the table's size
    end if;
    if v_limits is not null then   -- (sql/36_budgets.sql: after the wallets and keys, as admission locks them)
      perform private.limits_settle(v_limits);
    end if;
  end if;

  /* Refusals of a known key (status 'refused': the gateway sends the refused request with its
     key's hash, off the request path like any outcome) get a request row of their own: nothing
     was reserved, nothing is billed. A refusal of an unknown key finds no key and is not logged
     (the gateway does not send those). Looked for only when the batch has one. */
  if jsonb_path_exists(p_outcomes, '$[*] ? (@.status == "refused")') then
    insert into private.requests (id, created_at, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                  status, http_status, error_code, error_message, latency_ms, finished_at,
                                  usage_source, attempts, text_altered)
    select x.id, x.created_at, k.id, k.user_id, u.group_name, coalesce(x.ticket ->> 'endpoint', 'chat/completions'),
           coalesce(x.ticket ->> 'model', ''), coalesce((x.ticket ->> 'stream')::boolean, false),
           (x.ticket ->> 'client_ip')::inet, 'refused', x.http_status, x.error_code, left(x.error_message, 2000),
           x.latency_ms, now(), 'none', '[]'::jsonb, coalesce(x.text_altered, false)
      from jsonb_to_recordset(p_outcomes) as x(id uuid, created_at timestamptz, status text, http_status integer,
                                               error_code text, error_message text, latency_ms integer, ticket jsonb,
                                               text_altered boolean)
      join private.api_keys k
        on k.key_hash = case when x.ticket ->> 'key_hash' ~ '^[0-9a-f]{64}$' then decode(x.ticket ->> 'key_hash', 'hex') end
      join private.users u on u.id = k.user_id
     where x.status = 'refused'
       and not exists (select 1 from private.requests r where r.created_at = x.created_at and r.id = x.id);
    get diagnostics v_refused = row_count;
    v_n := v_n + v_refused;
  end if;

  -- Outcomes whose admission is missing and that were never settled (an asynchronously committed
  -- admission lost in a database crash) get it back from the ticket they carry, with nothing
  -- reserved, and are settled by a second pass. Only looked for when the batch settled fewer rows
  -- than it carried (a replay of settled outcomes also lands here, and finds their request rows).
  if v_n < jsonb_array_length(p_outcomes) then
    /* why the card from the ticket: the receipt the client got was priced with it, so the bill
       of a restored admission is too (the channels' multipliers as route_plan candidates, where
       settlement reads them). A ticket without a card (a free model) is priced at current prices. */
    insert into private.admissions (id, created_at, key_id, user_id, group_name, endpoint, model, cache, route_plan,
                                    input_price, output_price, cached_input_price, cache_write_price, per_call_price,
                                    group_multiplier, hit_ratio, embedding_price, embedding_per_call, unit_price)
    select x.id, x.created_at, (x.ticket ->> 'key_id')::bigint, (x.ticket ->> 'user_id')::bigint,
           x.ticket ->> 'group_name', coalesce(x.ticket ->> 'endpoint', 'chat/completions'), x.ticket ->> 'model',
           x.ticket ->> 'cache',
           case when p.card is not null then jsonb_strip_nulls(jsonb_build_object('candidates',
             (select coalesce(jsonb_agg(jsonb_build_object('channel_id', m.key::bigint, 'multiplier', (m.value #>> '{}')::numeric)), '[]')
                from jsonb_each(p.card -> 'channel_multipliers') m),
             'fallbacks', case when jsonb_typeof(p.card -> 'fallbacks') = 'object' then p.card -> 'fallbacks' end)) end,
           (p.card ->> 'input')::bigint, (p.card ->> 'output')::bigint, (p.card ->> 'cached_input')::bigint,
           (p.card ->> 'cache_write')::bigint, (p.card ->> 'per_call')::bigint, (p.card ->> 'group_multiplier')::numeric,
           (p.card ->> 'cache_hit_ratio')::numeric, (p.card -> 'embedding' ->> 'input')::bigint,
           (p.card -> 'embedding' ->> 'per_call')::bigint, (p.card ->> 'unit_price')::bigint
      from jsonb_to_recordset(p_outcomes) as x(id uuid, created_at timestamptz, ticket jsonb)
      cross join lateral (select case when jsonb_typeof(x.ticket -> 'price') = 'object' then x.ticket -> 'price' end as card) p
     where x.ticket ->> 'user_id' is not null and x.ticket ->> 'key_id' is not null and x.ticket ->> 'model' is not null
       and not exists (select 1 from private.requests r where r.created_at = x.created_at and r.id = x.id)
       and not exists (select 1 from private.ledger l where l.request_id = x.id)
    on conflict do nothing;
    if found then
      v_n := v_n + private.settle(p_outcomes);
    end if;
  end if;

  return v_n;
end
$$;

comment on function private.settle(jsonb) is
  E'Settles a batch of outcomes: deletes their admissions, writes the finished request rows and the ledger rows, folds amounts into wallets and key counters once per user/key. Idempotent by request id.';
