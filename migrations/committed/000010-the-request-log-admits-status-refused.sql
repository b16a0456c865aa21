--! Previous: sha1:264984a1b8e936fd009c400e8da30146ee413e8d
--! Hash: sha1:62097fd8e3cc4e16f7c3de730895d95dc96b32fa
--! Message: the request log admits status refused

-- A refused request of a known key is logged: status 'refused' in the request log (with the
-- refusal's HTTP status and code), so an operator looking for a client's 403s and 429s finds them.
-- Nothing is reserved or billed for it; requests refused for an unknown key are not logged.
alter table private.requests drop constraint if exists requests_status_check;
alter table private.requests add constraint requests_status_check
  check (status in ('pending', 'ok', 'error', 'aborted', 'expired', 'refused'));
