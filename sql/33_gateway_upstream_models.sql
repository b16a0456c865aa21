-- The gateway's side of the panel's "Import models" (a channel's model list, read from its
-- upstream's own listing). The panel holds no upstream key and never calls an upstream (DESIGN §7):
-- it asks admin.channel_test_key(<channel>, null) for a five-minute key of the channel's internal
-- test user that may call no model, and sends it to the gateway's
-- GET /internal/channels/<id>/upstream-models; the gateway checks it here, then decrypts the
-- channel's key and calls the upstream through its SSRF guard.

-- gateway.channel_models_source: the channel whose model list p_key_hash may read, with its version
-- (for the gateway's credential snapshot). Only a live key of "channel-test.<p_channel_id>" (the
-- panel's test user of that very channel) may: an ordinary client key, or a test key of another
-- channel, is refused with CHDNY.
create or replace function gateway.channel_models_source(p_key_hash bytea, p_channel_id bigint)
returns table (id bigint, version integer, type text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_group text;
  v_ch private.channels;
begin
  select k.user_group into v_group from private.key_check(p_key_hash, null) k;
  if v_group is distinct from format('channel-test.%s', p_channel_id) then
    raise exception using errcode = 'CHDNY',
      message = format('This key may not read the upstream model list of channel %s: only the admin panel''s key for that channel may (admin.channel_test_key).', p_channel_id);
  end if;
  select * into v_ch from private.channels c where c.id = p_channel_id;
  if not found then
    raise exception using errcode = 'BADCH', message = format('No channel with id %s.', p_channel_id);
  end if;
  if v_ch.status = 'archived' then
    raise exception using errcode = 'BADCH',
      message = format('Channel "%s" is archived; restore it to import its models.', v_ch.name);
  end if;
  return query select v_ch.id, v_ch.version, v_ch.type;
end
$$;
comment on function gateway.channel_models_source(bytea, bigint) is
  E'The channel (id, version, type) whose upstream model list the key may read: only a live key of the panel''s test user of that channel (admin.channel_test_key with no model). Raises NOKEY/KREVK/KEXPD, CHDNY for any other key, BADCH for an unknown or archived channel.';
