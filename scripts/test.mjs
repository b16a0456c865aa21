// `npm test`: the gateway and SQL suite, the short fault suite and the admin suite (Chromium), two at
// a time. Each suite waits much of the time (on a product starting, a page loading, a stream's gap, a
// database restarting), so on a 2-core machine two side by side finish well before two in a row:
//   one side:   the gateway suite, then admin/test/page-speed.test.ts;
//   the other:  the admin suite's browser files, then the fault suite.
// page-speed.test.ts times pages against a bound: it starts only when the browser files are done
// (beside one, a page it times took 301 ms against its 250 ms), so beside it there is the fault
// suite or nothing. Never more than two: the fault suite counts answers and times a drain, and the
// browser files click through pages that must have hydrated; a third suite would slow all of that.
//
// What every suite needs is done once, first: the PostgreSQL to run on (started if needed, stopped
// afterwards if this run started it), the admin panel's build (the gateway suite's binary test, the
// fault suite's admin scenario and the admin suite all serve it), and one migrated template
// database: each suite's database and each file's own database is a copy of it
// (ELYGATE_TEST_TEMPLATE, read by gateway/test/support/global-setup.ts).
//
// Output comes suite by suite, in the order above (gateway, browser files, faults, page-speed): the
// first as it runs, each next one held until those before it are done, so none interleaves. A failed
// suite's failures (vitest's "Failed Tests" section) are printed once more at the very end, so the
// last lines of a long log (all a CI page may keep) name what failed. Exits non-zero if any suite
// failed.
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
// How many lines of a failed suite's failures are printed again at the end (printFailures).
const FAILURE_LINES = 80;
const t0 = Date.now();
// Ctrl-C or a CI's cancel: passed on to the suites (each in a process group of its own, with what
// it started); no further suite starts, and this script drops the template and exits. (A suite
// stopped by a signal may leave its gw_test_* database behind, as a vitest run stopped so does.)
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
  const results = [];
  // Suites in the order their output is printed; the one at `shown` writes through, later ones hold.
  const order = [];
  let shown = -1;
  const advance = () => {
    for (shown++; shown < order.length; shown++) {
      const s = order[shown];
      say(`${s.name}:`);
      for (const chunk of s.out.splice(0)) process.stdout.write(chunk);
      s.live = true;
      if (!s.done) return;
    }
  };
  const suite = (name) => {
    const s = { name, out: [], all: [], live: false, done: false };
    order.push(s);
    return s;
  };
  const gateway = suite('gateway suite');
  const browser = suite('admin suite but page-speed');
  const faults = suite('fault suite (short)');
  const speed = suite('admin page-speed');
  const run = (s, args) =>
    new Promise((resolve) => {
      if (interrupted) {
        s.done = true;
        if (s === order[shown]) advance();
        return resolve();
      }
      const started = Date.now();
      const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      children.add(child);
      for (const stream of [child.stdout, child.stderr])
        stream.on('data', (d) => {
          s.all.push(d);
          if (s.live) process.stdout.write(d);
          else s.out.push(d);
        });
      child.on('close', (code, signal) => {
        children.delete(child);
        results.push({ name: s.name, code: code ?? 1, signal, ms: Date.now() - started });
        s.done = true;
        if (s === order[shown]) advance();
        resolve();
      });
    });
  say('the gateway suite, then admin page-speed; beside them the admin browser files, then the fault suite');
  advance();
  const browserDone = run(browser, [...admin, '--exclude', pageSpeed]);
  await Promise.all([
    run(gateway, [vitest, 'run', '--config', 'gateway/vitest.config.ts']).then(() => browserDone).then(() => run(speed, [...admin, pageSpeed])),
    browserDone.then(() => run(faults, [join(root, 'scripts', 'faults.mjs'), '--short'])),
  ]);
  for (const s of order) if (results.some((r) => r.name === s.name && r.code !== 0)) printFailures(s);
  for (const r of results) say(`${r.name}: ${r.code === 0 ? 'passed' : `FAILED (exit ${r.code}${r.signal ? `, ${r.signal}` : ''})`} in ${seconds(r.ms)}`);
  return !interrupted && results.length === order.length && results.every((r) => r.code === 0) ? 0 : 1;
}

// A failed suite's "Failed Tests" section (or, when vitest printed none, its last lines), without
// colours, at most FAILURE_LINES lines.
function printFailures(s) {
  const text = Buffer.concat(s.all).toString('utf8').replace(/\x1b\[[0-9;]*m/g, '');
  const lines = text.split('\n');
  const at = lines.findIndex((l) => /Failed Tests? \d+/.test(l) || /Failed Suites? \d+/.test(l));
  const part = at >= 0 ? lines.slice(at) : lines.slice(-FAILURE_LINES);
  say(`${s.name} failed; its failures again:`);
  const shown = part.slice(0, FAILURE_LINES);
  for (const l of shown) process.stdout.write(`  ${l}\n`);
  if (part.length > shown.length) say(`(and ${part.length - shown.length} more lines: see the suite's own output above)`);
}
