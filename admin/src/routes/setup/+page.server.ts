import { fail, redirect } from '@sveltejs/kit';
import type { Actions } from './$types';
import { sql } from '$lib/server/db';
import { hashPassword, passwordProblem, setSessionCookie } from '$lib/server/auth';

export const actions: Actions = {
  default: async ({ request, cookies, url, getClientAddress }) => {
    const form = await request.formData();
    const token = String(form.get('token') ?? '').trim();
    const username = String(form.get('username') ?? '').trim() || 'admin';
    const password = String(form.get('password') ?? '');
    if (password !== String(form.get('confirm') ?? '')) return fail(400, { username, message: 'The passwords differ.' });
    const problem = passwordProblem(password, username);
    if (problem) return fail(400, { username, message: problem });
    const hash = await hashPassword(password);
    try {
      const [{ r }] = await sql()`select admin.setup_token_use(${token}, ${username}, ${hash}, ${getClientAddress()}::inet, ${request.headers.get('user-agent')}) as r`;
      if (r.status === 'throttled') return fail(429, { username, message: 'Too many failed attempts. Wait a few minutes.' });
      if (r.status !== 'ok') return fail(400, { username, message: 'That setup token is not valid (used, expired, or mistyped).' });
      setSessionCookie(cookies, url, r.token);
    } catch (err) {
      return fail(400, { username, message: (err as Error).message });
    }
    redirect(303, '/');
  },
};
