import { fail, redirect } from '@sveltejs/kit';
import type { Actions, PageServerLoad } from './$types';
import { sql } from '$lib/server/db';

export const load: PageServerLoad = async ({ locals }) => {
  if (!locals.user) redirect(303, '/login');
  if (locals.user.stage === 'full') redirect(303, locals.user.role === 'admin' ? '/' : '/me');
  return {};
};

export const actions: Actions = {
  default: async ({ request, locals, getClientAddress }) => {
    const code = String((await request.formData()).get('code') ?? '');
    const [{ r }] = await sql()`select admin.session_totp_verify(${locals.token}, ${code}, ${getClientAddress()}::inet) as r`;
    if (r.status === 'throttled') return fail(429, { message: 'Too many failed attempts. Wait a few minutes.' });
    if (r.status !== 'ok') return fail(400, { message: 'That code is not valid.' });
    // A regular user's home is their own page: admin pages would answer 403.
    redirect(303, r.must_change ? '/password' : locals.user?.role === 'admin' ? '/' : '/me');
  },
};
