#!/usr/bin/env node
// Elygate — private, embedded PostgreSQL cluster (DESIGN.md §9).
//
// Dependency-free (node: built-ins only): it runs before `npm install`, and also under Bun.
// Provisions PostgreSQL ≥ 15 with pg_cron and pgvector ≥ 0.8 on Debian/Ubuntu (apt), creates a
// cluster in DATA_DIR/pg listening on 127.0.0.1:ELYGATE_PG_PORT (default 5433), and keeps the
// generated secrets in DATA_DIR/state.json (mode 0600).
//
//   node scripts/pg.mjs start|stop|status|url|psql [psql args…]
//
// Exports: DATA_DIR, ensurePostgres({ log }), stopPostgres({ log }), readState().

import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import net from 'node:net';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const IS_ROOT_AT_LOAD = typeof process.getuid === 'function' && process.getuid() === 0;

/** True when every ancestor of dir lets "others" in (the server's OS user is not root's group). */
function othersCanEnter(dir) {
  const parts = path.resolve(dir).split(path.sep).filter(Boolean);
  for (let i = 0; i < parts.length; i++) {
    const d = path.sep + parts.slice(0, i).join(path.sep);
    try {
      if ((fs.statSync(d).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/* why: PostgreSQL will not run as root, so as root the cluster runs as the postgres OS user, which
   must be able to enter every directory above the data folder. A checkout under /root (mode 700)
   fails that, so the data goes to /var/lib/elygate/<checkout>-<hash> instead and .elygate in the
   checkout becomes a symlink to it: the README's "data lives in .elygate" stays true. */
function chooseDataDir() {
  if (process.env.ELYGATE_DATA_DIR) return path.resolve(process.env.ELYGATE_DATA_DIR);
  const local = path.join(REPO_ROOT, '.elygate');
  try {
    if (fs.lstatSync(local).isSymbolicLink()) return fs.realpathSync(local);
  } catch {}
  if (!IS_ROOT_AT_LOAD || othersCanEnter(REPO_ROOT) || fs.existsSync(local)) return local;
  const hash = crypto.createHash('sha256').update(REPO_ROOT).digest('hex').slice(0, 12);
  const target = path.join('/var/lib/elygate', `${path.basename(REPO_ROOT)}-${hash}`);
  fs.mkdirSync(target, { recursive: true, mode: 0o755 });
  fs.chmodSync('/var/lib/elygate', 0o755);
  try {
    fs.symlinkSync(target, local);
  } catch {}
  return target;
}

export const DATA_DIR = chooseDataDir();

const PG_DIR = path.join(DATA_DIR, 'pg');
const LOG_DIR = path.join(DATA_DIR, 'logs');
const BUILD_DIR = path.join(DATA_DIR, 'build');
const STATE_FILE = path.join(DATA_DIR, 'state.json');
const LOCK_FILE = path.join(DATA_DIR, '.provision.lock');
const PG_LOG = path.join(LOG_DIR, 'postgres.log');
const PROVISION_LOG = path.join(LOG_DIR, 'provision.log');
const CONF_NAME = 'elygate.conf';

const HOST = '127.0.0.1';
const SUPERUSER = 'elygate';
const DATABASE = 'elygate';
const DEFAULT_PORT = 5433;
const MIN_MAJOR = 15;
const MIN_PGVECTOR = '0.8.0'; // halfvec (0.7) + iterative index scans (0.8)
const LOCK_STALE_MS = 15 * 60 * 1000;
const PG_LOG_ROTATE_BYTES = 64 * 1024 * 1024;

const TRIXIE_SRC_FILE = '/etc/apt/sources.list.d/elygate-trixie-src.sources';
const TRIXIE_SRC =
  'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\n' +
  'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n';
const DEBIAN_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';

const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

// ───────────────────────────── small helpers ─────────────────────────────

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const exists = (p) => fs.existsSync(p);
const randomSecret = (bytes = 18) => crypto.randomBytes(bytes).toString('hex');
const shortPath = (p) => {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
};

function cmpVersion(a, b) {
  const pa = String(a).split(/[.\-+~]/).map((x) => parseInt(x, 10) || 0);
  const pb = String(b).split(/[.\-+~]/).map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] || 0) - (pb[i] || 0);
    if (d) return d;
  }
  return 0;
}

/** Debian version "1:0.8.0-1+b2" → upstream "0.8.0". */
const upstreamVersion = (v) => String(v).replace(/^\d+:/, '').replace(/-[^-]*$/, '');

function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

class ProvisionError extends Error {}

function fail(msg, logFile) {
  const extra = logFile ? `\n--- last lines of ${logFile} ---\n${tail(logFile)}\n---` : '';
  throw new ProvisionError(msg + extra);
}

/** Run a command, output appended to `logFile`. Returns the exit status (throws on failure unless allowFail). */
function runLogged(cmd, args, { logFile = PROVISION_LOG, env, cwd, allowFail = false, what } = {}) {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  fs.appendFileSync(logFile, `\n[${new Date().toISOString()}] $ ${[cmd, ...args].join(' ')}\n`);
  const fd = fs.openSync(logFile, 'a');
  let r;
  try {
    r = spawnSync(cmd, args, { stdio: ['ignore', fd, fd], env: { ...process.env, ...env }, cwd: cwd || DATA_DIR });
  } finally {
    fs.closeSync(fd);
  }
  const status = r.error ? -1 : r.status;
  if (r.error) fs.appendFileSync(logFile, `${r.error.message}\n`);
  if (status !== 0 && !allowFail) fail(`${what || cmd} failed (exit ${status}).`, logFile);
  return status;
}

/** Run a command and capture its output. */
function capture(cmd, args, { env, cwd, input } = {}) {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    input,
    stdio: [input == null ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, LC_ALL: 'C', ...env },
    cwd: cwd || (exists(DATA_DIR) ? DATA_DIR : '/'),
  });
  return { status: r.error ? -1 : r.status, stdout: r.stdout || '', stderr: (r.stderr || '') + (r.error ? r.error.message : '') };
}

