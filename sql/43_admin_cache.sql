-- The cache, for operators: what is in it, how often it hits, how often a semantic hit was wrong.

create or replace view admin.cache_entries as
  select e.id, e.created_at, e.expires_at, e.scope, e.model, left(e.prompt, 200) as prompt,
         e.embedding is not null as has_embedding, e.request_id
    from private.cache_entries e;

create or replace view admin.cache_stats as
  select e.model, count(*) as entries, count(*) filter (where e.expires_at > now()) as live,
         count(*) filter (where e.embedding is not null) as with_embedding, count(distinct e.scope) as tenants,
         sum(pg_column_size(e.*)) as bytes
    from private.cache_entries e group by 1;

-- Hit rates per UTC day and model, from the request log.
create or replace view admin.cache_hit_rates as
  select (r.created_at at time zone 'UTC')::date as day, r.model,
         count(*) filter (where r.cache is not null) as cacheable,
         count(*) filter (where r.cache = 'exact') as exact_hits,
         count(*) filter (where r.cache = 'semantic') as semantic_hits,
         count(*) filter (where r.cache = 'miss') as misses,
         count(*) filter (where r.cache = 'bypass') as bypassed,
         round(count(*) filter (where r.cache in ('exact', 'semantic'))::numeric
               / nullif(count(*) filter (where r.cache is not null), 0), 4) as hit_rate
    from private.requests r group by 1, 2;

-- The audited false-hit rate: per model and threshold, how many re-asked semantic hits disagreed.
create or replace view admin.cache_audit as
  select a.model, a.threshold, count(*) as audits, count(*) filter (where a.agree) as agreed,
         count(*) filter (where not a.agree) as disagreed, count(*) filter (where a.agree is null) as failed,
         round(count(*) filter (where not a.agree)::numeric / nullif(count(*) filter (where a.agree is not null), 0), 4) as false_hit_rate,
         round(avg(a.similarity)::numeric, 4) as avg_prompt_similarity, round(avg(a.agreement)::numeric, 4) as avg_answer_agreement
    from private.cache_audits a group by 1, 2;

-- admin.cache_purge: empties the cache, or the part of it that matches {"model", "scope"}.
create or replace function admin.cache_purge(p_args jsonb default '{}')
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_n integer;
begin
  perform private.args_check(p_args, array['model', 'scope', 'user_id'], 'admin.cache_purge');
  delete from private.cache_entries e
   where (p_args ->> 'model' is null or e.model = p_args ->> 'model')
     and (p_args ->> 'scope' is null or e.scope = p_args ->> 'scope')
     and (p_args ->> 'user_id' is null or e.scope = 'user:' || (p_args ->> 'user_id'));
  get diagnostics v_n = row_count;
  return v_n;
end
$$;
comment on function admin.cache_purge(jsonb) is
  E'Deletes cache entries: all of them, or those of {"model"}, {"scope": "user:7" | "group:vip"} or {"user_id"}. Returns how many.';
