import type { Actions, PageServerLoad } from './$types';
import { fail, isActionFailure } from '@sveltejs/kit';
import { act, run } from '$lib/server/db';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => ({ options: [...(await tx`select * from admin.options order by key`)] }));

export const actions: Actions = {
  default: async ({ request, locals }) => {
    const f = await request.formData();
    const key = String(f.get('key'));
    const value = f.get('bool') === '1' ? (f.get('value') ? 'true' : 'false') : String(f.get('value') ?? '');
    const r = await act(locals, async (tx) => {
      await tx`select admin.option_set(${key}, ${value})`;
      return { done: key };
    });
    if (isActionFailure(r)) return fail(r.status, { ...(r.data as object), key });
    return { ...(r as object), key };
  },
};
