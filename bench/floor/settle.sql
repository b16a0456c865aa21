-- The PostgreSQL floor, settlement: the least settling a batch of N outcomes must do in the
-- database, as ONE statement (one round trip, one transaction) per batch, like the gateway's group
-- commit (relay_finish), on one connection, one batch in flight at a time. Synchronous commit: a
-- delivered response must never be unbilled (DESIGN §2.4).
-- bench/floor/floor.mjs binds one typed array per field, element i for outcome i:
--   $1 request ids   $2 prompt tokens   $3 completion tokens   $4 input price   $5 output price
--   (micro-USD per 1M tokens; the ticket carries them to the gateway)   $6 channel id
--   $7 upstream model   $8 ttfb ms   $9 latency ms   $10 attempts (json text)
-- Typed arrays, not a jsonb document: parsing JSON is work the design does not need.
-- Not here, on purpose (the issue's minimal set): key counters, the breaker's attempt window, cache
-- writes, abort/estimate policies, the replay of lost admissions.
with o as (
  select *
    from unnest($1::uuid[], $2::integer[], $3::integer[], $4::bigint[], $5::bigint[], $6::bigint[],
                $7::text[], $8::integer[], $9::integer[], $10::text[])
      as o(id, prompt_tokens, completion_tokens, input_price, output_price, channel_id,
           upstream_model, ttfb_ms, latency_ms, attempts)
),
a as (
  -- The admission leaves as the request is settled: it is the idempotency check (a replayed
  -- outcome finds no row, DESIGN §2.4) and keeps the reaper from settling it again (§2.5).
  delete from private.admissions a where a.id = any($1::uuid[])
  returning a.id, a.created_at, a.key_id, a.user_id, a.group_name, a.endpoint, a.model, a.stream,
            a.client_ip, a.route_plan, a.reserved_micros, a.reserved_tokens
),
p as (
  -- The amount: integer micro-USD, rounded once (DESIGN §3).
  select a.*, o.prompt_tokens, o.completion_tokens, o.input_price, o.output_price, o.channel_id,
         o.upstream_model, o.ttfb_ms, o.latency_ms, o.attempts,
         round((o.prompt_tokens::numeric * o.input_price + o.completion_tokens::numeric * o.output_price) / 1000000)::bigint
           as amount
    from o join a on a.id = o.id
),
r as (
  -- The request-log row (DESIGN §2.4), written once, complete: the partitioned private.requests
  -- with its indexes, the same table elygate writes.
  insert into private.requests (id, created_at, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                status, http_status, channel_id, upstream_model, route_plan, attempts,
                                prompt_tokens, completion_tokens, total_tokens, usage_source, reserved_micros,
                                cost_micros, ttfb_ms, latency_ms, finished_at, reserved_tokens, counted)
  select p.id, p.created_at, p.key_id, p.user_id, p.group_name, p.endpoint, p.model, p.stream, p.client_ip,
         'ok', 200, p.channel_id, p.upstream_model, p.route_plan, p.attempts::jsonb,
         p.prompt_tokens, p.completion_tokens, p.prompt_tokens + p.completion_tokens, 'upstream', p.reserved_micros,
         p.amount, p.ttfb_ms, p.latency_ms, now(), p.reserved_tokens, false
    from p
),
l as (
  -- The ledger row (DESIGN §3): append-only, one per settled request, idempotent on request id,
  -- with usage, unit prices and the amount.
  insert into private.ledger (request_id, created_at, user_id, key_id, channel_id, model, group_name,
                              prompt_tokens, completion_tokens, input_price, output_price, amount_micros,
                              usage_source, folded)
  select p.id, now(), p.user_id, p.key_id, p.channel_id, p.model, p.group_name,
         p.prompt_tokens, p.completion_tokens, p.input_price, p.output_price, p.amount, 'upstream', true
    from p
  on conflict (request_id) do nothing
),
u as (
  select p.user_id, sum(p.amount)::bigint as amount, sum(p.reserved_micros)::bigint as reserved
    from p group by p.user_id
)
-- The wallet settle (DESIGN §3): the batch folded into each owner's wallet once, with its sum:
-- the spend leaves the balance, the reservation is released.
update private.wallets w
   set balance_micros = w.balance_micros - u.amount,
       reserved_micros = w.reserved_micros - u.reserved,
       updated_at = now()
  from u
 where w.user_id = u.user_id
