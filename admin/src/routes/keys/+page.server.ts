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
    // Rotations touching the keys shown: "replaced by #n, works until …" and "replaces #n".
    const ids = rows.map((r) => String(r.id));
    const rotations = ids.length
      ? await tx`select * from admin.key_rotations where old_key_id = any(${ids}::bigint[]) or new_key_id = any(${ids}::bigint[])`
      : [];
    // ?edit=<id>: the key whose fields the edit form starts from.
    const edit = url.searchParams.get('edit');
    const [editing] = edit && /^\d{1,18}$/.test(edit) ? await tx`select * from admin.api_keys where id = ${edit}` : [];
    // ?rotate=<id>: the key the rotate form is about.
    const rot = url.searchParams.get('rotate');
    const [rotating] = rot && /^\d{1,18}$/.test(rot) ? await tx`select * from admin.api_keys where id = ${rot}` : [];
    return {
      editing: editing ? { ...editing } : null,
      rotating: rotating ? { ...rotating } : null,
      rotations: rotations.map((r) => ({ old: String(r.old_key_id), new: String(r.new_key_id), until: r.grace_until as Date, inGrace: r.in_grace as boolean })),
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
  // Every field of the form is sent: an emptied field clears that limit (admin.key_update).
  update: async ({ request, locals }) => {
    const f = await request.formData();
    const id = Number(f.get('id'));
    return act(locals, async (tx) => {
      await tx`select admin.key_update(${id}, ${tx.json(keyLimits(f) as never)})`;
      return { done: `Key #${id} saved: the next request with it meets the new limits.` };
    });
  },
  archive: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ ok }] = await tx`select admin.key_archive(${Number(f.get('id'))}) as ok`;
      return { done: ok ? `Key #${Number(f.get('id'))} archived: requests with it get 401; its usage and logs stay.` : `Key #${Number(f.get('id'))} was already archived.` };
    });
  },
  // A new key for the same owner, limits and counters; the old one works for the grace chosen.
  rotate: async ({ request, locals }) => {
    const f = await request.formData();
    const id = Number(f.get('id'));
    const hours = String(f.get('grace_hours') ?? '24');
    return act(locals, async (tx) => {
      const [{ k }] = await tx`select admin.key_rotate(${id}, make_interval(hours => ${hours}::integer)) as k`;
      return { created: k as { id: number; key: string; key_prefix: string }, rotated: { old: id, until: k.old_key_works_until as string } };
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
