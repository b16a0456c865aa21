-- Sealing upstream keys with AES-256-GCM inside PostgreSQL.
--
-- /* why */ An operator must be able to add a channel from psql alone, so the plaintext key arrives
-- in SQL and has to be sealed before it touches a table. pgcrypto offers raw AES but no GCM, so GCM
-- (NIST SP 800-38D: CTR keystream + GHASH tag) is composed here from pgcrypto's AES-ECB block
-- function. The master key is never stored: the caller supplies it per session in the setting
-- elygate.master_key (64 hex digits), from the same environment variable the gateway reads
-- (ELYGATE_MASTER_KEY). Only the gateway decrypts (node:crypto, aes-256-gcm). The test suite checks
-- this implementation byte for byte against node:crypto.

-- GF(2^128) multiplication in GCM's bit order (bit 0 is the most significant bit of byte 0).
create or replace function private.gcm_gf_mul(p_x bit(128), p_y bit(128))
returns bit(128)
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  v_z bit(128) := repeat('0', 128)::bit(128);
  v_v bit(128) := p_y;
  v_r constant bit(128) := ('x' || 'e1' || repeat('0', 30))::bit(128);
begin
  for i in 0..127 loop
    if get_bit(p_x, i) = 1 then
      v_z := v_z # v_v;
    end if;
    if get_bit(v_v, 127) = 1 then
      v_v := (v_v >> 1) # v_r;
    else
      v_v := v_v >> 1;
    end if;
  end loop;
  return v_z;
end
$$;

create or replace function private.gcm_block_to_bits(p_block bytea)
returns bit(128)
language sql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select ('x' || encode(p_block || substring('\x00000000000000000000000000000000'::bytea
                                                from 1 for 16 - length(p_block)), 'hex'))::bit(128)
$$;

create or replace function private.gcm_bits_to_block(p_bits bit(128))
returns bytea
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  v_out bytea := '\x00000000000000000000000000000000'::bytea;
begin
  for i in 0..15 loop
    v_out := set_byte(v_out, i, substring(p_bits from i * 8 + 1 for 8)::integer);
  end loop;
  return v_out;
end
$$;

-- private.aes_gcm_ctr: GCM's keystream (E(K, nonce || counter) for counter = 2, 3, ...; counter 1
-- masks the tag) XORed with p_data: encrypts and decrypts alike.
create or replace function private.aes_gcm_ctr(p_key bytea, p_nonce bytea, p_data bytea)
returns bytea
language plpgsql immutable strict
set search_path = pg_catalog, pg_temp
as $$
declare
  v_blocks integer := (length(p_data) + 15) / 16;
  v_counters bytea := ''::bytea;
  v_stream bytea;
  v_out bytea := p_data;
begin
  if length(p_key) <> 32 then
    raise exception using errcode = 'NOMKY', message = 'The master key must be 32 bytes (64 hex digits).';
  end if;
  if length(p_nonce) <> 12 then
    raise exception using errcode = 'BADIN', message = 'An AES-GCM nonce must be 12 bytes.';
  end if;
  for i in 0..v_blocks - 1 loop
    v_counters := v_counters || p_nonce || int4send(i + 2);
  end loop;
  if v_blocks > 0 then
    v_stream := public.encrypt(v_counters, p_key, 'aes-ecb/pad:none');
    for i in 0..length(p_data) - 1 loop
      v_out := set_byte(v_out, i, get_byte(p_data, i) # get_byte(v_stream, i));
    end loop;
  end if;
  return v_out;
end
$$;

-- private.aes_gcm_tag: GCM's tag of p_ciphertext (GHASH over its blocks and the length block, AAD
-- length 0, masked with E(K, nonce || 1)).
create or replace function private.aes_gcm_tag(p_key bytea, p_nonce bytea, p_ciphertext bytea)
returns bytea
language plpgsql immutable strict
set search_path = pg_catalog, pg_temp
as $$
declare
  v_h bit(128) := private.gcm_block_to_bits(public.encrypt('\x00000000000000000000000000000000'::bytea, p_key, 'aes-ecb/pad:none'));
  v_x bit(128) := repeat('0', 128)::bit(128);
