-- The PostgreSQL floor, admission: the least a request's admission must do in the database,
-- as ONE statement (one round trip, one implicit transaction), for a request admitted alone (the
-- gateway's relay_begin; admit_batch.sql is the same for several, its relay_begin_batch).
-- bench/floor/floor.mjs prepares it on each admission connection and binds:
--   $1 request id (uuid, made by the client as the gateway does)   $2 sha256 of the client key (bytea)
--   $3 model   $4 endpoint   $5 client ip   $6 prompt-token estimate
--   $7 reservation (micro-USD: prompt estimate + max_tokens at the model's price, as relay_begin
--      computes it; the client knows it from the price, the floor does not price in SQL)
--   $8 reserved tokens   $9 route plan (jsonb, the one elygate stored for the same key)   $10 group
-- The connection runs with synchronous_commit = off, as relay_begin's transaction does
-- (private.admission_durability): a crash may lose an admission, never a bill.
-- Not here, on purpose (the issue's minimal set): the owner's status and group, the price lookup,
-- the route plan, the key's quota/RPM/TPM/concurrency counters, the cache lookup.
with k as (
  -- Key lookup by hash (DESIGN §2.2): the unique index on api_keys.key_hash; revoked or expired
  -- keys find nothing.
  select k.id as key_id, k.user_id
    from private.api_keys k
   where k.key_hash = $2 and k.status = 'active' and (k.expires_at is null or k.expires_at > now())
),
w as (
  -- Wallet reservation (DESIGN §3): the one atomic UPDATE of a shared row the hot path allows;
  -- balance minus open reservations must cover it, so concurrent requests can never overspend.
  update private.wallets w
     set reserved_micros = w.reserved_micros + $7
    from k
   where w.user_id = k.user_id
     and w.balance_micros - w.reserved_micros - $7 >= -w.credit_limit_micros
  returning w.user_id
)
-- The admission row (DESIGN §2.2, §2.5): what settlement, and the reaper after a lost gateway,
-- need to find the reservation again. The same table and row elygate writes (private.admissions).
insert into private.admissions (id, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                prompt_tokens, route_plan, reserved_micros, reserved_tokens)
select $1, k.key_id, k.user_id, $10, $4, $3, false, $5, $6, $9, $7, $8
  from k join w on w.user_id = k.user_id
returning id
