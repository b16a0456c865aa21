--! Previous: sha1:28b3b5e0911b2ffd849182c65aa37385101e062e
--! Hash: sha1:8ed18d709b9e347b2be4706dd555e4ed3be43590
--! Message: In-flight requests move to private.admissions; the request log is written once, at settlement

-- In-flight requests move out of the request log. Admission used to insert the request row
-- (partitioned, four indexes) and settlement to update it (a non-HOT update: a second copy of the
-- row and of every index entry). Now admission inserts a small row into private.admissions (not
-- partitioned, primary key only) and settlement writes the complete request row once, deleting
-- the admission in the same statement. private.requests only ever holds finished requests.
create table private.admissions (
  id               uuid primary key,
  created_at       timestamptz not null default now(),
  key_id           bigint not null,
  user_id          bigint not null,
  group_name       text,
  endpoint         text not null,
  model            text not null,
  stream           boolean not null default false,
  client_ip        inet,
  prompt_tokens    integer,
  route_plan       jsonb,
  reserved_micros  bigint not null default 0,
  reserved_tokens  integer not null default 0,
  counted          boolean not null default false,
  cache            text check (cache in ('miss', 'exact', 'semantic', 'bypass')),
  cache_similarity real,
  cache_entry_id   bigint
) with (
  -- A queue: every row is deleted within seconds, so vacuum it often and by count, not by share.
  autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
  autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 2000
);
alter table private.admissions enable row level security;
comment on table private.admissions is
  'Requests admitted and not yet settled: what relay_begin reserved and planned. Settlement (private.settle) or the reaper deletes the row and writes the finished request to private.requests.';
comment on column private.admissions.reserved_micros is 'Held on the wallet (and the key''s counters when counted) until settlement.';
comment on column private.admissions.reserved_tokens is 'Prompt estimate plus max_tokens, counted in the key''s TPM window at admission.';
comment on column private.admissions.counted is 'The key has a quota or limits: settlement updates its counters.';

-- Requests in flight during the upgrade keep their reservation.
insert into private.admissions (id, created_at, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                prompt_tokens, route_plan, reserved_micros, reserved_tokens, counted, cache,
                                cache_similarity, cache_entry_id)
select r.id, r.created_at, r.key_id, r.user_id, r.group_name, r.endpoint, r.model, r.stream, r.client_ip,
       r.prompt_tokens, r.route_plan, r.reserved_micros, r.reserved_tokens, r.counted, r.cache,
       r.cache_similarity, r.cache_entry_id
  from private.requests r
 where r.status = 'pending' and r.key_id is not null and r.user_id is not null;
delete from private.requests where status = 'pending' and key_id is not null and user_id is not null;
drop index private.requests_pending_idx;
alter table private.requests alter column status drop default;
