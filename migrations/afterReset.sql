-- Cluster-wide roles. Run on `graphile-migrate reset` and by scripts/migrate.mjs before every
-- migrate; idempotent. Passwords are set by whoever provisions the cluster, never here.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'elygate_gateway') then
    create role elygate_gateway login;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'elygate_admin') then
    create role elygate_admin login;
  end if;
  -- The least-privileged role a regular user's panel pages run as (schema me only); the admin
  -- server's login role must be a member to switch to it.
  if not exists (select 1 from pg_roles where rolname = 'elygate_user') then
    create role elygate_user nologin;
  end if;
  if not pg_has_role('elygate_admin', 'elygate_user', 'member') then
    grant elygate_user to elygate_admin;
  end if;
  -- BI tools (Grafana, Metabase): reads schema analytics_v1 only (docs/analytics.md). A runaway
  -- dashboard query is cut after a minute rather than holding the database.
  if not exists (select 1 from pg_roles where rolname = 'elygate_analytics') then
    create role elygate_analytics login;
    alter role elygate_analytics set statement_timeout = '60s';
  end if;
end
$$;
