-- Enter migration here

-- Login throttling counts all failures of the window (LoginMaxFailuresGlobal): an index on the
-- failed rows' time, so the count reads only the window.
create index if not exists login_attempts_failed_at_idx on private.login_attempts (at) where not ok;
