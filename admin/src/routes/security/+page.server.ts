import type { Actions, PageServerLoad } from './$types';
import { act, run } from '$lib/server/db';

const RESULTS = ['ok', 'failed', 'throttled'] as const;

// Sessions (admin.sessions) and the latest login attempts (admin.login_attempts), newest first;
// ?user= and ?result= narrow the attempts.
export const load: PageServerLoad = async ({ locals, url }) =>
  run(locals, async (tx) => {
    const user = url.searchParams.get('user')?.trim() || null;
    const r = url.searchParams.get('result');
    const result = (RESULTS as readonly string[]).includes(r ?? '') ? r : null;
    const sessions = await tx`select * from admin.sessions order by last_seen_at desc, created_at desc`;
    const attempts = await tx`
      select * from admin.login_attempts a
       where ${user ? tx`a.username = ${user}` : tx`true`}
         and ${result === 'ok' ? tx`a.ok` : result === 'throttled' ? tx`a.reason = 'throttled'` : result === 'failed' ? tx`not a.ok` : tx`true`}
       order by a.id desc limit 100`;
    const [limits] = await tx`
      select max(value) filter (where key = 'LoginMaxFailures') as per_user_address,
             max(value) filter (where key = 'LoginMaxFailuresPerIp') as per_address,
             max(value) filter (where key = 'LoginMaxFailuresGlobal') as global,
             max(value) filter (where key = 'LoginWindowMinutes') as window_minutes
        from admin.options`;
    return { sessions: [...sessions], attempts: [...attempts], limits: { ...limits }, user, result };
  });

export const actions: Actions = {
  revoke: async ({ request, locals }) => {
    const f = await request.formData();
    const id = String(f.get('session_id') ?? '');
    return act(locals, async (tx) => {
      const [{ ok }] = await tx`select admin.session_revoke(${id}) as ok`;
      return { done: ok ? 'Session revoked: that browser must log in again.' : 'That session had already ended.' };
    });
  },
};
