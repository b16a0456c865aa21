// `npm test`: the gateway and SQL suite, the short fault suite and the admin suite (Chromium), two at
// a time. Each suite waits much of the time (on a product starting, a page loading, a stream's gap, a
// database restarting), so on a 2-core machine two side by side finish well before two in a row:
//   1. the gateway suite beside the admin suite's browser files;
//   2. the fault suite beside admin/test/page-speed.test.ts.
// Never more than two: the fault suite counts answers and times a drain, page-speed times pages, and
// the browser files click through pages that must have hydrated; a third suite beside them would
// slow all of that down. page-speed.test.ts is never beside a browser file (which slows the pages it
// times the most); the fault suite mostly waits, and page-speed spends most of its time building a
// month of traffic inside PostgreSQL.
//
// What every suite needs is done once, first: the PostgreSQL to run on (started if needed, stopped
// afterwards if this run started it), the admin panel's build (the gateway suite's binary test, the
// fault suite's admin scenario and the admin suite all serve it), and one migrated template
// database: each suite's database and each file's own database is a copy of it
// (ELYGATE_TEST_TEMPLATE, read by gateway/test/support/global-setup.ts).
//
// The first suite of each pair is shown as it runs; the second's output is held and printed whole
// after it, so they never interleave. Exits non-zero if any suite failed.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { checkServer, migrateWithCurrent } from './migrate.mjs';
import { ensureAdminBuild } from '../admin/build.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (msg) => console.log(`[npm test] ${msg}`);
const seconds = (ms) => `${(ms / 1000).toFixed(0)} s`;
const t0 = Date.now();
// Ctrl-C or a CI's cancel: passed on to the suites (each in a process group of its own, with what
// it started), which drop their databases as they stop; no further suite starts, this script drops
// the template and exits.
const children = new Set();
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'])
  process.on(sig, () => {
    interrupted = true;
    for (const c of children) {
      try {
        process.kill(-c.pid, sig);
      } catch {
        // already gone
      }
    }
  });

// The server, as the suites' global setup chooses it.
let serverUrl = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL;
let stopEmbedded = null;
if (!serverUrl) {
  const pg = await import('./pg.mjs');
  const st = await pg.ensurePostgres({ log: say });
  serverUrl = st.url;
  if (st.started) stopEmbedded = () => pg.stopPostgres({ log: say });
}
const withName = (db) => Object.assign(new URL(serverUrl), { pathname: `/${db}` }).toString();

ensureAdminBuild({ log: say });

// Committed migrations, then the one in progress, as each suite's setup would apply them.
const template = `gw_test_${randomBytes(4).toString('hex')}_tpl`;
const server = postgres(serverUrl, { max: 1, onnotice: () => {} });
await server.unsafe(`create database ${template}`);
let status = 1;
try {
  await checkServer(withName(template), { log: () => {} });
  await migrateWithCurrent(withName(template), { log: () => {} });
  say(`template database ${template} migrated (${seconds(Date.now() - t0)} since start)`);
  if (!interrupted) status = await runSuites();
} finally {
  await server.unsafe(`drop database if exists ${template} with (force)`);
  const [{ others }] = await server`select count(*)::int as others from pg_database where datname like 'gw_test_%'`;
  await server.end();
  if (stopEmbedded && others === 0) await stopEmbedded();
}
say(`finished in ${seconds(Date.now() - t0)}: ${status === 0 ? 'all suites passed' : 'FAILED'}`);
process.exit(status);

async function runSuites() {
  const env = { ...process.env, ELYGATE_TEST_TEMPLATE: template };
  const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
  const admin = [vitest, 'run', '--config', 'admin/vitest.config.ts'];
  const pageSpeed = 'test/page-speed.test.ts';
  const pairs = [
    [['gateway suite', [vitest, 'run', '--config', 'gateway/vitest.config.ts']], ['admin suite but page-speed', [...admin, '--exclude', pageSpeed]]],
    [['fault suite (short)', [join(root, 'scripts', 'faults.mjs'), '--short']], ['admin page-speed', [...admin, pageSpeed]]],
  ];
  const results = [];
  const run = (name, args, live) =>
    new Promise((resolve) => {
      const started = Date.now();
      const out = [];
      if (live) say(`${name}:`);
      const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      children.add(child);
      for (const stream of [child.stdout, child.stderr]) stream.on('data', (d) => (live ? process.stdout.write(d) : out.push(d)));
      child.on('close', (code, signal) => {
        children.delete(child);
        results.push({ name, code: code ?? 1, signal, ms: Date.now() - started });
        resolve(out);
      });
    });
  for (const [[first, firstArgs], [second, secondArgs]] of pairs) {
    if (interrupted) break;
    say(`${first} and ${second}, side by side (the second's output follows the first's)`);
    const held = run(second, secondArgs, false);
    await run(first, firstArgs, true);
    say(`${second}:`);
    for (const chunk of await held) process.stdout.write(chunk);
  }
  for (const r of results) say(`${r.name}: ${r.code === 0 ? 'passed' : `FAILED (exit ${r.code}${r.signal ? `, ${r.signal}` : ''})`} in ${seconds(r.ms)}`);
  return !interrupted && results.every((r) => r.code === 0) ? 0 : 1;
}
