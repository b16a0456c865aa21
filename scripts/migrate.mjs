// Brings a database up to date: checks the server has what Elygate needs (and says exactly what is
// missing), creates the cluster-wide roles, runs graphile-migrate, then re-applies sql/.
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Returns { cron: boolean } and throws an Error whose message says what to fix. */
export async function checkServer(url, { log = console.log } = {}) {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    const [s] = await sql`
      select current_setting('server_version_num')::int as version,
             current_database() as db,
             coalesce(current_setting('shared_preload_libraries', true), '') as preload,
             current_setting('cron.database_name', true) as cron_db,
             (select default_version from pg_available_extensions where name = 'vector') as vector,
             (select default_version from pg_available_extensions where name = 'pg_cron') as pg_cron,
             exists (select 1 from pg_available_extensions where name = 'pgcrypto') as pgcrypto`;
    const problems = [];
    if (s.version < 150000) problems.push(`PostgreSQL 15 or newer is required; this server is ${Math.floor(s.version / 10000)}.`);
    if (!s.vector) problems.push('The "vector" extension (pgvector 0.7+) is not installed on the server: install the postgresql-NN-pgvector package (or build pgvector) and retry.');
    else if (versionLess(s.vector, '0.7.0')) problems.push(`pgvector ${s.vector} is too old: 0.7.0 or newer is needed (halfvec).`);
    if (!s.pgcrypto) problems.push('The "pgcrypto" extension is not available (it ships with PostgreSQL contrib).');
    if (problems.length) throw new Error(problems.join('\n'));

    const warnings = [];
    if (!s.pg_cron) warnings.push('the pg_cron extension is not installed (postgresql-NN-cron)');
    else if (!/(^|,)\s*pg_cron\s*(,|$)/.test(s.preload)) warnings.push("pg_cron is not in shared_preload_libraries (add shared_preload_libraries = 'pg_cron' and restart)");
    else if (s.cron_db !== s.db) warnings.push(`cron.database_name is "${s.cron_db ?? 'postgres'}", not "${s.db}" (set cron.database_name = '${s.db}' and restart)`);
    if (warnings.length) {
      log(`Note: scheduled maintenance will not run inside PostgreSQL: ${warnings.join('; ')}.`);
    }
    return { cron: warnings.length === 0 };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function versionLess(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) < (pb[i] ?? 0);
  return false;
}

/** Roles, migrations and sql/ on the database at url (an owner or superuser connection). */
/** deferSql: leave sql/ to a later `graphile-migrate watch --once` (see scripts/apply-sql.mjs). */
export async function migrateDatabase(url, { log = console.log, deferSql = false } = {}) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(readFileSync(join(root, 'migrations', 'afterReset.sql'), 'utf8'));
  } finally {
    await sql.end({ timeout: 5 });
  }
  const gm = join(root, 'node_modules', '.bin', 'graphile-migrate');
  const r = spawnSync(gm, ['migrate', '--forceActions'], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: url, ...(deferSql ? { ELYGATE_DEFER_SQL: '1' } : {}) },
    encoding: 'utf8',
  });
  if (r.status !== 0) {
    throw new Error(`graphile-migrate failed:\n${(r.stdout ?? '') + (r.stderr ?? '')}`.trim());
  }
  const ran = (r.stdout + r.stderr).match(/\[\d+\.sql\]|\d{6}[^\s]*\.sql/g);
  log(ran ? `Applied migrations: ${ran.join(', ')}` : 'Schema is up to date.');
}

/**
 * Tests and development: migrateDatabase, then the migration in progress (migrations/current.sql,
 * by `graphile-migrate watch --once`, which re-applies sql/ after it). sql/ waits for it, since it
 * may already use what current.sql creates.
 */
export async function migrateWithCurrent(url, { log = console.log } = {}) {
  const inProgress = /^\s*[^-\s]/m.test(readFileSync(join(root, 'migrations', 'current.sql'), 'utf8'));
  await migrateDatabase(url, { log, deferSql: inProgress });
  const gm = spawnSync(join(root, 'node_modules', '.bin', 'graphile-migrate'), ['watch', '--once'], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: url },
    encoding: 'utf8',
  });
  if (gm.status !== 0) throw new Error(`graphile-migrate watch --once failed:\n${gm.stdout}${gm.stderr}`);
}

/** Gives the login roles their passwords (embedded database only: DBAs manage their own). */
export async function setRolePasswords(url, passwords) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    for (const [role, pw] of Object.entries(passwords)) {
      await sql.unsafe(`alter role ${role} with login password '${pw.replace(/'/g, "''")}'`);
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}
