-- Webhooks, the operator's side (psql and the admin panel's Webhooks page): endpoints, the event
-- log, the delivery log, resend and test. How events are raised and delivered: sql/44_events.sql and
-- the signature scheme: docs/operations.md ("Webhooks").

-- private.webhook_secret_seal: an endpoint's signing secret, sealed like an upstream key.
create or replace function private.webhook_secret_seal(p_secret text)
returns table (prefix text, key_id text, nonce bytea, ciphertext bytea, tag bytea)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_master bytea := private.master_key();
  v_nonce bytea := public.gen_random_bytes(12);
  v_sealed record;
begin
  if p_secret is null or length(p_secret) < 16 or length(p_secret) > 200 then
    raise exception using errcode = 'BADIN', column = 'secret', message = 'A webhook secret is 16 to 200 characters (leave it out to have one generated).';
  end if;
  select * into v_sealed from private.aes_gcm_encrypt(v_master, v_nonce, convert_to(p_secret, 'UTF8'));
  return query select left(p_secret, 10), private.master_key_id(v_master), v_nonce, v_sealed.ciphertext, v_sealed.tag;
end
$$;

comment on function private.webhook_secret_seal(text) is E'Seals a webhook signing secret (AES-256-GCM under the session master key); returns what private.webhook_endpoints stores.';

-- private.webhook_args: checks the fields an endpoint is created or changed with.
create or replace function private.webhook_args(p_args jsonb, p_what text)
returns void
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_bad text;
begin
  perform private.args_check(p_args, array['name', 'url', 'kinds', 'enabled', 'description', 'secret'], p_what);
  if p_args ? 'name' and coalesce(btrim(p_args ->> 'name'), '') = '' then
    raise exception using errcode = 'BADIN', column = 'name', message = 'An endpoint needs a name.';
  end if;
  if p_args ? 'url' then
    if coalesce(p_args ->> 'url', '') !~ '^https?://[^/?#]+' then
      raise exception using errcode = 'BADIN', column = 'url', message = 'The endpoint URL must start with http:// or https:// and name a host.';
    end if;
    if private.url_is_private(p_args ->> 'url') and not private.option_text('AllowPrivateWebhooks')::boolean then
      raise exception using errcode = 'BADIN', column = 'url',
        message = format('"url" points at a private, loopback, link-local or metadata address (%s); webhook endpoints must use a public host.', private.url_host(p_args ->> 'url')),
        hint = 'For an alert relay on your own network, turn on AllowPrivateWebhooks (select admin.option_set(''AllowPrivateWebhooks'', ''true'');).';
    end if;
  end if;
  if p_args ? 'kinds' then
    if jsonb_typeof(p_args -> 'kinds') <> 'array' then
      raise exception using errcode = 'BADIN', column = 'kinds', message = '"kinds" is a list of event kinds ([] for every kind).';
    end if;
    select k into v_bad from jsonb_array_elements_text(p_args -> 'kinds') k where not (k = any(private.event_kinds())) limit 1;
    if v_bad is not null then
      raise exception using errcode = 'BADIN', column = 'kinds',
        message = format('Unknown event kind "%s"; the kinds are: %s.', v_bad, array_to_string(private.event_kinds(), ', '));
    end if;
  end if;
  if p_args ? 'enabled' and jsonb_typeof(p_args -> 'enabled') <> 'boolean' then
    raise exception using errcode = 'BADIN', column = 'enabled', message = '"enabled" is true or false.';
  end if;
end
$$;