const hasCommand = (name) => capture('sh', ['-c', `command -v ${name}`]).status === 0;

// ───────────────────────────── paths / layout ─────────────────────────────

function socketDirFor() {
  const local = path.join(DATA_DIR, 'run');
  // sun_path is 108 bytes incl. NUL; PostgreSQL appends "/.s.PGSQL.<port>".
  if (Buffer.byteLength(path.join(local, '.s.PGSQL.65535')) <= 107) return local;
  return path.join('/tmp', 'elygate-' + crypto.createHash('sha256').update(DATA_DIR).digest('hex').slice(0, 12));
}

function layoutFor(major) {
  return {
    major: Number(major),
    binDir: `/usr/lib/postgresql/${major}/bin`,
    shareDir: `/usr/share/postgresql/${major}`,
    libDir: `/usr/lib/postgresql/${major}/lib`,
  };
}

function layoutFromState(st) {
  if (st?.binDir && st?.shareDir && st?.libDir) {
    return { major: Number(st.version), binDir: st.binDir, shareDir: st.shareDir, libDir: st.libDir };
  }
  return null;
}

/** Layout via pg_config (non-Debian layouts, e.g. Homebrew or PGDG RPMs) — only used when no Debian layout exists. */
function layoutFromPgConfig(pgConfig = 'pg_config') {
  const r = capture(pgConfig, ['--version', '--bindir', '--sharedir', '--pkglibdir']);
  if (r.status !== 0) return null;
  const [ver, binDir, shareDir, libDir] = r.stdout.trim().split('\n');
  const major = parseInt((ver.match(/PostgreSQL (\d+)/) || [])[1], 10);
  if (!major) return null;
  return { major, binDir, shareDir, libDir };
}

const serverInstalled = (l) => exists(path.join(l.binDir, 'postgres')) && exists(path.join(l.binDir, 'initdb'));

function installedDebianMajors() {
  let names = [];
  try {
    names = fs.readdirSync('/usr/lib/postgresql');
  } catch {
    return [];
  }
  return names
    .filter((n) => /^\d+$/.test(n) && Number(n) >= MIN_MAJOR && serverInstalled(layoutFor(n)))
    .map(Number)
    .sort((a, b) => b - a);
}

function extVersion(l, name) {
  try {
    const t = fs.readFileSync(path.join(l.shareDir, 'extension', `${name}.control`), 'utf8');
    return (t.match(/default_version\s*=\s*'([^']+)'/) || [])[1] || '0';
  } catch {
    return null;
  }
}
const libExists = (l, name) => exists(path.join(l.libDir, `${name}.so`)) || exists(path.join(l.libDir, `${name}.dylib`));
const cronInstalled = (l) => extVersion(l, 'pg_cron') != null && libExists(l, 'pg_cron');
const vectorInstalled = (l) => {
  const v = extVersion(l, 'vector');
  return v != null && cmpVersion(v, MIN_PGVECTOR) >= 0 && libExists(l, 'vector');
};
const statStatementsInstalled = (l) => extVersion(l, 'pg_stat_statements') != null;

// ───────────────────────────── apt ─────────────────────────────

const aptEnv = { DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_MODE: 'a', LC_ALL: 'C' };
let aptUpdated = false;

function privPrefix() {
  if (IS_ROOT) return [];
  if (hasCommand('sudo') && capture('sudo', ['-n', 'true']).status === 0) return ['sudo', '-n'];
  return null;
}

function requireApt(why) {
  if (!hasCommand('apt-get')) {
    fail(
      `${why}, and this system has no apt-get, so it cannot be installed automatically.\n` +
        `Install PostgreSQL ≥ ${MIN_MAJOR} with pg_cron and pgvector ≥ ${MIN_PGVECTOR} yourself, ` +
        `or point DATABASE_URL at an existing server.`,
    );
  }
  const pre = privPrefix();
  if (pre == null) {
    fail(`${why}. Installing it needs root: re-run as root (or with passwordless sudo), or set DATABASE_URL.`);
  }
  return pre;
}

function aptRun(args, what, pre) {
  const [cmd, ...rest] = [...pre, ...args];
  runLogged(cmd, rest, { env: aptEnv, what });
}

function aptUpdate(pre, force = false) {
  if (aptUpdated && !force) return;
  aptRun(['apt-get', 'update', '-q', '-o', 'DPkg::Lock::Timeout=600'], 'apt-get update', pre);
  aptUpdated = true;
}

function aptInstall(pkgs, pre) {
  aptRun(
    [
      'apt-get', 'install', '-y', '-q', '--no-install-recommends',
      '-o', 'DPkg::Lock::Timeout=600',
      '-o', 'Dpkg::Options::=--force-confdef', '-o', 'Dpkg::Options::=--force-confold',
      ...pkgs,
    ],
    `apt-get install ${pkgs.join(' ')}`,
    pre,
  );
}

function aptCandidate(pkg) {
  const r = capture('apt-cache', ['policy', pkg]);
  const m = r.stdout.match(/Candidate:\s*(\S+)/);
  return m && m[1] !== '(none)' ? m[1] : null;
}

