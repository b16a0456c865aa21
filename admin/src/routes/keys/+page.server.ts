import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { compact, keyLimits } from '$lib/server/forms';
import { countCapped, keyset, pageOf } from '$lib/server/paging';
import { BIGINT_ID, likePattern, searchOf } from '$lib/server/search';

export const load: PageServerLoad = async ({ locals, url }) =>
  run(locals, async (tx) => {
    const user = url.searchParams.get('user');
    const q = searchOf(url);
    const k = keyset(tx, url, {
      alias: 'k',
      relation: tx`admin.api_keys`,
      sorts: { id: { col: 'id' }, used: { col: 'used_micros' }, expires: { col: 'expires_at', nulls: 'infinity' } },
      sort: ['id', 'desc'],
      id: BIGINT_ID,
      limit: 50,
    });
    const from = tx`from admin.api_keys k where ${user ? tx`k.username = ${user}` : tx`true`}
      and ${q ? tx`(k.name ilike ${likePattern(q)} or k.key_prefix ilike ${likePattern(q)} or k.username ilike ${likePattern(q)})` : tx`true`}`;
    const rows = await tx`select * ${from} and ${k.cond} order by ${k.order} limit ${k.limit + 1}`;
    return {
      ...(await pageOf(k, [...rows] as any[], countCapped(tx, tx`select 1 ${from}`))),
      users: (await tx`select username from admin.users order by username`).map((u) => u.username as string),
      filter: user,
      q,
    };
  });

export const actions: Actions = {
  create: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const args = compact({ username: String(f.get('username') ?? ''), ...keyLimits(f) });
      const [{ k }] = await tx`select admin.key_create(${tx.json(args as never)}) as k`;
      return { created: k as { id: number; key: string; key_prefix: string } };
    });
  },
  revoke: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ ok }] = await tx`select admin.key_revoke(${Number(f.get('id'))}) as ok`;
      return { done: ok ? `Key #${Number(f.get('id'))} revoked: requests with it now get 401.` : `Key #${Number(f.get('id'))} was not active.` };
    });
  },
};
