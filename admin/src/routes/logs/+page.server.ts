import type { PageServerLoad } from './$types';
import { run } from '$lib/server/db';
import { where } from './filters';

export const load: PageServerLoad = async ({ locals, url }) =>
  run(locals, async (tx) => {
    const rows = await tx`
      select r.id, r.created_at, r.status, r.http_status, r.model, r.upstream_model, r.stream, r.key_id, r.channel_id,
             u.username, r.total_tokens, r.cost_micros, r.latency_ms, r.error_code
        from admin.requests r left join admin.users u on u.id = r.user_id
       where ${where(tx, url.searchParams)}
       order by r.created_at desc limit 200`;
    return { rows: [...rows], params: Object.fromEntries(url.searchParams) };
  });
