import { fail, isActionFailure, redirect } from '@sveltejs/kit';
import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { channelArgs } from '$lib/server/channels';
import { testChannel } from '$lib/server/channel-test';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => ({
    channels: [...(await tx`select id, name, type, base_url, models, groups, priority, weight, status, status_reason, status_changed_at, key_count, version from admin.channels order by priority desc, id`)],
    groups: (await tx`select name from admin.groups order by name`).map((g) => g.name as string),
  }));

export const actions: Actions = {
  create: async ({ request, locals }) => {
    const f = await request.formData();
    const r = await act(locals, async (tx) => {
      const [{ c }] = await tx`select admin.channel_create(${tx.json(channelArgs(f, true) as never)}) as c`;
      return c;
    });
    if (isActionFailure(r)) return fail(r.status, { ...(r.data as object), values: Object.fromEntries(f) });
    redirect(303, `/channels?created=${(r as any).id}`);
  },
  toggle: async ({ request, locals }) => {
    const f = await request.formData();
    const enable = f.get('enable') === '1';
    return act(locals, async (tx) => {
      await tx`select admin.channel_update(${Number(f.get('id'))}, ${tx.json({ status: enable ? 'enabled' : 'manually_disabled', status_reason: enable ? null : 'disabled in the admin panel' } as never)})`;
      return { toggled: true };
    });
  },
  test: async ({ request, locals }) => {
    const f = await request.formData();
    const id = Number(f.get('id'));
    // The SQL gate first: a non-admin session fails here with 403 before anything is called.
    const ch = await act(locals, async (tx) => (await tx`select id, models from admin.channels where id = ${id}`)[0]);
    if (!ch || !('models' in (ch as any))) return { test: { id, ok: false, model: '', error: 'No such channel.' } };
    const model = String(f.get('model') || (ch as any).models[0] || '');
    if (!model) return { test: { id, ok: false, model, error: 'The channel lists no model to test with.' } };
    return { test: { id, ...(await testChannel(id, model)) } };
  },
};
