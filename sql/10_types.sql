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
      price           jsonb,        -- price card for the usage receipt (null: free model)
      cache           jsonb         -- cache result: exact hit (with the answer), or miss (+ semantic plan)
    );
  end if;
end
$$;
