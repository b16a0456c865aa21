--! Previous: sha1:eb5742334f1bc27e1b51c873c5b13fc9f194b22c
--! Hash: sha1:15eb170aca79229cc512b3327af4232a94df45da
--! Message: Rollup watermark: private.latency_hourly.covered_to

-- The rollup's watermark: the hour's requests created before covered_to are in the rollup (an hour
-- rolled up whole has hour + 1 hour). The job rolls up the current hour up to the oldest request
-- still in flight, so the dashboard reads the log only after that: minutes, not up to an hour.
alter table private.latency_hourly add column if not exists covered_to timestamptz;
update private.latency_hourly set covered_to = hour + interval '1 hour' where covered_to is null;
