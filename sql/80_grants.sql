-- Who may do what. private is granted to nobody; gateway and admin expose functions and views.
-- Re-run on every deploy, after every function and view exists.

revoke all on schema private from public;
revoke all on all tables in schema private from public;
revoke execute on all functions in schema private, gateway, admin from public;
alter default privileges in schema private, gateway, admin revoke execute on functions from public;

grant usage on schema gateway to elygate_gateway;
grant execute on all functions in schema gateway to elygate_gateway;

grant usage on schema admin to elygate_admin;
grant select on all tables in schema admin to elygate_admin;
grant execute on all functions in schema admin to elygate_admin;

-- BI tools: schema analytics_v1 (sql/70_analytics_v1.sql), read-only, and nothing else.
revoke all on schema analytics_v1 from public;
revoke all on all tables in schema analytics_v1 from public;
grant usage on schema analytics_v1 to elygate_analytics;
grant select on all tables in schema analytics_v1 to elygate_analytics;
