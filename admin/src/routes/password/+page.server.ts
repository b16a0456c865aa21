import { fail, redirect } from '@sveltejs/kit';
import type { Actions, PageServerLoad } from './$types';
import { sql } from '$lib/server/db';
import { hashPassword, passwordProblem, verifyPassword } from '$lib/server/auth';

export const load: PageServerLoad = async ({ locals }) => ({ forced: !!locals.user?.must_change, username: locals.user?.username ?? '' });

export const actions: Actions = {
  default: async ({ request, locals }) => {
    const user = locals.user!;
    const form = await request.formData();
    const password = String(form.get('password') ?? '');
    if (password !== String(form.get('confirm') ?? '')) return fail(400, { message: 'The passwords differ.' });
    const problem = passwordProblem(password, user.username);
    if (problem) return fail(400, { message: problem });
    const db = sql();
    const [{ h }] = await db`select admin.session_password(${locals.token}) as h`;
    // A forced change follows a login that just checked the password; a voluntary one re-checks it.
    if (!user.must_change && !(await verifyPassword(String(form.get('current') ?? ''), h))) {
      return fail(400, { message: 'The current password is wrong.' });
    }
    if (await verifyPassword(password, h)) return fail(400, { message: 'Choose a password different from the current one.' });
    await db`select admin.session_password_set(${locals.token}, ${await hashPassword(password)})`;
    redirect(303, user.role === 'admin' ? '/?changed=1' : '/me?changed=1');
  },
};
