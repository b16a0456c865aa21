// The admin panel's origin: which address its forms may be posted from. One rule, used by every
// launcher (scripts/start.mjs, scripts/dev.mjs, the single executable) to set adapter-node's ORIGIN,
// and by hooks.server.ts to check each form post and explain a refusal.
// Plain JavaScript without SvelteKit imports, so that the launchers (node, bun) can import it too.

/* why: adapter-node without ORIGIN assumes https:// (or trusts PROTOCOL_HEADER/HOST_HEADER), so a
   panel opened at http://localhost:3001 refused every form post with a bare 403. The default is
   the address `npm start` prints; ADMIN_ORIGIN names any other (a LAN address, a reverse proxy). */

const LOOPBACK = ['localhost', '127.0.0.1', '[::1]'];

/** The proxy headers adapter-node derives the origin from when ORIGIN is not set. */
const PROXY_HEADERS = ['PROTOCOL_HEADER', 'HOST_HEADER'];

function parseOrigin(value, name) {
  let u;
  try {
    u = new URL(value);
  } catch {
    u = null;
  }
  if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.pathname !== '/' || u.search || u.hash || u.username) {
    throw new Error(
      `${name}=${JSON.stringify(value)} is not an origin. Set it to the address the admin panel is opened at: scheme, host and port only, e.g. ${name}=http://192.168.1.20:3001 or ${name}=https://admin.example.com`,
    );
  }
  return u.origin;
}

/**
 * The origin the admin panel is reached at, from the environment:
 * ADMIN_ORIGIN, else adapter-node's own ORIGIN, else (with PROTOCOL_HEADER or HOST_HEADER, behind a
 * proxy that sets them) null: each request's own origin as adapter-node derives it from those
 * headers; else http://localhost:<port>.
 * @param {Record<string, string | undefined>} env
 * @param {string | number} port the admin panel's port
 * @returns {{ origin: string | null, from: string }}
 */
export function adminOrigin(env, port) {
  for (const name of ['ADMIN_ORIGIN', 'ORIGIN']) {
    if (env[name]) return { origin: parseOrigin(env[name], name), from: name };
  }
  if (PROXY_HEADERS.some((h) => env[h])) return { origin: null, from: PROXY_HEADERS.filter((h) => env[h]).join(' and ') };
  return { origin: `http://localhost:${port}`, from: 'default' };
}

/**
 * What a launcher adds to the admin process's environment: adapter-node's ORIGIN, so that the
 * panel's URLs (and the Secure flag of its cookie) follow the address it is opened at.
 * @param {Record<string, string | undefined>} env
 * @param {string | number} port
 */
export function adminOriginEnv(env, port) {
  const { origin } = adminOrigin(env, port);
  return origin ? { ORIGIN: origin } : {};
}

/**
 * Origins whose form posts are accepted. A loopback origin also accepts its other loopback
 * spellings (same scheme and port), so a newcomer who types 127.0.0.1 instead of localhost can log
 * in. Only the Origin header is compared, never the Host header: a DNS-rebinding page has its own
 * name as Origin, which never matches.
 * @param {string} origin
 */
export function acceptedOrigins(origin) {
  const u = new URL(origin);
  if (!LOOPBACK.includes(u.hostname)) return [origin];
  const port = u.port ? `:${u.port}` : '';
  return [origin, ...LOOPBACK.map((h) => `${u.protocol}//${h}${port}`).filter((o) => o !== origin)];
}

/** The line printed at start: where to open the panel, and how to change it. */
export function describeOrigin({ origin, from }) {
  if (!origin) return `Form posts are accepted from the origin the proxy names in ${from} (each request's own).`;
  const also = acceptedOrigins(origin).slice(1);
  const how = from === 'default' ? ' Opened at another address (another machine, a reverse proxy)? Set ADMIN_ORIGIN to it, e.g. ADMIN_ORIGIN=https://admin.example.com.' : '';
  return `Open the admin panel at ${origin}${also.length ? ` (or ${also.join(', ')})` : ''}: its forms are accepted from there only.${how}`;
}

/**
 * Why a form post was refused, and the fix, for a person reading it in the browser or a log.
 * @param {string[]} expected accepted origins, the configured one first
 * @param {string | null} got the request's Origin header
 */
export function refusalMessage(expected, got) {
  const want = expected[0];
  const sent = got && got !== 'null' ? got : null;
  const lines = [
    `This form was sent from ${sent ?? 'a page whose origin the browser did not say (no Origin header)'}, but the admin panel accepts form posts only from ${expected.join(', ')}.`,
  ];
  if (sent) {
    lines.push(
      `If ${sent} is the address you open the panel at, restart it with ADMIN_ORIGIN=${sent} (npm start, npm run dev, the single executable and docker compose all read it).`,
      'Behind a reverse proxy, set ADMIN_ORIGIN to the public address (e.g. ADMIN_ORIGIN=https://admin.example.com), or, if the proxy sets X-Forwarded-Proto and X-Forwarded-Host, PROTOCOL_HEADER=x-forwarded-proto HOST_HEADER=x-forwarded-host and no ADMIN_ORIGIN.',
    );
  }
  lines.push(`Otherwise open the panel at ${want} and try again.`);
  return lines;
}
