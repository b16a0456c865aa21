// Fault scenario 8: the admin panel's login. The original's admin/admin123 must never open a
// session for a client that is not on loopback (0 accepted), and guessing passwords must be
// throttled. Runs against the admin engineer's real server (node admin/build/index.js) bound to
// 0.0.0.0. Only loopback traffic is allowed here, so a remote client is simulated the way a
// reverse proxy presents one: adapter-node's ADDRESS_HEADER takes the client address from
// X-Forwarded-For (documentation addresses, 203.0.113.0/24).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { argon2id } from 'hash-wasm';
import { join } from 'node:path';
import { closeDb, databaseUrl, db, masterKey } from '../support/db';
import { freePort } from '../support/gateway';
import { figure, root, saveLogs, short } from './support';

const build = join(root, 'admin', 'build', 'index.js');
// The admin engineer's own build step (vite build when admin/build is missing or stale).
const builder = join(root, 'admin', 'build.mjs');
if (existsSync(builder)) (await import(builder)).ensureAdminBuild({ log: (m: string) => console.log(`[admin] ${m}`) });
let proc: ChildProcess | null = null;
let out = '';
let url = '';

beforeAll(async () => {
  // Built above (admin/build.mjs); a missing build is a failure here, never a silent skip.
  if (!existsSync(build)) throw new Error(`the admin build is missing (${build}): npm run admin:build`);
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  proc = spawn(process.execPath, [build], {
    env: {
      ...process.env,
      ADMIN_DATABASE_URL: databaseUrl,
      ELYGATE_MASTER_KEY: masterKey,
      ELYGATE_ADMIN_PASSWORD: '',
      PORT: String(port),
      HOST: '0.0.0.0', // a non-loopback bind
      ORIGIN: url,
      ADDRESS_HEADER: 'x-forwarded-for',
      XFF_DEPTH: '1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${url}/healthz`, { headers: { 'x-forwarded-for': '127.0.0.1' } })).ok) return;
    } catch {
      // starting
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`admin did not start:\n${out}`);
}, 60_000);

afterAll(async () => {
  if (proc && proc.exitCode === null) {
    const exited = new Promise((r) => proc!.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  }
  saveLogs('admin', out);
  await closeDb();
});

/** An argon2id hash as the admin server makes one (admin/src/lib/server/auth.ts). */
const hash = (password: string) =>
  argon2id({ password, salt: randomBytes(16), parallelism: 1, iterations: 2, memorySize: 19456, hashLength: 32, outputType: 'encoded' });

/** Posts the login form as SvelteKit's enhanced forms do; returns the action's JSON result. */
async function login(username: string, password: string, from: string): Promise<{ type: string; status: number; location?: string }> {
  const res = await fetch(`${url}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: url, 'x-sveltekit-action': 'true', accept: 'application/json', 'x-forwarded-for': from },
    body: new URLSearchParams({ username, password }),
    redirect: 'manual',
  });
  const body = await res.json();
  return { type: body.type, status: body.status ?? res.status, location: body.location };
}

describe('8. admin login', () => {
  it('default credentials: 0 accepted from non-loopback or proxied clients; brute force throttled', async () => {
    const [{ s }] = await db()`select admin.bootstrap_status() as s`;
    const opt = async (k: string) => (await db()`select value::int as v from private.options where key = ${k}`)[0].v as number;
    const maxPerUser = await opt('LoginMaxFailures');
    const maxPerIp = await opt('LoginMaxFailuresPerIp');
    // A. Non-loopback clients: the default password is refused (fewer tries than the per-user
    //    limit, so a refusal here is the loopback rule, not the throttle).
    const remote = ['203.0.113.7', '198.51.100.4', '::ffff:203.0.113.9', '2001:db8::5'].slice(0, Math.max(1, maxPerUser - 1));
    const remoteResults: string[] = [];
    for (const ip of remote) remoteResults.push((await login('admin', 'admin123', ip)).type);
    const defaultAccepted = remoteResults.filter((t) => t === 'redirect').length;
    // B. Behind a reverse proxy on this host every client is loopback: a forwarded request from
    //    127.0.0.1 or ::1 is refused the default password too (a direct loopback login, which may
    //    use it once, is the e2e suite's first step and the SQL suite's).
    const local = await login('admin', 'admin123', '127.0.0.1');
    const localAgain = await login('admin', 'admin123', '::1');
    // C. Guessing from one address, over many usernames: throttled after LoginMaxFailuresPerIp.
    const attempts = short ? maxPerIp + 10 : maxPerIp * 3;
    const perIp: Record<string, number> = {};
    let ipThrottledAt = -1;
    for (let i = 0; i < attempts; i++) {
      const r = await login(`user${i}`, `guess-${i}`, '203.0.113.66');
      perIp[`${r.type}:${r.status}`] = (perIp[`${r.type}:${r.status}`] ?? 0) + 1;
      if (r.status === 429 && ipThrottledAt < 0) ipThrottledAt = i + 1;
    }
    // D. Guessing a real user's password from one address: that address is throttled for that
    //    user after LoginMaxFailures; the user, from their own address, still gets in.
    const victim = `victim${Date.now()}`;
    const password = `right-${randomBytes(6).toString('hex')}`;
    const [{ id: victimId }] = await db()`insert into private.users (username, display_name, role) values (${victim}, ${victim}, 'user') returning id`;
    await db()`select admin.user_password_set(${victimId}, ${await hash(password)}, false)`;
    let userThrottledAt = -1;
    for (let i = 0; i < maxPerUser * 3; i++) {
      const r = await login(victim, `guess-${i}`, '198.51.100.10');
      if (r.status === 429 && userThrottledAt < 0) userThrottledAt = i + 1;
    }
    const attackerRight = await login(victim, password, '198.51.100.10');
    const victimOwn = await login(victim, password, '198.51.100.200');
    // E. A distributed attack on that user, each address failing fewer times than any per-address
    //    limit: every login is refused once all failures together reach LoginMaxFailuresGlobal.
    //    The ceiling is lowered for the scenario (and the window's rows removed after it), so the
    //    run stays short and leaves the panel usable.
    const [{ v: ceilingWas }] = await db()`select value as v from private.options where key = 'LoginMaxFailuresGlobal'`;
    let globalThrottledAt = -1;
    let afterCeiling = { type: '', status: 0 };
    try {
      await db()`delete from private.login_attempts`;
      const ceiling = 20;
      await db()`select admin.option_set('LoginMaxFailuresGlobal', ${String(ceiling)})`;
      for (let i = 0; i < ceiling + 5; i++) {
        const r = await login(victim, `spray-${i}`, `192.0.2.${i + 1}`);
        if (r.status === 429 && globalThrottledAt < 0) globalThrottledAt = i + 1;
      }
      afterCeiling = await login(victim, password, '198.51.100.201');
    } finally {
      await db()`select admin.option_set('LoginMaxFailuresGlobal', ${ceilingWas})`;
      await db()`delete from private.login_attempts`;
    }
    figure('admin login', {
      admins_before: s.admins,
      default_tries_from_non_loopback: remote.length,
      default_accepted_non_loopback: defaultAccepted,
      forwarded_loopback_default: `${local.type}:${local.location ?? local.status}`,
      forwarded_loopback_default_again: `${localAgain.type}:${localAgain.status}`,
      per_ip_attempts: attempts,
      per_ip_results: perIp,
      per_ip_throttled_from_attempt: ipThrottledAt,
      per_ip_limit: maxPerIp,
      per_user_address_throttled_from_attempt: userThrottledAt,
      per_user_address_limit: maxPerUser,
      right_password_from_attacker_address: `${attackerRight.type}:${attackerRight.status}`,
      right_password_from_own_address: `${victimOwn.type}:${victimOwn.status}`,
      global_ceiling_throttled_from_attempt: globalThrottledAt,
      after_global_ceiling: `${afterCeiling.type}:${afterCeiling.status}`,
    });
    expect(defaultAccepted).toBe(0);
    expect(remoteResults.every((t) => t === 'failure')).toBe(true);
    expect(local.type).toBe('failure');
    expect(localAgain.type).toBe('failure');
    expect(ipThrottledAt).toBe(maxPerIp + 1);
    expect(perIp['failure:429']).toBe(attempts - maxPerIp);
    expect(userThrottledAt).toBe(maxPerUser + 1);
    expect(attackerRight.status).toBe(429);
    expect(victimOwn.type).toBe('redirect'); // the attacker did not lock the user out
    expect(globalThrottledAt).toBe(21);
    expect(afterCeiling.status).toBe(429);
  }, 120_000);
});
