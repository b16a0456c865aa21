--! Previous: sha1:ad67c2436036d95faf4c3504bfd0bba5ed4acb70
--! Hash: sha1:b30c71a1d0dc55ed874c2dc817517da439299563
--! Message: Every option's value in one row (private.option_values), for the hot path's one read

-- Every option's value in one row: what admission and settlement read once per call, as one
-- primary-key lookup instead of an aggregate over private.options (docs/performance.md, finding
-- 55). private.options stays the registry; a statement trigger (sql/20_options.sql) keeps this row
-- equal to it.
create table if not exists private.option_values (
  id    boolean primary key default true check (id),   -- one row
  value jsonb not null                                  -- {key: raw text value}, every option
);
alter table private.option_values enable row level security;
comment on table private.option_values is
  'Every option''s raw value as one JSON object, in one row: the hot path''s read of the options (private.options_hot). Kept equal to private.options by a statement trigger; never written by hand.';
insert into private.option_values (id, value)
select true, coalesce(jsonb_object_agg(o.key, o.value), '{}'::jsonb) from private.options o
on conflict (id) do update set value = excluded.value;

-- Admission reads private.options_hot() now (sql/20_options.sql). (sql/ is applied right after this
-- migration and replaces the functions that called this one.)
drop function if exists private.admission_options();
