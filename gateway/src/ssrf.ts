// SSRF guard for upstream calls (DESIGN §7), the connect-time half: before each upstream request
// the channel's host is resolved and every address it resolves to must be public, unless the
// option AllowPrivateUpstreams is on. Redirects are followed by hand, each hop checked the same
// way, so a public URL that answers "302 Location: http://169.254.169.254/" cannot reach the
// metadata service. The save-time half is private.channel_url_check (sql/24_ssrf.sql);
// this one also covers DNS names (which SQL cannot resolve) and channels saved while the option
// was on.
//
// relay/attempts.ts hook (the upstream fetch):
//   res = await upstreamFetch(call.url, { method: 'POST', headers: call.headers, body: call.body, signal: controller.signal }, options.AllowPrivateUpstreams === true);
// A refusal throws SsrfError before any connection is made; relay/attempts.ts records it as a failed
// attempt (like a connection error) and moves to the next channel.
//
// DNS rebinding: a name is resolved once, here, and the connection goes to the address that passed
// the check (pinTo): the URL carries that address, the Host header and the TLS name (SNI and the
// certificate check, Bun fetch's tls.serverName) stay the channel's name. fetch never resolves the
// name a second time, so a DNS server answering public first and 127.0.0.1 next cannot win.
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';

export class SsrfError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SsrfError';
  }
}

type Lookup = (host: string) => Promise<{ address: string; family: number }[]>;
/* why: the guard runs before every upstream call; a resolver round trip per request would put
   DNS on the hot path. Answers are reused for DNS_TTL_MS, as a resolver cache would. */
const DNS_TTL_MS = 30_000;
const dnsCache = new Map<string, { at: number; addrs: { address: string; family: number }[] }>();
const systemLookup: Lookup = async (host) => {
  const hit = dnsCache.get(host);
  if (hit && Date.now() - hit.at < DNS_TTL_MS) return hit.addrs;
  const addrs = await dnsLookup(host, { all: true, verbatim: true });
  if (dnsCache.size > 1000) dnsCache.clear();
  dnsCache.set(host, { at: Date.now(), addrs });
  return addrs;
};

/**
 * The rules come from SQL (private.ssrf_rules, the one list the save-time check reads too), loaded
 * with the options (snapshot.ts) before the gateway serves. Until they are loaded, every address
 * and name counts as private: the guard fails closed.
 */
export interface SsrfRules {
  ranges: string[];
  names: string[];
  suffixes: string[];
}
interface Range {
  bytes: number[];
  bits: number;
}
let ranges: Range[] | null = null;
let privateNames = new Set<string>();
let privateSuffixes: string[] = [];

export function setSsrfRules(rules: SsrfRules): void {
  ranges = rules.ranges.map((cidr) => {
    const [addr, bits] = cidr.split('/');
    return { bytes: toBytes(addr), bits: Number(bits) };
  });
  privateNames = new Set(rules.names);
  privateSuffixes = rules.suffixes;
}

/** An address as bytes: 4 for IPv4, 16 for IPv6 (a dotted IPv4 tail, as in ::ffff:1.2.3.4, included). */
function toBytes(addr: string): number[] {
  if (isIP(addr) === 4) return addr.split('.').map(Number);
  let a = addr.toLowerCase().split('%')[0];
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (tail) {
    const [p, q, r, w] = tail.slice(1).map(Number);
    a = a.slice(0, -tail[0].length) + `${((p << 8) | q).toString(16)}:${((r << 8) | w).toString(16)}`;
  }
  const [head, rest] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const fill = rest !== undefined ? Array(8 - h.length - t.length).fill('0') : [];
  return [...h, ...fill, ...t].flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}

/** True when the first `bits` bits of a and b agree (a and b of the same family). */
function samePrefix(a: number[], b: number[], bits: number): boolean {
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((a[i] & mask) !== (b[i] & mask)) return false;
  }
  return true;
}

/** True when an IP address (v4 or v6) is not a public internet address. */
export function isPrivateAddress(addr: string): boolean {
  if (ranges === null || isIP(addr) === 0) return true; // no rules yet, or not an address: refuse rather than guess
  const bytes = toBytes(addr);
  return ranges.some((r) => r.bytes.length === bytes.length && samePrefix(bytes, r.bytes, r.bits));
}

const isPrivateName = (host: string) => ranges === null || privateNames.has(host) || privateSuffixes.some((x) => host.endsWith(x));

/** What a guarded URL is for, in messages, and the option that lets it be private. */
export interface Guard {
  what: string;
  option: string;
}
const UPSTREAM: Guard = { what: 'upstream', option: 'AllowPrivateUpstreams' };
/** Webhook endpoints (gateway/src/webhooks.ts) have an option of their own. */
export const WEBHOOK: Guard = { what: 'webhook', option: 'AllowPrivateWebhooks' };

/**
 * Resolves the URL's host and throws SsrfError when it is, or resolves to, a private address.
 * Returns the addresses it checked.
 */
export async function assertPublicUrl(
  url: string | URL,
  opts: { allowPrivate?: boolean; lookup?: Lookup; guard?: Guard } = {},
): Promise<string[]> {
  return (await vet(url, opts)).addrs;
}

