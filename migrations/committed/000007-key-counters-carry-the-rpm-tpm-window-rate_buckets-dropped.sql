--! Previous: sha1:3cbeccd76d8d28d02ba7cfddd321eafffd56921a
--! Hash: sha1:28b3b5e0911b2ffd849182c65aa37385101e062e
--! Message: Key counters carry the RPM/TPM window; rate_buckets dropped

-- RPM/TPM windows move into key_counters: a limited key's admission writes one row (its counters),
-- not the counters plus an upserted per-minute bucket. The window is this minute's counts and
-- the previous minute's, rolled over by the admission UPDATE itself.
alter table private.key_counters
  add column rate_minute     timestamptz,
  add column minute_requests integer not null default 0,
  add column minute_tokens   bigint  not null default 0,
  add column prev_requests   integer not null default 0,
  add column prev_tokens     bigint  not null default 0;
comment on column private.key_counters.rate_minute is 'Start of the minute minute_requests/minute_tokens count (null: never limited by rate).';
comment on column private.key_counters.minute_requests is 'Requests admitted in rate_minute.';
comment on column private.key_counters.minute_tokens is 'Tokens in rate_minute: reserved at admission, replaced by actual usage at settlement.';
comment on column private.key_counters.prev_requests is 'Requests admitted in the minute before rate_minute.';
comment on column private.key_counters.prev_tokens is 'Tokens in the minute before rate_minute.';

-- Carry the current windows over, then drop the per-minute table (it was never purged).
update private.key_counters k
   set rate_minute = b.minute, minute_requests = b.requests, minute_tokens = b.tokens,
       prev_requests = coalesce(p.requests, 0), prev_tokens = coalesce(p.tokens, 0)
  from (select distinct on (key_id) key_id, minute, requests, tokens
          from private.rate_buckets order by key_id, minute desc) b
  left join private.rate_buckets p on p.key_id = b.key_id and p.minute = b.minute - interval '1 minute'
 where k.key_id = b.key_id;
drop table private.rate_buckets;
