// Passwords (argon2id via hash-wasm: WebAssembly, nothing native to download), the session cookie,
// and the first-admin bootstrap run once at server start.
import { argon2id, argon2Verify } from 'hash-wasm';
import { randomBytes } from 'node:crypto';
import type { Cookies } from '@sveltejs/kit';
import { env } from '$env/dynamic/private';
import { sql } from './db';

export const COOKIE = 'elygate_session';
export const DEFAULT_PASSWORD = 'admin123';

// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
export async function hashPassword(password: string): Promise<string> {
  return argon2id({
    password,
    salt: randomBytes(16),
    parallelism: 1,
    iterations: 2,
    memorySize: 19456,
    hashLength: 32,
    outputType: 'encoded',
  });
}

// Verifying against a dummy hash for unknown users keeps the timing of a login independent of
// whether the username exists.
let dummy: Promise<string> | null = null;
export async function verifyPassword(password: string, hash: string | null): Promise<boolean> {
  dummy ??= hashPassword(randomBytes(16).toString('hex'));
  const h = hash ?? (await dummy);
  try {
    const ok = await argon2Verify({ password, hash: h });
    return ok && hash !== null;
  } catch {
    return false;
  }
}

/** Password rules, checked before hashing (the database only ever sees the hash). */
export function passwordProblem(password: string, username: string): string | null {
  if (password.length < 10) return 'Use at least 10 characters.';
  if (password.length > 200) return 'Use at most 200 characters.';
  if (password === DEFAULT_PASSWORD || password.toLowerCase() === username.toLowerCase()) return 'Choose a password that is not the default nor your username.';
  return null;
}

export function setSessionCookie(cookies: Cookies, url: URL, token: string) {
  cookies.set(COOKIE, token, {
    path: '/',
    httpOnly: true,
    sameSite: 'strict',
    secure: url.protocol === 'https:',
    maxAge: 60 * 60 * 24 * 30, // the server-side session decides the real lifetime
  });
}

export function clearSessionCookie(cookies: Cookies) {
  cookies.delete(COOKIE, { path: '/' });
}

/**
 * At start: while no admin has a password of their own, install ELYGATE_ADMIN_PASSWORD for user
 * "admin" if it is set, else the original admin/admin123 (loopback only, once, forced change),
 * and print a one-time setup token for any other deployment.
 */
export async function bootstrap(log: (m: string) => void = (m) => console.log(`[admin] ${m}`)) {
  const db = sql();
  const [{ s }] = await db`select admin.bootstrap_status() as s`;
  if (Number(s.admins) > 0) return { admins: Number(s.admins), token: null };
  const envPassword = env.ELYGATE_ADMIN_PASSWORD;
  if (envPassword) {
    const problem = passwordProblem(envPassword, 'admin');
    if (problem) throw new Error(`ELYGATE_ADMIN_PASSWORD is too weak: ${problem}`);
    await db`select admin.bootstrap(${await hashPassword(envPassword)}, false)`;
    log('Admin user "admin" created with the password from ELYGATE_ADMIN_PASSWORD.');
    return { admins: 1, token: null };
  }
  await db`select admin.bootstrap(${await hashPassword(DEFAULT_PASSWORD)}, true)`;
  const [{ token }] = await db`select admin.setup_token_create() as token`;
  log('No admin has a password yet. Either:');
  log('  - from this machine, log in as admin / admin123 (works once; you must choose a new password), or');
  log(`  - from anywhere, open /setup and enter this one-time setup token (valid 24 h): ${token}`);
  log('  (or set ELYGATE_ADMIN_PASSWORD before the first start).');
  return { admins: 0, token: token as string };
}