/** assertPublicUrl's work; `resolved` says the host was a name (so the connection must be pinned). */
async function vet(
  url: string | URL,
  opts: { allowPrivate?: boolean; lookup?: Lookup; guard?: Guard },
): Promise<{ addrs: string[]; resolved: boolean }> {
  const { what, option } = opts.guard ?? UPSTREAM;
  if (opts.allowPrivate) return { addrs: [], resolved: false };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new SsrfError(`${what} URL is not a valid URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new SsrfError(`${what} URL scheme ${u.protocol} is not allowed`);
  // WHATWG parsing already turned 2130706433 or 0x7f.1 into 127.0.0.1, and keeps IPv6 in brackets.
  const host = u.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  const refuse = (problem: string) =>
    new SsrfError(`${what} host ${host} ${problem}; private ${what}s are refused (option ${option} is off)`);
  if (isPrivateName(host)) throw refuse(ranges === null ? 'cannot be checked yet (the SSRF rules have not been loaded from the database)' : 'is a private name');
  if (isIP(host)) {
    if (isPrivateAddress(host)) throw refuse('is a private address');
    return { addrs: [host], resolved: false };
  }
  let addrs: { address: string }[];
  try {
    addrs = await (opts.lookup ?? systemLookup)(host);
  } catch (err) {
    throw new SsrfError(`${what} host ${host} does not resolve (${(err as Error).message})`);
  }
  if (addrs.length === 0) throw new SsrfError(`${what} host ${host} does not resolve`);
  const bad = addrs.find((a) => isPrivateAddress(a.address));
  if (bad) throw refuse(`resolves to a private address (${bad.address})`);
  return { addrs: addrs.map((a) => a.address), resolved: true };
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * The order in which a name's vetted addresses are dialled: IPv4 first, then the rest, each group in
 * the resolver's order. why IPv4 first: a pinned connection gets no happy-eyeballs from fetch, and a
 * host without an IPv6 route is more common than one without IPv4.
 */
function dialOrder(addrs: string[]): string[] {
  return [...addrs.filter((a) => isIP(a) === 4), ...addrs.filter((a) => isIP(a) !== 4)];
}

/* Errors that mean no connection was made, so the request never left: the next vetted address may
   be tried (as fetch itself would with a name). Anything else (a reset, a timeout, an abort) is the
   attempt's failure, for the relay's failover to handle. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
const resendable = (body: RequestInit['body']) => body == null || typeof body === 'string' || body instanceof Uint8Array || body instanceof ArrayBuffer;

/** fetch() pinned to each vetted address in dialOrder until one connects. */
async function fetchPinned(doFetch: typeof fetch, url: string, addrs: string[], init: RequestInit): Promise<Response> {
  const order = dialOrder(addrs);
  for (let i = 0; ; i++) {
    try {
      return await doFetch(...pinTo(url, order[i], init));
    } catch (err) {
      const last = i === order.length - 1 || init.signal?.aborted || !resendable(init.body);
      if (last || !NOT_CONNECTED.has((err as { code?: string }).code ?? '')) throw err;
    }
  }
}

/**
 * The fetch arguments that connect to `address` while speaking to `url`'s host: the URL gets the
 * address, the Host header keeps the name (and port), and for https the TLS server name (SNI and
 * the certificate's name check) is the name. Bun's fetch honours both (its connection pool keys TLS
 * connections by server name too); the gateway runs on Bun.
 */
export function pinTo(url: string, address: string, init: RequestInit): [string, RequestInit] {
  const u = new URL(url);
  const name = u.hostname.replace(/\.$/, '');
  const host = u.host;
  u.hostname = isIP(address) === 6 ? `[${address}]` : address;
  const headers = new Headers(init.headers);
  headers.set('host', host);
  const pinned: RequestInit & { tls?: Record<string, unknown> } = { ...init, headers };
  if (u.protocol === 'https:') pinned.tls = { ...(init as { tls?: Record<string, unknown> }).tls, serverName: name };
  return [u.toString(), pinned];
}

/**
 * fetch() with the guard on the URL and on every redirect hop (at most maxRedirects), each
 * connection pinned to an address the guard checked (fetchPinned: the next one when one refuses). A literal IP address is fetched as it
 * is (nothing to resolve). With allowPrivate the guard is off (no resolution, no pinning) but
 * redirects are still followed by hand, with the same rules.
 */
export async function upstreamFetch(
  url: string,
  init: RequestInit,
  allowPrivate: boolean,
  deps: { lookup?: Lookup; fetch?: typeof fetch; maxRedirects?: number; guard?: Guard } = {},
): Promise<Response> {
  const doFetch = deps.fetch ?? fetch;
  const max = deps.maxRedirects ?? 3;
  let current = url;
  let req = { ...init, redirect: 'manual' as const };
  for (let hop = 0; ; hop++) {
    const { addrs, resolved } = await vet(current, { allowPrivate, lookup: deps.lookup, guard: deps.guard });
    const res = resolved ? await fetchPinned(doFetch, current, addrs, req) : await doFetch(current, req);
    const location = res.headers.get('location');
    if (!REDIRECTS.has(res.status) || !location) return res;
    if (hop >= max) throw new SsrfError(`${(deps.guard ?? UPSTREAM).what} redirected more than ${max} times`);
    await res.body?.cancel().catch(() => {});
    const next = new URL(location, current);
    // Credentials are for the channel's own host: never sent on to another origin.
    if (next.origin !== new URL(current).origin) {
      const headers = new Headers(req.headers);
      for (const h of ['authorization', 'x-api-key', 'api-key', 'x-goog-api-key', 'cookie']) headers.delete(h);
      req = { ...req, headers };
    }
    current = next.toString();
    // 303, and 301/302 after a POST, turn into a body-less GET (what fetch itself does).
    if (res.status === 303 || ((res.status === 301 || res.status === 302) && (req.method ?? 'GET').toUpperCase() === 'POST')) {
      const { body: _drop, ...rest } = req;
      req = { ...rest, method: 'GET' };
    }
  }
}
