-- Options: the one registry of settings (every option, its default, type, bounds and
-- description, grouped by the part of the product that reads it), typed getters, validation and
-- change notification. Defaults are (re)declared on every deploy; an operator's value is never
-- overwritten, only the type, bounds and description are refreshed.

insert into private.options (key, value, value_type, min_value, max_value, description)
values
  ('MaxRequestBodyBytes', '16777216', 'int', 1024, 268435456,
   'Largest request body the gateway accepts, in bytes. Larger bodies get 413 before any database call.'),
  ('MaxUploadBytes', '26214400', 'int', 1024, 268435456,
   'Largest audio upload /v1/audio/transcriptions accepts (the whole multipart body), in bytes; larger uploads get 413 (OpenAI''s own limit is 25 MB).'),
  ('MaxJsonDepth', '128', 'int', 8, 4096,
   'Deepest nesting of arrays and objects accepted in a request body; deeper bodies get 400 before any database call.'),
  ('RelayTimeoutMs', '300000', 'int', 1000, 3600000,
   'Total deadline, in ms, for reaching the first byte of an upstream answer across all failover attempts.'),
  ('UpstreamAttemptTimeoutMs', '120000', 'int', 500, 3600000,
   'Deadline, in ms, for one upstream attempt to return its first byte before the next channel is tried.'),
  ('StreamIdleTimeoutMs', '300000', 'int', 1000, 3600000,
   'A stream whose upstream sends nothing for this many ms is cut and settled as interrupted.'),
  ('MaxAttempts', '3', 'int', 1, 20,
   'Most upstream attempts (channels tried) for one request.'),
  ('RetryableStatusCodes', '[408, 409, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529]', 'json', null, null,
   'Upstream HTTP statuses that move a request on to the next channel (before the first byte only).'),
  ('SettleBatchSize', '500', 'int', 1, 10000,
   'Most outcomes the gateway settles in one relay_finish call.'),
  ('SettleIntervalMs', '20', 'int', 1, 1000,
   'How long, in ms, the gateway gathers outcomes before it settles them in one relay_finish call.'),
  ('AdmissionConcurrency', '1', 'int', 1, 64,
   'Admission calls one gateway keeps in flight at once, each on a connection of its own; requests arriving while all are busy wait and go together in one relay_begin_batch call.'),
  ('AdmissionBatchMax', '32', 'int', 1, 64,
   'Most requests admitted by one relay_begin_batch call (each is a subtransaction; PostgreSQL caches 64 per transaction).'),
  ('DefaultMaxTokens', '4096', 'int', 1, 10000000,
   'Completion tokens assumed for a request that does not set max_tokens (used for reservations).'),
  ('TranscriptionReserveSeconds', '1500', 'int', 1, 86400,
   'Seconds of audio a /v1/audio/transcriptions request reserves (at the model''s audio_second_price) before its duration is known; settlement bills the duration the upstream reports (ledger overrun_micros when longer).'),
  ('ReservationPolicy', 'allow', 'text', null, null,
   'What bounds a request that sets no max_tokens (reserved at DefaultMaxTokens): "allow" (default) sends no limit, as the upstream would be asked directly, bills an answer that outgrows its reservation in full (ledger overrun_micros) and admits nothing more for its wallet until it is covered again; "cap" sends the upstream the reserved DefaultMaxTokens as its output limit, so no answer costs more than its reservation (header x-elygate-max-tokens).'),
  ('AllowUnpricedModels', 'false', 'bool', null, null,
   'When true, models without a price are served free of charge; when false they are refused (403 model_not_priced).'),
  ('DurableAdmission', 'false', 'bool', null, null,
   'When true, relay_begin waits for its WAL flush (one fsync per request on the hot path). When false, a database crash can forget admissions of the last few hundred ms; their bills still arrive, since outcomes carry the ticket.'),
  ('ReservationTtlMinutes', '60', 'int', 1, 10080,
   'A request still open after this many minutes (its gateway died) is settled by the reaper at its reserved estimate, marked expired.'),
  ('LogRetentionDays', '30', 'int', 1, 3650,
   'Request-log partitions older than this many days are dropped by private.partitions_maintain().'),
  ('UsageRetentionDays', '400', 'int', 31, 36500,
   'Usage and latency rollups (private.usage_hourly, private.usage_by_dim, private.latency_hourly; what reports, the dashboard and analytics_v1 read) older than this many days are deleted by the daily elygate.history_purge job. The ledger is never purged.'),
  ('PartitionDaysAhead', '3', 'int', 1, 60,
   'Daily request-log partitions are created this many days ahead.'),
  -- The response cache (sql/43_cache.sql)
  ('SemanticCacheEnabled', 'true', 'bool', null, null,
   'Master switch of the response cache (exact and semantic layers). Keys and models have their own switch (cache_enabled).'),
  ('CacheMode', 'deterministic', 'text', null, null,
   'Which chat requests the response cache serves and stores: "deterministic" (default: only answers meant to be repeatable: temperature 0 or a seed, one choice, no tools the model may call), "always" (every single-choice request, whatever its sampling) or "off". A key''s or a model''s cache_mode overrides it.'),
  ('SemanticCacheThreshold', '0.95', 'number', 0.5, 1,
   'Cosine similarity of the last user message at or above which a cached answer is served (higher is stricter).'),
  ('SemanticCacheScope', 'user', 'text', null, null,
   'Who shares cache entries: "user" (default: a user never sees another user''s cached answer) or "group".'),
  ('SemanticCacheTtlSeconds', '86400', 'int', 60, 31536000,
   'How long a cached answer may be served.'),
  ('SemanticCacheEmbeddingChannel', '', 'text', null, null,
   'Name of the channel that computes embeddings for the semantic layer. Empty: semantic layer off (the exact layer still works).'),
  ('SemanticCacheEmbeddingModel', '', 'text', null, null,
   'Embedding model asked of SemanticCacheEmbeddingChannel (e.g. text-embedding-3-small). Its price bills the embedding call.'),
  ('SemanticCacheEmbeddingTimeoutMs', '3000', 'int', 100, 60000,
   'Longest wait for the embedding of a prompt; past it the request goes upstream as a miss.'),
  ('SemanticCacheDimensions', '1536', 'int', 2, 4000,
   'Dimensions of the embedding model; an HNSW index exists for this size (halfvec, cosine).'),
  ('SemanticCacheHitPriceRatio', '0', 'number', 0, 1,
   'Share of the original answer''s price billed for a cache hit (0 = free; the embedding call is billed regardless).'),
  ('SemanticCacheAuditRate', '0.02', 'number', 0, 1,
   'Share of semantic hits re-asked upstream in the background to measure the false-hit rate (admin.cache_audit).'),
  ('SemanticCacheAuditAgreement', '0.9', 'number', 0, 1,
   'Similarity of the cached and the fresh answer at or above which an audit counts the hit as correct.'),
  -- Budgets (sql/36_budgets.sql)
  ('BudgetTimeZone', 'UTC', 'text', null, null,
   'Time zone of the calendar periods of budgets (a day, a week from Monday, a month start at midnight there), e.g. "UTC" or "Europe/Paris". Changing it moves the next reset; spend already counted stays in its period.'),
  -- Events and webhooks (sql/44_events.sql, sql/45_webhook_delivery.sql)
  ('WebhookMaxAttempts', '8', 'int', 1, 100,
   'Attempts at delivering one event to one webhook endpoint; after the last failed one the delivery is dead (the admin panel can resend it).'),
  ('WebhookBackoffBaseMs', '10000', 'int', 10, 86400000,
   'Wait, in ms, before a failed webhook delivery is tried again; it doubles after every further failure (exponential backoff), up to WebhookBackoffMaxMs.'),
  ('WebhookBackoffMaxMs', '3600000', 'int', 10, 604800000,
   'Longest wait, in ms, between two attempts at one webhook delivery.'),
  ('WebhookBackoffJitterPercent', '20', 'int', 0, 100,
   'Each backoff wait is shortened by a random part of up to this percent, so deliveries that failed together (an endpoint down) do not all come due at the same instant.'),
  ('WebhookTimeoutMs', '10000', 'int', 100, 120000,
   'Deadline, in ms, for a webhook endpoint to answer; no answer in time counts as a failed attempt.'),
  ('WebhookPollIntervalMs', '5000', 'int', 50, 600000,
   'How often, in ms, each gateway looks for webhook deliveries that are due again (new events wake the gateways at once).'),
  ('AllowPrivateWebhooks', 'false', 'bool', null, null,
   'When true, webhook endpoints may be loopback, private, link-local or metadata addresses (an alert relay on the same network). When false they are refused when saved and when sending.'),
  ('WalletLowBalanceMicros', '0', 'int', 0, 9223372036854775807,
   'A wallet whose balance falls below this many micro-USD raises one wallet.low event (once per crossing; checked every minute by the elygate.alerts job). 0 turns the check off; private.wallet_alerts.threshold_micros overrides it per user (admin.wallet_alert_set).'),
  ('EventRetentionDays', '30', 'int', 1, 3650,
   'Events (and their delivery log) older than this many days are deleted by the elygate.alerts job, once no delivery of theirs is still pending.'),
  -- The circuit breaker, probes and channel tests (sql/41_breaker.sql, sql/42_probes.sql)
  ('BreakerWindowSeconds', '60', 'int', 10, 86400,
   'Sliding window, in s, of upstream attempt outcomes the circuit breaker judges each channel on.'),
  ('BreakerMinRequests', '10', 'int', 1, 1000000,
   'Fewest attempts in the window before the breaker may open (one error never disables a channel).'),
  ('BreakerFailurePercent', '50', 'int', 1, 100,
   'The breaker opens (the channel is auto-disabled) when at least this percentage of the window''s attempts failed.'),
  ('BreakerOpenSeconds', '30', 'int', 1, 86400,
   'How long, in s, an open breaker waits before its first recovery probe; doubled after each failed probe.'),
  ('BreakerMaxOpenSeconds', '900', 'int', 1, 604800,
   'Longest wait, in s, between recovery probes of an open breaker.'),
  ('BreakerFailureStatusCodes', '[401, 403, 408, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529]', 'json', null, null,
   'Upstream statuses counted as failures by the breaker (connection errors and timeouts always are).'),
  ('KeyDisableAuthFailures', '3', 'int', 0, 1000000,
   'A key of a multi-key channel answered with 401/403 this many times in the window is disabled (0: never).'),
  ('ProbeTimeoutMs', '30000', 'int', 1000, 600000,
   'Deadline, in ms, for one channel probe or test request, and for each page of a channel''s upstream model list (the panel''s Import models).'),
  ('ChannelTestIntervalMinutes', '0', 'int', 0, 10080,
   'Every enabled channel gets a test request this often, results in admin.channel_probes (0: off).'),
  -- The admin panel's logins and sessions (sql/65_admin_login.sql, sql/66_admin_sessions.sql)
  ('LoginMaxFailures', '5', 'int', 1, 1000,
   'Failed admin-panel logins allowed per username and client address within LoginWindowMinutes before that address is refused (429) for that username. Other addresses are not affected.'),
  ('LoginMaxFailuresPerIp', '30', 'int', 1, 100000,
   'Failed admin-panel logins allowed per client address within LoginWindowMinutes, whatever the username.'),
  ('LoginMaxFailuresGlobal', '300', 'int', 1, 1000000,
   'Failed admin-panel logins allowed within LoginWindowMinutes from all addresses together (a distributed guessing attack) before every login is refused until the window passes. Refusals for throttling are not counted, so one address adds at most LoginMaxFailuresPerIp.'),
  ('LoginWindowMinutes', '15', 'int', 1, 1440,
   'The window, in minutes, over which failed admin-panel logins are counted.'),
  ('SessionTtlHours', '12', 'int', 1, 720,
   'An admin-panel session ends after this many hours without a request.'),
  -- Outbound calls (sql/24_ssrf.sql)
  ('AllowPrivateUpstreams', 'false', 'bool', null, null,
   'When true, channel base URLs may point at loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local and metadata addresses (self-hosted models). When false they are refused when saved and when connecting.')