function srcCandidate(srcPkg) {
  const r = capture('apt-cache', ['showsrc', '--only-source', srcPkg]);
  const versions = [...r.stdout.matchAll(/^Version:\s*(\S+)/gm)].map((m) => m[1]);
  return versions.sort((a, b) => cmpVersion(upstreamVersion(b), upstreamVersion(a)))[0] || null;
}

function isDebian() {
  try {
    const t = fs.readFileSync('/etc/os-release', 'utf8');
    return /^ID=debian$/m.test(t);
  } catch {
    return false;
  }
}

function touchLock() {
  try {
    const now = new Date();
    fs.utimesSync(LOCK_FILE, now, now);
  } catch {}
}

// ───────────────────────────── step 1: OS packages ─────────────────────────────

/** Pick (and if needed install) the PostgreSQL server + pg_cron + pgvector. Returns the layout. */
function ensurePackages(log, existingMajor, st) {
  let layout = null;

  if (existingMajor) {
    // An existing cluster pins the major version.
    layout = layoutFromState(st);
    if (!layout || layout.major !== existingMajor) layout = layoutFor(existingMajor);
  } else {
    const majors = installedDebianMajors();
    // Highest installed major whose pg_cron is installed or installable; else the highest installed.
    const apt = majors.length && hasCommand('apt-cache');
    layout =
      majors.map(layoutFor).find((l) => cronInstalled(l) || (apt && aptCandidate(`postgresql-${l.major}-cron`))) ||
      (majors.length ? layoutFor(majors[0]) : null);
    if (!layout && !exists('/usr/lib/postgresql')) {
      const l = layoutFromPgConfig();
      if (l && l.major >= MIN_MAJOR && serverInstalled(l)) layout = l;
    }
  }

  const debianLayout = !layout || layout.binDir === layoutFor(layout.major).binDir;
  const missing = () => ({
    server: !layout || !serverInstalled(layout),
    cron: !layout || !cronInstalled(layout),
    vector: !layout || !vectorInstalled(layout),
    statements: !!layout && serverInstalled(layout) && !statStatementsInstalled(layout),
  });
  let m = missing();
  if (m.statements) fail(`pg_stat_statements is missing from ${layout.shareDir}/extension; install PostgreSQL's contrib modules, or set DATABASE_URL.`);
  if (!m.server && !m.cron && !m.vector) return layout;

  if (!debianLayout) {
    const what = [m.cron && 'pg_cron', m.vector && `pgvector ≥ ${MIN_PGVECTOR}`]
      .filter(Boolean)
      .join(' and ');
    fail(`PostgreSQL ${layout.major} at ${layout.binDir} is missing ${what}. Install it, or set DATABASE_URL.`);
  }

  const needWhat = !layout
    ? `No PostgreSQL server ≥ ${MIN_MAJOR} is installed`
    : `PostgreSQL ${layout.major} is missing ${[m.server && 'its server', m.cron && 'pg_cron', m.vector && `pgvector ≥ ${MIN_PGVECTOR}`].filter(Boolean).join(' and ')}`;
  const pre = requireApt(needWhat);
  fs.mkdirSync(LOG_DIR, { recursive: true });
  log(`Refreshing the apt package lists (apt-get update)…`);
  aptUpdate(pre);

  if (!layout) {
    // Nothing installed: pick the newest major the distribution ships together with pg_cron.
    const major = [18, 17, 16, 15].find((v) => aptCandidate(`postgresql-${v}`) && aptCandidate(`postgresql-${v}-cron`));
    if (!major) {
      fail(`apt has no postgresql-NN + postgresql-NN-cron (NN ≥ ${MIN_MAJOR}) for this system. Install PostgreSQL with pg_cron and pgvector yourself, or set DATABASE_URL.`);
    }
    layout = layoutFor(major);
    m = missing();
  }
  const major = layout.major;

  const pkgs = [];
  if (m.server) {
    log(`Installing PostgreSQL ${major} server from ${isDebian() ? 'Debian' : 'the distribution'} (apt-get) — needed for the embedded database…`);
    pkgs.push(`postgresql-${major}`);
  }
  if (m.cron) {
    if (!aptCandidate(`postgresql-${major}-cron`)) {
      fail(`apt has no postgresql-${major}-cron package; install pg_cron for PostgreSQL ${major} yourself, or set DATABASE_URL.`);
    }
    log(`Installing pg_cron for PostgreSQL ${major} (postgresql-${major}-cron, apt-get) — the gateway schedules its background jobs with it…`);
    pkgs.push(`postgresql-${major}-cron`);
  }
  let buildVector = false;
  if (m.vector) {
    const cand = aptCandidate(`postgresql-${major}-pgvector`);
    if (cand && cmpVersion(upstreamVersion(cand), MIN_PGVECTOR) >= 0) {
      log(`Installing pgvector ${upstreamVersion(cand)} for PostgreSQL ${major} (postgresql-${major}-pgvector, apt-get) — needed for vector search…`);
      pkgs.push(`postgresql-${major}-pgvector`);
    } else {
      buildVector = true;
    }
  }
  if (pkgs.length) {
    aptInstall(pkgs, pre);
    touchLock();
  }
  if (m.server && !serverInstalled(layout)) fail(`postgresql-${major} was installed but ${layout.binDir}/postgres is missing.`, PROVISION_LOG);
  if (m.cron && !cronInstalled(layout)) fail(`postgresql-${major}-cron was installed but pg_cron is not in ${layout.shareDir}/extension.`, PROVISION_LOG);
  if (!statStatementsInstalled(layout)) fail(`pg_stat_statements is missing from ${layout.shareDir}/extension (normally part of postgresql-${major}).`);
  if (buildVector) buildPgvector(log, layout, pre);
  else if (m.vector && !vectorInstalled(layout)) fail(`pgvector was installed but ${layout.shareDir}/extension/vector.control is missing or older than ${MIN_PGVECTOR}.`, PROVISION_LOG);
  return layout;
}

