// Applies sql/ (functions, views, grants, cron schedules) to the database in GM_DBURL or
// DATABASE_URL, in file-name order, in one transaction. Idempotent; graphile-migrate runs it
// after every migrate (see .gmrc).
import { readdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const url = process.env.GM_DBURL || process.env.DATABASE_URL;
if (!url) {
  console.error('apply-sql: set DATABASE_URL (graphile-migrate sets GM_DBURL).');
  process.exit(2);
}

// A checkout with a migration in progress (migrations/current.sql) cannot apply sql/ right after the
// committed migrations: sql/ may already use what current.sql creates. scripts/migrate.mjs then
// defers it (ELYGATE_DEFER_SQL=1) to `graphile-migrate watch --once`, which applies current.sql
// and then sql/ (the test suites' global setup does this).
if (process.env.ELYGATE_DEFER_SQL === '1') {
  console.log('apply-sql: deferred until migrations/current.sql is applied.');
  process.exit(0);
}

// The same holds on graphile-migrate's shadow database during `graphile-migrate commit`, which first
// resets the shadow to the committed migrations (sql/ would miss what current.sql creates), then
// writes current.sql as the new committed migration and migrates the shadow again: there sql/ is
// applied, and must apply. The first pass is recognised by current.sql's body not being committed yet.
if (process.env.GM_SHADOW === '1') {
  const statements = (file) => readFileSync(file, 'utf8').split('\n').filter((l) => !/^\s*(--.*)?$/.test(l)).join('\n').trim();
  const current = statements(join(root, 'migrations', 'current.sql'));
  const committedDir = join(root, 'migrations', 'committed');
  const committed = current === '' || readdirSync(committedDir).some((f) => statements(join(committedDir, f)).includes(current));
  if (!committed) {
    console.log('apply-sql: shadow database before the migration being committed; sql/ is applied after it.');
    process.exit(0);
  }
}

const dir = join(root, 'sql');
const files = readdirSync(dir).filter((f) => /^\d\d_.*\.sql$/.test(f)).sort();
const sql = postgres(url, { max: 1, onnotice: () => {} });
try {
  // A shadow database mid-reset has no tables yet (graphile-migrate runs actions before the first
  // migration exists); there is nothing to attach behaviour to, so there is nothing to do.
  const [{ ready }] = await sql`select to_regclass('private.options') is not null as ready`;
  if (!ready) {
    console.log('apply-sql: schema not migrated yet; skipped.');
    await sql.end({ timeout: 5 });
    process.exit(0);
  }
  await sql.begin(async (tx) => {
    for (const f of files) {
      try {
        await tx.file(join(dir, f));
      } catch (err) {
        err.message = `sql/${f}: ${err.message}`;
        throw err;
      }
    }
  });
} catch (err) {
  console.error(`apply-sql failed: ${err.message}${err.position ? ` (at character ${err.position})` : ''}`);
  process.exitCode = 1;
} finally {
  await sql.end({ timeout: 5 });
}
