#!/usr/bin/env node
// Elygate gateway benchmark (issue #7): `npm run bench` (never part of `npm test`).
//
// One run, on 127.0.0.1 only, bounded in time, stopping every process it starts:
//   1. wrk from apt (installed if missing), the embedded PostgreSQL (started if needed), a
//      throwaway database bench_<random> migrated like `npm start` does, seeded through admin.*:
//      a channel on the mock, priced models, 1,001 funded users with one limited key each.
//   2. The mock upstream (bench/mock-upstream.ts) and two gateway processes: "bare" (env
//      ELYGATE_BARE_PROXY=1, no database on the request path) and "elygate" (everything on).
//   3. 5 s of unmeasured load on each gateway (JIT warm-up); then, per run, each scenario in each
//      layout (below): a 1 s warm-up, then a measured wrk run; CPU from /proc/<pid>/stat, database
//      round trips from /metrics. Direct (wrk → mock) does not depend on the layout: it is
//      measured once per run.
//   4. The PostgreSQL floor (bench/floor/): the least database work the design needs per request,
//      driven at 1 and 32 connections right after the elygate cell of the same load, with the same
//      settlement batch size; its PostgreSQL CPU per request is measured like elygate's.
//   5. Micro-measures on one connection: relay_begin's backend CPU per call, relay_finish's per
//      call and per outcome.
//   6. Results: bench/results/latest.json, bench/results/plot.svg, and the results section of
//      docs/performance.md (between its bench:results markers).
//
// Options: --runs N (default 2)  --duration S (default 4)  --layout percore|split|both (default
// both)  --profile (bun --cpu-prof of the gateway, pg_stat_statements with track=all,
// auto_explain of relay_begin)  --no-docs  --keep-db  --head / --rev REV (benchmark that commit)
// --out DIR (results there, docs untouched)  --option Key=Value. To compare two builds, run
// bench/compare.mjs (npm run bench:compare).
//
// Layouts (taskset; on a 1-core machine nothing is pinned and one layout is run):
//   percore  "system per core": the gateways and the bench database's PostgreSQL backends on
//            core 1; wrk, the mock and the TTFB probe on core 0. The whole system under test on
//            one core, so its RPS is what one core of the system serves.
//   split    the gateways on core 0; wrk, the mock, the TTFB probe and the backends on core 1
//            (the layout of every run before issue 16).
// Each run goes through both, the order turning each run (as bench:compare turns its pairs), so
// the drift of a shared machine falls on both. Only this database's backends are pinned: the
// cluster is shared, its background processes float.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID, createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg, cpus } from 'node:os';
import { round as microRound } from './micro.mjs';
import { join, dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import postgres from 'postgres';
import { ensurePostgres, readState } from '../scripts/pg.mjs';
import { summarize, renderMarkdown, renderSvg, updateDocs } from './report.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUN = join(ROOT, 'node_modules', 'bun', 'bin', 'bun.exe');
// (--out DIR: write the results there instead, and leave docs/ alone; bench/compare.mjs uses it.)
const OUT = (() => {
  const i = process.argv.indexOf('--out');
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : null;
})();
const RESULTS = OUT ?? join(ROOT, 'bench', 'results');

// ───────────────────────────── options ─────────────────────────────
const argv = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : fallback;
};
const RUNS = Math.max(1, Number(opt('runs', process.env.BENCH_RUNS ?? 2)));
// --option Key=Value (repeatable): an option of private.options set in the bench database, to
// measure a setting (e.g. --option SettleIntervalMs=20). Named in the report's header.
const OPTIONS = argv.flatMap((a, i) => (a === '--option' && argv[i + 1] ? [argv[i + 1].split('=')] : []))
  .map(([k, ...v]) => [k, v.join('=')]);
// (4 s, not 5: two layouts double the cells, and the default run should stay near 5 minutes.)
const DURATION = Math.max(1, Number(opt('duration', process.env.BENCH_DURATION ?? 4)));
const WARMUP = 1;
const JIT_WARMUP = 5; // s of unmeasured load on each gateway before the first cell
const PROFILE = argv.includes('--profile');
const NO_DOCS = argv.includes('--no-docs') || OUT !== null;
const KEEP_DB = argv.includes('--keep-db');
// --head: benchmark the last commit (a `git archive HEAD` snapshot) instead of the working tree;
// --rev REV: benchmark that commit instead. Without either, a working tree whose migrations do
// not apply (someone mid-change) falls back to HEAD.
const REV = opt('rev', argv.includes('--head') ? 'HEAD' : null);
const FORCE_HEAD = REV !== null;
const N_SPREAD_KEYS = 1000;
// Never run longer than this, whatever happens: 9 minutes, or 1.25× the time the cells asked for
// take when that is more (two layouts made a run twice as long, and `--runs 3 --duration 10`
// must still be able to finish). Per run: 14 cells per layout (the floor's two included) and 4
// direct ones, each its duration plus its warm-up plus about a second; 60 s of setup.
const HARD_DEADLINE_MS = Math.max(9 * 60, 1.25 * (60 + RUNS * ((opt('layout', 'both') === 'both' ? 2 : 1) * 14 + 4) * (DURATION + 1 + 1))) * 1000;

