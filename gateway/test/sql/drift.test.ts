// Issue 18, "migrations that cannot drift": a database created fresh today and one created at the
// first committed migration's release (its migrations and its sql/), then upgraded by today's
// migrations and sql/ as a deploy does, must have the same schema, object for object
// (scripts/catalog.mjs: tables, columns, constraints, indexes, views, functions, triggers, types,
// policies, privileges). A migration that forgets to drop, alter or backfill what sql/ no longer
// creates, or a sql/ file that creates a shape only when it is missing, shows up here. And the
// committed schema listing (migrations/schema.txt, `npm run schema`) is the fresh one's.
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { databaseUrl } from '../support/db';
// @ts-expect-error plain ESM script without types
import { catalogOf, catalogDiff } from '../../../scripts/catalog.mjs';
// @ts-expect-error plain ESM script without types
import { migrateWithCurrent } from '../../../scripts/migrate.mjs';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const made: string[] = [];
const dirs: string[] = [];

async function freshDatabase(): Promise<string> {
  const name = `drift_${randomBytes(4).toString('hex')}`;
  const root = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  await root.unsafe(`create database ${name}`);
  await root.end();
  made.push(name);
  return Object.assign(new URL(databaseUrl), { pathname: `/${name}` }).toString();
}

/** The tree of `rev`, with this checkout's node_modules, to migrate a database as that release did. */
function checkout(rev: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'elygate-drift-'));
  dirs.push(dir);
  const r = spawnSync('sh', ['-c', `git -C "${ROOT}" archive ${rev} | tar -x -C "${dir}"`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git archive ${rev}: ${r.stderr}`);
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

afterAll(async () => {
  const root = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  for (const n of made) await root.unsafe(`drop database if exists ${n} with (force)`);
  await root.end();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('migrations that cannot drift', () => {
  it('a database upgraded from the first release has the schema of a fresh one, object for object', async () => {
    const first = spawnSync('git', ['-C', ROOT, 'log', '--diff-filter=A', '--format=%H', '--', 'migrations/committed/000001-initial-schema.sql'], { encoding: 'utf8' })
      .stdout.trim().split('\n').at(-1);
    expect(first, 'the commit that added the first migration (CI clones the whole history)').toMatch(/^[0-9a-f]{40}$/);
    const fresh = await freshDatabase();
    await migrateWithCurrent(fresh, { log: () => {} });

    const upgraded = await freshDatabase();
    const old = checkout(first!);
    const oldMigrate = await import(join(old, 'scripts', 'migrate.mjs'));
    await oldMigrate.migrateDatabase(upgraded, { log: () => {} });   // the first release, as it deployed
    await migrateWithCurrent(upgraded, { log: () => {} });            // today's deploy on top

    const diff = catalogDiff(await catalogOf(fresh), await catalogOf(upgraded));
    expect({ onlyFresh: diff.onlyA, onlyUpgraded: diff.onlyB }).toEqual({ onlyFresh: [], onlyUpgraded: [] });
  }, 180_000);

  it('migrations/schema.txt is the schema of a fresh database (regenerate with npm run schema)', async () => {
    const fresh = await freshDatabase();
    await migrateWithCurrent(fresh, { log: () => {} });
    const file = join(ROOT, 'migrations', 'schema.txt');
    expect(existsSync(file), 'migrations/schema.txt').toBe(true);
    const committed = readFileSync(file, 'utf8').trimEnd().split('\n');
    const diff = catalogDiff(await catalogOf(fresh), committed);
    expect({ notInFile: diff.onlyA, onlyInFile: diff.onlyB }).toEqual({ notInFile: [], onlyInFile: [] });
  }, 120_000);
});
