import type { PageServerLoad } from './$types';
import { run } from '$lib/server/db';
import { countCapped, keyset, pageOf } from '$lib/server/paging';
import { parseFilters, where } from './filters';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const load: PageServerLoad = async ({ locals, url }) => {
  const params = Object.fromEntries(url.searchParams);
  const { filters, problems } = parseFilters(url.searchParams);
  if (problems.length) return { rows: [], problems, params, page: null };
  return run(locals, async (tx) => {
    const k = keyset(tx, url, {
      alias: 'r',
      relation: tx`admin.requests`,
      sorts: { time: { col: 'created_at' }, cost: { col: 'cost_micros', nulls: -1 }, latency: { col: 'latency_ms', nulls: -1 }, tokens: { col: 'total_tokens', nulls: -1 } },
      sort: ['time', 'desc'],
      id: UUID,
      limit: 100,
    });
    const from = tx`from admin.requests r left join admin.users u on u.id = r.user_id where ${where(tx, filters)}`;
    const rows = await tx`
      select r.id, r.created_at, r.status, r.http_status, r.model, r.upstream_model, r.stream, r.key_id, r.channel_id,
             -- The panel's channel tests run as internal users, which admin.users leaves out.
             coalesce(u.username, case when r.group_name like 'channel-test.%' then 'channel test' end) as username,
             r.total_tokens, r.cost_micros, r.latency_ms, r.error_code, r.cache, r.cache_similarity
        ${from} and ${k.cond}
       order by ${k.order} limit ${k.limit + 1}`;
    return { ...(await pageOf(k, [...rows] as any[], countCapped(tx, tx`select 1 ${from}`))), problems, params };
  });
};