function buildPgvector(log, layout, pre) {
  const major = layout.major;
  const distro = (() => {
    try {
      return (fs.readFileSync('/etc/os-release', 'utf8').match(/^VERSION_CODENAME=(.*)$/m) || [])[1] || 'this release';
    } catch {
      return 'this release';
    }
  })();

  let src = srcCandidate('pgvector');
  if (!src || cmpVersion(upstreamVersion(src), MIN_PGVECTOR) < 0) {
    if (!isDebian() || !exists(DEBIAN_KEYRING)) {
      fail(`No pgvector ≥ ${MIN_PGVECTOR} package or source package is available from apt. Install pgvector for PostgreSQL ${major} yourself (https://github.com/pgvector/pgvector), or set DATABASE_URL.`);
    }
    let current = null;
    try {
      current = fs.readFileSync(TRIXIE_SRC_FILE, 'utf8');
    } catch {}
    if (current !== TRIXIE_SRC) {
      log(`Adding a source-only apt entry for Debian trixie (${TRIXIE_SRC_FILE}) — to fetch the pgvector source package; no binary packages come from it…`);
      const [cmd, ...rest] = [...pre, 'tee', TRIXIE_SRC_FILE];
      const r = spawnSync(cmd, rest, { input: TRIXIE_SRC, stdio: ['pipe', 'ignore', 'pipe'], encoding: 'utf8' });
      if (r.status !== 0) fail(`Could not write ${TRIXIE_SRC_FILE}: ${r.stderr || r.error?.message}`);
    }
    aptUpdate(pre, true);
    src = srcCandidate('pgvector');
    if (!src || cmpVersion(upstreamVersion(src), MIN_PGVECTOR) < 0) {
      fail(`apt-get could not find the pgvector source package (≥ ${MIN_PGVECTOR}) in Debian trixie.`, PROVISION_LOG);
    }
  }
  const version = upstreamVersion(src);
  log(`Building pgvector ${version} from Debian source (${distro} has no pgvector ≥ ${MIN_PGVECTOR} package for PostgreSQL ${major}) — needed for vector search; takes a minute or two…`);

  const tools = ['dpkg-dev', 'build-essential', `postgresql-server-dev-${major}`];
  const pgConfig = path.join(layout.binDir, 'pg_config');
  const haveTools = hasCommand('dpkg-source') && hasCommand('make') && hasCommand('gcc') && exists(pgConfig) &&
    exists(path.join(layout.libDir, 'pgxs', 'src', 'makefiles', 'pgxs.mk')) &&
    exists(capture(pgConfig, ['--includedir-server']).stdout.trim() + '/postgres.h');
  if (!haveTools) {
    log(`Installing build tools (${tools.join(', ')}, apt-get) — needed to compile pgvector…`);
    aptInstall(tools, pre);
  }
  touchLock();

  fs.mkdirSync(BUILD_DIR, { recursive: true });
  const srcDir = path.join(BUILD_DIR, `pgvector-${version}`);
  fs.rmSync(srcDir, { recursive: true, force: true });
  runLogged('apt-get', ['source', '-q', `pgvector=${src}`], { cwd: BUILD_DIR, env: aptEnv, what: 'apt-get source pgvector' });
  if (!exists(srcDir)) fail(`apt-get source did not unpack ${srcDir}.`, PROVISION_LOG);

  // OPTFLAGS= : portable build (no -march=native), as Debian does; pgvector dispatches SIMD at runtime.
  const jobs = String(Math.max(1, Math.min(os.cpus().length, 8)));
  runLogged('make', ['-C', srcDir, '-j', jobs, `PG_CONFIG=${pgConfig}`, 'OPTFLAGS='], { what: 'Building pgvector (make)' });
  touchLock();
  const [cmd, ...rest] = [...pre, 'make', '-C', srcDir, `PG_CONFIG=${pgConfig}`, 'OPTFLAGS=', 'install'];
  runLogged(cmd, rest, { what: 'Installing pgvector (make install)' });
  if (!vectorInstalled(layout)) fail(`pgvector was built but ${layout.shareDir}/extension/vector.control is missing or too old.`, PROVISION_LOG);
  log(`pgvector ${extVersion(layout, 'vector')} installed into ${layout.libDir}.`);
}

// ───────────────────────────── OS user for the server ─────────────────────────────

function userByUid(uid) {
  const r = capture('getent', ['passwd', String(uid)]);
  return r.status === 0 ? r.stdout.split(':')[0] : null;
}
const userExists = (name) => capture('id', ['-u', name]).status === 0;

/** The OS user the server runs as: null = current user (not root). */
function serverUser() {
  if (!IS_ROOT) return null;
  try {
    const st = fs.statSync(PG_DIR);
    if (st.uid !== 0 && exists(path.join(PG_DIR, 'PG_VERSION'))) {
      const name = userByUid(st.uid);
      if (name) return name;
    }
  } catch {}
  if (userExists('postgres')) return 'postgres';
  if (!userExists('elygate-pg')) {
    const r = capture('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', 'elygate-pg']);
    if (r.status !== 0) fail(`Could not create the system user elygate-pg to run PostgreSQL: ${r.stderr.trim()}`);
  }
  return 'elygate-pg';
}

/** [cmd, args] to run a PostgreSQL program as the server user. */
function asServer(user, bin, args) {
  return user ? ['runuser', ['-u', user, '--', bin, ...args]] : [bin, args];
}

