// Fills locals.user from the session cookie (verified in SQL by admin.session_get) and sends people
// where they must go first: /login, the TOTP step, or the forced password change. It does not decide
// who may see admin pages: their queries run as elygate_user for non-admins and PostgreSQL says 403.
import type { Handle, ServerInit } from '@sveltejs/kit';
import { redirect } from '@sveltejs/kit';
import { sql } from '$lib/server/db';
import { bootstrap, COOKIE } from '$lib/server/auth';

export const init: ServerInit = async () => {
  // adapter-node emits this after SIGTERM/SIGINT once requests are done: close the pool so the
  // process can exit.
  process.once('sveltekit:shutdown' as never, () => void sql().end({ timeout: 5 }));
  try {
    await bootstrap();
  } catch (err) {
    console.error(`[admin] bootstrap failed: ${(err as Error).message}`);
  }
};

const PUBLIC = ['/login', '/setup', '/healthz'];

export const handle: Handle = async ({ event, resolve }) => {
  const token = event.cookies.get(COOKIE) ?? null;
  event.locals.token = token;
  event.locals.user = null;
  if (token) {
    const [{ s }] = await sql()`select admin.session_get(${token}) as s`;
    event.locals.user = (s as SessionUser | null) ?? null;
  }
  const path = event.url.pathname;
  const user = event.locals.user;
  const isPublic = PUBLIC.some((p) => path === p || path.startsWith(`${p}/`));
  if (!isPublic && !path.startsWith('/_app/')) {
    if (!user) {
      if (event.request.method === 'GET') redirect(303, `/login?next=${encodeURIComponent(path + event.url.search)}`);
      return new Response('Not logged in', { status: 401 });
    }
    if (user.stage === 'totp') redirect(303, '/login/totp');
    if (user.must_change && path !== '/password' && path !== '/logout') redirect(303, '/password');
  }
  const response = await resolve(event);
  response.headers.set('x-frame-options', 'DENY');
  response.headers.set('referrer-policy', 'same-origin');
  response.headers.set('x-content-type-options', 'nosniff');
  // Pages of a logged-in session show balances and keys: never stored, so Back after logging out
  // (or the next person at a shared browser) cannot bring them back from the cache.
  if (token && !path.startsWith('/_app/')) response.headers.set('cache-control', 'no-store');
  return response;
};
