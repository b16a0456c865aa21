-- Admission, part 1: the client key. private.key_auth_of reads a key with everything admission
-- needs about its owner (and the cached route plans of its group); private.key_verify decides
-- whether it may be used (status, expiry, rotation, the owner's status and group), private.key_check
-- raises its refusal. Called by gateway.relay_begin / relay_begin_batch (sql/34_gateway_relay.sql).

-- private.key_auth_of: the one lookup that authenticates a client key by its sha256, and reads what
-- admission needs next: the owner's status and group, the group's price multiplier, p_model's
-- price row and, when it has nothing random in it, the route of p_model for that group
-- (private.route_cache). A set-returning SQL function so it is inlined: relay_begin_batch reads every request
-- of a batch in one statement with it. private.key_verify checks what it read.
create or replace function private.key_auth_of(p_key_hash bytea, p_model text)
returns setof private.key_auth
language sql stable
-- (limit 1: the key hash is unique; the limit also keeps the lookup a subquery, an index lookup
-- per request, where a plain join made the planner hash the whole key table for a batch)
as $$
  -- (an archived group's users are refused as their account would be: user_status says why)
  select k, case when g.archived_at is not null and u.status = 'active' then 'group_archived' else u.status end,
         u.group_name, m, g.price_multiplier,
         case when rc.model is not null then
           row(rc.served, rc.candidates, rc.skipped, rc.multipliers, rc.max_multiplier)::private.route_choice end,
         -- (flags on the rows read anyway: a key no budget or model limit applies to looks none up)
         k.scoped_limits or u.scoped_limits or coalesce(g.scoped_limits, false)
    from private.api_keys k
    join private.users u on u.id = k.user_id
    left join private.models m on m.name = p_model
    left join private.groups g on g.name = u.group_name
    left join private.route_cache rc on rc.model = p_model and rc.grp = u.group_name
   where k.key_hash = p_key_hash
   limit 1
$$;

comment on function private.key_auth_of(bytea, text) is
  E'A client key (by sha256) with its owner''s status and group, the group''s price multiplier and p_model''s price row; no row when unknown. Checked by private.key_verify.';

-- private.key_verify: raises NOKEY/KREVK/KEXPD/UDSBL/IPDNY unless p_auth (what key_auth_of read
-- for p_key_hash) may make a request from p_client_ip; returns p_auth.
create or replace function private.key_verify(p_key_hash bytea, p_auth private.key_auth, p_client_ip inet)
returns private.key_auth
language plpgsql stable
as $$
declare
  v_key private.api_keys := p_auth.key;
begin
  if p_key_hash is null then
    raise exception using errcode = 'NOKEY',
      message = 'You didn''t provide an API key. Send it as "Authorization: Bearer <key>" or "x-api-key: <key>".';
  end if;
  if v_key.id is null then
    raise exception using errcode = 'NOKEY', message = 'Incorrect API key provided.',
      hint = 'Create a key with admin.key_create(), or check for a truncated copy.';
  end if;
  if v_key.status <> 'active' then
    -- Archived (an operator's "keep the history, never use it again") refuses like revoked.
    raise exception using errcode = 'KREVK', message = format('This API key (%s) has been %s.', v_key.key_prefix,
      case v_key.status when 'archived' then 'archived' else 'revoked' end);
  end if;
  if v_key.expires_at is not null and v_key.expires_at <= private.admission_now() then   -- (admission's one clock, sql/36_budgets.sql)
    -- A rotated key's grace period ends as an expiry (admin.key_rotate); its refusal says so.
    if exists (select 1 from private.key_rotations r where r.old_key_id = v_key.id) then
      raise exception using errcode = 'KEXPD',
        message = format('This API key (%s) was rotated: it was replaced by a new key, and its grace period ended at %s. Use the new key.',
                         v_key.key_prefix, to_char(v_key.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    end if;
    raise exception using errcode = 'KEXPD',
      message = format('This API key (%s) expired at %s.', v_key.key_prefix,
                       to_char(v_key.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
  end if;
  if p_auth.user_status <> 'active' then
    raise exception using errcode = 'UDSBL', message = format('The account that owns this API key is %s.',
      case p_auth.user_status when 'archived' then 'archived'
                              when 'group_archived' then format('in the group `%s`, which has been archived', p_auth.user_group)
                              else 'disabled' end);
  end if;
  /* why nested: a condition with a subquery is run as a query (an executor start-up) whenever it
     is evaluated; nested, it is evaluated only for a key with an allowlist. */
  if v_key.allowed_ips is not null then
    if p_client_ip is null or not exists (select 1 from unnest(v_key.allowed_ips) c where p_client_ip <<= c) then
      raise exception using errcode = 'IPDNY',
        message = format('This API key may not be used from %s.', coalesce(host(p_client_ip), 'an unknown address'));
    end if;
  end if;
  return p_auth;
end
$$;

comment on function private.key_verify(bytea, private.key_auth, inet) is
  E'Raises unless the key read by private.key_auth_of is active, unexpired, owned by an active account and allowed from the client IP.';

-- private.key_check: private.key_auth_of and private.key_verify for one key (gateway.models_list).
create or replace function private.key_check(p_key_hash bytea, p_client_ip inet, p_model text default null,
                                             out key private.api_keys, out user_group text,
                                             out model private.models, out group_multiplier numeric)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_auth private.key_auth;
begin
  select a.* into v_auth from private.key_auth_of(p_key_hash, p_model) a;
  v_auth := private.key_verify(p_key_hash, v_auth, p_client_ip);
  key := v_auth.key;
  user_group := v_auth.user_group;
  model := v_auth.model;
  group_multiplier := v_auth.group_multiplier;
end
$$;

comment on function private.key_check(bytea, inet, text) is
  E'Authenticates a client key by its sha256: status, expiry, owner status and IP/CIDR allowlist. Also returns the owner''s group, its price multiplier and the price row of p_model (null when unknown).';

-- Admission in two steps, so a batch can do the second once per owner and key:
--   private.admit_prepare: everything that reads (key checks, model allowlist, route, price,
--     reservation size, cache); its refusals depend on nothing another request of the batch
--     writes. Its caller reads the key (private.key_auth_of) and the route (private.route_plans),
--     so that a batch reads them for all its requests in one statement each.
--   private.admit_write: the writes and the checks that depend on them (wallet, key quota,
--     concurrency, RPM, TPM), then the admission rows, for one request or a batch alike: the only
--     code that writes an admission. Its refusals are values (private.refusal_json).
-- gateway.relay_begin calls the one after the other for one request (and raises a refusal);
-- gateway.relay_begin_batch for all of its requests (and answers each refusal in its row). These functions are not
-- security definer and set no search_path: they run only inside the gateway.* functions (which pin
-- search_path = pg_catalog, pg_temp) and nobody else may execute them. The options are an argument
-- of these private functions only: the gateway role cannot pass options of its own.
