-- Webhook delivery. The gateways POST due deliveries (gateway/src/webhooks.ts): they claim them
-- here (gateway.webhook_claim, FOR UPDATE SKIP LOCKED, so each attempt happens once across
-- instances), sign and send them through the SSRF-guarded client, and report back
-- (gateway.webhook_finish), which marks each delivered, or due again after an exponential backoff,
-- or dead after WebhookMaxAttempts attempts. Everything that decides (who gets what, when to retry,
-- when to give up) is here; the gateway only carries it out.

-- private.webhook_backoff: the wait after the given number of failed attempts (1: the base),
-- shortened by a random part of up to WebhookBackoffJitterPercent.
/* why jitter: when an endpoint is down, every delivery to it fails within the same seconds; without
   jitter they would all come due again at the same instant, every round, and hit the endpoint in
   one burst as it comes back. Only shortened, never lengthened, so WebhookBackoffMaxMs stays a
   bound. */
create or replace function private.webhook_backoff(p_attempts integer)
returns interval
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
  select make_interval(secs => least(
           private.option_text('WebhookBackoffBaseMs')::numeric * power(2::numeric, greatest(p_attempts - 1, 0)),
           private.option_text('WebhookBackoffMaxMs')::numeric) / 1000
           * (1 - private.option_text('WebhookBackoffJitterPercent')::numeric / 100 * random()::numeric))
$$;

comment on function private.webhook_backoff(integer) is
  E'Wait before the next attempt after p_attempts failed ones: WebhookBackoffBaseMs doubled per further failure, at most WebhookBackoffMaxMs, shortened by a random part of up to WebhookBackoffJitterPercent.';

-- gateway.webhook_claim: the deliveries that are due (at p_now), locked for this caller. Each
-- claimed delivery counts an attempt and is leased until its timeout plus 30 s: a gateway that dies
-- mid-attempt leaves it to be claimed again after the lease, so no event is lost. The body is the
-- event as the endpoint receives it; the gateway signs exactly these bytes.
create or replace function gateway.webhook_claim(p_limit integer default 10, p_now timestamptz default now())
returns table (id bigint, attempt integer, event_id bigint, kind text, url text, body text, secret jsonb,
               timeout_ms integer, allow_private boolean)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_timeout integer := private.option_text('WebhookTimeoutMs')::integer;
  v_allow boolean := private.option_text('AllowPrivateWebhooks')::boolean;
begin
  perform private.jobs_overdue_check(p_now);
  return query
  with due as (
    select d.id from private.webhook_deliveries d
      join private.webhook_endpoints e on e.id = d.endpoint_id and e.enabled
     where d.status in ('pending', 'retrying') and d.next_attempt_at <= p_now
     order by d.next_attempt_at, d.id
     limit greatest(p_limit, 1)
     for update of d skip locked
  ), leased as (
    update private.webhook_deliveries d
       set attempts = d.attempts + 1, last_attempt_at = p_now,
           next_attempt_at = p_now + make_interval(secs => (v_timeout + 30000) / 1000.0)
      from due where d.id = due.id
    returning d.id, d.attempts, d.event_id, d.endpoint_id
  )
  select l.id, l.attempts, ev.id, ev.kind, e.url,
         jsonb_build_object('id', ev.id, 'kind', ev.kind, 'created_at', ev.created_at, 'data', ev.payload)::text,
         jsonb_build_object('ordinal', 0, 'key_id', e.secret_key_id, 'nonce', encode(e.secret_nonce, 'base64'),
                            'ciphertext', encode(e.secret_ciphertext, 'base64'), 'tag', encode(e.secret_tag, 'base64')),
         v_timeout, v_allow
    from leased l
    join private.events ev on ev.id = l.event_id
    join private.webhook_endpoints e on e.id = l.endpoint_id
   order by l.id;
end
$$;

comment on function gateway.webhook_claim(integer, timestamptz) is
  E'Claims up to p_limit webhook deliveries due at p_now (skip locked), counting an attempt and leasing each until WebhookTimeoutMs + 30 s; returns the signed body''s bytes, the URL, the sealed secret and the SSRF setting.';

-- gateway.webhook_finish: the outcome of claimed attempts ([{id, attempt, ok, http_status, error}]):
-- delivered; or due again after the backoff; or dead after WebhookMaxAttempts. An outcome for an
-- attempt that is no longer the delivery's latest (its lease ran out and another gateway took it
-- over, or an operator resent it) is ignored.
create or replace function gateway.webhook_finish(p_results jsonb, p_now timestamptz default now())
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_max integer := private.option_text('WebhookMaxAttempts')::integer;
  v_n integer;
begin
  update private.webhook_deliveries d
     set status = case when r.ok then 'delivered' when d.attempts >= v_max then 'dead' else 'retrying' end,
         delivered_at = case when r.ok then p_now end,
         last_status = r.http_status,
         last_error = case when r.ok then null else left(coalesce(r.error, 'HTTP ' || r.http_status), 2000) end,
         next_attempt_at = case when r.ok or d.attempts >= v_max then p_now else p_now + private.webhook_backoff(d.attempts) end
    from jsonb_to_recordset(p_results) as r(id bigint, attempt integer, ok boolean, http_status integer, error text)
   where d.id = r.id and d.attempts = r.attempt and d.status in ('pending', 'retrying');
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

comment on function gateway.webhook_finish(jsonb, timestamptz) is
  E'Records webhook attempts ([{id, attempt, ok, http_status, error}]) at p_now: delivered, retried after the backoff (WebhookBackoffBaseMs doubling), or dead after WebhookMaxAttempts.';
