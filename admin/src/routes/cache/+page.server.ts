import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => {
    return {
      rates: [...(await tx`select * from admin.cache_hit_rates where day >= current_date - 30 order by day desc, model limit 100`)],
      stats: [...(await tx`select * from admin.cache_stats order by entries desc`)],
      entries: [...(await tx`select * from admin.cache_entries order by created_at desc limit 50`)],
    };
  });

export const actions: Actions = {
  purge: async ({ request, locals }) => {
    const f = await request.formData();
    const model = String(f.get('model') ?? '').trim();
    return act(locals, async (tx) => {
      const [{ n }] = await tx`select admin.cache_purge(${tx.json((model ? { model } : {}) as never)}) as n`;
      return { done: `Purged ${n} entr${n === 1 ? 'y' : 'ies'}.` };
    });
  },
};
