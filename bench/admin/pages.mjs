// Issue 21, "every page fast with real traffic": times every admin page over HTTP against a
// database holding N requests in the last 24 hours (bench/admin/traffic.mjs).
//   node bench/admin/pages.mjs [--rows 2000000] [--days 30] [--repeats 3] [--keep-db]
// makes a database bench_pages_<random> on the embedded cluster (or DATABASE_URL's server), fills
// it (the log with the last 24 hours; the `days - 1` days before them with the same traffic as
// rollups, see spreadRollups), starts the product as `npm start` does (scripts/start.mjs) on it, logs in as an admin made in
// SQL, and prints each page's median and worst time. admin/test/page-speed.test.ts runs the same
// measurement in the suite with fewer rows (see docs/performance.md, "Admin pages with real traffic").
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { argon2id } from 'hash-wasm';
import { generateTraffic, spreadRollups } from './traffic.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Every admin page, as an operator opens them. */
export const PAGES = [
  '/', '/?range=7d', '/?range=30d',
  '/logs', '/logs?model=load-model-5&status=error',
  '/channels', '/keys', '/users', '/prices', '/cache', '/jobs', '/settings',
];

/** An admin with a password, made in SQL as a DBA would (the panel's own functions). */
export async function createAdmin(sql, username, password) {
  const hash = await argon2id({ password, salt: randomBytes(16), parallelism: 1, iterations: 2, memorySize: 19456, hashLength: 32, outputType: 'encoded' });
  const [{ u }] = await sql`select admin.user_create(${sql.json({ username, role: 'admin' })}) as u`;
  await sql`select admin.user_password_set(${u.id}, ${hash}, false)`;
}

/** Logs in through the login form; returns the Cookie header for the session. */
export async function login(url, username, password) {
  const res = await fetch(`${url}/login`, {
    method: 'POST',
    body: new URLSearchParams({ username, password }),
    headers: { origin: url, 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
    redirect: 'manual',
  });
  const cookie = res.headers.getSetCookie().find((c) => c.startsWith('elygate_session='));
  if (!cookie) throw new Error(`login failed: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`);
  return cookie.split(';')[0];
}

/** Each page: one warm-up request, then `repeats` timed ones; median and worst in ms. */
export async function timePages(url, cookie, { repeats = 3, pages = PAGES } = {}) {
  const out = [];
  for (const path of pages) {
    const times = [];
    for (let i = 0; i <= repeats; i++) {
      const t = performance.now();
      const res = await fetch(url + path, { headers: { cookie }, redirect: 'manual' });
      const body = await res.text();
      if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status} ${body.slice(0, 300)}`);
      if (i > 0) times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    out.push({ path, median: Math.round(times[Math.floor(times.length / 2)]), worst: Math.round(times[times.length - 1]) });
  }
  return out;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    }).on('error', reject);
  });
}

/** scripts/start.mjs on the database, as `npm start` runs it; resolves once the panel answers. */
async function startProduct(env) {
  const [port, adminPort] = [await freePort(), await freePort()];
  const proc = spawn(process.execPath, [join(root, 'scripts', 'start.mjs')], {
    cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env, PORT: String(port), ADMIN_PORT: String(adminPort), HOST: '127.0.0.1',
           ELYGATE_SPOOL_DIR: mkdtempSync(join(tmpdir(), 'elygate-spool-')) },
  });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const stop = () => new Promise((r) => { if (proc.exitCode !== null) return r(); proc.once('exit', r); proc.kill('SIGTERM'); setTimeout(() => { try { process.kill(-proc.pid, 'SIGKILL'); } catch {} }, 20000).unref(); });
  for (const deadline = Date.now() + 120_000; ;) {
    if (proc.exitCode !== null) throw new Error(`start.mjs exited:\n${out}`);
    if (await fetch(`http://127.0.0.1:${adminPort}/healthz`).then((r) => r.ok, () => false)) break;
    if (Date.now() > deadline) { await stop(); throw new Error(`the panel did not start:\n${out}`); }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url: `http://localhost:${adminPort}`, stop };
}

async function main() {
  const arg = (name, dflt) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : dflt; };
  const rows = Number(arg('rows', 2_000_000));
  const days = Number(arg('days', 30));
  const repeats = Number(arg('repeats', 3));
  let server = process.env.DATABASE_URL;
  if (!server) server = (await import(pathToFileURL(join(root, 'scripts', 'pg.mjs')).href)).readState().url;
  const name = `bench_pages_${randomBytes(4).toString('hex')}`;
  const rootSql = postgres(server, { max: 1, onnotice: () => {} });
  await rootSql.unsafe(`create database ${name}`);
  const dbUrl = Object.assign(new URL(server), { pathname: `/${name}` }).toString();
  let product;
  const db = postgres(dbUrl, { max: 2, onnotice: () => {} });
  try {
    const { migrateDatabase } = await import(pathToFileURL(join(root, 'scripts', 'migrate.mjs')).href);
    await migrateDatabase(dbUrl, { log: () => {} });
    // The migration in progress too, if there is one (as the test suites apply it).
    const gm = spawnSync(join(root, 'node_modules', '.bin', 'graphile-migrate'), ['watch', '--once'], { cwd: root, env: { ...process.env, DATABASE_URL: dbUrl }, encoding: 'utf8' });
    if (gm.status !== 0) throw new Error(`graphile-migrate watch --once failed:\n${gm.stdout}${gm.stderr}`);
    let t = Date.now();
    const made = await generateTraffic(db, { rows });
    console.log(`${name}: ${rows} requests generated in ${((Date.now() - t) / 1000).toFixed(1)} s (rollup ${made.rollupMs} ms, ${made.rollup.rows} rollup rows)`);
    t = Date.now();
    const spread = await spreadRollups(db, { days });
    console.log(`${name}: ${days - 1} earlier days as rollups in ${((Date.now() - t) / 1000).toFixed(1)} s (${spread.usageRows} hourly rows, ${spread.dimRows} rows per dimension)`);
    for (const range of ['24 hours', '7 days', '30 days']) {
      const times = [];
      for (let i = 0; i < 4; i++) {
        const t0 = performance.now();
        await db`select admin.dashboard(now() - ${range}::interval)`;
        if (i > 0) times.push(Math.round(performance.now() - t0));
      }
      console.log(`admin.dashboard(now() - '${range}') in SQL: ${times.join(', ')} ms`);
    }
    await createAdmin(db, 'bench-admin', 'bench-password-123');
    const { adminPassword } = (await import(pathToFileURL(join(root, 'scripts', 'pg.mjs')).href)).readState();
    const adminUrl = Object.assign(new URL(dbUrl), { username: 'elygate_admin', password: adminPassword }).toString();
    product = await startProduct({ DATABASE_URL: dbUrl, ADMIN_DATABASE_URL: process.env.ADMIN_DATABASE_URL ?? adminUrl, ELYGATE_MASTER_KEY: randomBytes(32).toString('hex') });
    const cookie = await login(product.url, 'bench-admin', 'bench-password-123');
    console.log('| page | median ms | worst ms |\n|---|---:|---:|');
    for (const r of await timePages(product.url, cookie, { repeats })) console.log(`| \`${r.path}\` | ${r.median} | ${r.worst} |`);
  } finally {
    await product?.stop();
    await db.end();
    if (!process.argv.includes('--keep-db')) await rootSql.unsafe(`drop database if exists ${name} with (force)`);
    await rootSql.end();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
