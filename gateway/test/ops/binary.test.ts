// The single executable: built with `bun build --compile` (scripts/build.mjs), copied alone into
// an empty folder and started there against a fresh database given by DATABASE_URL, it migrates it
// to the same schema `npm start` produces, serves the gateway and the admin panel embedded in it
// (first login, forced password change and a setting saved, as a browser would; the whole
// newcomer journey in Chromium is admin/test/binary.test.ts), and stops cleanly on SIGTERM.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { closeDb, databaseUrl, masterKey } from '../support/db';
import { freePort } from '../support/gateway';
// @ts-expect-error plain ESM script without types
import { ensureBinary } from '../../../scripts/build.mjs';
// @ts-expect-error plain ESM script without types
import { migrateDatabase } from '../../../scripts/migrate.mjs';

const root = join(__dirname, '..', '..', '..');
const work = mkdtempSync(join(tmpdir(), 'elygate-bin-'));
const dbName = `gw_bin_${randomBytes(4).toString('hex')}`;
// Migrated by scripts/migrate.mjs, `npm start`'s code: committed migrations only, as the binary
// (the suite's own database also has the migration in progress, migrations/current.sql).
const refName = `${dbName}_ref`;
const serverUrl = (name: string) => {
  const u = new URL(databaseUrl);
  u.pathname = `/${name}`;
  return u.toString();
};
let binary = '';
let proc: ChildProcess | null = null;
let out = '';

beforeAll(async () => {
  // What `npm run build` does: the admin panel, then the binary (each only when out of date).
  (await import(join(root, 'admin', 'build.mjs'))).ensureAdminBuild({ log: (m: string) => console.log(`[admin] ${m}`) });
  // The binary alone in an empty folder: nothing of the repository beside it.
  binary = join(work, 'elygate');
  copyFileSync(ensureBinary(), binary);
  const s = postgres(serverUrl('postgres'), { max: 1, onnotice: () => {} });
  await s.unsafe(`create database ${dbName}`);
  await s.unsafe(`create database ${refName}`);
  await s.end();
  await migrateDatabase(serverUrl(refName), { log: () => {} });
}, 240_000);

afterAll(async () => {
  // The whole process group: a failed run must not leave the binary's admin child behind.
  if (proc?.pid) {
    try {
      process.kill(-proc.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const s = postgres(serverUrl('postgres'), { max: 1, onnotice: () => {} });
  await s.unsafe(`drop database if exists ${dbName} with (force)`);
  await s.unsafe(`drop database if exists ${refName} with (force)`);
  await s.end();
  rmSync(work, { recursive: true, force: true });
  await closeDb();
});

async function until(fn: () => Promise<boolean>, ms: number, what: string) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      // not up yet
    }
    if (proc?.exitCode !== null && proc?.exitCode !== undefined) throw new Error(`binary exited (${proc.exitCode}) before ${what}:\n${out}`);
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/* The admin's first minutes as a browser opened at the address the binary prints makes them: its
   Origin and cookie on each form post, nothing else. The binary sets the panel's origin itself;
   the test sets no ORIGIN. */
async function adminFirstSteps(adminPort: number) {
  const panel = `http://localhost:${adminPort}`;
  expect(out).toContain(`Open the admin panel at ${panel}`);
  const post = (path: string, fields: Record<string, string>, cookie = '') =>
    fetch(`${panel}${path}`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        origin: panel,
        accept: 'text/html', // a form post, not SvelteKit's JSON action call that */* would get
        'content-type': 'application/x-www-form-urlencoded',
        ...(cookie ? { cookie } : {}),
      },
      body: new URLSearchParams(fields),
    });
  const login = await post('/login', { username: 'admin', password: 'admin123' });
  expect(login.status).toBe(303);
  expect(login.headers.get('location')).toBe('/password');
  // Not Secure over http: the binary told the panel the scheme it is opened with.
  expect(login.headers.get('set-cookie')).not.toMatch(/;\s*secure/i);
  const cookie = login.headers.get('set-cookie')!.split(';')[0];
  const changed = await post('/password', { password: 'binary first password', confirm: 'binary first password' }, cookie);
  expect(changed.status).toBe(303);
  expect(changed.headers.get('location')).toBe('/?changed=1');
  const saved = await post('/settings', { key: 'MaxAttempts', value: '2' }, cookie);
  expect(saved.status).toBe(200);
  const fresh = postgres(serverUrl(dbName), { max: 1, onnotice: () => {} });
  try {
    expect((await fresh`select value from admin.options where key = 'MaxAttempts'`)[0].value).toBe('2');
  } finally {
    await fresh.end();
  }
}

describe('dist/elygate (bun build --compile)', () => {
  it('migrates a fresh database, serves the gateway and the admin, and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const adminPort = await freePort();
    proc = spawn(binary, [], {
      cwd: work, // nothing of the repository is needed at run time
      env: {
        PATH: process.env.PATH,
        DATABASE_URL: serverUrl(dbName),
        ELYGATE_MASTER_KEY: masterKey,
        PORT: String(port),
        ADMIN_PORT: String(adminPort),
        HOST: '127.0.0.1',
        ELYGATE_SPOOL_DIR: join(work, 'spool'),
        NODE_ENV: 'production',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, for afterAll
    });
    proc.stdout!.on('data', (d) => (out += d));
    proc.stderr!.on('data', (d) => (out += d));
    await until(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, 60_000, 'gateway ready');

    const res = await fetch(`http://127.0.0.1:${port}/v1/models`);
    expect(res.status).toBe(401);
    expect((await res.json()).error.code).toBe('invalid_api_key');

    // The same schema as a database scripts/migrate.mjs (npm start's code) migrated.
    const schemaOf = async (sql: postgres.Sql) =>
      (await sql`
        select (select array_agg(filename order by filename) from graphile_migrate.migrations) as migrations,
               (select count(*)::int from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname in ('private', 'gateway', 'admin')) as functions,
               (select count(*)::int from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname in ('private', 'gateway', 'admin') and c.relkind in ('r', 'p', 'v')) as relations,
               (select count(*)::int from private.options) as options`)[0];
    const fresh = postgres(serverUrl(dbName), { max: 1, onnotice: () => {} });
    const ref = postgres(serverUrl(refName), { max: 1, onnotice: () => {} });
    try {
      expect(await schemaOf(fresh)).toEqual(await schemaOf(ref));
    } finally {
      await fresh.end();
      await ref.end();
    }

    await until(async () => (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).ok, 30_000, 'admin ready');
    // Served from the panel the binary wrote out of itself, in the folder it was started in.
    expect(readdirSync(join(work, '.elygate', 'admin'))).toHaveLength(1);
    await adminFirstSteps(adminPort);

    const exited = new Promise<number | null>((r) => proc!.once('exit', (code) => r(code)));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    // The admin child went down with it.
    await expect(fetch(`http://127.0.0.1:${adminPort}/healthz`)).rejects.toThrow();
  }, 120_000);
});
