import type { PageServerLoad } from './$types';
import { redirect } from '@sveltejs/kit';
import { run } from '$lib/server/db';

const RANGES: Record<string, number> = { '24h': 24, '7d': 24 * 7, '30d': 24 * 30 };

interface Top {
  id: string | number;
  requests: number;
  tokens: number;
  cost_micros: number;
}
interface Dashboard {
  totals: { requests: number; errors: number; tokens: number; cost_micros: number; cache_rate: number | null };
  models: Top[];
  keys: Top[];
  channels: Top[];
  series: { hour: string; requests: number; errors: number; p50_ms: number | null; p95_ms: number | null }[];
  p50_ms: number | null;
  p95_ms: number | null;
}

export const load: PageServerLoad = async ({ locals, url }) => {
  // The panel's home is the dashboard for an admin and one's own page for everyone else.
  if (locals.user && locals.user.role !== 'admin') redirect(303, '/me');
  const range = RANGES[url.searchParams.get('range') ?? ''] ? url.searchParams.get('range')! : '24h';
  const hours = RANGES[range];
  return run(locals, async (tx) => {
    const since = new Date(Date.now() - hours * 3600_000);
    // One call: rolled-up hours from the rollup tables, the rest from the log (see admin.dashboard).
    const [{ d }] = (await tx`select admin.dashboard(${since}) as d`) as unknown as [{ d: Dashboard }];
    const keyNames = await tx`select id, key_prefix, name, username from admin.api_keys where id = any(${d.keys.map((k) => Number(k.id))}::bigint[])`;
    const chNames = await tx`select id, name from admin.channels where id = any(${d.channels.map((c) => Number(c.id))}::bigint[])`;
    // The range is whole hours, from the hour `since` falls in to the current one.
    const from = new Date(Math.floor(since.getTime() / 3600_000) * 3600_000);
    return {
      range,
      totals: { ...d.totals, p50: d.p50_ms, p95: d.p95_ms },
      series: d.series.map((s) => ({ ...s, hour: new Date(s.hour).toISOString() })),
      // The chart's time axis: one slot per hour from the range's first hour to the current one.
      axis: { from: from.toISOString(), slots: Math.floor((Date.now() - from.getTime()) / 3600_000) + 1 },
      models: d.models,
      keys: d.keys.map((k) => ({ ...k, label: keyNames.find((n) => Number(n.id) === Number(k.id)) ?? null })),
      channels: d.channels.map((c) => ({ ...c, name: chNames.find((n) => Number(n.id) === Number(c.id))?.name ?? `#${c.id}` })),
      cacheRate: d.totals.cache_rate,
    };
  });
};
