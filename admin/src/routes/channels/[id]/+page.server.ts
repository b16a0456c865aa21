import { error, redirect } from '@sveltejs/kit';
import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { channelArgs } from '$lib/server/channels';

export const load: PageServerLoad = async ({ locals, params }) =>
  run(locals, async (tx) => {
    if (!/^\d{1,18}$/.test(params.id)) error(404, { message: `No channel "${params.id.slice(0, 40)}": channel ids are whole numbers.` });
    const [c] = await tx`select * from admin.channels where id = ${Number(params.id)}`;
    if (!c) error(404, { message: `No channel #${params.id}.` });
    return { channel: { ...c }, groups: (await tx`select name from admin.groups order by name`).map((g) => g.name as string) };
  });

export const actions: Actions = {
  default: async ({ request, locals, params }) => {
    const f = await request.formData();
    const r = await act(locals, async (tx) => {
      await tx`select admin.channel_update(${Number(params.id)}, ${tx.json(channelArgs(f, false) as never)})`;
      return null;
    });
    if (r) return r;
    redirect(303, '/channels');
  },
};
