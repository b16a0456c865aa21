import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';
import { compact, intOrNull } from '$lib/server/forms';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => ({
    budgets: [...(await tx`select * from admin.budgets order by scope, coalesce(key_prefix, username, "group"), model nulls first, period`)],
    limits: [...(await tx`select * from admin.model_limits order by scope, coalesce(key_prefix, "group"), model`)],
    timeZone: (await tx`select value from admin.options where key = 'BudgetTimeZone'`)[0]?.value as string,
  }));

/** "key" / "user" / "group" and the value typed beside it, as the admin.* functions take them. */
function target(f: FormData) {
  const who = String(f.get('who') ?? '').trim();
  const scope = String(f.get('scope') ?? 'key');
  if (scope === 'group') return { group: who };
  return { [scope === 'user' ? 'user_id' : 'key_id']: who === '' ? null : who };
}

/** A dollar amount typed in the form, as micro-USD; anything else goes to SQL as typed (it says why). */
const micros = (v: FormDataEntryValue | null) => {
  const s = String(v ?? '').trim();
  return s === '' ? null : Number.isFinite(Number(s)) ? Math.round(Number(s) * 1e6) : s;
};

export const actions: Actions = {
  budget: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const args = compact({
        ...target(f),
        model: String(f.get('model') ?? '').trim() || undefined,
        period: String(f.get('period') ?? ''),
        amount_micros: micros(f.get('amount_usd')),
        threshold_percent: intOrNull(f.get('threshold_percent')),
      });
      const [{ b }] = await tx`select admin.budget_set(${tx.json(args as never)}) as b`;
      const ly = ({ day: 'daily', week: 'weekly', month: 'monthly' } as Record<string, string>)[b.period];
      return { done: `Budget #${b.id} saved: ${ly} for ${b.scope} ${b.key_prefix ?? b.username ?? b.group}${b.model ? ` (${b.model})` : ''}.` };
    });
  },
  clearBudget: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      await tx`select admin.budget_clear(${tx.json({ id: String(f.get('id') ?? '') })})`;
      return { done: 'Budget removed.' };
    });
  },
  limit: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const args = compact({
        ...target(f),
        model: String(f.get('model') ?? '').trim(),
        rpm_limit: intOrNull(f.get('rpm_limit')),
        tpm_limit: intOrNull(f.get('tpm_limit')),
      });
      const [{ l }] = await tx`select admin.model_limit_set(${tx.json(args as never)}) as l`;
      return { done: `Limit on ${l.model} saved for ${l.scope} ${l.key_prefix ?? l.group}.` };
    });
  },
  clearLimit: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      await tx`select admin.model_limit_clear(${tx.json({ id: String(f.get('id') ?? '') })})`;
      return { done: 'Model limit removed.' };
    });
  },
};
