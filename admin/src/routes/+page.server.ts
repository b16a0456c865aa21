import type { PageServerLoad } from './$types';
import { redirect } from '@sveltejs/kit';
import { run } from '$lib/server/db';

const RANGES: Record<string, number> = { '24h': 24, '7d': 24 * 7, '30d': 24 * 30 };

export const load: PageServerLoad = async ({ locals, url }) => {
  // The panel's home is the dashboard for an admin and one's own page for everyone else.
  if (locals.user && locals.user.role !== 'admin') redirect(303, '/me');
  const range = RANGES[url.searchParams.get('range') ?? ''] ? url.searchParams.get('range')! : '24h';
  const hours = RANGES[range];
  return run(locals, async (tx) => {
    const since = new Date(Date.now() - hours * 3600_000);
    const [totals] = await tx`
      select coalesce(sum(requests), 0)::bigint as requests, coalesce(sum(errors), 0)::bigint as errors,
             coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint as tokens, coalesce(sum(cost_micros), 0)::bigint as cost_micros
        from admin.usage_hourly where hour >= date_trunc('hour', ${since}::timestamptz)`;
    const series = await tx`
      select hour, requests, errors, p50_ms, p95_ms from admin.latency_hourly
       where hour >= date_trunc('hour', ${since}::timestamptz) order by hour`;
    const [lat] = await tx`
      select percentile_cont(0.5) within group (order by latency_ms) as p50, percentile_cont(0.95) within group (order by latency_ms) as p95
        from admin.requests where created_at >= ${since} and status <> 'pending'`;
    const top = (dim: string) => tx`
      select ${tx(dim)} as id, sum(requests)::bigint as requests, sum(prompt_tokens + completion_tokens)::bigint as tokens, sum(cost_micros)::bigint as cost_micros
        from admin.usage_hourly where hour >= date_trunc('hour', ${since}::timestamptz) and ${tx(dim)} is not null
       group by 1 order by requests desc limit 5`;
    const [models, keys, channels] = await Promise.all([top('model'), top('key_id'), top('channel_id')]);
    const keyNames = await tx`select id, key_prefix, name, username from admin.api_keys where id = any(${keys.map((k) => Number(k.id))}::bigint[])`;
    const chNames = await tx`select id, name from admin.channels where id = any(${channels.map((c) => Number(c.id))}::bigint[])`;
    const [features] = await tx`select cache from admin.features`;
    const [cache] = features?.cache
      ? await tx`select sum(exact_hits + semantic_hits)::float8 / nullif(sum(cacheable), 0) as rate from admin.cache_hit_rates where day >= (${since}::timestamptz at time zone 'UTC')::date`
      : [{ rate: null }];
    return {
      range,
      totals: { ...totals, p50: lat?.p50 ?? null, p95: lat?.p95 ?? null },
      series: series.map((r) => ({ ...r, hour: r.hour.toISOString() })),
      models: [...models],
      keys: keys.map((k) => ({ ...k, label: keyNames.find((n) => Number(n.id) === Number(k.id)) ?? null })),
      channels: channels.map((c) => ({ ...c, name: chNames.find((n) => Number(n.id) === Number(c.id))?.name ?? `#${c.id}` })),
      cacheAvailable: !!features?.cache,
      cacheRate: cache?.rate ?? null,
    };
  });
};