on conflict (key) do update
  set value_type  = excluded.value_type,
      min_value   = excluded.min_value,
      max_value   = excluded.max_value,
      description = excluded.description;

-- private.option_text(key): the raw value; raises BADOP for a key that does not exist.
create or replace function private.option_text(p_key text)
returns text
language plpgsql stable
-- Invoker's rights and no search_path change (which costs a settings save/restore per call): it is
-- only called from security definer functions, which pin search_path = pg_catalog, pg_temp.
as $$
declare
  v_value text;
begin
  select o.value into v_value from private.options o where o.key = p_key;
  if not found then
    raise exception using errcode = 'BADOP', message = format('Unknown option "%s".', p_key),
      hint = 'List options with: select key, value, description from admin.options;';
  end if;
  return v_value;
end
$$;

comment on function private.option_text(text) is E'The raw text value of an option; raises BADOP when the key is unknown.';

-- private.options_pick(keys...): several raw values as one JSON object {key: text}, in one read;
-- raises BADOP when a key does not exist. For functions that need several options per call.
create or replace function private.options_pick(variadic p_keys text[])
returns jsonb
language plpgsql stable
-- Invoker's rights, no search_path change: see option_text.
as $$
declare
  v_values jsonb;
  v_found integer;
begin
  -- The count comes with the values: the check below is then an expression, not a second query
  -- (this runs once per admission call and per settlement).
  select jsonb_object_agg(o.key, o.value), count(*) into v_values, v_found from private.options o where o.key = any(p_keys);
  if v_found <> cardinality(p_keys) then
    raise exception using errcode = 'BADOP',
      message = format('Unknown option(s): %s.', array_to_string(array(
        select k from unnest(p_keys) k where not coalesce(v_values ? k, false)), ', ')),
      hint = 'List options with: select key, value, description from admin.options;';
  end if;
  return v_values;
