-- The gateway's API: what the elygate_gateway role may execute. Everything that decides who may
-- use what lives here; the gateway only parses, streams and reports.

-- private.key_check: authenticates a client key (by sha256) for a request from p_client_ip.
-- Called by gateway.relay_begin and gateway.models_list. Raises NOKEY/KREVK/KEXPD/UDSBL/IPDNY.
create or replace function private.key_check(p_key_hash bytea, p_client_ip inet,
                                             out key private.api_keys, out user_group text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user_status text;
begin
  if p_key_hash is null then
    raise exception using errcode = 'NOKEY',
      message = 'You didn''t provide an API key. Send it as "Authorization: Bearer <key>" or "x-api-key: <key>".';
  end if;
  select k.* into key from private.api_keys k where k.key_hash = p_key_hash;
  if not found then
    raise exception using errcode = 'NOKEY', message = 'Incorrect API key provided.',
      hint = 'Create a key with admin.key_create(), or check for a truncated copy.';
  end if;
  if key.status <> 'active' then
    raise exception using errcode = 'KREVK', message = format('This API key (%s) has been revoked.', key.key_prefix);
  end if;
  if key.expires_at is not null and key.expires_at <= now() then
    raise exception using errcode = 'KEXPD',
      message = format('This API key (%s) expired at %s.', key.key_prefix,
                       to_char(key.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
  end if;
  select u.status, u.group_name into v_user_status, user_group from private.users u where u.id = key.user_id;
  if v_user_status <> 'active' then
    raise exception using errcode = 'UDSBL', message = 'The account that owns this API key is disabled.';
  end if;
  if key.allowed_ips is not null
     and (p_client_ip is null or not exists (select 1 from unnest(key.allowed_ips) c where p_client_ip <<= c)) then
    raise exception using errcode = 'IPDNY',
      message = format('This API key may not be used from %s.', coalesce(host(p_client_ip), 'an unknown address'));
  end if;
end
$$;
comment on function private.key_check(bytea, inet) is
  E'Authenticates a client key by its sha256: status, expiry, owner status and IP/CIDR allowlist.';

-- gateway.relay_begin: the one call a request makes before the upstream.
-- Authenticates, checks the model allowlist, plans the route and records the request row.
create or replace function gateway.relay_begin(
  p_request_id    uuid,
  p_key_hash      bytea,
  p_model         text,
  p_endpoint      text,
  p_stream        boolean,
  p_client_ip     inet,
  p_prompt_tokens integer,
  p_max_tokens    integer)
returns gateway.relay_ticket
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_auth record;
  v_plan jsonb;
  v_skipped jsonb;
  v_served integer;
  v_created timestamptz;
begin
  if p_model is null or p_model = '' then
    raise exception using errcode = 'BADRQ', message = 'you must provide a model parameter', column = 'model';
  end if;
  v_auth := private.key_check(p_key_hash, p_client_ip);

  if (v_auth.key).allowed_models is not null and not (p_model = any((v_auth.key).allowed_models)) then
    raise exception using errcode = 'MDENY', column = 'model',
      message = format('This API key is not allowed to use the model `%s`.', p_model);
  end if;

  select rp.served, rp.candidates, rp.skipped into v_served, v_plan, v_skipped
    from private.route_plan(p_model, v_auth.user_group) rp;

  if v_served = 0 then
    raise exception using errcode = 'NOMDL', column = 'model',
      message = format('The model `%s` does not exist or you do not have access to it.', p_model);
  end if;
  if v_plan is null then
    raise exception using errcode = 'NOCHN',
      message = format('No channel is available for the model `%s` right now (%s disabled).', p_model, v_served),
      hint = 'An operator can see why in admin.channels (status, status_reason).';
  end if;

  insert into private.requests (id, key_id, user_id, group_name, endpoint, model, stream, client_ip,
                                prompt_tokens, route_plan)
  values (p_request_id, (v_auth.key).id, (v_auth.key).user_id, v_auth.user_group, p_endpoint, p_model,
          coalesce(p_stream, false), p_client_ip, p_prompt_tokens,
          jsonb_build_object('candidates', v_plan, 'skipped', v_skipped))
  returning created_at into v_created;

  return row(p_request_id, v_created, (v_auth.key).user_id, (v_auth.key).id, v_auth.user_group,
             0::bigint, v_plan)::gateway.relay_ticket;
end
$$;
comment on function gateway.relay_begin(uuid, bytea, text, text, boolean, inet, integer, integer) is
  E'One round trip before the upstream: authenticates the key (sha256), checks IP and model allowlists, plans the route (priority tiers, weighted random) and records the request row. Returns a gateway.relay_ticket; refusals raise the SQLSTATEs in sql/ERRORS.md.';

-- gateway.relay_finish: settles a batch of outcomes (the gateway's group commit).
-- Idempotent by request id: a replayed outcome changes nothing.
create or replace function gateway.relay_finish(p_outcomes jsonb)
returns integer
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  with o as (
    select *
      from jsonb_to_recordset(p_outcomes) as x(
        id uuid, created_at timestamptz, status text, http_status integer, channel_id bigint,
        upstream_model text, prompt_tokens integer, completion_tokens integer, usage_source text,
        attempts jsonb, ttfb_ms integer, latency_ms integer, error_code text, error_message text)
  ),
  priced as (
    select o.*, r.user_id, r.key_id, r.model, m.input_price, m.output_price, m.per_call_price,
           coalesce(g.price_multiplier, 1) as multiplier,
           case when o.status in ('ok', 'aborted') and o.usage_source in ('upstream', 'estimated') then
             round((coalesce(o.prompt_tokens, 0)::numeric * coalesce(m.input_price, 0)
                    + coalesce(o.completion_tokens, 0)::numeric * coalesce(m.output_price, 0)) / 1000000
                   * coalesce(g.price_multiplier, 1))::bigint
             + case when o.status = 'ok' then coalesce(m.per_call_price, 0) else 0 end
           else 0 end as amount
      from o
      join private.requests r on r.created_at = o.created_at and r.id = o.id and r.status = 'pending'
      left join private.models m on m.name = r.model
      left join private.groups g on g.name = r.group_name
  ),
  settled as (
    update private.requests r
       set status = p.status,
           http_status = p.http_status,
           channel_id = p.channel_id,
           upstream_model = p.upstream_model,
           prompt_tokens = coalesce(p.prompt_tokens, r.prompt_tokens),
           completion_tokens = p.completion_tokens,
           total_tokens = coalesce(p.prompt_tokens, r.prompt_tokens, 0) + coalesce(p.completion_tokens, 0),
           usage_source = coalesce(p.usage_source, 'none'),
           attempts = p.attempts,
           ttfb_ms = p.ttfb_ms,
           latency_ms = p.latency_ms,
           error_code = p.error_code,
           error_message = left(p.error_message, 2000),
           cost_micros = p.amount,
           finished_at = now()
      from priced p
     where r.created_at = p.created_at and r.id = p.id and r.status = 'pending'
    returning p.*
  ),
  booked as (
    insert into private.ledger (request_id, user_id, key_id, channel_id, model, prompt_tokens,
                                completion_tokens, input_price, output_price, per_call_price,
                                group_multiplier, amount_micros, usage_source, abort_policy)
    select s.id, s.user_id, s.key_id, s.channel_id, s.model, coalesce(s.prompt_tokens, 0),
           coalesce(s.completion_tokens, 0), s.input_price, s.output_price, s.per_call_price,
           s.multiplier, s.amount, s.usage_source,
           case when s.status = 'aborted' then 'prompt+delivered' end
      from settled s
     where s.status in ('ok', 'aborted') and s.usage_source in ('upstream', 'estimated')
    on conflict (request_id) do nothing
    returning 1
  )
  select count(*)::integer from settled
$$;
comment on function gateway.relay_finish(jsonb) is
  E'Settles a batch of request outcomes in one statement: completes the request rows still pending and appends one ledger row per billable request. Idempotent by request id. Called by the gateway''s group commit.';

-- gateway.models_list: the models a key may use (GET /v1/models), in one round trip.
create or replace function gateway.models_list(p_key_hash bytea, p_client_ip inet)
returns table (id text, owned_by text, created bigint)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_auth record := private.key_check(p_key_hash, p_client_ip);
begin
  return query
    select m.model, coalesce(md.owned_by, 'elygate'),
           extract(epoch from coalesce(md.created_at, min(c.created_at)))::bigint
      from private.channels c
      cross join lateral unnest(c.models) as m(model)
      left join private.models md on md.name = m.model
     where v_auth.user_group = any(c.groups)
       and c.status = 'enabled'
       and ((v_auth.key).allowed_models is null or m.model = any((v_auth.key).allowed_models))
     group by m.model, md.owned_by, md.created_at
     order by m.model;
end
$$;
comment on function gateway.models_list(bytea, inet) is
  E'The models this key may use right now: served by an enabled channel of the owner''s group and allowed for the key.';

-- gateway.options_snapshot: every option, typed, as one JSON object (reloaded on NOTIFY).
create or replace function gateway.options_snapshot()
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(jsonb_object_agg(o.key,
           case o.value_type
             when 'int' then to_jsonb(o.value::bigint)
             when 'number' then to_jsonb(o.value::numeric)
             when 'bool' then to_jsonb(o.value::boolean)
             when 'json' then o.value::jsonb
             else to_jsonb(o.value)
           end), '{}'::jsonb)
    from private.options o
$$;
comment on function gateway.options_snapshot() is E'All options as one typed JSON object; the gateway caches it and reloads on NOTIFY elygate_config.';

-- gateway.channel_credentials: what the gateway needs to call the given channels, keys still sealed.
create or replace function gateway.channel_credentials(p_ids bigint[])
returns table (id bigint, version integer, name text, type text, base_url text, config jsonb, keys jsonb)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select c.id, c.version, c.name, c.type, c.base_url, c.config,
         coalesce((select jsonb_agg(jsonb_build_object(
                             'ordinal', k.ordinal, 'key_id', k.key_id, 'nonce', encode(k.nonce, 'base64'),
                             'ciphertext', encode(k.ciphertext, 'base64'), 'tag', encode(k.tag, 'base64'))
                           order by k.ordinal)
                     from private.channel_keys k
                    where k.channel_id = c.id and k.status = 'enabled'), '[]'::jsonb)
    from private.channels c
   where c.id = any(p_ids)
$$;
comment on function gateway.channel_credentials(bigint[]) is
  E'Channel connection details with AES-256-GCM sealed keys, for the gateway''s credential snapshot.';

-- gateway.ping: readiness probe (GET /readyz).
create or replace function gateway.ping()
returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select true $$;
comment on function gateway.ping() is E'Returns true; proves the database answers (GET /readyz).';
