// Self-service: the session user's own profile, keys, usage, redemption and 2FA. Queries read
// schema `me`, whose views and functions take the user from the session token in SQL; for a
// regular user they run as role elygate_user, which cannot touch schema admin at all.
import type { Actions, PageServerLoad } from './$types';
import { act, run, sql } from '$lib/server/db';
import { compact, keyLimits } from '$lib/server/forms';
import { fail } from '@sveltejs/kit';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => ({
    profile: (await tx`select * from me.profile`)[0] ?? null,
    keys: [...(await tx`select * from me.api_keys order by id desc`)],
    usage: [...(await tx`select * from me.usage_daily where day >= now() - interval '30 days' order by day desc, model`)],
    recent: [...(await tx`select * from me.requests order by created_at desc limit 20`)],
    budgets: [...(await tx`select * from me.budgets order by scope, period, id`)],
  }));

export const actions: Actions = {
  key: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ k }] = await tx`select me.key_create(${tx.json(compact(keyLimits(f)) as never)}) as k`;
      return { created: k };
    });
  },
  revoke: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ ok }] = await tx`select me.key_revoke(${Number(f.get('id'))}) as ok`;
      return ok ? { done: 'Key revoked.' } : fail(404, { message: 'No such key of yours.' });
    });
  },
  redeem: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const [{ r }] = await tx`select me.redeem(${String(f.get('code') ?? '').trim()}) as r`;
      return { done: `Redeemed ${usd(r.amount_micros)}.` };
    });
  },
  totpSetup: async ({ locals }) => {
    try {
      const [{ t }] = await sql()`select admin.session_totp_setup(${locals.token}) as t`;
      return { totp: t };
    } catch (err) {
      return fail(400, { message: (err as Error).message });
    }
  },
  totpEnable: async ({ request, locals }) => {
    const f = await request.formData();
    try {
      const enable = f.get('enable') === '1';
      await sql()`select admin.session_totp_enable(${locals.token}, ${String(f.get('code') ?? '')}, ${enable})`;
      return { done: enable ? 'Two-factor authentication is on.' : 'Two-factor authentication is off.' };
    } catch (err) {
      return fail(400, { message: (err as Error).message, code: (err as any).code });
    }
  },
};
