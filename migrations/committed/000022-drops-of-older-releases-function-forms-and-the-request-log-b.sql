--! Previous: sha1:af2cbf955ab15926ab0a18d746771d974171e47e
--! Hash: sha1:c51b10d9be873a5b235a563ebdf27b15bd01729a
--! Message: Drops of older releases' function forms and the request-log breaker trigger, moved out of sql/

-- Issue 18, migration steps out of sql/: the drops that brought databases of earlier releases to
-- today's shapes were run by sql/ on every deploy; they are migration history, and live here now
-- (sql/ only creates). Each is a no-op on a database that no longer has the old form.
-- The old signatures: cache_plan read its options itself; key_check took no model; admit_prepare
-- read the key and the route itself; the one-step private.admit of an earlier release.
drop function if exists private.cache_plan(jsonb, private.api_keys, text, text);
drop function if exists private.key_check(bytea, inet);
drop function if exists private.admit_prepare(jsonb, uuid, bytea, text, text, boolean, inet, integer, integer, jsonb);
drop function if exists private.admit(jsonb, uuid, bytea, text, text, boolean, inet, integer, integer, jsonb);
-- route_plan gained multipliers and max_multiplier (a function's OUT columns cannot change in
-- place); route_plans returned a set of (idx, route) before it returned an array.
do $$
begin
  if to_regprocedure('private.route_plan(text, text)') is not null
     and not exists (select 1 from pg_proc where oid = to_regprocedure('private.route_plan(text, text)')
                        and 'max_multiplier' = any(proargnames)) then
    drop function private.route_plan(text, text);
  end if;
  if exists (select 1 from pg_proc where oid = to_regprocedure('private.route_plans(text[], text[])') and proretset) then
    drop function private.route_plans(text[], text[]);
  end if;
end
$$;
-- Attempts reached the breaker's window through a statement trigger on the request log; settlement
-- hands them over itself now.
drop trigger if exists _500_breaker on private.requests;
drop function if exists private.tg_requests__breaker();
