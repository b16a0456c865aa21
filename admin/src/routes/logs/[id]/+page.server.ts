import { error } from '@sveltejs/kit';
import type { PageServerLoad } from './$types';
import { run } from '$lib/server/db';

export const load: PageServerLoad = async ({ locals, params }) =>
  run(locals, async (tx) => {
    if (!/^[0-9a-f-]{36}$/i.test(params.id)) error(404, { message: 'Not a request id.' });
    const [r] = await tx`select r.*, coalesce(u.username, case when r.group_name like 'channel-test.%' then 'channel test' end) as username from admin.requests r left join admin.users u on u.id = r.user_id where r.id = ${params.id}::uuid`;
    if (!r) error(404, { message: `No request ${params.id}.` });
    const [receipt] = await tx`select * from admin.receipts where request_id = ${params.id}::uuid`;
    const routes = await tx`select step, kind, channel_id, channel_name, upstream_model, key_ordinal, status, ms, detail, served, fallback
                              from admin.request_routes where request_id = ${params.id}::uuid order by step`;
    return { r: { ...r }, receipt: receipt ? { ...receipt } : null, routes: [...routes] };
  });
