-- The PostgreSQL floor, batched admission: admit.sql for k requests in ONE statement (one round
-- trip, one transaction), as the gateway sends relay_begin_batch when requests arrive while its
-- admission call is in flight (gateway/src/admission.ts). bench/floor/floor.mjs binds one typed
-- array per field of admit.sql, element i for request i:
--   $1 ids  $2 key hashes (as '\x…' text: the driver cannot bind a bytea array)  $3 models  $4 endpoints  $5 client ips  $6 prompt estimates
--   $7 reservations  $8 reserved tokens  $9 route plans (json text)  $10 groups
-- Connection: synchronous_commit = off, as admit.sql.
with r as (
  select *
    from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::inet[], $6::integer[], $7::bigint[],
                $8::integer[], $9::text[], $10::text[])
      as r(id, key_hash, model, endpoint, client_ip, prompt_tokens, reserved_micros, reserved_tokens, route_plan, group_name)
),
k as (
  -- Key lookup by hash (DESIGN §2.2), one index lookup per request.
  select r.*, k.id as key_id, k.user_id
    from r join private.api_keys k on k.key_hash = r.key_hash::bytea
   where k.status = 'active' and (k.expires_at is null or k.expires_at > now())
),
s as (
  select k.user_id, sum(k.reserved_micros)::bigint as amount from k group by k.user_id
),
w as (
  -- Wallet reservation (DESIGN §3): one atomic UPDATE per owner with the batch's sum; the sum
  -- must fit, so N concurrent requests can never together overspend. (All of an owner's requests
  -- of the batch are admitted or none: the floor has no one-by-one fallback, elygate has.)
  update private.wallets w
     set reserved_micros = w.reserved_micros + s.amount
    from s
   where w.user_id = s.user_id
     and w.balance_micros - w.reserved_micros - s.amount >= -w.credit_limit_micros
  returning w.user_id
)
-- The admission rows (DESIGN §2.2, §2.5), in private.admissions as admit.sql.
insert into private.admissions (id, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                prompt_tokens, route_plan, reserved_micros, reserved_tokens)
select k.id, k.key_id, k.user_id, k.group_name, k.endpoint, k.model, false, k.client_ip,
       k.prompt_tokens, k.route_plan::jsonb, k.reserved_micros, k.reserved_tokens
  from k join w on w.user_id = k.user_id
returning id
