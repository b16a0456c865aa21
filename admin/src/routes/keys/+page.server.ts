import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { compact, keyLimits } from '$lib/server/forms';

export const load: PageServerLoad = async ({ locals, url }) =>
  run(locals, async (tx) => {
    const user = url.searchParams.get('user');
    return {
      keys: [...(await tx`select * from admin.api_keys ${user ? tx`where username = ${user}` : tx``} order by id desc limit 500`)],
      users: (await tx`select username from admin.users order by username`).map((u) => u.username as string),
      filter: user,
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
      await tx`select admin.key_revoke(${Number(f.get('id'))})`;
      return { revoked: Number(f.get('id')) };
    });
  },
};
