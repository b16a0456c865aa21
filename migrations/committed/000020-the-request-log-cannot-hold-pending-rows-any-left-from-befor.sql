--! Previous: sha1:bb6c523da7a71a1668cb215821378cd9ce818fa9
--! Hash: sha1:c6794e0970d12d0b7a3fe6444d01c55a8a5afbc7
--! Message: The request log cannot hold pending rows (any left from before migration 000008 closed as unbilled errors); the features views dropped

-- Issue 18, dead code: the request log has no 'pending' rows since migration 000008 moved requests
-- in flight to private.admissions. Any left (in flight during that upgrade without a key or user,
-- which no admission can hold) are closed as unbilled errors, and the status cannot be 'pending'
-- any more (readers stop filtering it out).
update private.requests
   set status = 'error', error_code = coalesce(error_code, 'never_settled'),
       error_message = coalesce(error_message, 'In flight during the upgrade that moved requests in flight to private.admissions, with no key or user to hold a reservation; closed unbilled.'),
       finished_at = coalesce(finished_at, created_at)
 where status = 'pending';
alter table private.requests drop constraint if exists requests_status_check;
alter table private.requests add constraint requests_status_check
  check (status in ('ok', 'error', 'aborted', 'expired', 'refused'));

-- The "what exists yet" views: every feature they asked about exists in every database.
drop view if exists me.features;
drop view if exists admin.features;
