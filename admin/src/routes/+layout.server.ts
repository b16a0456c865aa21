import type { LayoutServerLoad } from './$types';
import { isAdmin } from '$lib/server/db';

export const load: LayoutServerLoad = async ({ locals }) => ({
  user: locals.user ? { username: locals.user.username, role: locals.user.role, admin: isAdmin(locals.user), must_change: locals.user.must_change } : null,
});