end
$$;

comment on function private.options_pick(text[]) is E'Raw text values of several options as one JSON object; raises BADOP when a key is unknown.';

-- private.options_hot: every option's raw value as one JSON object {key: text}, read from the one
-- row private.option_values. For the calls made per request (admission, settlement): one
-- primary-key read, where options_pick aggregates over the registry (about 25 µs against 7 µs of
-- backend CPU per call; docs/performance.md, finding 55). An unknown key reads as null here, so
-- meta.test.ts checks that every key sql/ reads this way is an option.
create or replace function private.options_hot()
returns jsonb
language plpgsql stable
-- (plpgsql: a language sql body with a FROM is planned again at every call)
as $$ begin return (select v.value from private.option_values v where v.id); end $$;

comment on function private.options_hot() is E'Every option''s raw value as one JSON object, from the one row private.option_values.';

-- private.option_values_refresh: private.option_values rewritten from the registry. Run by a
-- statement trigger after every change of private.options (the deploy's upsert above included).
create or replace function private.option_values_refresh()
returns void
language sql
as $$
  insert into private.option_values (id, value)
  select true, coalesce(jsonb_object_agg(o.key, o.value), '{}'::jsonb) from private.options o
  on conflict (id) do update set value = excluded.value
$$;

comment on function private.option_values_refresh() is E'Rewrites the one row of private.option_values from private.options.';

create or replace function private.tg_options__values()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform private.option_values_refresh();
  return null;
end
$$;

comment on function private.tg_options__values() is E'Statement trigger: private.option_values_refresh() after private.options changed.';

create or replace trigger _200_values after insert or update or delete on private.options
  for each statement execute function private.tg_options__values();
create or replace trigger _201_values after truncate on private.options
  for each statement execute function private.tg_options__values();
-- (on a new database the registry's upsert at the top of this file ran before the trigger existed)
select private.option_values_refresh();

create or replace function private.option_int(p_key text)
returns integer
language sql stable
as $$ select private.option_text(p_key)::integer $$;

comment on function private.option_int(text) is E'An integer option.';

-- private.status_codes: an option holding HTTP statuses (RetryableStatusCodes,
-- BreakerFailureStatusCodes: a JSON array of integers, as private.option_value_check makes sure)
-- as an integer array. why not through jsonb: a plain expression, inlined where it is used,
-- where unnesting the JSON is a subquery run once per statement (settlement's breaker ran it
-- once per call).
create or replace function private.status_codes(p_value text)
returns integer[]
language sql immutable parallel safe
as $$ select string_to_array(btrim(p_value, E'[] \t\r\n'), ',')::integer[] $$;

comment on function private.status_codes(text) is E'A JSON array of HTTP statuses (an option\'s text) as integer[]; empty for [].';

-- private.option_value_check: the rules of options whose type ("text") says too little: a value
-- the gateway would not understand must be refused when it is saved, not silently ignored later.
create or replace function private.option_value_check(p_key text, p_value text)
returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_key in ('RetryableStatusCodes', 'BreakerFailureStatusCodes')
     and (jsonb_typeof(p_value::jsonb) is distinct from 'array'
          or exists (select 1 from jsonb_array_elements(p_value::jsonb) e
                      where jsonb_typeof(e) <> 'number' or e::text !~ '^[1-5][0-9][0-9]$')) then
    raise exception using errcode = 'BADOP', column = 'value',
      message = format('Option "%s" must be a JSON array of HTTP statuses (integers from 100 to 599), got "%s".', p_key, left(p_value, 100));
  end if;
  if p_key = 'SemanticCacheScope' and p_value not in ('user', 'group') then
    raise exception using errcode = 'BADOP', column = 'value',
      message = format('Option "SemanticCacheScope" must be "user" or "group", got "%s".', left(p_value, 100));
  end if;
  if p_key = 'ReservationPolicy' and p_value not in ('cap', 'allow') then
    raise exception using errcode = 'BADOP', column = 'value',
      message = format('Option "ReservationPolicy" must be "cap" or "allow", got "%s".', left(p_value, 100));
  end if;
  if p_key = 'CacheMode' and p_value not in ('deterministic', 'always', 'off') then
    raise exception using errcode = 'BADOP', column = 'value',
      message = format('Option "CacheMode" must be "deterministic", "always" or "off", got "%s".', left(p_value, 100));
  end if;
  if p_key = 'BudgetTimeZone' and not exists (select 1 from pg_catalog.pg_timezone_names z where z.name = p_value) then
    raise exception using errcode = 'BADOP', column = 'value',
      message = format('Option "BudgetTimeZone" must be a time zone name such as "UTC" or "Europe/Paris", got "%s".', left(p_value, 100));
  end if;
  if p_key = 'SemanticCacheEmbeddingChannel' and p_value <> ''
     and not exists (select 1 from private.channels c where c.name = p_value) then
    raise exception using errcode = 'BADOP', column = 'value',
      message = format('Option "SemanticCacheEmbeddingChannel" must be the name of a channel (or empty to turn the semantic layer off); there is no channel "%s".', left(p_value, 100));
  end if;
end
$$;

comment on function private.option_value_check(text, text) is E'Raises BADOP when a text option holds a value its readers do not accept (the status-code lists, SemanticCacheScope, ReservationPolicy, CacheMode, BudgetTimeZone, SemanticCacheEmbeddingChannel).';

-- private.option_validate: checks a value against the option's declared type and bounds.
create or replace function private.option_validate(p_key text, p_value text)
returns void
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_opt private.options;
  v_num numeric;
begin
  select * into v_opt from private.options o where o.key = p_key;
  if not found then
    raise exception using errcode = 'BADOP', message = format('Unknown option "%s".', p_key),
      hint = 'List options with: select key, value, description from admin.options;', column = 'key';
  end if;
  if p_value is null then
    raise exception using errcode = 'BADOP', message = format('Option "%s" cannot be null.', p_key), column = 'value';
  end if;
  begin
    case v_opt.value_type
      when 'int' then
        if p_value !~ '^-?[0-9]+$' then raise invalid_text_representation; end if;
        v_num := p_value::bigint;
      when 'number' then v_num := p_value::numeric;
      when 'bool' then perform p_value::boolean;
      when 'json' then perform p_value::jsonb;
      else null;
    end case;
  exception when invalid_text_representation or numeric_value_out_of_range or invalid_parameter_value then
    raise exception using errcode = 'BADOP',
      message = format('Option "%s" must be a %s, got "%s".', p_key, v_opt.value_type, left(p_value, 100)),
      column = 'value';
  end;
  perform private.option_value_check(p_key, p_value);
  if v_num is not null and ((v_opt.min_value is not null and v_num < v_opt.min_value)
                         or (v_opt.max_value is not null and v_num > v_opt.max_value)) then
    raise exception using errcode = 'BADOP',
      message = format('Option "%s" must be between %s and %s, got %s.', p_key,
                       coalesce(v_opt.min_value::text, '-inf'), coalesce(v_opt.max_value::text, 'inf'), p_value),
      column = 'value';
  end if;
end
$$;

comment on function private.option_validate(text, text) is E'Raises BADOP unless the value fits the option''s type and bounds.';

-- Change notification: every gateway LISTENs on elygate_config and reloads its snapshots.
-- /* why */ Statements that change nothing (the circuit breaker's "disable what tripped" runs on
-- every settlement batch and usually matches no row) must not notify: NOTIFY takes a cluster-wide
-- lock at commit. So each event has its own trigger with a transition table, and only a
-- statement that touched rows notifies.
create or replace function private.tg_config__notify()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'TRUNCATE' or exists (select 1 from changed) then
    perform pg_notify('elygate_config', tg_table_name);
  end if;
  return null;
end
$$;

do $$
declare
  v_table text;
begin
  foreach v_table in array array['options', 'channels', 'channel_keys'] loop
    execute format('create or replace trigger _900_notify_insert after insert on private.%I
                      referencing new table as changed for each statement execute function private.tg_config__notify()', v_table);
    execute format('create or replace trigger _900_notify_update after update on private.%I
                      referencing new table as changed for each statement execute function private.tg_config__notify()', v_table);
    execute format('create or replace trigger _900_notify_delete after delete on private.%I
                      referencing old table as changed for each statement execute function private.tg_config__notify()', v_table);
    execute format('create or replace trigger _900_notify_truncate after truncate on private.%I
                      for each statement execute function private.tg_config__notify()', v_table);
  end loop;
end
$$;
