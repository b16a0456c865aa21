// Checks the origin of every state-changing request first (lib/server/origin.js; a refusal says the
// fix). Then fills locals.user from the session cookie (verified in SQL by admin.session_get) and
// sends people where they must go first: /login, the TOTP step, or the forced password change. It
// does not decide who may see admin pages: their queries run as elygate_user for non-admins and
// PostgreSQL says 403.
import type { Handle, ServerInit } from '@sveltejs/kit';
import { redirect } from '@sveltejs/kit';
import { sql } from '$lib/server/db';
import { bootstrap, COOKIE } from '$lib/server/auth';
import { env } from '$env/dynamic/private';
import { dev } from '$app/environment';
import { acceptedOrigins, adminOrigin, describeOrigin, refusalMessage } from '$lib/server/origin.js';

// Read once: the launchers set ORIGIN (lib/server/origin.js); a bare `node build` falls back to
// http://localhost:<PORT> (adapter-node's default 3000), a bare `vite dev` to vite.config.ts's 3001.
let origins: { origin: string | null; accepted: string[] | null } | null = null;
function originConfig() {
  if (!origins) {
    const o = adminOrigin(env, env.PORT || (dev ? '3001' : '3000'));
    origins = { origin: o.origin, accepted: o.origin ? acceptedOrigins(o.origin) : null };
    console.log(`[admin] ${describeOrigin(o)}`);
  }
  return origins;
}

export const init: ServerInit = async () => {
  // adapter-node emits this after SIGTERM/SIGINT once requests are done: close the pool so the
  // process can exit.
  process.once('sveltekit:shutdown' as never, () => void sql().end({ timeout: 5 }));
  originConfig();
  try {
    await bootstrap();
  } catch (err) {
    console.error(`[admin] bootstrap failed: ${(err as Error).message}`);
  }
};

const PUBLIC = ['/login', '/setup', '/healthz'];

const SAFE = ['GET', 'HEAD', 'OPTIONS'];

/* why here and not SvelteKit's own check (turned off in svelte.config.js): that one answers a
   bare "Cross-site POST form submissions are forbidden", cannot accept 127.0.0.1 for localhost
   without a rebuild, and does not run under `vite dev`. This one compares the Origin header (never
   the Host header) with the accepted origins, for every state-changing request, and says the fix. */
function refuseCrossOrigin(request: Request, url: URL): Response | null {
  if (SAFE.includes(request.method)) return null;
  const accepted = originConfig().accepted ?? [url.origin];
  const got = request.headers.get('origin');
  if (got && accepted.includes(got)) return null;
  const lines = refusalMessage(accepted, got);
  console.warn(`[admin] refused a ${request.method} to ${url.pathname}: ${lines.join(' ')}`);
  if (request.headers.get('accept')?.includes('application/json')) {
    return Response.json({ type: 'error', status: 403, error: { message: lines.join(' '), code: 'ORIGIN' } }, { status: 403 });
  }
  const esc = (t: string) => t.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Form refused: wrong origin</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;line-height:1.5">
<h1 style="font-size:1.3rem">Elygate admin: this form was refused (wrong origin)</h1>
<div data-testid="origin-refused">${lines.map((l) => `<p>${esc(l)}</p>`).join('\n')}</div>
<p><a href="${esc(accepted[0])}/">Open the panel at ${esc(accepted[0])}</a></p></body></html>`;
  return new Response(body, { status: 403, headers: { 'content-type': 'text/html; charset=utf-8', 'x-frame-options': 'DENY' } });
}

export const handle: Handle = async ({ event, resolve }) => {
  const refused = refuseCrossOrigin(event.request, event.url);
  if (refused) return refused;
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
