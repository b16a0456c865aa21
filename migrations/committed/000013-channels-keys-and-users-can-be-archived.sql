--! Previous: sha1:43ef73b73d1fd3c265e346938ac3779d8352832e
--! Hash: sha1:ec777ce49198f77ce52d26b2f1474bf3a8125211
--! Message: channels, keys and users can be archived

-- Archive (issue 21): channels, keys and users can be archived instead of deleted or only disabled.
-- An archived row keeps its history (requests, ledger, credits still point at it) but never routes
-- (private.route_plans leaves archived channels out, even for the panel's channel test) and never
-- admits (private.key_verify refuses an archived key or a key of an archived user).
-- A status value rather than a column: every reader already filters on status, so an archived row
-- cannot be taken for an enabled or active one by code that predates it.
alter table private.users drop constraint if exists users_status_check;
alter table private.users add constraint users_status_check check (status in ('active', 'disabled', 'archived'));
alter table private.api_keys drop constraint if exists api_keys_status_check;
alter table private.api_keys add constraint api_keys_status_check check (status in ('active', 'revoked', 'archived'));
alter table private.channels drop constraint if exists channels_status_check;
alter table private.channels add constraint channels_status_check
  check (status in ('enabled', 'manually_disabled', 'auto_disabled', 'archived'));