function chownTo(user, p) {
  if (!user) return;
  const r = capture('chown', ['-R', `${user}:`, p]);
  if (r.status !== 0) fail(`chown ${user} ${p} failed: ${r.stderr.trim()}`);
}

function checkTraversable(user) {
  if (!user) return;
  if (capture('runuser', ['-u', user, '--', 'test', '-x', DATA_DIR]).status === 0) return;
  let culprit = DATA_DIR;
  const parts = DATA_DIR.split(path.sep).filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const dir = path.sep + parts.slice(0, i).join(path.sep);
    if (capture('runuser', ['-u', user, '--', 'test', '-x', dir]).status !== 0) {
      culprit = dir;
      break;
    }
  }
  fail(
    `PostgreSQL refuses to run as root, so it runs as the OS user "${user}" — but "${user}" cannot enter ${culprit}.\n` +
      `Either allow it (chmod o+x ${culprit}) or put the data elsewhere, e.g. ELYGATE_DATA_DIR=/var/lib/elygate.`,
  );
}

// ───────────────────────────── state ─────────────────────────────

function readStateRaw() {
  try {
    return JSON.parse(fs.readFileSync(STATE_FILE, 'utf8'));
  } catch {
    return null;
  }
}

function writeState(st) {
  fs.mkdirSync(DATA_DIR, { recursive: true });
  const tmp = `${STATE_FILE}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(st, null, 2) + '\n', { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, STATE_FILE);
}

const urlFor = (st) => `postgres://${st.superuser}:${encodeURIComponent(st.password)}@${st.host}:${st.port}/${st.database}`;

function info(st, started) {
  return { ...st, started, dataDir: DATA_DIR, pgDataDir: PG_DIR, socketDir: socketDirFor(), logFile: PG_LOG };
}

export function readState() {
  const st = readStateRaw();
  return st && st.password ? info(st, false) : null;
}

/**
 * The master keys the embedded default runs its gateway and admin with: state.json's masterKey,
 * and the key a master-key rotation replaced (previousMasterKey, still accepted for opening what a
 * process started before the rotation sealed; scripts/rotate-master-key.mjs). The environment's
 * ELYGATE_MASTER_KEY / ELYGATE_MASTER_KEY_PREVIOUS win, as everywhere.
 */
export function masterKeyEnv(st, env = process.env) {
  return {
    ELYGATE_MASTER_KEY: env.ELYGATE_MASTER_KEY || st.masterKey || '',
    ELYGATE_MASTER_KEY_PREVIOUS: env.ELYGATE_MASTER_KEY_PREVIOUS || st.previousMasterKey || '',
  };
}

/** Records a new master key for the embedded default, keeping the one it replaces as previousMasterKey. */
export function saveMasterKey(masterKey, previousMasterKey) {
  const st = readStateRaw();
  if (!st) fail(`No ${STATE_FILE}: the embedded database was never provisioned here.`);
  writeState({ ...st, masterKey, previousMasterKey });
  return STATE_FILE;
}

function desiredPort(st) {
  const env = process.env.ELYGATE_PG_PORT;
  if (env) {
    const p = Number(env);
    if (!Number.isInteger(p) || p < 1 || p > 65535) fail(`ELYGATE_PG_PORT must be a port number, got "${env}".`);
    return p;
  }
  return st?.port || DEFAULT_PORT;
}

// ───────────────────────────── cluster ─────────────────────────────

function confText(port, socketDir) {
  const q = (s) => `'${String(s).replace(/'/g, "''")}'`;
  return [
    '# Written by scripts/pg.mjs on every start — change ELYGATE_PG_PORT / ELYGATE_DATA_DIR instead.',
    '# Settings you add with ALTER SYSTEM (postgresql.auto.conf) override these.',
    `listen_addresses = '${HOST}'`,
    `port = ${port}`,
    `unix_socket_directories = ${q(socketDir)}`,
    `max_connections = 200`,
    `shared_preload_libraries = 'pg_cron,pg_stat_statements'`,
    `cron.database_name = '${DATABASE}'`,
    `cron.timezone = 'UTC'`, // pg_cron ≥ 1.5; 1.4 ignores it and always schedules in UTC
    `cron.use_background_workers = on`,
    `max_worker_processes = 20`,
    `timezone = 'UTC'`,
    // Hot rows (a busy key's wallet and counters) bloat their tiny tables between autovacuum rounds
    // under concurrent writers; rounds every 5 s instead of every minute keep them small
    // (docs/performance.md, finding 48). A server of your own: see docs/operations.md.
    `autovacuum_naptime = '5s'`,
    `log_destination = 'stderr'`,
    `logging_collector = off`,
    '',
  ].join('\n');
}

function readPid() {
  try {
    const lines = fs.readFileSync(path.join(PG_DIR, 'postmaster.pid'), 'utf8').split('\n');
    return { pid: Number(lines[0]), port: Number(lines[3]) };
  } catch {
    return null;
  }
}

function pidAlive(pid) {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (e.code !== 'EPERM') return false;
  }
  // A crashed postmaster whose parent never reaps it (e.g. Bun/Node as PID 1 in a container) stays a
  // zombie: kill(pid, 0) still succeeds, so look at its state.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    if (state === 'Z' || state === 'X') return false;
  } catch {}
  return true;
}

