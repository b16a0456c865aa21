-- Who may do what. private is granted to nobody; gateway, admin, me and analytics_v1 expose
-- functions and views, each to its one role. Re-run on every deploy, after every function and view
-- exists. (The roles themselves are cluster-wide: migrations/afterReset.sql creates them.)

revoke all on schema private from public;
revoke all on all tables in schema private from public;
revoke execute on all functions in schema private, gateway, admin from public;
alter default privileges in schema private, gateway, admin revoke execute on functions from public;

-- The gateway: schema gateway (sql/34_gateway_relay.sql and the workers' calls).
grant usage on schema gateway to elygate_gateway;
grant execute on all functions in schema gateway to elygate_gateway;

-- The admin server and psql operators: schema admin.
grant usage on schema admin to elygate_admin;
grant select on all tables in schema admin to elygate_admin;
grant execute on all functions in schema admin to elygate_admin;

-- A panel user's own pages: schema me (sql/70_me.sql), run as elygate_user (and by the admin
-- server before it switches role).
revoke all on schema me from public;
revoke execute on all functions in schema me from public;
alter default privileges in schema me revoke execute on functions from public;
grant usage on schema me to elygate_user, elygate_admin;
grant select on all tables in schema me to elygate_user, elygate_admin;
grant execute on all functions in schema me to elygate_user, elygate_admin;

-- BI tools: schema analytics_v1 (sql/75_analytics_v1.sql), read-only, and nothing else.
revoke all on schema analytics_v1 from public;
revoke all on all tables in schema analytics_v1 from public;
grant usage on schema analytics_v1 to elygate_analytics;
grant select on all tables in schema analytics_v1 to elygate_analytics;