begin
  for i in 0..(length(p_ciphertext) + 15) / 16 - 1 loop
    v_x := private.gcm_gf_mul(v_x # private.gcm_block_to_bits(substring(p_ciphertext from i * 16 + 1 for 16)), v_h);
  end loop;
  v_x := private.gcm_gf_mul(v_x # private.gcm_block_to_bits(int8send(0) || int8send(length(p_ciphertext)::bigint * 8)), v_h);
  return private.gcm_bits_to_block(
    v_x # private.gcm_block_to_bits(public.encrypt(p_nonce || int4send(1), p_key, 'aes-ecb/pad:none')));
end
$$;

-- private.aes_gcm_encrypt: AES-256-GCM with a 96-bit nonce and no additional data.
create or replace function private.aes_gcm_encrypt(p_key bytea, p_nonce bytea, p_plain bytea,
                                                   out ciphertext bytea, out tag bytea)
language plpgsql immutable strict
set search_path = pg_catalog, pg_temp
as $$
begin
  ciphertext := private.aes_gcm_ctr(p_key, p_nonce, p_plain);
  tag := private.aes_gcm_tag(p_key, p_nonce, ciphertext);
end
$$;

comment on function private.aes_gcm_encrypt(bytea, bytea, bytea) is
  E'AES-256-GCM (96-bit nonce, no AAD) built on pgcrypto''s AES block; used to seal upstream keys.';

-- private.aes_gcm_decrypt: opens what private.aes_gcm_encrypt sealed; raises NOMKY when the tag
-- does not match (another key, or altered bytes). Only master-key rotation opens keys in SQL.
create or replace function private.aes_gcm_decrypt(p_key bytea, p_nonce bytea, p_ciphertext bytea, p_tag bytea)
returns bytea
language plpgsql immutable strict
set search_path = pg_catalog, pg_temp
as $$
begin
  if private.aes_gcm_tag(p_key, p_nonce, p_ciphertext) <> p_tag then
    raise exception using errcode = 'NOMKY', message = 'A sealed value does not open with this key (wrong key, or altered bytes).';
  end if;
  return private.aes_gcm_ctr(p_key, p_nonce, p_ciphertext);
end
$$;

comment on function private.aes_gcm_decrypt(bytea, bytea, bytea, bytea) is
  E'Opens an AES-256-GCM sealed value (96-bit nonce, no AAD) after checking its tag; raises NOMKY on a mismatch.';

-- private.master_key(): the session's master key, or a clear error telling how to provide it.
create or replace function private.master_key()
returns bytea
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_hex text := nullif(current_setting('elygate.master_key', true), '');
begin
  if v_hex is null then
    raise exception using errcode = 'NOMKY',
      message = 'No master key in this session: upstream keys cannot be sealed.',
      hint = 'Run: set elygate.master_key = ''<the 64 hex digits of ELYGATE_MASTER_KEY>''; (npm run psql does this for the embedded database).';
  end if;
  if v_hex !~ '^[0-9a-fA-F]{64}$' then
    raise exception using errcode = 'NOMKY', message = 'elygate.master_key must be 64 hex digits (32 bytes).';
  end if;
  return decode(v_hex, 'hex');
end
$$;

comment on function private.master_key() is E'The master key from the session setting elygate.master_key; raises NOMKY when absent.';

-- private.master_key_id: a short, non-secret fingerprint naming which master key sealed a row.
create or replace function private.master_key_id(p_key bytea)
returns text
language sql immutable strict
set search_path = pg_catalog, pg_temp
as $$ select encode(substring(public.digest(p_key, 'sha256') from 1 for 8), 'hex') $$;

comment on function private.master_key_id(bytea) is E'First 8 bytes of sha256(master key), hex: identifies the sealing key without revealing it.';

-- private.channel_keys_seal: replaces a channel's upstream keys with sealed copies of p_keys.
create or replace function private.channel_keys_seal(p_channel_id bigint, p_keys text[])
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_master bytea := private.master_key();
  v_key_id text := private.master_key_id(v_master);
  v_nonce bytea;
  v_sealed record;
  v_n integer := 0;
begin
  delete from private.channel_keys where channel_id = p_channel_id;
  for i in 1..coalesce(array_length(p_keys, 1), 0) loop
    if p_keys[i] is null or btrim(p_keys[i]) = '' then
      raise exception using errcode = 'BADCH', message = 'An upstream API key cannot be empty.', column = 'api_key';
    end if;
    v_nonce := public.gen_random_bytes(12);
    select * into v_sealed from private.aes_gcm_encrypt(v_master, v_nonce, convert_to(btrim(p_keys[i]), 'UTF8'));
    insert into private.channel_keys (channel_id, ordinal, key_id, nonce, ciphertext, tag)
    values (p_channel_id, i, v_key_id, v_nonce, v_sealed.ciphertext, v_sealed.tag);
    v_n := v_n + 1;
  end loop;
  return v_n;
end
$$;

comment on function private.channel_keys_seal(bigint, text[]) is E'Seals and stores a channel''s upstream keys (AES-256-GCM under the session master key).';