/** Remove lock files (postmaster.pid, socket .lock) whose owner is a zombie — pg_ctl and postgres would trust them. */
function clearZombieLocks(log, socketDir) {
  const files = [path.join(PG_DIR, 'postmaster.pid')];
  try {
    for (const f of fs.readdirSync(socketDir)) if (/^\.s\.PGSQL\.\d+\.lock$/.test(f)) files.push(path.join(socketDir, f));
  } catch {}
  for (const f of files) {
    let pid;
    try {
      pid = Number(fs.readFileSync(f, 'utf8').split('\n')[0]);
    } catch {
      continue;
    }
    if (!pid) continue;
    let exists_ = true;
    try {
      process.kill(pid, 0);
    } catch (e) {
      exists_ = e.code === 'EPERM';
    }
    if (exists_ && !pidAlive(pid)) {
      log(`Removing ${path.basename(f)} left by a crashed server (pid ${pid} is a zombie)…`);
      fs.rmSync(f, { force: true });
    }
  }
}

function psql(layout, st, sql, db = st.database) {
  return capture(path.join(layout.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-tA', '-h', st.host, '-p', String(st.port), '-U', st.superuser, '-d', db, '-c', sql], {
    env: { PGPASSWORD: st.password, PGCONNECT_TIMEOUT: '10' },
  });
}

function pgCtl(user, layout, args, opts = {}) {
  const [cmd, a] = asServer(user, path.join(layout.binDir, 'pg_ctl'), ['-D', PG_DIR, ...args]);
  return opts.capture ? capture(cmd, a) : runLogged(cmd, a, opts);
}

function isRunning(user, layout, log = () => {}) {
  clearZombieLocks(log, socketDirFor());
  // pg_ctl status: 0 = running, 3 = not running, 4 = no/invalid data dir.
  return pgCtl(user, layout, ['status'], { capture: true }).status === 0;
}

function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: HOST, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

function prepareDirs(user, socketDir) {
  fs.mkdirSync(LOG_DIR, { recursive: true });
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o700 });
  chownTo(user, socketDir);
  if (!exists(PG_LOG)) fs.writeFileSync(PG_LOG, '', { mode: 0o600 });
  else if (fs.statSync(PG_LOG).size > PG_LOG_ROTATE_BYTES) {
    fs.renameSync(PG_LOG, PG_LOG + '.1');
    fs.writeFileSync(PG_LOG, '', { mode: 0o600 });
  }
  chownTo(user, PG_LOG);
}

