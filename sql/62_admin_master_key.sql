-- admin.master_key_rotate: re-seals every sealed secret (upstream keys, webhook signing secrets)
-- under a new master key, in one transaction. The command scripts/rotate-master-key.mjs
-- (`npm run rotate-master-key`) runs it; docs/operations.md has the procedure.
--
-- The keys come the way every sealing function takes them, never as arguments (which would land
-- in pg_stat_activity and the server log): elygate.master_key is the key to seal with (the new
-- one), elygate.old_master_keys the keys to open with (64 hex digits each, comma-separated).
/* why no channel version bump: a gateway re-reads (and opens) a channel's keys only when the
   channel's version changes. Re-sealing changes no key, so the gateways' opened copies stay good:
   they serve on while the rows change under them, whichever keys they were started with. The bump
   trigger on private.channel_keys is told so (elygate.resealing) for this transaction only. */
create or replace function admin.master_key_rotate()
returns table (channel_keys integer, webhook_secrets integer, old_key_ids text[], new_key_id text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_new bytea := private.master_key();
  v_olds bytea[] := '{}';
  v_old_ids text[] := '{}';
  v_hex text;
  v_foreign text[];
  v_n integer;
begin
  new_key_id := private.master_key_id(v_new);
  foreach v_hex in array string_to_array(coalesce(current_setting('elygate.old_master_keys', true), ''), ',') loop
    continue when btrim(v_hex) = '';
    if btrim(v_hex) !~ '^[0-9a-fA-F]{64}$' then
      raise exception using errcode = 'NOMKY', message = 'elygate.old_master_keys must be master keys of 64 hex digits, separated by commas.';
    end if;
    v_olds := v_olds || decode(btrim(v_hex), 'hex');
    v_old_ids := v_old_ids || private.master_key_id(decode(btrim(v_hex), 'hex'));
  end loop;
  if cardinality(v_olds) = 0 then
    raise exception using errcode = 'NOMKY', message = 'No old master key in this session: nothing can be opened to be re-sealed.',
      hint = 'set elygate.old_master_keys = ''<the old key>''; set elygate.master_key = ''<the new key>''; or run npm run rotate-master-key.';
  end if;
  if new_key_id = any(v_old_ids) then
    raise exception using errcode = 'NOMKY', message = 'The new master key (elygate.master_key) is one of the old ones (elygate.old_master_keys).';
  end if;
  old_key_ids := v_old_ids;

  -- A value sealed under a key that is neither new nor given would stay unreadable: refuse first.
  select array_agg(distinct s.key_id order by s.key_id) into v_foreign
    from (select k.key_id from private.channel_keys k
          union all
          select w.secret_key_id from private.webhook_endpoints w) s
   where s.key_id <> new_key_id and s.key_id <> all(v_old_ids);
  if v_foreign is not null then
    raise exception using errcode = 'NOMKY',
      message = format('Some secrets are sealed with master key %s, which is neither the new key nor one of the old ones given: nothing was re-sealed.',
                       array_to_string(v_foreign, ', ')),
      hint = 'Add that key to elygate.old_master_keys (ELYGATE_MASTER_KEY_PREVIOUS for npm run rotate-master-key).';
  end if;

  perform set_config('elygate.resealing', 'on', true);
  with opened as (
    -- (a volatile select list: one fresh nonce per row, and the CTE is not inlined)
    select k.id, public.gen_random_bytes(12) as nonce,
           private.aes_gcm_decrypt(v_olds[array_position(v_old_ids, k.key_id)], k.nonce, k.ciphertext, k.tag) as plain
      from private.channel_keys k
     where k.key_id <> new_key_id
     order by k.id
       for update
  )
  update private.channel_keys k
     set key_id = new_key_id, nonce = o.nonce, ciphertext = e.ciphertext, tag = e.tag
    from opened o
   cross join lateral private.aes_gcm_encrypt(v_new, o.nonce, o.plain) e
   where k.id = o.id;
  get diagnostics v_n = row_count;
  channel_keys := v_n;

  with opened as (
    select w.id, public.gen_random_bytes(12) as nonce,
           private.aes_gcm_decrypt(v_olds[array_position(v_old_ids, w.secret_key_id)], w.secret_nonce,
                                   w.secret_ciphertext, w.secret_tag) as plain
      from private.webhook_endpoints w
     where w.secret_key_id <> new_key_id
     order by w.id
       for update
  )
  update private.webhook_endpoints w
     set secret_key_id = new_key_id, secret_nonce = o.nonce, secret_ciphertext = e.ciphertext, secret_tag = e.tag
    from opened o
   cross join lateral private.aes_gcm_encrypt(v_new, o.nonce, o.plain) e
   where w.id = o.id;
  get diagnostics v_n = row_count;
  webhook_secrets := v_n;
  perform set_config('elygate.resealing', '', true);

  -- (each re-sealed upstream key is in the audit log already, by its row trigger)
  perform private.audit('master_key:' || new_key_id, jsonb_build_object('key_ids', v_old_ids),
                        jsonb_build_object('key_id', new_key_id, 'channel_keys', channel_keys, 'webhook_secrets', webhook_secrets));
  return next;
end
$$;

comment on function admin.master_key_rotate() is
  E'Re-seals every upstream key and webhook secret under the session''s elygate.master_key (the new master key), opening them with elygate.old_master_keys (comma-separated); one transaction, refused whole if any value is sealed under a key not given. Channel versions do not change: gateways keep their opened keys. Run by npm run rotate-master-key.';
