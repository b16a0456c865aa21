import { error, redirect } from '@sveltejs/kit';
import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { channelArgs } from '$lib/server/channels';

export const load: PageServerLoad = async ({ locals, params }) =>
  run(locals, async (tx) => {
    if (!/^\d{1,18}$/.test(params.id)) error(404, { message: `No channel "${params.id.slice(0, 40)}": channel ids are whole numbers.` });
    const [c] = await tx`select * from admin.channels where id = ${Number(params.id)}`;
    if (!c) error(404, { message: `No channel #${params.id}.` });
    // The breaker's view of the channel (admin.channel_health) and its last probes and tests.
    const [health] = await tx`select * from admin.channel_health where id = ${c.id}`;
    const probes = await tx`select * from admin.channel_probes where channel_id = ${c.id} order by requested_at desc, id desc limit 20`;
    return { channel: { ...c }, health: health ? { ...health } : null, probes: [...probes], groups: (await tx`select name from admin.groups order by name`).map((g) => g.name as string) };
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
