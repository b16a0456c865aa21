-- Row bookkeeping on the tables operators edit: updated_at kept honest, a channel's version bumped
-- on every change to it or its keys (gateways reload a channel when its version moves).

-- Keeps updated_at honest and bumps channels.version on every change.
create or replace function private.tg_row__touch()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  new.updated_at := now();
  if tg_table_name = 'channels' then
    new.version := old.version + 1;
  end if;
  return new;
end
$$;

create or replace trigger _100_touch before update on private.options
  for each row execute function private.tg_row__touch();

create or replace trigger _100_touch before update on private.users
  for each row execute function private.tg_row__touch();

create or replace trigger _100_touch before update on private.channels
  for each row execute function private.tg_row__touch();

create or replace trigger _100_touch before update on private.models
  for each row execute function private.tg_row__touch();

-- A key change must also make gateways drop their snapshot of the channel.
create or replace function private.tg_channel_keys__bump_channel()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- (Not when the keys are re-sealed under a new master key: the keys themselves did not change,
  -- and gateways keep serving with the copies they opened; see admin.master_key_rotate.)
  if current_setting('elygate.resealing', true) = 'on' then
    return null;
  end if;
  update private.channels c set version = c.version
   where c.id = coalesce(new.channel_id, old.channel_id);
  return null;
end
$$;

create or replace trigger _200_bump_channel after insert or update or delete on private.channel_keys
  for each row execute function private.tg_channel_keys__bump_channel();
