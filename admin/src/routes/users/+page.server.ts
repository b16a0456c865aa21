import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { hashPassword, passwordProblem } from '$lib/server/auth';
import { fail } from '@sveltejs/kit';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => ({
    users: [...(await tx`
      select u.*, p.can_log_in, p.must_change, p.totp_enabled
        from admin.users u left join admin.panel_users p on p.user_id = u.id order by u.id`)],
    groups: [...(await tx`select * from admin.groups order by name`)],
    features: (await tx`select * from admin.features`)[0],
  }));

export const actions: Actions = {
  create: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ u }] = await tx`select admin.user_create(${tx.json({ username: String(f.get('username') ?? '').trim(), group: String(f.get('group') || 'default'), role: String(f.get('role') || 'user') } as never)}) as u`;
      return { done: `User ${u.username} created.` };
    });
  },
  update: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      await tx`select admin.user_update(${Number(f.get('id'))}, ${tx.json({ group: String(f.get('group')), role: String(f.get('role')), status: String(f.get('status')) } as never)})`;
      return { done: 'User updated.' };
    });
  },
  topup: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const micros = Math.round(Number(f.get('amount_usd')) * 1e6);
      const [{ r }] = await tx`select admin.wallet_credit(${tx.json({ user_id: Number(f.get('id')), amount_micros: micros, note: String(f.get('note') ?? '') } as never)}) as r`;
      return { done: `Balance is now $${(Number(r.balance_micros) / 1e6).toFixed(2)}.` };
    });
  },
  password: async ({ request, locals }) => {
    const f = await request.formData();
    const pw = String(f.get('password') ?? '');
    const problem = passwordProblem(pw, String(f.get('username') ?? ''));
    if (problem) return fail(400, { message: problem });
    const hash = await hashPassword(pw);
    return act(locals, async (tx) => {
      await tx`select admin.user_password_set(${Number(f.get('id'))}, ${hash}, true)`;
      return { done: 'Panel password set; the user must change it at first login.' };
    });
  },
  group: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      await tx`select admin.group_upsert(${tx.json({ name: String(f.get('name') ?? '').trim(), price_multiplier: Number(f.get('price_multiplier') || 1), description: String(f.get('description') ?? '') } as never)})`;
      return { done: 'Group saved.' };
    });
  },
};
