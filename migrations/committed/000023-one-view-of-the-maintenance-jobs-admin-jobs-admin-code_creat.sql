--! Previous: sha1:c51b10d9be873a5b235a563ebdf27b15bd01729a
--! Hash: sha1:daf2428970bf306dbc2364c577f10ad0c53dff1a
--! Message: One view of the maintenance jobs (admin.jobs); admin.code_create; me.usage_daily

-- Issue 18, one name per concept: admin.jobs is the one view of the maintenance jobs (the registry
-- with its runner, last run, 24-hour counts and overdue flag; admin.maintenance_jobs and the pg_cron
-- listing that was admin.jobs are merged into it); admin.code_create joins admin.code_redeem's verb
-- order; me.usage_daily is named as admin.usage_daily. The old objects go (sql/ creates the new).
drop view if exists admin.maintenance_jobs;
drop view if exists admin.jobs;
drop function if exists admin.codes_create(jsonb);
drop view if exists me.daily_usage;
