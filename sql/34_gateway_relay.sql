-- The gateway's API on the request path: what the elygate_gateway role may execute. relay_begin
-- (one request) and relay_begin_batch (many) admit (sql/31-33) and plan (sql/40); relay_finish
-- settles (sql/35); count_tokens_plan and channel_models_source check a key for the two calls
-- that admit nothing; models_list, options_snapshot, channel_credentials and ping serve the
-- gateway's caches. Everything that decides who may use what lives in SQL; the gateway only
-- parses, streams and reports.

-- gateway.relay_begin: the one call a request makes before the upstream.
create or replace function gateway.relay_begin(
  p_request_id    uuid,
  p_key_hash      bytea,
  p_model         text,
  p_endpoint      text,
  p_stream        boolean,
  p_client_ip     inet,
  p_prompt_tokens integer,
  p_max_tokens    integer,
  p_cache         jsonb default null,   -- {"exact", "context", "semantic", "sampling" (private.cache_eligibility)}; null: no cache key
  p_units         jsonb default null)   -- a media endpoint's units: {"count", "size", "quality"} (private.admit_prepare)
returns gateway.relay_ticket
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- Generic plans, as relay_begin_batch: private.route_plans' statement would otherwise be planned
-- again at every call.
set plan_cache_mode = force_generic_plan
as $$
declare
  v_opt jsonb := private.options_hot();
  v_durable boolean := private.admission_durability(v_opt);
  v_auth private.key_auth;
  v_route private.route_choice;
  v_plan private.admit_plan;
  v_errors jsonb[];
begin
  -- The key, with the route when it has nothing random in it (private.route_cache); else the
  -- route is planned for this request.
  select a.* into v_auth from private.key_auth_of(p_key_hash, p_model) a;
  v_route := v_auth.route;
  if v_route.served is null then
    v_route := (private.route_plans(array[p_model], array[v_auth.user_group]))[1];
  end if;
  -- The reading half raises its refusals itself; the writing half is relay_begin_batch's, for a
  -- batch of one, and its refusal is raised here.
  v_plan := private.admit_prepare(v_opt, v_auth, v_route, p_request_id, p_key_hash, p_model, p_endpoint, p_stream,
                                  p_client_ip, p_prompt_tokens, p_max_tokens, p_cache, p_units);
  v_errors := private.admit_write(array[v_plan]);
  if v_errors[1] is not null then
    perform private.refusal_raise(v_errors[1]);
  end if;
  return row(v_plan.request_id, now(), v_plan.user_id, v_plan.key_id, v_plan.group_name, v_plan.reserved_micros,
             v_plan.plan, v_plan.price, v_plan.cache, v_plan.max_tokens)::gateway.relay_ticket;
end
$$;

comment on function gateway.relay_begin(uuid, bytea, text, text, boolean, inet, integer, integer, jsonb, jsonb) is
  E'One round trip before the upstream: authenticates the key (sha256), checks IP and model allowlists, plans the route, admits the request (wallet balance minus open reservations, key quota, RPM, TPM, concurrency, budgets and per-model limits), reserves its estimated cost (tokens, or a media endpoint\'s units), looks up the exact cache layer, and records the admission (private.admissions) until settlement. Returns a gateway.relay_ticket; refusals raise the SQLSTATEs in sql/ERRORS.md.';

