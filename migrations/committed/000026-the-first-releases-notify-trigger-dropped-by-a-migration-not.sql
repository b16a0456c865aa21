--! Previous: sha1:802f15fb5963bbe90d194082835d80b9da1b6b29
--! Hash: sha1:7c513600c7d3a2473a858e7e4dc746a7935ade6d
--! Message: The first releases' notify trigger dropped by a migration, not by sql/

-- The first releases' change-notification trigger (_900_notify, one trigger per table) gave way to
-- statement triggers with transition tables (sql/20_options.sql); sql/ dropped the old one on every
-- deploy until the migration steps left sql/ (issue 18).
drop trigger if exists _900_notify on private.options;
drop trigger if exists _900_notify on private.channels;
drop trigger if exists _900_notify on private.channel_keys;