const log = (m) => console.log(`[bench] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();

// ───────────────────────────── processes we start ─────────────────────────────
const children = new Map(); // pid → { name, proc }
let cleanupHooks = [];

function startProc(name, cmd, args, { env = {}, core = null, stdio } = {}) {
  const pinned = core !== null && PIN;
  const [c, a] = pinned ? ['taskset', ['-c', String(core), cmd, ...args]] : [cmd, args];
  const proc = spawn(c, a, { cwd: ROOT, env: { ...process.env, ...env }, stdio: stdio ?? ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.on('data', (d) => (out = (out + d).slice(-20000)));
  proc.stderr?.on('data', (d) => (out = (out + d).slice(-20000)));
  children.set(proc.pid, { name, proc });
  proc.once('exit', () => children.delete(proc.pid));
  return { proc, pid: proc.pid, output: () => out };
}

function stopProc(p, signal = 'SIGTERM', graceMs = 8000) {
  return new Promise((resolve) => {
    if (!p || p.proc.exitCode !== null || p.proc.signalCode !== null) return resolve();
    const timer = setTimeout(() => {
      try {
        p.proc.kill('SIGKILL');
      } catch {}
    }, graceMs);
    p.proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      p.proc.kill(signal);
    } catch {
      resolve();
    }
  });
}

async function cleanup() {
  for (const hook of cleanupHooks.reverse()) {
    try {
      await hook();
    } catch (err) {
      console.error(`[bench] cleanup: ${err.message}`);
    }
  }
  cleanupHooks = [];
  for (const { proc } of children.values()) {
    try {
      proc.kill('SIGKILL');
    } catch {}
  }
}

let exiting = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    if (exiting) return;
    exiting = true;
    console.error(`[bench] ${sig}: stopping everything this run started`);
    await cleanup();
    process.exit(130);
  });
}
const deadline = setTimeout(async () => {
  console.error(`[bench] hard deadline (${Math.round(HARD_DEADLINE_MS / 60000)} min) reached: stopping`);
  exiting = true;
  await cleanup();
  process.exit(2);
}, HARD_DEADLINE_MS);
deadline.unref();

// ───────────────────────────── small helpers ─────────────────────────────
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const PIN = has('taskset') && cpus().length >= 2;
// The two layouts (see the header): which core the gateways, the load (wrk, mock, TTFB probe) and
// the bench database's PostgreSQL backends run on.
const LAYOUTS = {
  percore: { id: 'percore', title: 'system per core', gateway: 1, load: 0, pg: 1,
             placement: 'gateways and PostgreSQL backends on core 1; wrk, mock and TTFB probe on core 0' },
  split: { id: 'split', title: 'split', gateway: 0, load: 1, pg: 1,
           placement: 'gateways on core 0; wrk, mock, TTFB probe and PostgreSQL backends on core 1' },
};
const LAYOUT_ARG = opt('layout', 'both');
if (!['percore', 'split', 'both'].includes(LAYOUT_ARG)) {
  console.error(`--layout ${LAYOUT_ARG}: percore, split or both`);
  process.exit(2);
}
// Unpinned (one core, or no taskset), the layouts are the same thing: run one.
const LAYOUT_IDS = !PIN ? ['split'] : LAYOUT_ARG === 'both' ? ['percore', 'split'] : [LAYOUT_ARG];

/** Moves a running process, every thread of it, to a core (a layout change). */
function pinPid(pid, core) {
  if (PIN) spawnSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
}

/** CPU time of one process in microseconds from /proc/<pid>/schedstat (nanoseconds on the CPU),
 *  for the micro-measures: utime+stime come in clock ticks (10 ms), too coarse for a second of
 *  work on one backend. Falls back to utime+stime when schedstat is missing. */
function cpuPreciseUs(pid) {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1000;
  } catch {
    return cpuUs(pid);
  }
}
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
}

/** utime+stime of one process in microseconds, or null if it is gone. */
function cpuUs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields after "comm": state(3) ppid(4) … utime(14) stime(15) → indexes 11, 12
    return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK;
  } catch {
    return null;
  }
}

function ppidOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

function rssKb(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    return { rss: Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? NaN), hwm: Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? NaN) };
  } catch {
    return { rss: NaN, hwm: NaN };
  }
}

/** The postmaster and every process it forked: the whole cluster. */
function clusterPids(postmaster) {
  const pids = [postmaster];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    if (ppidOf(Number(d)) === postmaster) pids.push(Number(d));
  }
  return pids;
}

function cpuOf(pids) {
  const m = new Map();
  for (const p of pids) {
    const c = cpuUs(p);
    if (c !== null) m.set(p, c);
  }
  return m;
}

/** CPU used between two snapshots by the processes alive at the second (new ones count from 0). */
function cpuDelta(before, after) {
  let sum = 0;
  for (const [pid, c] of after) sum += c - (before.get(pid) ?? 0);
  return sum;
}

function ensureWrk() {
  if (has('wrk')) return;
  log('wrk is not installed: installing it from Debian (apt-get install wrk) — the load generator of this benchmark…');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const pre = process.getuid?.() === 0 ? [] : ['sudo', '-n'];
  const apt = (args) => spawnSync(pre[0] ?? args[0], pre.length ? [...pre.slice(1), ...args] : args.slice(1), { stdio: 'inherit', env });
  let r = apt(['apt-get', 'install', '-y', '-q', '--no-install-recommends', 'wrk']);
  if (r.status !== 0) {
    apt(['apt-get', 'update', '-q']);
    r = apt(['apt-get', 'install', '-y', '-q', '--no-install-recommends', 'wrk']);
  }
  if (r.status !== 0 || !has('wrk')) throw new Error('could not install wrk (apt-get install wrk); install it and re-run');
}

async function metrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name) => {
    const escaped = name.replace(/[{}"=]/g, (c) => `\\${c}`);
    const m = new RegExp(`^${escaped} (\\d+(?:\\.\\d+)?)$`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  };
  const byFunction = {};
  for (const m of text.matchAll(/^elygate_db_queries_total\{function="([^"]+)"\} (\d+)$/gm)) byFunction[m[1]] = Number(m[2]);
  return {
    queries: get('elygate_db_queries_total'),
    // Requests sent for admission, and the calls that carried them (a busy gateway batches them).
    begin: get('elygate_admissions_total'),
    admitCalls: get('elygate_admission_calls_total{kind="single"}') + get('elygate_admission_calls_total{kind="batch"}'),
    finish: get('elygate_db_queries_total{function="relay_finish"}'),
    outcomes: get('elygate_settled_outcomes_total'),
    queue: get('elygate_settle_queue_depth'),
    byFunction,
  };
}

/** Waits until every request that was admitted has its outcome settled (a batch still in
 *  flight is not in the queue depth, so compare the two counters). */
async function waitSettled(url) {
  let last = null;
  for (let i = 0; i < 300; i++) {
    const m = await metrics(url);
    if (m.queue === 0 && m.outcomes >= m.begin) return;
    // A gateway that makes no database calls (bare) settles nothing: stop once nothing moves.
    if (m.queue === 0 && last && last.outcomes === m.outcomes && last.begin === m.begin && i > 20) return;
    last = m;
    await sleep(10);
  }
}

// ───────────────────────────── main ─────────────────────────────
async function main() {
  ensureWrk();
  mkdirSync(RESULTS, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'elygate-bench-'));
  cleanupHooks.push(() => rmSync(work, { recursive: true, force: true }));

  const env0 = {
    load_start: loadavg().map((x) => x.toFixed(2)).join(' '),
    cores: cpus().length,
    cpu_model: cpus()[0]?.model ?? '?',
    pinned: PIN,
    bun: spawnSync(BUN, ['--version'], { encoding: 'utf8' }).stdout.trim(),
    wrk: (spawnSync('wrk', ['--version'], { encoding: 'utf8' }).stdout || '').split('\n')[0].trim(),
  };

  // ── database ──
  const st0 = await ensurePostgres({ log: () => {} });
  const st = readState() ?? st0;
  const pgVersion = st.version;
  const superUrl = st.url;
  const dbName = `bench_${randomBytes(4).toString('hex')}`;
  const root = postgres(superUrl, { max: 1, onnotice: () => {} });
  await root.unsafe(`create database ${dbName}`);
  await root.end();
  /** Other test or bench databases with a session open now (idle leftovers do not load the box). */
  const othersBusy = async (q) =>
    (await q`select count(distinct datname)::int as n from pg_stat_activity
              where datname like 'gw_test_%' or (datname like 'bench_%' and datname <> ${dbName})`)[0].n;
  const u = new URL(superUrl);
  u.pathname = `/${dbName}`;
  const dbUrl = u.toString();
  cleanupHooks.push(async () => {
    if (KEEP_DB) return log(`kept database ${dbName}`);
    const r = postgres(superUrl, { max: 1, onnotice: () => {} });
    await r.unsafe(`drop database if exists ${dbName} with (force)`);
    await r.end();
    log(`dropped ${dbName}`);
  });
  log(`PostgreSQL ${pgVersion} on 127.0.0.1:${st.port}; database ${dbName}; migrating…`);
  let SRC = ROOT;
  let source = 'working tree';
  if (!FORCE_HEAD) {
    try {
      const { migrateDatabase } = await import(join(ROOT, 'scripts', 'migrate.mjs'));
      await migrateDatabase(dbUrl, { log: () => {} });
    } catch (err) {
      log(`the working tree does not migrate (${String(err.message).split('\n').filter((l) => /failed|error/i.test(l)).slice(-1)[0] ?? err.message}); benchmarking HEAD instead`);
      SRC = null;
    }
  }
  if (FORCE_HEAD || SRC === null) {
    const rev = REV ?? 'HEAD';
    SRC = snapshot(work, rev);
    const head = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', rev], { encoding: 'utf8' }).stdout.trim();
    source = `${rev === 'HEAD' ? 'HEAD' : 'commit'} ${head} (git archive snapshot${FORCE_HEAD ? '' : '; the working tree did not migrate'})`;
    const r = postgres(superUrl, { max: 1, onnotice: () => {} });
    await r.unsafe(`drop database if exists ${dbName} with (force)`);
    await r.unsafe(`create database ${dbName}`);
    await r.end();
    const { migrateDatabase } = await import(join(SRC, 'scripts', 'migrate.mjs'));
    await migrateDatabase(dbUrl, { log: () => {} });
  }
  env0.source = source;

  const masterKey = randomBytes(32).toString('hex');
  const sql = postgres(dbUrl, { max: 2, onnotice: () => {}, connection: { 'elygate.master_key': masterKey } });
  let othersTesting = await othersBusy(sql);
  cleanupHooks.push(() => sql.end({ timeout: 5 }));
  await sql`create extension if not exists pg_stat_statements`;
  // The mock upstream listens on 127.0.0.1: allow private upstreams in this benchmark database.
  await sql`select admin.option_set('AllowPrivateUpstreams', 'true')`;
  for (const [k, v] of OPTIONS) await sql`select admin.option_set(${k}, ${v})`;
  if (PROFILE) await sql.unsafe(`alter database ${dbName} set pg_stat_statements.track = 'all'`);
  const pgSettings = Object.fromEntries(
    (await sql`select name, setting from pg_settings where name in ('fsync','synchronous_commit','wal_level','shared_buffers','max_connections','commit_delay')`).map((r) => [r.name, r.setting]),
  );
  const postmaster = Number(readFileSync(join(st.pgDataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);

  // ── mock upstream ──
  // (Started where the first layout puts the load; each layout moves it: pinPid.)
  const L0 = LAYOUTS[LAYOUT_IDS[0]];
  const mock = startProc('mock', BUN, [join(ROOT, 'bench', 'mock-upstream.ts')], { core: L0.load, env: { MOCK_CHUNKS: '20' } });
  cleanupHooks.push(() => stopProc(mock));
  let mockPort = null;
  for (let i = 0; i < 100 && !mockPort; i++) {
    await sleep(50);
    const m = /\{"port":(\d+)\}/.exec(mock.output());
    if (m) mockPort = Number(m[1]);
  }
  if (!mockPort) throw new Error(`mock upstream did not start:\n${mock.output()}`);
  const mockUrl = `http://127.0.0.1:${mockPort}`;

  // ── seed: a channel, prices, 1,001 funded users with a limited key each ──
  log('seeding: channel, prices, 1,001 users, wallets, keys (admin.* API)…');
  await sql`select admin.model_upsert('{"name": "bench-model", "input_price": 150000, "output_price": 600000}')`;
  await sql`select admin.model_upsert('{"name": "bench-embed", "input_price": 20000}')`;
  await sql`select admin.channel_create(${sql.json({ name: 'bench-mock', base_url: mockUrl, api_key: 'sk-bench-upstream', models: ['bench-model', 'bench-embed'] })})`;
  await sql`select admin.user_create(jsonb_build_object('username', 'bench_' || i)) from generate_series(0, ${N_SPREAD_KEYS}) i`;
  await sql`select admin.wallet_credit(jsonb_build_object('username', 'bench_' || i, 'amount_micros', 1000000000000)) from generate_series(0, ${N_SPREAD_KEYS}) i`;
  const keyRows = await sql`
    select i, admin.key_create(jsonb_build_object('username', 'bench_' || i, 'name', 'bench',
             'quota_micros', 1000000000000000, 'rpm_limit', 1000000000, 'tpm_limit', 2000000000,
             'concurrency_limit', 100000, 'cache_enabled', false)) ->> 'key' as key
      from generate_series(0, ${N_SPREAD_KEYS}) i order by i`;
  // The response cache is on by default; the scenarios above measure the upstream path, so their
  // keys have it off. One more key of the hot user has it on: identical requests become exact hits.
  const [{ key: cacheKey }] = await sql`
    select admin.key_create('{"username": "bench_0", "name": "bench-cache", "quota_micros": 1000000000000000,
                              "rpm_limit": 1000000000, "tpm_limit": 2000000000, "concurrency_limit": 100000}') ->> 'key' as key`;
  await sql`vacuum analyze`;
  const hotKey = keyRows[0].key;
  const spreadKeys = keyRows.slice(1).map((r) => r.key);
  writeFileSync(join(work, 'hot.keys'), hotKey + '\n');
  writeFileSync(join(work, 'spread.keys'), spreadKeys.join('\n') + '\n');
  writeFileSync(join(work, 'cache.keys'), cacheKey + '\n');

  const messages = [{ role: 'user', content: 'Say hello to the benchmark in twenty words, please.' }];
  const bodies = {
    chat: { model: 'bench-model', messages, max_tokens: 64 },
    stream: { model: 'bench-model', messages, max_tokens: 64, stream: true, stream_options: { include_usage: true } },
    embed: { model: 'bench-embed', input: 'The quick brown fox jumps over the lazy dog.' },
  };
  for (const [k, b] of Object.entries(bodies)) writeFileSync(join(work, `${k}.json`), JSON.stringify(b));

  // ── gateways ──
  async function startGateway(name, extraEnv) {
    const port = await freePort();
    const args = [];
    if (PROFILE && name === 'elygate') args.push('--cpu-prof', '--cpu-prof-md', `--cpu-prof-dir=${join(RESULTS, 'profile')}`, '--cpu-prof-name=gateway.cpuprofile');
    args.push(join(SRC, 'gateway', 'src', 'index.ts'));
    const g = startProc(name, BUN, args, {
      core: L0.gateway,
      env: {
        DATABASE_URL: dbUrl,
        GATEWAY_DATABASE_URL: '',
        ELYGATE_MASTER_KEY: masterKey,
        PORT: String(port),
        HOST: '127.0.0.1',
        ELYGATE_SPOOL_DIR: mkdtempSync(join(work, `spool-${name}-`)),
        NODE_ENV: 'production',
        ...extraEnv,
      },
    });
    g.url = `http://127.0.0.1:${port}`;
    g.name = name;
    cleanupHooks.push(() => stopProc(g));
    const until = Date.now() + 30000;
    for (;;) {
      if (g.proc.exitCode !== null) throw new Error(`gateway ${name} exited early:\n${g.output()}`);
      try {
        const r = await fetch(`${g.url}/healthz`);
        if (r.ok) break;
      } catch {}
      if (Date.now() > until) throw new Error(`gateway ${name} did not start:\n${g.output()}`);
      await sleep(100);
    }
    await sleep(300);
    g.rssIdle = rssKb(g.pid).rss;
    return g;
  }
  const bare = await startGateway('bare', { ELYGATE_BARE_PROXY: '1', ELYGATE_BARE_UPSTREAM: mockUrl });
  const ely = await startGateway('elygate', {});
  const gateways = { bare, elygate: ely };
  log(`mock ${mockUrl}, bare ${bare.url}, elygate ${ely.url}; layouts ${LAYOUT_IDS.join(', ')} (pinned: ${PIN})`);

  // Sanity: one request through each target before measuring.
  for (const [name, url, key] of [['direct', mockUrl, null], ['bare', bare.url, hotKey], ['elygate', ely.url, hotKey]]) {
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify(bodies.chat),
    });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`${name}: sanity request got ${r.status}: ${text.slice(0, 300)}`);
  }

  /** Pins this database's PostgreSQL backends to a core (only ours: the cluster is shared). */
  async function pinBackends(core) {
    if (!PIN) return;
    const rows = await sql`select pid from pg_stat_activity where datname = ${dbName}`;
    for (const { pid } of rows) spawnSync('taskset', ['-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
  }
  async function benchPgPids() {
    const rows = await sql`select pid from pg_stat_activity where datname = ${dbName} and pid <> pg_backend_pid()`;
    return rows.map((r) => r.pid);
  }

  function runWrk(url, path, bodyFile, keysFile, conns, seconds, core) {
    return new Promise((resolve, reject) => {
      const lua = join(ROOT, 'bench', 'wrk', 'post.lua');
      const p = startProc('wrk', 'wrk', ['-t1', `-c${conns}`, `-d${seconds}s`, '--timeout', '10s', '-s', lua, `${url}${path}`], {
        core,
        env: { BENCH_PATH: path, BENCH_BODY_FILE: bodyFile, BENCH_KEYS_FILE: keysFile ?? '' },
      });
      const timer = setTimeout(() => p.proc.kill('SIGKILL'), (seconds + 20) * 1000);
      p.proc.once('exit', (code) => {
        clearTimeout(timer);
        const m = /BENCH_JSON (\{.*\})/.exec(p.output());
        if (!m) return reject(new Error(`wrk failed (exit ${code}):\n${p.output()}`));
        resolve(JSON.parse(m[1]));
      });
    });
  }

  function runTtfb(url, keysFile, core, count = 300, warmup = 30) {
    return new Promise((resolve, reject) => {
      const key = keysFile ? readFileSync(keysFile, 'utf8').split('\n')[0] : '-';
      const p = startProc('ttfb', process.execPath, [join(ROOT, 'bench', 'ttfb.mjs'), url, '/v1/chat/completions', join(work, 'stream.json'), key, String(count), String(warmup)], { core });
      const timer = setTimeout(() => p.proc.kill('SIGKILL'), 60000);
      p.proc.once('exit', (code) => {
        clearTimeout(timer);
        const m = /BENCH_JSON (\{.*\})/.exec(p.output());
        if (!m) return reject(new Error(`ttfb probe failed (exit ${code}):\n${p.output()}`));
        resolve(JSON.parse(m[1]));
      });
    });
  }

  const scenarios = [
    { id: 'chat-c32', title: 'non-stream chat, 32 connections', body: 'chat', conns: 32, keys: 'hot', targets: ['direct', 'bare', 'elygate'], floor: true },
    { id: 'stream-c32', title: 'stream chat (20 chunks + usage), 32 connections', body: 'stream', conns: 32, keys: 'hot', targets: ['direct', 'bare', 'elygate'] },
    { id: 'chat-c1', title: 'non-stream chat, 1 connection', body: 'chat', conns: 1, keys: 'hot', targets: ['direct', 'bare', 'elygate'], floor: true },
    { id: 'chat-c32-spread', title: 'non-stream chat, 32 connections, 1,000 keys of 1,000 users', body: 'chat', conns: 32, keys: 'spread', targets: ['elygate'] },
    { id: 'embed-c32', title: 'embeddings, 32 connections', body: 'embed', path: '/v1/embeddings', conns: 32, keys: 'hot', targets: ['direct', 'bare', 'elygate'] },
    { id: 'chat-c32-cache', title: 'non-stream chat, 32 connections, exact cache hits (the same request, cache on for the key)', body: 'chat', conns: 32, keys: 'cache', targets: ['elygate'] },
  ];

  // The floor writes rows like the one elygate wrote for the sanity request of the hot key (its
  // route plan, group, usage, reservation and prices), so both write rows of the same width.
  await waitSettled(ely.url);
  const hotHash = createHash('sha256').update(hotKey).digest('hex');
  const [floorSample] = await sql`
    select r.model, r.endpoint, host(r.client_ip) as client_ip, r.prompt_tokens, r.completion_tokens, r.reserved_micros,
           r.reserved_tokens, r.route_plan, r.group_name, r.channel_id, r.upstream_model, r.attempts,
           l.input_price, l.output_price, ${hotHash} as key_hash
      from private.requests r join private.ledger l on l.request_id = r.id
     where r.key_id = (select k.id from private.api_keys k where k.key_hash = decode(${hotHash}, 'hex'))
     order by r.finished_at desc limit 1`;

  /** Moves the mock and the gateways to the layout's cores (wrk, the probes and the floor's client
   *  start there; the backends are moved before each cell). */
  function applyLayout(L) {
    pinPid(mock.pid, L.load);
    for (const g of Object.values(gateways)) pinPid(g.pid, L.gateway);
  }

  /** One measured cell: a warm-up, then wrk with CPU and /metrics read around it. */
  async function measureCell(L, sc, target, rep) {
    const gw = gateways[target] ?? null;
    const url = gw ? gw.url : mockUrl;
    const path = sc.path ?? '/v1/chat/completions';
    const bodyFile = join(work, `${sc.body}.json`);
    const keysFile = target === 'direct' ? null : join(work, `${sc.keys}.keys`);
    await runWrk(url, path, bodyFile, keysFile, sc.conns, WARMUP, L.load);
    if (gw) await waitSettled(gw.url);
    await pinBackends(L.pg);
    const pgPids0 = await benchPgPids();
    const m0 = gw ? await metrics(gw.url) : null;
    const g0 = gw ? cpuUs(gw.pid) : 0;
    const pgB0 = cpuOf(pgPids0);
    const pgC0 = cpuOf(clusterPids(postmaster));
    const mk0 = cpuUs(mock.pid);
    const w = await runWrk(url, path, bodyFile, keysFile, sc.conns, DURATION, L.load);
    if (gw) await waitSettled(gw.url);
    const g1 = gw ? cpuUs(gw.pid) : 0;
    const pgPids1 = await benchPgPids();
    const pgB1 = cpuOf([...new Set([...pgPids0, ...pgPids1])]);
    const pgC1 = cpuOf(clusterPids(postmaster));
    const mk1 = cpuUs(mock.pid);
    const m1 = gw ? await metrics(gw.url) : null;
    // Requests the gateway handled: every admission is settled by exactly one outcome,
    // including the connections wrk cuts at the end of its run (which it does not count).
    const settledOutcomes = gw ? m1.outcomes - m0.outcomes : 0;
    const n = settledOutcomes > 0 ? settledOutcomes : w.requests || 1;
    const errors = w.errors.connect + w.errors.read + w.errors.write + w.errors.status + w.errors.timeout;
    const r = {
      rep,
      // Direct (wrk → mock) does not involve the layout: null, measured once per run.
      layout: target === 'direct' ? null : L.id,
      scenario: sc.id,
      target,
      conns: sc.conns,
      requests: w.requests,
      rps: w.requests / (w.duration_us / 1e6),
      p50_us: w.latency_us.p50,
      p90_us: w.latency_us.p90,
      p99_us: w.latency_us.p99,
      max_us: w.latency_us.max,
      errors,
      error_detail: w.errors,
      gw_cpu_us_per_req: gw ? (g1 - g0) / n : null,
      pg_cpu_us_per_req: cpuDelta(pgB0, pgB1) / n,
      pg_cluster_cpu_us_per_req: cpuDelta(pgC0, pgC1) / n,
      mock_cpu_us_per_req: (mk1 - mk0) / n,
    };
    if (gw) {
      const d = (k) => m1[k] - m0[k];
      r.handled = n;
      r.db_round_trips_per_req = d('queries') / n;
      r.relay_begin_per_req = d('admitCalls') / n;   // admission round trips (relay_begin or _batch) per request
      r.requests_per_admission_call = d('admitCalls') > 0 ? d('begin') / d('admitCalls') : null;
      // A request's own critical path: the one admission call it waited for (shared or not), plus
      // any other query made for it alone (cache_lookup); relay_finish is off the path.
      r.critical_rt_per_req = (d('queries') - d('finish') - d('admitCalls') + d('begin')) / n;
      r.relay_finish_calls = d('finish');
      r.outcomes_per_finish = d('finish') > 0 ? d('outcomes') / d('finish') : null;
      r.other_queries = Object.fromEntries(
        Object.entries(m1.byFunction)
          .map(([f, v]) => [f, v - (m0.byFunction[f] ?? 0)])
          .filter(([f, v]) => v > 0 && f !== 'relay_begin' && f !== 'relay_begin_batch' && f !== 'relay_finish'),
      );
      // The bare gateway still loads its options and runs the 30 s maintenance check; what must
      // be absent is the request path's database work.
      if (target === 'bare' && (d('begin') > 0 || d('finish') > 0)) bareHitDb = true;
    }
    runs.push(r);
    log(
      `run ${rep}/${RUNS} ${(r.layout ?? '-').padEnd(7)} ${sc.id.padEnd(16)} ${target.padEnd(8)} ${r.rps.toFixed(0).padStart(6)} rps  p50 ${(r.p50_us / 1000).toFixed(2)} ms  p99 ${(r.p99_us / 1000).toFixed(2)} ms  err ${errors}` +
        (gw ? `  gw ${r.gw_cpu_us_per_req.toFixed(0)} µs/req  pg ${r.pg_cpu_us_per_req.toFixed(0)} µs/req  rt/req ${r.db_round_trips_per_req.toFixed(3)}  outcomes/finish ${r.outcomes_per_finish?.toFixed(1) ?? '-'}` : ''),
    );
    return r;
  }

  // The floor's admission lanes: the gateway's (AdmissionConcurrency, as set in this database).
  const [{ lanes: floorLanes }] = await sql`select coalesce((select value::integer from private.options where key = 'AdmissionConcurrency'), 1) as lanes`;

  /** Starts the floor's client (bench/floor/floor.mjs) where the gateway runs in this layout. */
  function startFloor(L, conns, admitBatch, batch) {
    const p = startProc('floor', process.execPath, [join(ROOT, 'bench', 'floor', 'floor.mjs')], {
      core: L.gateway,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { FLOOR_CONFIG: JSON.stringify({ url: dbUrl, conns, lanes: floorLanes, admit_batch: admitBatch, batch, seconds: DURATION, warmup: WARMUP, sample: floorSample }) },
    });
    const waitFor = (re, ms) => new Promise((resolve, reject) => {
      const until = Date.now() + ms;
      const tick = () => {
        const m = re.exec(p.output());
        if (m) return resolve(m);
        if (p.proc.exitCode !== null || p.proc.signalCode !== null) return reject(new Error(`floor exited:\n${p.output()}`));
        if (Date.now() > until) return reject(new Error(`floor timed out:\n${p.output()}`));
        setTimeout(tick, 20);
      };
      tick();
    });
    return {
      ready: waitFor(/FLOOR_READY/, (WARMUP + 30) * 1000),
      go: async () => {
        p.proc.stdin.write('go\n');
        return JSON.parse((await waitFor(/BENCH_JSON (\{.*\})/, (DURATION + 30) * 1000))[1]);
      },
      end: async () => {
        try {
          p.proc.stdin.end('end\n');
        } catch {}
        await stopProc(p, 'SIGTERM', 10000);
      },
      kill: () => stopProc(p, 'SIGKILL'),
    };
  }

  /** The floor at sc.conns concurrent requests, admitting up to `admitBatch` per call and settling
   *  `batch` outcomes per call: PostgreSQL CPU per request measured as for the gateway cells (this
   *  database's backends, /proc/<pid>/stat). */
  async function measureFloor(L, sc, rep, admitBatch, batch) {
    const f = startFloor(L, sc.conns, admitBatch, batch);
    try {
      await f.ready; // warmed up, every admission settled
      await pinBackends(L.pg);
      const pgPids0 = await benchPgPids();
      const pgB0 = cpuOf(pgPids0);
      const pgC0 = cpuOf(clusterPids(postmaster));
      const res = await f.go();
      // (The floor's connections are still open: their backends' CPU can be read.)
      const pgPids1 = await benchPgPids();
      const pgB1 = cpuOf([...new Set([...pgPids0, ...pgPids1])]);
      const pgC1 = cpuOf(clusterPids(postmaster));
      await f.end();
      const n = res.requests || 1;
      const r = {
        rep,
        layout: L.id,
        scenario: sc.id,
        target: 'floor',
        conns: sc.conns,
        requests: res.requests,
        // Requests per second of the database work alone (no HTTP, no upstream): not comparable
        // with the other targets' RPS.
        rps: res.requests / (res.duration_us / 1e6),
        p50_us: null,
        p90_us: null,
        p99_us: null,
        errors: res.refused,
        gw_cpu_us_per_req: null,
        pg_cpu_us_per_req: cpuDelta(pgB0, pgB1) / n,
        pg_cluster_cpu_us_per_req: cpuDelta(pgC0, pgC1) / n,
        db_round_trips_per_req: (res.admit_calls + res.batches) / n,
        requests_per_admission_call: res.admit_calls ? res.admitted / res.admit_calls : null,
        floor_admit_batch: admitBatch,
        floor_batch: batch,
        outcomes_per_finish: res.batches ? res.requests / res.batches : null,
      };
      runs.push(r);
      log(`run ${rep}/${RUNS} ${L.id.padEnd(7)} ${sc.id.padEnd(16)} floor    ${r.rps.toFixed(0).padStart(6)} req/s (database only)  pg ${r.pg_cpu_us_per_req.toFixed(0)} µs/req  admission batch ${admitBatch} (${r.requests_per_admission_call?.toFixed(1)})  settlement batch ${batch}  refused ${res.refused}`);
      return r;
    } catch (err) {
      await f.kill();
      throw err;
    }
  }

  const runs = [];
  const ttfbs = [];
  const floorErrors = [];
  let bareHitDb = false;
  applyLayout(L0);
  // Bun's JIT compiles the hot paths during the first seconds of load (its compiler thread took
  // about 18 % of the gateway's CPU then): without this the first measured cell pays for it.
  for (const gw of [gateways.bare, gateways.elygate]) {
    if (!gw) continue;
    await runWrk(gw.url, '/v1/chat/completions', join(work, 'chat.json'), join(work, 'hot.keys'), 32, JIT_WARMUP, L0.load);
    await waitSettled(gw.url);
  }
  for (let rep = 1; rep <= RUNS; rep++) {
    // The order of the layouts turns each run (percore first, then split first, …): on this
    // machine the second of two back-to-back measurements tends to measure worse (finding 41).
    const order = rep % 2 ? LAYOUT_IDS : [...LAYOUT_IDS].reverse();
    for (const [li, lid] of order.entries()) {
      const L = LAYOUTS[lid];
      applyLayout(L);
      for (const sc of scenarios) {
        let elyCell = null;
        for (const target of sc.targets) {
          if (target === 'direct' && li > 0) continue; // once per run
          const r = await measureCell(L, sc, target, rep);
          if (target === 'elygate') elyCell = r;
        }
        if (sc.floor) {
          // The gateway's batch sizes in the cell just measured: requests per admission call (at
          // most), outcomes per relay_finish.
          const admitBatch = Math.max(1, Math.round(elyCell?.requests_per_admission_call ?? 1));
          const batch = Math.max(1, Math.round(elyCell?.outcomes_per_finish ?? (sc.conns > 1 ? 100 : 16)));
          try {
            await measureFloor(L, sc, rep, admitBatch, batch);
          } catch (err) {
            // (A --rev whose schema predates the floor's tables, say: the rest of the run stands.)
            const msg = String(err.message).split('\n').slice(0, 6).join(' | ');
            floorErrors.push(`${L.id} ${sc.id} run ${rep}: ${msg}`);
            log(`floor ${L.id} ${sc.id} failed: ${msg}`);
          }
        }
        if (sc.id === 'stream-c32') {
          for (const target of sc.targets) {
            if (target === 'direct' && li > 0) continue;
            const gw = gateways[target] ?? null;
            const t = await runTtfb(gw ? gw.url : mockUrl, target === 'direct' ? null : join(work, 'hot.keys'), L.load);
            ttfbs.push({ rep, layout: target === 'direct' ? null : L.id, target, ...t });
            log(`run ${rep}/${RUNS} ${(target === 'direct' ? '-' : L.id).padEnd(7)} stream TTFB c=1   ${target.padEnd(8)} p50 ${(t.ttfb_us.p50 / 1000).toFixed(3)} ms  p99 ${(t.ttfb_us.p99 / 1000).toFixed(3)} ms  err ${t.errors}`);
          }
        }
      }
    }
  }

  // Micro-measures: one connection, one backend, its CPU per call.
  let micro = null;
  try {
    micro = await microMeasures(dbUrl, hotKey, LAYOUTS[LAYOUT_IDS[0]].pg);
    log(`micro: relay_begin ${micro.relay_begin_us.toFixed(0)} µs/call; relay_finish ${micro.relay_finish_call_us.toFixed(0)} µs/call + ${micro.relay_finish_outcome_us.toFixed(1)} µs/outcome`);
  } catch (err) {
    micro = { error: String(err.message).split('\n')[0] };
    log(`micro-measures failed: ${micro.error}`);
  }

  othersTesting = Math.max(othersTesting, await othersBusy(sql));

  // ── RSS after, profiles, statement statistics ──
  const rss = {};
  for (const [name, g] of Object.entries(gateways)) {
    const after = rssKb(g.pid);
    rss[name] = { idle_mb: g.rssIdle / 1024, after_mb: after.rss / 1024, peak_mb: after.hwm / 1024 };
  }

  const statements = await sql`
    select calls, round(total_exec_time::numeric, 1) as total_ms, round(mean_exec_time::numeric, 4) as mean_ms,
           rows, shared_blks_hit, shared_blks_read, wal_records, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) as query
      from pg_stat_statements s join pg_database d on d.oid = s.dbid
     where d.datname = ${dbName}
     order by total_exec_time desc limit 15`;

  let explain = null;
  if (PROFILE) explain = await explainRelayBegin(dbUrl, hotKey);

  // Stop the gateways now (a --cpu-prof profile is written at exit).
  await stopProc(ely);
  await stopProc(bare);

  const result = {
    when: new Date().toISOString(),
    command: `npm run bench${argv.length ? ' -- ' + argv.join(' ') : ''}`,
    duration_s: DURATION,
    warmup_s: WARMUP,
    jit_warmup_s: JIT_WARMUP,
    runs: RUNS,
    env: { ...env0, load_end: loadavg().map((x) => x.toFixed(2)).join(' '), others_testing: othersTesting, postgres: pgVersion, pg_settings: pgSettings },
    bare_switch_working: !bareHitDb,
    layouts: LAYOUT_IDS.map((id) => LAYOUTS[id]),
    scenarios: scenarios.map(({ id, title, conns, targets, floor }) => ({ id, title, conns, targets, floor: !!floor })),
    runs_raw: runs,
    ttfb_raw: ttfbs,
    floor_errors: floorErrors,
    micro,
    rss,
    statements,
    explain,
    elapsed_s: Math.round((Date.now() - t0) / 1000),
  };
  result.summary = summarize(result);
  writeFileSync(join(RESULTS, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(RESULTS, 'plot.svg'), renderSvg(result));
  const md = renderMarkdown(result);
  writeFileSync(join(RESULTS, 'latest.md'), md);
  if (!NO_DOCS) updateDocs(join(ROOT, 'docs', 'performance.md'), md);
  if (explain) writeFileSync(join(RESULTS, 'relay_begin-explain.txt'), explain);
  console.log('\n' + md);
  log(`done in ${result.elapsed_s} s; results in ${relative(ROOT, RESULTS) || '.'}/${NO_DOCS ? '' : ' and docs/performance.md'}`);
}

/** A read-only snapshot of a commit (git archive), with this checkout's node_modules linked in. */
function snapshot(work, rev) {
  const dir = join(work, 'snapshot');
  mkdirSync(dir, { recursive: true });
  const sha = spawnSync('git', ['-C', ROOT, 'rev-parse', '--verify', '--quiet', `${rev}^{commit}`], { encoding: 'utf8' }).stdout.trim();
  if (!sha) throw new Error(`--rev ${rev}: not a commit of this repository`);
  const r = spawnSync('git', ['-C', ROOT, 'archive', '--format=tar', sha], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`git archive ${rev} failed: ${String(r.stderr).trim()}`);
  const x = spawnSync('tar', ['-x', '-C', dir], { input: r.stdout, stdio: ['pipe', 'inherit', 'inherit'] });
  if (x.status !== 0) throw new Error(`unpacking git archive ${rev} failed`);
  for (const nm of ['node_modules', 'gateway/node_modules', 'admin/node_modules']) {
    if (existsSync(join(ROOT, nm)) && !existsSync(join(dir, nm))) symlinkSync(join(ROOT, nm), join(dir, nm));
  }
  return dir;
}

/**
 * Micro-measures, on one connection whose backend is pinned to `core`: the backend's CPU
 * (/proc/<pid>/schedstat) per gateway.relay_begin call (unbatched, the hot key), and per
 * gateway.relay_finish call with 1 outcome and with 100, which give its cost per call and per
 * outcome (bench/micro.mjs's round, which `npm run bench:micro` runs as an A/B of two builds).
 */
async function microMeasures(dbUrl, key, core) {
  const BEGINS = 1500, SINGLES = 400, BIG = 100, BIGS = 10;
  const r = await microRound({ url: dbUrl, key }, {
    begins: BEGINS, singles: SINGLES, big: BIG, bigs: BIGS,
    onBackend: (pid) => { if (PIN) spawnSync('taskset', ['-p', '-c', String(core), String(pid)], { stdio: 'ignore' }); },
  });
  return {
    method: '/proc/<backend pid>/schedstat',
    relay_begin_calls: Math.max(BEGINS, SINGLES + BIG * BIGS),
    relay_begin_us: r.begin_us,
    relay_finish_1_calls: SINGLES,
    relay_finish_1_us: r.finish_1_us,
    relay_finish_100_calls: BIGS,
    relay_finish_100_us: r.finish_1_us + r.finish_outcome_us * (BIG - 1),
    relay_finish_outcome_us: r.finish_outcome_us,
    relay_finish_call_us: r.finish_call_us,
  };
}

/** auto_explain of every statement inside one relay_begin call (ANALYZE, BUFFERS). */
async function explainRelayBegin(dbUrl, key) {
  const notices = [];
  const s = postgres(dbUrl, { max: 1, onnotice: (n) => notices.push(n.message) });
  try {
    await s.begin(async (tx) => {
      await tx`load 'auto_explain'`;
      const hash = createHash('sha256').update(key).digest();
      // Warm the session first (plpgsql caches its plans per session), like a pooled connection.
      for (let i = 0; i < 20; i++) {
        await tx`select * from gateway.relay_begin(${randomUUID()}, ${hash}, 'bench-model', 'chat/completions', false, '127.0.0.1', 20, 64)`;
      }
      await tx`set local auto_explain.log_min_duration = 0`;
      await tx`set local auto_explain.log_analyze = on`;
      await tx`set local auto_explain.log_buffers = on`;
      await tx`set local auto_explain.log_timing = on`;
      await tx`set local auto_explain.log_nested_statements = on`;
      await tx`set local client_min_messages = log`;
      await tx`select * from gateway.relay_begin(${randomUUID()}, ${hash}, 'bench-model', 'chat/completions', false, '127.0.0.1', 20, 64)`;
      await tx`set local client_min_messages = notice`;
      const top = await tx.unsafe(
        `explain (analyze, buffers) select * from gateway.relay_begin('${randomUUID()}', '\\x${hash.toString('hex')}', 'bench-model', 'chat/completions', false, '127.0.0.1', 20, 64)`,
      );
      notices.push('-- top level:\n' + top.map((r) => r['QUERY PLAN']).join('\n'));
      throw new Error('rollback');
    });
  } catch (err) {
    if (err.message !== 'rollback') notices.push(`explain failed: ${err.message}`);
  } finally {
    await s.end({ timeout: 5 });
  }
  return notices.join('\n\n');
}

try {
  await main();
  await cleanup();
  process.exit(0);
} catch (err) {
  console.error(`[bench] failed: ${err.stack ?? err}`);
  await cleanup();
  process.exit(1);
}
