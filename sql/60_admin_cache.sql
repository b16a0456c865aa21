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

-- Hit rates per UTC day and model: private.usage_by_dim by the day for the whole days it holds, by
-- the hour up to the rollup's cut (the hour in progress too, as far as the cut: counts add up), the
-- request log after it; channel tests left out, as on the dashboard. The cut is as in
-- admin.dashboard (sql/57_admin_usage.sql): the log half is minutes of traffic, not up to an hour.
/* why a function under the view: private.usage_by_dim is a table of the migration in progress, and
   a view is resolved when sql/ is applied, which happens once before that migration runs. */
create or replace function admin.cache_hit_rates_by_day()
returns table (day date, model text, cacheable bigint, exact_hits bigint, semantic_hits bigint, misses bigint, bypassed bigint, hit_rate numeric)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  v_since timestamptz;
  v_days_to timestamptz;
begin
  /* why the bounds first, as values: inside one statement they were parameters the planner could
     not see, and it read today's whole request-log partition instead of its last minutes through
     the index (docs/performance.md, "Admin pages with real traffic"). */
  select case when max(l.covered_to) > now() then date_trunc('hour', now()) else coalesce(max(l.covered_to), '-infinity') end
    into v_since
    from (select l.covered_to from private.latency_hourly l order by l.hour desc limit 1) l;
  v_days_to := least(coalesce((select d.at + interval '24 hours' from private.usage_by_dim d where d.period = 'day'
                                 order by d.period, d.at desc limit 1), '-infinity'),
                     date_trunc('day', v_since, 'UTC'));
  return query
    with h as (
      select d.at as hour, d.model, d.cache_exact as e, d.cache_semantic as s, d.cache_miss as m, d.cache_bypass as x
        from private.usage_by_dim d
       where d.dim = 'model' and ((d.period = 'day' and d.at < v_days_to)
                                  or (d.period = 'hour' and d.at >= v_days_to and d.at < v_since))
      union all
      select r.created_at, r.model, (r.cache is not distinct from 'exact')::integer, (r.cache is not distinct from 'semantic')::integer,
             (r.cache is not distinct from 'miss')::integer, (r.cache is not distinct from 'bypass')::integer
        from private.requests r
       where r.created_at >= v_since and not exists (select 1 from admin.internal_users i where i.id = r.user_id)
    )
    select (h.hour at time zone 'UTC')::date as day, h.model,
           sum(h.e + h.s + h.m + h.x)::bigint as cacheable,
           sum(h.e)::bigint as exact_hits,
           sum(h.s)::bigint as semantic_hits,
           sum(h.m)::bigint as misses,
           sum(h.x)::bigint as bypassed,
           round(sum(h.e + h.s)::numeric / nullif(sum(h.e + h.s + h.m + h.x), 0), 4) as hit_rate
      from h group by 1, 2;
end
$$;

comment on function admin.cache_hit_rates_by_day() is
  E'Cache outcomes per UTC day and model (private.usage_by_dim by the day, then by the hour to the rollup''s cut, then the log; channel tests left out). Read through admin.cache_hit_rates.';

create or replace view admin.cache_hit_rates as select * from admin.cache_hit_rates_by_day();

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