function initdb(log, user, layout, st) {
  if (exists(PG_DIR) && fs.readdirSync(PG_DIR).length) {
    const aside = `${PG_DIR}.incomplete-${Date.now()}`;
    fs.renameSync(PG_DIR, aside);
    log(`Moved an incomplete cluster directory aside to ${aside}.`);
  }
  fs.mkdirSync(PG_DIR, { recursive: true, mode: 0o700 });
  fs.chmodSync(PG_DIR, 0o700);
  chownTo(user, PG_DIR);

  log(`Creating the Elygate PostgreSQL ${layout.major} cluster in ${PG_DIR}…`);
  const pwfile = path.join(DATA_DIR, `.pwfile-${process.pid}`);
  fs.writeFileSync(pwfile, st.password + '\n', { mode: 0o600 });
  chownTo(user, pwfile);
  try {
    const base = ['-D', PG_DIR, '-U', SUPERUSER, '--auth-local=scram-sha-256', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8'];
    for (const locale of ['C.UTF-8', 'C']) {
      const [cmd, a] = asServer(user, path.join(layout.binDir, 'initdb'), [...base, `--locale=${locale}`]);
      const status = runLogged(cmd, a, { allowFail: true });
      if (status === 0) return;
      if (exists(path.join(PG_DIR, 'PG_VERSION')) || fs.readdirSync(PG_DIR).length) {
        fs.rmSync(PG_DIR, { recursive: true, force: true });
        fs.mkdirSync(PG_DIR, { mode: 0o700 });
        chownTo(user, PG_DIR);
      }
    }
    fail('initdb failed.', PROVISION_LOG);
  } finally {
    fs.rmSync(pwfile, { force: true });
  }
}

/** state.json was lost but the cluster exists: reset the superuser password in single-user mode. */
function resetSuperuserPassword(log, user, layout, st) {
  log(`state.json was missing — resetting the password of "${SUPERUSER}" in the existing cluster…`);
  if (isRunning(user, layout)) pgCtl(user, layout, ['stop', '-m', 'fast', '-w'], { what: 'pg_ctl stop' });
  const sql = `ALTER ROLE ${SUPERUSER} PASSWORD '${st.password}';\n`;
  const [cmd, a] = asServer(user, path.join(layout.binDir, 'postgres'), ['--single', '-D', PG_DIR, '-c', 'shared_preload_libraries=', 'postgres']);
  const r = capture(cmd, a, { input: sql });
  fs.appendFileSync(PROVISION_LOG, `\n[${new Date().toISOString()}] single-user password reset\n${r.stdout}${r.stderr}`);
  if (r.status !== 0 || /ERROR/.test(r.stdout + r.stderr)) fail('Could not reset the superuser password.', PROVISION_LOG);
}

function writeConf(user, port, socketDir) {
  const mainConf = path.join(PG_DIR, 'postgresql.conf');
  const text = fs.readFileSync(mainConf, 'utf8');
  if (!/^include_if_exists\s*=\s*'elygate\.conf'/m.test(text)) {
    fs.appendFileSync(mainConf, `\n# Elygate settings (scripts/pg.mjs)\ninclude_if_exists = '${CONF_NAME}'\n`);
  }
  const confFile = path.join(PG_DIR, CONF_NAME);
  const want = confText(port, socketDir);
  let have = null;
  try {
    have = fs.readFileSync(confFile, 'utf8');
  } catch {}
  if (have === want) return false;
  fs.writeFileSync(confFile, want, { mode: 0o600 });
  chownTo(user, confFile);
  return have != null;
}

// ───────────────────────────── lock ─────────────────────────────

function readLock() {
  try {
    const raw = fs.readFileSync(LOCK_FILE, 'utf8');
    const mtime = fs.statSync(LOCK_FILE).mtimeMs;
    let holder = {};
    try {
      holder = JSON.parse(raw);
    } catch {}
    return { raw, mtime, ...holder };
  } catch {
    return null;
  }
}

function lockIsStale(h) {
  if (!h) return false;
  if (Date.now() - h.mtime > LOCK_STALE_MS) return true;
  if (h.pid && h.host === os.hostname() && !pidAlive(h.pid)) return true;
  return false;
}

function breakStaleLock(h) {
  const aside = `${LOCK_FILE}.stale-${process.pid}-${randomSecret(4)}`;
  try {
    fs.renameSync(LOCK_FILE, aside);
  } catch {
    return;
  }
  let raw = null;
  try {
    raw = fs.readFileSync(aside, 'utf8');
  } catch {}
  if (raw !== h.raw) {
    // Someone else replaced the stale lock in between: put theirs back.
    try {
      fs.linkSync(aside, LOCK_FILE);
    } catch {}
  }
  fs.rmSync(aside, { force: true });
}

async function withLock(log, fn) {
  fs.mkdirSync(DATA_DIR, { recursive: true });
  const me = JSON.stringify({ pid: process.pid, host: os.hostname(), at: new Date().toISOString() });
  let announced = false;
  for (;;) {
    try {
      const fd = fs.openSync(LOCK_FILE, 'wx', 0o644);
      fs.writeSync(fd, me);
      fs.closeSync(fd);
      break;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    const h = readLock();
    if (!h) continue;
    if (lockIsStale(h)) {
      breakStaleLock(h);
      continue;
    }
    if (!announced && (h.pid || Date.now() - h.mtime > 2000)) {
      // (the holder writes its pid right after creating the file; don't announce before it has)
      log(`Waiting for another process${h.pid ? ` (pid ${h.pid})` : ''} that is setting up the Elygate PostgreSQL…`);
      announced = true;
    }
    await sleep(500);
  }
  const release = () => {
    try {
      if (fs.readFileSync(LOCK_FILE, 'utf8') === me) fs.unlinkSync(LOCK_FILE);
    } catch {}
  };
  process.on('exit', release);
  try {
    return await fn();
  } finally {
    release();
    process.off('exit', release);
  }
}

// ───────────────────────────── public API ─────────────────────────────

function maskedUrl(st) {
  return `postgres://${st.superuser}:…@${st.host}:${st.port}/${st.database}`;
}

/** Fast path: everything provisioned and running — no lock, no apt, one psql round-trip. */
function fastPath(log) {
  const st = readStateRaw();
  if (!st?.provisionedAt || !st.password || !exists(path.join(PG_DIR, 'PG_VERSION'))) return null;
  const layout = layoutFromState(st);
  if (!layout || !serverInstalled(layout) || !cronInstalled(layout) || !vectorInstalled(layout)) return null;
  const port = desiredPort(st);
  if (port !== st.port) return null;
  try {
    if (fs.readFileSync(path.join(PG_DIR, CONF_NAME), 'utf8') !== confText(port, socketDirFor())) return null;
  } catch {
    return null;
  }
  const pid = readPid();
  if (!pid || pid.port !== port || !pidAlive(pid.pid)) return null;
  if (psql(layout, st, 'select 1').status !== 0) return null;
  log(`PostgreSQL ${st.version} is running on ${st.host}:${st.port} (data: ${shortPath(PG_DIR)}; connect: node scripts/pg.mjs psql).`);
  return info(st, false);
}

export async function ensurePostgres({ log = console.log } = {}) {
  const fast = fastPath(log);
  if (fast) return fast;
  return withLock(log, async () => {
    const again = fastPath(log); // another process may have finished while we waited
    if (again) return again;
    return provision(log);
  });
}

async function provision(log) {
  fs.mkdirSync(LOG_DIR, { recursive: true });
  let st = readStateRaw() || {};
  const pgVersionFile = path.join(PG_DIR, 'PG_VERSION');
  const existingMajor = exists(pgVersionFile) ? Number(fs.readFileSync(pgVersionFile, 'utf8').trim()) : null;

  // 1. OS packages.
  const layout = ensurePackages(log, existingMajor, st);

  // 2. The OS user that runs the server must be able to reach the data folder.
  const user = serverUser();
  checkTraversable(user);

  // 3. Secrets (generated once, persisted before anything uses them).
  const lostState = !st.password && existingMajor;
  let newMasterKey = false;
  st.superuser = SUPERUSER;
  st.database = DATABASE;
  st.host = HOST;
  if (!st.password) st.password = randomSecret();
  if (!st.gatewayPassword) st.gatewayPassword = randomSecret();
  if (!st.adminPassword) st.adminPassword = randomSecret();
  if (!st.masterKey) {
    st.masterKey = crypto.randomBytes(32).toString('hex');
    newMasterKey = true;
  }
  const oldPort = st.port;
  st.port = desiredPort(st);
  Object.assign(st, { version: layout.major, binDir: layout.binDir, shareDir: layout.shareDir, libDir: layout.libDir });
  st.url = urlFor(st);
  st.createdAt ||= new Date().toISOString();
  writeState(st);
  if (newMasterKey) {
    log(`Generated a master key for upstream-key encryption into ${STATE_FILE} — back it up; without it stored upstream keys cannot be decrypted.`);
    if (lostState) log(`Warning: the previous state.json was missing, so upstream keys stored with the old master key cannot be decrypted.`);
  }

  // 4. Cluster.
  const socketDir = socketDirFor();
  if (!existingMajor) initdb(log, user, layout, st);
  else if (lostState) resetSuperuserPassword(log, user, layout, st);
  prepareDirs(user, socketDir);
  const confChanged = writeConf(user, st.port, socketDir);

  // 5. Start.
  let started = false;
  let running = isRunning(user, layout, log);
  const pid = readPid();
  if (running && (confChanged || (pid && pid.port !== st.port))) {
    log(`Restarting PostgreSQL to apply changed settings${oldPort && oldPort !== st.port ? ` (port ${oldPort} → ${st.port})` : ''}…`);
    pgCtl(user, layout, ['stop', '-m', 'fast', '-w'], { logFile: PROVISION_LOG, what: 'pg_ctl stop' });
    running = false;
  }
  if (!running) {
    if (!(await portFree(st.port))) {
      fail(`Port ${HOST}:${st.port} is already in use by another program. Set ELYGATE_PG_PORT to a free port (e.g. ELYGATE_PG_PORT=5434).`);
    }
    const status = pgCtl(user, layout, ['-l', PG_LOG, '-w', '-t', '120', 'start'], { logFile: PROVISION_LOG, allowFail: true });
    if (status !== 0) fail(`PostgreSQL did not start (pg_ctl exit ${status}).`, PG_LOG);
    started = true;
  }

  // 6. Database.
  const probe = psql(layout, st, `select 1 from pg_database where datname = '${DATABASE}'`, 'postgres');
  if (probe.status !== 0) fail(`Cannot connect to PostgreSQL on ${HOST}:${st.port} as ${SUPERUSER}: ${probe.stderr.trim()}`, PG_LOG);
  if (probe.stdout.trim() !== '1') {
    const r = psql(layout, st, `create database ${DATABASE}`, 'postgres');
    if (r.status !== 0) fail(`create database ${DATABASE} failed: ${r.stderr.trim()}`);
  }

  // 7. State.
  st.provisionedAt ||= new Date().toISOString();
  writeState(st);

  log(`PostgreSQL ${layout.major} ${started ? 'started' : 'is running'} on ${HOST}:${st.port} — data in ${PG_DIR}, server log ${PG_LOG}.`);
  log(`Connect: psql "${maskedUrl(st)}"  (full URL: node scripts/pg.mjs url; shell: node scripts/pg.mjs psql)`);
  return info(st, started);
}

export async function stopPostgres({ log = console.log } = {}) {
  const pgVersionFile = path.join(PG_DIR, 'PG_VERSION');
  if (!exists(pgVersionFile)) {
    log(`No Elygate PostgreSQL cluster in ${PG_DIR}.`);
    return false;
  }
  const st = readStateRaw();
  const major = Number(fs.readFileSync(pgVersionFile, 'utf8').trim());
  const layout = layoutFromState(st) || layoutFor(major);
  const user = serverUser();
  if (!isRunning(user, layout, log)) {
    log('Elygate PostgreSQL is not running.');
    return false;
  }
  fs.mkdirSync(LOG_DIR, { recursive: true });
  pgCtl(user, layout, ['stop', '-m', 'fast', '-w'], { logFile: PROVISION_LOG, what: 'pg_ctl stop' });
  log(`Stopped Elygate PostgreSQL (data kept in ${PG_DIR}).`);
  return true;
}

// ───────────────────────────── CLI ─────────────────────────────

async function cli(argv) {
  const [cmd = 'status', ...rest] = argv;
  switch (cmd) {
    case 'start':
      await ensurePostgres();
      return 0;
    case 'stop':
      await stopPostgres();
      return 0;
    case 'status': {
      const st = readState();
      if (!st || !exists(path.join(PG_DIR, 'PG_VERSION'))) {
        console.log(`Not provisioned yet (data dir ${DATA_DIR}). Run: node scripts/pg.mjs start`);
        return 1;
      }
      const pid = readPid();
      const up = pid && pidAlive(pid.pid);
      console.log(`PostgreSQL ${st.version}: ${up ? `running (pid ${pid.pid}) on ${st.host}:${pid.port}` : 'stopped'}`);
      console.log(`data:   ${st.pgDataDir}\nlog:    ${st.logFile}\nstate:  ${STATE_FILE}\nurl:    ${maskedUrl(st)}`);
      return up ? 0 : 3;
    }
    case 'url': {
      const st = readState();
      if (!st) {
        console.error('Not provisioned yet. Run: node scripts/pg.mjs start');
        return 1;
      }
      console.log(st.url);
      return 0;
    }
    case 'psql': {
      const st = await ensurePostgres({ log: (m) => console.error(m) });
      // The session carries the master key, so admin.channel_create can seal upstream keys.
      const masterKey = process.env.ELYGATE_MASTER_KEY || st.masterKey;
      const env = { ...process.env, PGOPTIONS: `${process.env.PGOPTIONS ?? ''} -c elygate.master_key=${masterKey}`.trim() };
      const r = spawnSync(path.join(st.binDir, 'psql'), [st.url, ...rest], { stdio: 'inherit', env });
      return r.status ?? 1;
    }
    default:
      console.error('Usage: node scripts/pg.mjs start|stop|status|url|psql [psql args…]');
      return 2;
  }
}

const invokedDirectly = (() => {
  try {
    return process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();

if (invokedDirectly) {
  cli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(err instanceof ProvisionError ? `Error: ${err.message}` : err);
      process.exit(1);
    },
  );
}
