--! Previous: sha1:3f0619f39500593460a5b7ae7899b559a327927a
--! Hash: sha1:802f15fb5963bbe90d194082835d80b9da1b6b29
--! Message: Models and groups can be archived

-- Issue 17, lifecycle: models and groups can be archived (for good: never admitted, routed or
-- listed again; their history stays), as channels, keys and users already can.
alter table private.models add column if not exists archived_at timestamptz;
alter table private.groups add column if not exists archived_at timestamptz;
