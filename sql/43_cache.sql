-- Semantic cache (DESIGN §4): an exact layer (hash of the canonical request) and a semantic layer
-- (cosine similarity of the last user message's embedding), the latter only among entries whose
-- context (model, system prompt, earlier turns, tools, response format, sampling parameters)
-- hashes identically. Entries are scoped to a tenant that is never empty. The gateway computes
-- the hashes and the embedding; every decision (enabled, scope, threshold, TTL, price of a hit)
-- is made here.

-- The HNSW index for the configured size (an expression index, so entries of another size, e.g.
-- from before a model change, simply are not found by it). Created here because its shape follows
-- a setting; `create index if not exists` keeps this idempotent.
do $$
declare
  v_dims integer := (select value::integer from private.options where key = 'SemanticCacheDimensions');
begin
  execute format('create index if not exists cache_entries_embedding_%1$s_idx on private.cache_entries
                    using hnsw ((embedding::public.halfvec(%1$s)) public.halfvec_cosine_ops) where public.vector_dims(embedding) = %1$s', v_dims);
end
$$;

-- private.cache_scope: the tenant filter. Never null, never shared across users unless the
-- operator chose group scope. (The three-argument form takes the SemanticCacheScope option's
-- value, for callers that read the options already.)
create or replace function private.cache_scope(p_user_id bigint, p_group text, p_scope_option text)
returns text
language sql immutable
as $$
  select case when p_scope_option = 'group' then 'group:' || p_group else 'user:' || p_user_id::text end
$$;

comment on function private.cache_scope(bigint, text, text) is E'The cache tenant of a request, given the SemanticCacheScope option: user:<id> (default) or group:<name>.';

create or replace function private.cache_scope(p_user_id bigint, p_group text)
returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select private.cache_scope(p_user_id, p_group, private.option_text('SemanticCacheScope'))
$$;

comment on function private.cache_scope(bigint, text) is E'The cache tenant of a request: user:<id> (default) or group:<name> (SemanticCacheScope).';

-- private.cache_eligibility: THE rule of which requests the response cache serves and stores
-- (one place: the gateway only reads the facts off the request). p_mode is the request's cache
-- mode (private.cache_plan: the key's cache_mode, else the model's, else the CacheMode option);
-- p_sampling the facts the gateway sends with the cache key (gateway/src/cache.ts):
--   {"temperature": as given or null, "seed": as given or null, "n": as given or null,
--    "logprobs": as given or null, "tools": how many tools (and legacy functions) are offered,
--    "tool_choice": as given (or the legacy function_call) or null}
-- Returns null when the request may be cached, else the reason it is not (the gateway's header
-- says "x-elygate-cache: bypass; reason=<it>"):
--   off       the mode is off
--   choices   n is not 1: the cache keeps one answer (whatever the mode)
--   logprobs  log probabilities were asked: the cache keeps none (whatever the mode)
--   tools     deterministic mode, and the model may call a tool: the gateway cannot tell a tool that
--             reads from one that changes state (sends a mail, writes a file), and a replayed tool
--             call would make the client do it again without the model having been asked. A request
--             whose tool_choice is "none" (no call possible) is not held back by its tools.
--   sampling  deterministic mode, and the answer is sampled: temperature not given (providers
--             default to about 1) or above 0, and no seed. A chat UI's "regenerate" is such a request.
-- A descriptor without sampling facts (a gateway of the last release) counts as sampled.
create or replace function private.cache_eligibility(p_mode text, p_sampling jsonb)
returns text
language sql immutable
as $$
  select case
           when p_mode = 'off' then 'off'
           when coalesce(p_sampling -> 'n', 'null') not in ('null', '1') then 'choices'
           when p_sampling -> 'logprobs' = 'true' then 'logprobs'
           when p_mode = 'always' then null
           when coalesce((p_sampling ->> 'tools')::integer, 0) > 0
                and coalesce(p_sampling -> 'tool_choice', 'null') <> '"none"' then 'tools'
           when coalesce(p_sampling -> 'temperature', 'null') <> '0'
                and coalesce(p_sampling -> 'seed', 'null') = 'null' then 'sampling'
         end
$$;

comment on function private.cache_eligibility(text, jsonb) is
  E'Null when a request may be served from and stored in the response cache under cache mode p_mode (deterministic | always | off), given its sampling facts; else the reason it may not: off, choices, logprobs, tools, sampling.';

-- private.cache_plan: called by admission (private.admit_prepare), with the options it read
-- (private.options_hot) and the model's row (its cache_enabled and cache_mode). The exact
-- lookup, and what the gateway needs for the semantic one. Returns {"result": "bypass", "reason"}
-- when the cache does not apply to this request: switched off (option, key or model:
-- reason "off") or not eligible (private.cache_eligibility).
create or replace function private.cache_plan(p_opt jsonb, p_cache jsonb, p_key private.api_keys, p_group text,
                                              p_model text, p_model_row private.models)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_hit record;
  v_channel_id bigint;
  v_channel_version integer;
  v_embed_model text := nullif(p_opt ->> 'SemanticCacheEmbeddingModel', '');
  v_embed_channel text := nullif(p_opt ->> 'SemanticCacheEmbeddingChannel', '');
  v_reason text;
begin
  if p_cache is null then
    return null;
  end if;
  if not (p_opt ->> 'SemanticCacheEnabled')::boolean or not p_key.cache_enabled
     or not coalesce(p_model_row.cache_enabled, true) then
    v_reason := 'off';
  else
    -- The key's mode, else the model's, else the option's.
    v_reason := private.cache_eligibility(coalesce(p_key.cache_mode, p_model_row.cache_mode, p_opt ->> 'CacheMode'),
                                          p_cache -> 'sampling');
  end if;
  if v_reason is not null then
    return jsonb_build_object('result', 'bypass', 'reason', v_reason);
  end if;
  select e.id, e.answer, e.usage into v_hit
    from private.cache_entries e
   where e.scope = private.cache_scope(p_key.user_id, p_group, p_opt ->> 'SemanticCacheScope')
     and e.model = p_model and e.exact_hash = decode(p_cache ->> 'exact', 'hex')
     and e.expires_at > now()
   order by e.id desc
   limit 1;
  if found then
    return jsonb_build_object('result', 'exact', 'entry_id', v_hit.id, 'similarity', 1, 'answer', v_hit.answer, 'usage', v_hit.usage);
  end if;
  -- The semantic layer needs an embedding channel and model, and a request that asks for it.
  if v_embed_channel is not null and v_embed_model is not null and coalesce((p_cache ->> 'semantic')::boolean, false) then
    select c.id, c.version into v_channel_id, v_channel_version
      from private.channels c where c.name = v_embed_channel and c.status = 'enabled';
  end if;
  return jsonb_build_object(
    'result', 'miss',
    'semantic', case when v_channel_id is not null
                     then jsonb_build_object('channel_id', v_channel_id, 'version', v_channel_version, 'model', v_embed_model,
                                             'dimensions', (p_opt ->> 'SemanticCacheDimensions')::integer)
                end,
    'store', true);
end
$$;

comment on function private.cache_plan(jsonb, jsonb, private.api_keys, text, text, private.models) is
  E'Admission''s cache decision: bypass with its reason (switched off, or not eligible under the request''s cache mode: private.cache_eligibility), else the exact-layer lookup, and the embedding channel/model for the semantic layer when it applies. Takes the options admission read (private.options_hot).';

-- gateway.cache_lookup: the one follow-up call after the embedding. Nearest entry of the same
-- tenant, model and context; a hit when its similarity reaches SemanticCacheThreshold. Records
-- the result on the request's admission (settlement copies it to the request log).
create or replace function gateway.cache_lookup(p_request_id uuid, p_context_hash bytea, p_embedding text)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_req record;
  v_dims integer := private.option_int('SemanticCacheDimensions');
  v_threshold real := private.option_text('SemanticCacheThreshold')::real;
  v_best record;
begin
  select a.user_id, a.group_name, a.model into v_req from private.admissions a where a.id = p_request_id;
  if not found then
    return null;
  end if;
  -- Iterative scan: with a selective tenant filter, HNSW keeps scanning until it finds rows of
  -- this tenant instead of returning the nearest neighbours of everyone else, filtered to nothing.
  perform set_config('hnsw.iterative_scan', 'relaxed_order', true);
  execute format(
    'select e.id, (1 - (e.embedding::public.halfvec(%1$s) operator(public.<=>) $1::public.halfvec(%1$s)))::real as similarity,
            e.answer, e.usage
       from private.cache_entries e
      where public.vector_dims(e.embedding) = %1$s and e.scope = $2 and e.model = $3 and e.context_hash = $4
        and e.expires_at > now()
      order by e.embedding::public.halfvec(%1$s) operator(public.<=>) $1::public.halfvec(%1$s)
      limit 1', v_dims)
    into v_best
    using p_embedding, private.cache_scope(v_req.user_id, v_req.group_name), v_req.model, p_context_hash;
  if v_best.id is null or v_best.similarity < v_threshold then
    update private.admissions set cache_similarity = v_best.similarity where id = p_request_id;
    return jsonb_build_object('result', 'miss', 'best_similarity', v_best.similarity, 'threshold', v_threshold);
  end if;
  update private.admissions set cache = 'semantic', cache_similarity = v_best.similarity, cache_entry_id = v_best.id
   where id = p_request_id;
  return jsonb_build_object('result', 'semantic', 'entry_id', v_best.id, 'similarity', v_best.similarity,
                            'threshold', v_threshold, 'answer', v_best.answer, 'usage', v_best.usage,
                            'audit', random() < private.option_text('SemanticCacheAuditRate')::real);
end
$$;

comment on function gateway.cache_lookup(uuid, bytea, text) is
  E'Semantic-layer lookup after the gateway embedded the last user message: the nearest live entry of the same tenant, model and context; a hit at or above SemanticCacheThreshold.';

-- gateway.cache_audit_record: results of background re-asks of semantic hits (a batch).
create or replace function gateway.cache_audit_record(p_audits jsonb)
returns integer
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  with ins as (
    insert into private.cache_audits (request_id, entry_id, model, similarity, threshold, agreement, agree, error)
    select a.request_id, a.entry_id, a.model, a.similarity, a.threshold, a.agreement,
           case when a.agreement is null then null
                else a.agreement >= private.option_text('SemanticCacheAuditAgreement')::real end,
           a.error
      from jsonb_to_recordset(p_audits) as a(request_id uuid, entry_id bigint, model text, similarity real,
                                             threshold real, agreement real, error text)
    returning 1)
  select count(*)::integer from ins
$$;

comment on function gateway.cache_audit_record(jsonb) is
  E'Records false-hit audits: for a semantic hit, how similar a fresh upstream answer was to the cached one.';

-- private.cache_store: entries written by settlement for complete, single-choice answers.
create or replace function private.cache_store(p_rows jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- plpgsql, not sql: the insert's plan is cached for the session (it runs for every settlement batch).
as $$
declare
  v_expires timestamptz := now() + make_interval(secs => private.option_int('SemanticCacheTtlSeconds'));
  v_n integer;
begin
  insert into private.cache_entries (expires_at, scope, model, exact_hash, context_hash, prompt, embedding, answer, usage, request_id)
  select v_expires,
         private.cache_scope(s.user_id, s.group_name), s.model, decode(s.exact, 'hex'), decode(s.context, 'hex'),
         coalesce(s.prompt, ''), s.embedding::public.halfvec, s.answer, s.usage, s.request_id
    from jsonb_to_recordset(p_rows) as s(user_id bigint, group_name text, model text, exact text, context text,
                                         prompt text, embedding text, answer jsonb, usage jsonb, request_id uuid)
   where s.exact ~ '^[0-9a-f]{64}$' and s.context ~ '^[0-9a-f]{64}$';
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

-- private.cache_expire: the cache-expiry job; bounded batches, never an unbounded DELETE.
create or replace function private.cache_expire(p_now timestamptz default now(), p_limit integer default 20000)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_n integer;
begin
  delete from private.cache_entries where id in (
    select id from private.cache_entries where expires_at <= p_now order by expires_at limit p_limit);
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

comment on function private.cache_expire(timestamptz, integer) is E'Deletes up to p_limit expired cache entries (the elygate.cache_expiry job).';
