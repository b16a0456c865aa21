--! Previous: sha1:c6794e0970d12d0b7a3fe6444d01c55a8a5afbc7
--! Hash: sha1:af2cbf955ab15926ab0a18d746771d974171e47e
--! Message: ReservationPolicy: the ledger records a bill's overrun of its reservation; relay_begin_batch's result gains max_tokens

-- ReservationPolicy: a ledger row says by how much its bill exceeded the request's reservation
-- (an answer without max_tokens under ReservationPolicy allow, or a prompt larger than estimated).
alter table private.ledger add column if not exists overrun_micros bigint not null default 0;

-- gateway.relay_begin_batch returns the ticket's max_tokens as a column of its own: its result
-- shape changed, so the old form goes (sql/30_gateway_relay.sql creates the new one).
do $$
begin
  if exists (select 1 from pg_proc
              where oid = to_regprocedure('gateway.relay_begin_batch(jsonb)')
                and not ('max_tokens' = any(proargnames))) then
    drop function gateway.relay_begin_batch(jsonb);
  end if;
end
$$;
