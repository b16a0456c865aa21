--! Previous: sha1:5976729467c8ce65ccba2e2655d101ade10f23bf
--! Hash: sha1:663a852c2df75a5676a104341ceecb54e8141071
--! Message: Route plans with nothing random in them are cached per model and group: private.route_cache

-- The route plans that depend on nothing random, kept per (model, group): gateway.relay_begin reads
-- one row instead of planning the route (private.route_cache_rebuild, sql/31_private_routing.sql).
-- The columns are private.route_choice's (sql/10_types.sql).
create table if not exists private.route_cache (
  model          text not null,
  grp            text not null,
  served         integer not null,   -- channels serving the model for the group, usable or not
  candidates     jsonb,              -- the usable ones in try order (null: none)
  skipped        jsonb,              -- the others, with the reason
  multipliers    jsonb,              -- the usable ones' cost multipliers by channel id
  max_multiplier numeric,
  primary key (model, grp)
);
comment on table private.route_cache is
  E'Route plans with no random choice in them (one usable channel per priority tier and weight class, one enabled key each), per model and group, as private.route_plans makes them; rebuilt by triggers on channels and channel keys. Pairs not here are planned per request.';
alter table private.route_cache enable row level security;
