import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { hashPassword, passwordProblem } from '$lib/server/auth';
import { fail } from '@sveltejs/kit';
import { usd } from '$lib/format';
import { countCapped, keyset, pageOf } from '$lib/server/paging';
import { BIGINT_ID, likePattern, searchOf } from '$lib/server/search';

export const load: PageServerLoad = async ({ locals, url }) =>
  run(locals, async (tx) => {
    const k = keyset(tx, url, {
      alias: 'u',
      relation: tx`admin.users`,
      sorts: { id: { col: 'id' }, username: { col: 'username' }, balance: { col: 'balance_micros', nulls: 0 }, created: { col: 'created_at' } },
      sort: ['id', 'asc'],
      id: BIGINT_ID,
      limit: 50,
    });
    const q = searchOf(url);
    const from = tx`from admin.users u where ${q ? tx`(u.username ilike ${likePattern(q)} or u.display_name ilike ${likePattern(q)} or u.email ilike ${likePattern(q)})` : tx`true`}`;
    const rows = await tx`
      select u.*, p.can_log_in, p.must_change, p.totp_enabled
        from (select u.* ${from} and ${k.cond} order by ${k.order} limit ${k.limit + 1}) u
        left join admin.panel_users p on p.user_id = u.id order by ${k.order}`;
    return {
      ...(await pageOf(k, [...rows] as any[], countCapped(tx, tx`select 1 ${from}`))),
      q,
      groups: [...(await tx`select * from admin.groups order by name`)],
      // ?credits=<user id>: that wallet's top-ups, redemptions and adjustments (admin.wallet_credits).
      ...(await creditsOf(tx, url.searchParams.get('credits'))),
      codes: [...(await tx`select c.*, u.username as redeemed_by_name from admin.redemption_codes c
                             left join admin.users u on u.id = c.redeemed_by order by c.id desc limit 20`)],
    };
  });

async function creditsOf(tx: any, id: string | null) {
  if (!id || !/^\d{1,18}$/.test(id)) return { credits: null };
  const [user] = await tx`select id, username, balance_micros from admin.users where id = ${id}`;
  if (!user) return { credits: null };
  const rows = await tx`select * from admin.wallet_credits where user_id = ${id} order by created_at desc, id desc limit 200`;
  return { credits: { user: { ...user }, rows: [...rows] } };
}

/** A USD amount typed in a form, in micro-USD (0 when empty or not a number: SQL says what is allowed). */
const micros = (v: FormDataEntryValue | null) => {
  const n = Math.round(Number(String(v ?? '').trim() || 0) * 1e6);
  return Number.isFinite(n) ? n : 0;
};

export const actions: Actions = {
  create: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ u }] = await tx`select admin.user_create(${tx.json({ username: String(f.get('username') ?? '').trim(), group: String(f.get('group') || 'default'), role: String(f.get('role') || 'user') } as never)}) as u`;
      return { done: `User ${u.username} created.` };
    });
  },
  // For good: the group's users are refused; history kept (admin.group_archive).
  groupArchive: async ({ request, locals }) => {
    const f = await request.formData();
    const name = String(f.get('name') ?? '');
    return act(locals, async (tx) => {
      await tx`select admin.group_archive(${name})`;
      return { done: `Archived the group ${name}: its users' requests are refused; its history stays.` };
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
      const [{ r }] = await tx`select admin.wallet_credit(${tx.json({ user_id: Number(f.get('id')), amount_micros: micros(f.get('amount_usd')), note: String(f.get('note') ?? '') } as never)}) as r`;
      return { done: `Balance is now ${usd(r.balance_micros)}.` };
    });
  },
  // Taking money is its own action with a reason (admin.wallet_debit); the page asks to confirm.
  debit: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ r }] = await tx`select admin.wallet_debit(${tx.json({ user_id: Number(f.get('id')), amount_micros: micros(f.get('amount_usd')), note: String(f.get('note') ?? '').trim() } as never)}) as r`;
      return { done: `Debited ${usd(-Number(r.amount_micros))}; balance is now ${usd(r.balance_micros)}.` };
    });
  },
  // Redemption codes: the plaintext exists only in this response (the database keeps sha256).
  codes: async ({ request, locals }) => {
    const f = await request.formData();
    const exp = String(f.get('expires_at') ?? '').trim();
    return act(locals, async (tx) => {
      const args = {
        count: String(f.get('count') ?? '1').trim() || '1',
        amount_micros: micros(f.get('amount_usd')),
        batch: String(f.get('batch') ?? '').trim(),
        ...(exp ? { expires_at: /[zZ]|[+-]\d\d:?\d\d$/.test(exp) ? exp : `${exp}Z` } : {}),
      };
      const [{ r }] = await tx`select admin.code_create(${tx.json(args as never)}) as r`;
      return { codes: r as { batch: string; amount_micros: number; codes: string[] } };
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
