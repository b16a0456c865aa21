import { fail, redirect } from '@sveltejs/kit';
import type { Actions, PageServerLoad } from './$types';
import { sql } from '$lib/server/db';
import { setSessionCookie, verifyPassword } from '$lib/server/auth';

export const load: PageServerLoad = async ({ locals }) => {
  if (locals.user?.stage === 'full') redirect(303, locals.user.role === 'admin' ? '/' : '/me');
  // The first-start hints only while they can work: no admin with a password of their own yet.
  const [{ s }] = await sql()`select admin.bootstrap_status() as s`;
  return { firstStart: Number(s.admins) === 0, defaultPending: !!s.default_pending };
};

/** Where to go after logging in: `next` if it is a local path this user may open, else their home. */
function destination(next: string | null, admin: boolean): string {
  const home = admin ? '/' : '/me';
  if (!next || !next.startsWith('/') || next.startsWith('//')) return home;
  // Admin pages answer a regular user with 403; send them to their own page instead.
  if (!admin && !(next === '/me' || next.startsWith('/me?') || next.startsWith('/me/') || next.startsWith('/password'))) return home;
  return next;
}

const messages: Record<string, string> = {
  invalid: 'Wrong username or password.',
  throttled: 'Too many failed attempts. Wait a few minutes and try again.',
  loopback_only: 'The default password works only from the machine running Elygate, connected directly (not through a proxy). Use the setup token printed at start, or ELYGATE_ADMIN_PASSWORD.',
  default_used: 'The default password was already used once. Use the setup token printed at start.',
  default_retired: 'An admin has a password of their own now: the default password no longer works.',
};

const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'];

export const actions: Actions = {
  default: async ({ request, cookies, url, getClientAddress }) => {
    const form = await request.formData();
    const username = String(form.get('username') ?? '').trim();
    const password = String(form.get('password') ?? '');
    const ip = getClientAddress();
    const db = sql();
    const [{ b }] = await db`select admin.login_begin(${username}, ${ip}::inet) as b`;
    if (b.status === 'throttled') return fail(429, { username, message: messages.throttled });
    const ok = await verifyPassword(password, b.password_hash ?? null);
    // A request that came through a proxy is not someone at this machine, whatever its address.
    const forwarded = FORWARDING_HEADERS.some((h) => request.headers.has(h));
    const [{ r }] = await db`select admin.login_finish(${username}, ${ip}::inet, ${ok}, ${request.headers.get('user-agent')}, ${forwarded}) as r`;
    if (r.status !== 'ok') return fail(r.status === 'throttled' ? 429 : 400, { username, message: messages[r.status] ?? 'Login refused.' });
    setSessionCookie(cookies, url, r.token);
    const next = url.searchParams.get('next');
    if (r.stage === 'totp') redirect(303, '/login/totp');
    if (r.must_change) redirect(303, '/password');
    const [{ u }] = await db`select admin.session_get(${r.token}) as u`;
    redirect(303, destination(next, u?.role === 'admin'));
  },
};