-- gateway.relay_begin_batch: several admissions in one round trip, for a gateway whose admission
-- calls are all in flight when more requests arrive (its natural batching; AdmissionConcurrency).
-- Each element is relay_begin's arguments as JSON: {"id", "key_hash" (hex), "model", "endpoint",
-- "stream", "client_ip", "prompt_tokens", "max_tokens", "cache", "units"}. One row per element, in any
-- order, matched by idx (1-based); a refusal is that row's error (private.refusal_json: its
-- SQLSTATE, message, detail, hint, column, and reason and retry_after for a rate limit), never the
-- batch's.
create or replace function gateway.relay_begin_batch(p_requests jsonb)
returns table (idx integer, request_id uuid, created_at timestamptz, user_id bigint, key_id bigint, group_name text,
               reserved_micros bigint, plan jsonb, price jsonb, cache jsonb, max_tokens integer, error jsonb)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- Generic plans: a custom plan (PostgreSQL's pick for these array-parameter statements) is made
-- again at every call, which cost more than running the statement. (As private.settle.)
set plan_cache_mode = force_generic_plan
as $$
declare
  v_opt jsonb := private.options_hot();   -- once for the batch
  v_max integer := (v_opt ->> 'AdmissionBatchMax')::integer;
  v_reqs jsonb[];
  v_ords integer[];
  v_auths private.key_auth[];
  v_models text[];
  v_groups text[];
  v_routes private.route_choice[];
  v_plans private.admit_plan[];
  v_errors jsonb[];
  v_written jsonb[];
  v_n integer;
  v_durable boolean;
  v_state text;
  v_message text;
  v_detail text;
  v_hint text;
  v_column text;
begin
  if jsonb_typeof(p_requests) is distinct from 'array' or jsonb_array_length(p_requests) > v_max then
    raise exception using errcode = 'BADRQ',
      message = format('relay_begin_batch takes a JSON array of at most AdmissionBatchMax (%s) requests.', v_max);
  end if;
  v_durable := private.admission_durability(v_opt);
  /* why one statement: each statement costs an executor start-up; the key lookups of the whole
     batch are this one (and the route plans the next), not one per request.
     The arrays come from one aggregate pass, so they stay aligned (v_ords says which request
     each element is). Their order does not matter: the writes below lock every wallet, then
     every key, explicitly in id order, as settlement does, before any row is written. */
  select array_agg(x.r), array_agg(x.ord), array_agg(x.auth), array_agg(x.model), array_agg(x.user_group)
    into v_reqs, v_ords, v_auths, v_models, v_groups
    from (select e.r, e.ord::integer as ord, e.r ->> 'model' as model, a.user_group,
                 row(a.key, a.user_status, a.user_group, a.model, a.group_multiplier, a.route, a.scoped_limits)::private.key_auth as auth
            from jsonb_array_elements(p_requests) with ordinality e(r, ord)
            -- (a key_hash that is not hex finds no key here and is refused in its own block below)
            left join lateral private.key_auth_of(
              case when e.r ->> 'key_hash' ~ '^([0-9a-fA-F]{2})*$' then decode(e.r ->> 'key_hash', 'hex') end,
              e.r ->> 'model') a on true) x;
  v_n := coalesce(cardinality(v_reqs), 0);
  v_routes := private.route_plans(v_models, v_groups);

  /* 1. The reading half, per element. A refusal here depends on nothing the batch writes, so it is
     that element's answer. why one block first: a block per element costs a subtransaction each,
     and most batches refuse nothing; when one does, the block is undone and every element goes
     again in a block of its own. */
  begin
    for i in 1 .. v_n loop
      v_plans[i] := private.admit_prepare_element(v_opt, v_auths[i], v_routes[i], v_reqs[i]);
    end loop;
  exception when others then
    for i in 1 .. v_n loop
      begin
        v_plans[i] := private.admit_prepare_element(v_opt, v_auths[i], v_routes[i], v_reqs[i]);
      exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text, v_detail = pg_exception_detail,
                                v_hint = pg_exception_hint, v_column = column_name;
        v_plans[i] := null;
        v_errors[i] := private.refusal_json(v_state, v_message, v_detail, v_hint, v_column, null, null);
      end;
    end loop;
  end;

  /* 2. The writing half: private.admit_write, as for relay_begin (once per owner and key; exactly
     the requests that would be refused one by one are). */
  v_written := private.admit_write(v_plans);
  if v_written is not null then
    for i in 1 .. v_n loop
      if v_written[i] is not null then
        v_plans[i] := null;
        v_errors[i] := v_written[i];
      end if;
    end loop;
  end if;

  -- The tickets: an admitted element's is its plan's (as admit_write returns it); a refused
  -- element's plan is null and its error is set.
  return query
    select v_ords[g.i], (p).request_id, case when (p).request_id is not null then now() end, (p).user_id, (p).key_id,
           (p).group_name, (p).reserved_micros, (p).plan, (p).price, (p).cache, (p).max_tokens, v_errors[g.i]
      from generate_subscripts(v_ords, 1) g(i)
      cross join lateral (select v_plans[g.i] as p) x;
end
$$;

comment on function gateway.relay_begin_batch(jsonb) is
  E'relay_begin for up to AdmissionBatchMax requests in one round trip and one transaction: one row per request (idx = its 1-based position), with the ticket or, for a refused request, error = {code, message, detail, hint, column, reason, retry_after}. The wallet and key counters of the batch are written once per owner and key (private.admit_write); when a sum does not fit, exactly the requests that would be refused one by one are.';

-- gateway.relay_finish: settles a batch of outcomes (the gateway's group commit).
-- Idempotent by request id: a replayed outcome changes nothing.
create or replace function gateway.relay_finish(p_outcomes jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- plpgsql, not sql: a language sql body is planned again at every call.
as $$ begin return private.settle(p_outcomes); end $$;

comment on function gateway.relay_finish(jsonb) is
  E'Settles a batch of request outcomes in one call (see private.settle): request rows, ledger rows, wallets and key counters. Idempotent by request id. Called by the gateway''s group commit.';

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
    with served as (
      select m.model, coalesce(md.owned_by, 'elygate') as owned_by,
             extract(epoch from coalesce(md.created_at, min(c.created_at)))::bigint as created
        from private.channels c
        cross join lateral unnest(c.models) as m(model)
        left join private.models md on md.name = m.model
       where v_auth.user_group = any(c.groups)
         and c.status = 'enabled'
         and ((v_auth.key).allowed_models is null or m.model = any((v_auth.key).allowed_models))
         and md.archived_at is null
       group by m.model, md.owned_by, md.created_at
    )
    select s.model, s.owned_by, s.created from served s
    union all
    -- A model with no channel of its own is served through its fallbacks (private.route_fallbacks):
    -- listed when one of them is served to this key, and the key may ask for it.
    select md.name, coalesce(md.owned_by, 'elygate'), extract(epoch from md.created_at)::bigint
      from private.models md
     where md.fallbacks && array(select s.model from served s)
       and md.archived_at is null
       and not exists (select 1 from served s where s.model = md.name)
       and ((v_auth.key).allowed_models is null or md.name = any((v_auth.key).allowed_models))
     order by 1;
end
$$;

comment on function gateway.models_list(bytea, inet) is
  E'The models this key may use right now: served by an enabled channel of the owner''s group (or through a fallback that is) and allowed for the key.';

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

-- gateway.count_tokens_plan: POST /v1/messages/count_tokens. Counting a prompt's tokens is free
-- and answers no model: nothing is admitted, reserved, billed or logged. The key is checked as
-- for any request (status, expiry, owner, IP allowlist, model allowlist), and the model's route
-- plan says which channels could count it (an Anthropic channel counts exactly; the gateway
-- estimates when none is planned).
create or replace function gateway.count_tokens_plan(p_key_hash bytea, p_client_ip inet, p_model text)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_auth private.key_auth;
  v_route private.route_choice;
begin
  if p_model is null or p_model = '' then
    raise exception using errcode = 'BADRQ', message = 'you must provide a model parameter', column = 'model';
  end if;
  select a.* into v_auth from private.key_auth_of(p_key_hash, p_model) a;
  v_auth := private.key_verify(p_key_hash, v_auth, p_client_ip);
  if (v_auth.key).allowed_models is not null and not (p_model = any((v_auth.key).allowed_models)) then
    raise exception using errcode = 'MDENY', column = 'model',
      message = format('This API key is not allowed to use the model `%s`.', p_model);
  end if;
  v_route := (private.route_plans(array[p_model], array[v_auth.user_group]))[1];
  if v_route.served = 0 then
    raise exception using errcode = 'NOMDL', column = 'model',
      message = format('The model `%s` does not exist or you do not have access to it.', p_model);
  end if;
  return coalesce(v_route.candidates, '[]'::jsonb);
end
$$;

comment on function gateway.count_tokens_plan(bytea, inet, text) is
  E'POST /v1/messages/count_tokens: checks the key as relay_begin does (no admission, reservation, bill or log row) and returns the model''s usable channels in try order (route_plans'' candidates, [] when none is usable).';

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