-- admin.webhook_create: registers an endpoint. The secret (generated unless given) is returned
-- here only; the gateways sign every delivery with it.
create or replace function admin.webhook_create(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_secret text := coalesce(p_args ->> 'secret', 'whsec_' || encode(public.gen_random_bytes(24), 'hex'));
  v_s record;
  v_id bigint;
begin
  perform private.webhook_args(p_args, 'admin.webhook_create');
  if not (p_args ? 'url') or not (p_args ? 'name') then
    raise exception using errcode = 'BADIN', column = case when p_args ? 'name' then 'url' else 'name' end,
      message = 'admin.webhook_create needs "name" and "url".';
  end if;
  select * into v_s from private.webhook_secret_seal(v_secret);
  insert into private.webhook_endpoints (name, url, kinds, enabled, description, secret_prefix, secret_key_id, secret_nonce, secret_ciphertext, secret_tag)
  values (btrim(p_args ->> 'name'), p_args ->> 'url',
          coalesce(array(select jsonb_array_elements_text(p_args -> 'kinds')), '{}'),
          coalesce((p_args ->> 'enabled')::boolean, true), coalesce(p_args ->> 'description', ''),
          v_s.prefix, v_s.key_id, v_s.nonce, v_s.ciphertext, v_s.tag)
  returning id into v_id;
  return (select to_jsonb(w) from admin.webhook_endpoints w where w.id = v_id) || jsonb_build_object('secret', v_secret);
exception
  when unique_violation then
    raise exception using errcode = 'BADIN', column = 'name', message = format('An endpoint named "%s" exists already.', p_args ->> 'name');
end
$$;

comment on function admin.webhook_create(jsonb) is
  E'Registers a webhook endpoint: {"name", "url", "kinds" ([] or absent: every kind), "enabled", "description", "secret" (absent: generated)}. Returns it with the plaintext "secret", shown only here.';

-- admin.webhook_update: changes an endpoint; "secret" rotates the signing secret.
create or replace function admin.webhook_update(p_id bigint, p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_s record;
begin
  perform private.webhook_args(p_args, 'admin.webhook_update');
  update private.webhook_endpoints e
     set name = coalesce(btrim(p_args ->> 'name'), e.name),
         url = coalesce(p_args ->> 'url', e.url),
         kinds = case when p_args ? 'kinds' then array(select jsonb_array_elements_text(p_args -> 'kinds')) else e.kinds end,
         enabled = coalesce((p_args ->> 'enabled')::boolean, e.enabled),
         description = coalesce(p_args ->> 'description', e.description),
         updated_at = now()
   where e.id = p_id;
  if not found then
    raise exception using errcode = 'BADIN', column = 'id', message = format('No webhook endpoint %s.', p_id);
  end if;
  if p_args ? 'secret' then
    select * into v_s from private.webhook_secret_seal(p_args ->> 'secret');
    update private.webhook_endpoints
       set secret_prefix = v_s.prefix, secret_key_id = v_s.key_id, secret_nonce = v_s.nonce,
           secret_ciphertext = v_s.ciphertext, secret_tag = v_s.tag
     where id = p_id;
  end if;
  return (select to_jsonb(w) from admin.webhook_endpoints w where w.id = p_id);
exception
  when unique_violation then
    raise exception using errcode = 'BADIN', column = 'name', message = format('An endpoint named "%s" exists already.', p_args ->> 'name');
end
$$;

comment on function admin.webhook_update(bigint, jsonb) is
  E'Changes a webhook endpoint: any of {"name", "url", "kinds", "enabled", "description", "secret" (rotates it)}. Deliveries of a disabled endpoint wait until it is enabled again.';

create or replace function admin.webhook_delete(p_id bigint)
returns boolean
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$ delete from private.webhook_endpoints where id = p_id returning true $$;

comment on function admin.webhook_delete(bigint) is E'Deletes a webhook endpoint and its delivery log (the events stay). Returns true, or null if there was none.';

-- admin.webhook_resend: a finished delivery (delivered or dead) goes out again now, with a fresh
-- count of attempts.
create or replace function admin.webhook_resend(p_delivery_id bigint)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_status text;
  v_attempts integer;
begin
  select d.status, d.attempts into v_status, v_attempts from private.webhook_deliveries d where d.id = p_delivery_id for update;
  if not found then
    raise exception using errcode = 'BADIN', column = 'id', message = format('No webhook delivery %s.', p_delivery_id);
  end if;
  /* why only a finished delivery: one still being tried may be in flight at this moment (claimed by
     a gateway, its answer not yet reported); starting it over would send the event a second time. */
  if v_status not in ('delivered', 'dead') then
    raise exception using errcode = 'BADIN', column = 'id',
      message = format('Webhook delivery %s is still being tried (%s attempts so far); it can be resent once it is delivered or dead.', p_delivery_id, v_attempts);
  end if;
  update private.webhook_deliveries
     set status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = null
   where id = p_delivery_id;
  perform pg_notify('elygate_webhook', '');
  return true;
end
$$;

comment on function admin.webhook_resend(bigint) is E'Sends a delivered or dead webhook delivery again now, with WebhookMaxAttempts fresh attempts. A delivery still being tried is refused (it may be in flight, and would go out twice).';

-- admin.webhook_test: a webhook.test event for one endpoint (enabled or not: it is delivered once
-- the endpoint is enabled).
create or replace function admin.webhook_test(p_id bigint)
returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_name text;
begin
  select e.name into v_name from private.webhook_endpoints e where e.id = p_id;
  if not found then
    raise exception using errcode = 'BADIN', column = 'id', message = format('No webhook endpoint %s.', p_id);
  end if;
  return private.event_emit('webhook.test', jsonb_build_object('endpoint_id', p_id, 'endpoint', v_name, 'by', current_user,
                                                               'message', 'A test event from Elygate.'));
end
$$;

comment on function admin.webhook_test(bigint) is E'Sends a webhook.test event to one endpoint; returns the event id.';

-- admin.wallet_alert_set: a user's own low-balance threshold (null: the option WalletLowBalanceMicros; 0: never).
create or replace function admin.wallet_alert_set(p_user_id bigint, p_threshold_micros bigint)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_threshold_micros < 0 then
    raise exception using errcode = 'BADIN', column = 'threshold_micros', message = 'A low-balance threshold is 0 (never) or more micro-USD.';
  end if;
  if not exists (select 1 from private.users u where u.id = p_user_id) then
    raise exception using errcode = 'BADIN', column = 'user_id', message = format('No user %s.', p_user_id);
  end if;
  insert into private.wallet_alerts as a (user_id, threshold_micros) values (p_user_id, p_threshold_micros)
  on conflict (user_id) do update set threshold_micros = excluded.threshold_micros;
  return true;
end
$$;

comment on function admin.wallet_alert_set(bigint, bigint) is
  E'Sets a user''s low-balance alert threshold in micro-USD (null: WalletLowBalanceMicros; 0: never). Checked every minute (wallet.low events).';

create or replace view admin.webhook_endpoints as
  select e.id, e.name, e.url, e.kinds, e.enabled, e.description, e.secret_prefix, e.created_at, e.updated_at,
         (select count(*) from private.webhook_deliveries d where d.endpoint_id = e.id and d.status in ('pending', 'retrying')) as waiting,
         (select count(*) from private.webhook_deliveries d where d.endpoint_id = e.id and d.status = 'dead') as dead,
         (select max(d.delivered_at) from private.webhook_deliveries d where d.endpoint_id = e.id) as last_delivered_at
    from private.webhook_endpoints e;

create or replace view admin.events as
  select ev.id, ev.kind, ev.payload, ev.created_at from private.events ev;

create or replace view admin.webhook_deliveries as
  select d.id, d.event_id, ev.kind, ev.created_at as event_at, d.endpoint_id, e.name as endpoint, d.status, d.attempts,
         d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.delivered_at, d.created_at, ev.payload
    from private.webhook_deliveries d
    join private.events ev on ev.id = d.event_id
    join private.webhook_endpoints e on e.id = d.endpoint_id;

-- admin.event_kinds: the kinds an endpoint can subscribe to (a function: a view calling a private
-- function would need that function granted to its readers).
create or replace function admin.event_kinds()
returns setof text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select unnest(private.event_kinds()) $$;

comment on function admin.event_kinds() is E'The kinds of event webhook endpoints can subscribe to.';
