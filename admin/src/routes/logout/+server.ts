import { redirect } from '@sveltejs/kit';
import type { RequestHandler } from './$types';
import { sql } from '$lib/server/db';
import { clearSessionCookie } from '$lib/server/auth';

export const POST: RequestHandler = async ({ locals, cookies }) => {
  if (locals.token) await sql()`select admin.session_end(${locals.token})`;
  clearSessionCookie(cookies);
  redirect(303, '/login');
};
