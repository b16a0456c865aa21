-- SSRF guard for channel base URLs (DESIGN §7), the save-time half: a URL whose host is a
-- loopback, private, link-local, shared, metadata or otherwise non-public address is refused when a
-- channel is created or changed, unless the operator turned on AllowPrivateUpstreams (self-hosted
-- models on the same network). The connect-time half is gateway/src/ssrf.ts: only it can resolve
-- DNS names (and catch a name that resolves to a private address, or a redirect to one).

-- private.ssrf_rules: what is not a public internet address, in one place: the IPv4 and IPv6
-- ranges, and the host names (and name suffixes) refused whatever DNS says. Read by the save-time
-- check below and, through gateway.ssrf_rules, by the gateway's connect-time check
-- (gateway/src/ssrf.ts loads it with the options, and refuses every private-looking call until it
-- has it).
/* why these: 0/8 "this network", 10/8, 172.16/12, 192.168/16 private, 100.64/10 shared (CGNAT),
   127/8 loopback, 169.254/16 link-local (cloud metadata), 192.0.0/24 IETF, 192.0.2/24, 198.51.100/24,
   203.0.113/24 documentation, 198.18/15 benchmarking, 224/4 multicast, 240/4 reserved. IPv6: the
   unspecified and loopback addresses, IPv4-mapped (::ffff:0:0/96) and NAT64 (64:ff9b::/96), which
   reach IPv4 hosts this check cannot see through reliably, discard-only, documentation, unique
   local, link- and site-local, multicast. .internal is reserved for private use (ICANN, 2024) and
   is what GCP's metadata name uses. */
create or replace function private.ssrf_rules()
returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
    'ranges', jsonb_build_array(
      '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12',
      '192.0.0.0/24', '192.0.2.0/24', '192.168.0.0/16', '198.18.0.0/15', '198.51.100.0/24',
      '203.0.113.0/24', '224.0.0.0/4', '240.0.0.0/4',
      '::/128', '::1/128', '::ffff:0:0/96', '64:ff9b::/96', '100::/64', '2001:db8::/32', 'fc00::/7',
      'fe80::/10', 'fec0::/10', 'ff00::/8'),
    'names', jsonb_build_array('localhost', 'metadata', 'metadata.google.internal', 'metadata.goog', 'instance-data'),
    'suffixes', jsonb_build_array('.localhost', '.internal', '.local'))
$$;

comment on function private.ssrf_rules() is E'The SSRF guard''s one list: address ranges (IPv4 and IPv6) and host names and suffixes that are never a public upstream.';

-- gateway.ssrf_rules: private.ssrf_rules for the gateway's connect-time check.
create or replace function gateway.ssrf_rules()
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select private.ssrf_rules()
$$;

comment on function gateway.ssrf_rules() is E'The SSRF guard''s address ranges and host names (private.ssrf_rules), loaded by the gateway with its options.';

-- private.url_host: the host of an http(s) URL, lower case, without IPv6 brackets or a trailing dot.
create or replace function private.url_host(p_url text)
returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select rtrim(lower(coalesce(
           substring(p_url from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?\[([0-9A-Fa-f:.]+)\]'),
           substring(p_url from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:\[\]@]+)'))), '.')
$$;

comment on function private.url_host(text) is E'The host part of an http(s) URL, lower case, IPv6 brackets and a trailing dot removed; null when there is none.';

-- private.url_is_private: true when the URL's host is not a public internet address.
create or replace function private.url_is_private(p_url text)
returns boolean
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_host text := private.url_host(p_url);
  v_rules jsonb := private.ssrf_rules();
  v_addr inet;
begin
  if v_host is null or v_host = '' then
    return true;
  end if;
  -- Names that always mean "this machine" or "the cloud's metadata service", whatever DNS says.
  if v_rules -> 'names' ? v_host
     or exists (select 1 from jsonb_array_elements_text(v_rules -> 'suffixes') x where v_host like '%' || x) then
    return true;
  end if;
  /* Numeric hosts that are not a plain dotted quad (2130706433, 0x7f.1, 0177.0.0.1) are how
     filters get bypassed: clients and resolvers read them as 127.0.0.1. No real upstream uses them. */
  if v_host ~ '^[0-9a-fx.]+$' and v_host ~ '^[0-9]' and v_host !~ '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$' then
    return true;
  end if;
  begin
    v_addr := v_host::inet;
  exception when invalid_text_representation then
    return false; -- a DNS name: checked where it is resolved, at connect time
  end;
  -- (An address is only ever inside ranges of its own family.)
  return exists (select 1 from jsonb_array_elements_text(v_rules -> 'ranges') r where v_addr <<= r::inet);
end
$$;

comment on function private.url_is_private(text) is E'True when the URL''s host is loopback, private, link-local, shared, reserved, a metadata name or an obfuscated numeric address; false for public addresses and DNS names (resolved at connect time by the gateway).';

-- private.channel_url_check: the save-time guard, called by admin.channel_create and
-- admin.channel_update with the base_url they are given (null: nothing to check).
create or replace function private.channel_url_check(p_url text)
returns void
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_url is null or private.option_text('AllowPrivateUpstreams')::boolean or not private.url_is_private(p_url) then
    return;
  end if;
  raise exception using errcode = 'BADCH', column = 'base_url',
    message = format('"base_url" points at a private, loopback, link-local or metadata address (%s); channels must use a public host.', private.url_host(p_url)),
    hint = 'For a self-hosted model on your own network, turn on AllowPrivateUpstreams in the admin panel''s Settings (or in psql: select admin.option_set(''AllowPrivateUpstreams'', ''true'');).';
end
$$;

comment on function private.channel_url_check(text) is E'Raises BADCH (column base_url) when the URL''s host is private and AllowPrivateUpstreams is off. Called when a channel is saved.';
