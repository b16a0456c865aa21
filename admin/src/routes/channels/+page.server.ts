import { fail, isActionFailure, redirect } from '@sveltejs/kit';
import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { channelArgs } from '$lib/server/channels';
import { testChannel } from '$lib/server/channel-test';
import { upstreamModels } from '$lib/server/channel-models';
import { countCapped, keyset, pageOf } from '$lib/server/paging';
import { BIGINT_ID, likePattern, searchOf } from '$lib/server/search';

export const load: PageServerLoad = async ({ locals, url }) =>
  run(locals, async (tx) => {
    const q = searchOf(url);
    const k = keyset(tx, url, {
      alias: 'c',
      relation: tx`admin.channels`,
      sorts: { priority: { col: 'priority' }, id: { col: 'id' }, name: { col: 'name' }, status: { col: 'status' } },
      sort: ['priority', 'desc'],
      id: BIGINT_ID,
      limit: 50,
    });
    const from = tx`from admin.channels c where ${q ? tx`(c.name ilike ${likePattern(q)} or c.base_url ilike ${likePattern(q)} or array_to_string(c.models, ' ') ilike ${likePattern(q)})` : tx`true`}`;
    const rows = await tx`select id, name, type, base_url, models, groups, priority, weight, status, status_reason, status_changed_at, key_count, version
                            ${from} and ${k.cond} order by ${k.order} limit ${k.limit + 1}`;
    return {
      ...(await pageOf(k, [...rows] as any[], countCapped(tx, tx`select 1 ${from}`))),
      q,
      groups: (await tx`select name from admin.groups order by name`).map((g) => g.name as string),
    };
  });

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
      const [{ c }] = await tx`select admin.channel_update(${Number(f.get('id'))}, ${tx.json({ status: enable ? 'enabled' : 'manually_disabled', status_reason: enable ? null : 'disabled in the admin panel' } as never)}) as c`;
      // Reversible, so no confirmation: it acts at once, says so, and offers the way back.
      return { toggled: { id: Number(c.id), name: c.name as string, enabled: enable } };
    });
  },
  // Archived: kept with its history, never routed (not even by Test). Restoring brings it back
  // disabled, so the operator decides when it takes traffic again.
  archive: async ({ request, locals }) => {
    const f = await request.formData();
    const archive = f.get('archive') === '1';
    return act(locals, async (tx) => {
      const [{ c }] = await tx`select admin.channel_update(${Number(f.get('id'))}, ${tx.json({ status: archive ? 'archived' : 'manually_disabled', status_reason: archive ? 'archived in the admin panel' : 'restored from the archive' } as never)}) as c`;
      return { done: archive ? `Channel #${c.id} ${c.name} archived: it is never routed again; its history stays.` : `Channel #${c.id} ${c.name} restored, disabled: enable it when it should take traffic.` };
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
  // The upstream's own model list, shown with checkboxes next to what the channel serves now.
  importModels: async ({ request, locals }) => {
    const f = await request.formData();
    const id = Number(f.get('id'));
    // The SQL gate and the key in one: admin.channel_test_key refuses a non-admin session (403),
    // an unknown or archived channel (BADCH, shown as a form error).
    const r = await act(locals, async (tx) => {
      const [c] = await tx`select id, name, models from admin.channels where id = ${id}`;
      const [{ k }] = await tx`select admin.channel_test_key(${id}, null) as k`;
      return { c, k };
    });
    if (isActionFailure(r)) return r;
    const { c, k } = r as { c: any; k: { id: number; key: string } };
    const got = await upstreamModels(id, k);
    return { importing: { id, name: String(c.name), configured: (c.models ?? []) as string[], ...got } };
  },
  // The chosen set replaces the channel's models; admin.channel_update validates it.
  saveModels: async ({ request, locals }) => {
    const f = await request.formData();
    const id = Number(f.get('id'));
    const models = f.getAll('model').map(String);
    return act(locals, async (tx) => {
      const [{ c }] = await tx`select admin.channel_update(${id}, ${tx.json({ models } as never)}) as c`;
      return { done: `Channel #${c.id} ${c.name} now serves ${models.length} model(s)${models.length ? `: ${models.join(', ')}` : ''}.` };
    });
  },
  // Every channel, each with its first model, through the same test as the row's button. Three at
  // a time: enough to finish a few dozen channels in seconds without a burst on the gateway.
  testAll: async ({ locals }) => {
    const chs = await act(locals, async (tx) => [...(await tx`select id, name, models, status from admin.channels where status <> 'archived' order by priority desc, id`)]);
    if (!Array.isArray(chs)) return chs; // the SQL gate refused (not an admin)
    const results = await mapLimit(chs as any[], 3, async (c) => {
      const model = String(c.models?.[0] ?? '');
      const base = { id: Number(c.id), name: String(c.name), channelStatus: String(c.status) };
      if (!model) return { ...base, ok: false, model, error: 'The channel lists no model to test with.' };
      return { ...base, ...(await testChannel(Number(c.id), model)) };
    });
    return { testAll: results };
  },
};

/** fn over items, at most `limit` at once, results in the items' order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
