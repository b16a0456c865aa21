// Creates a throwaway database (gw_test_<random>) on a real PostgreSQL with pgvector and pg_cron,
// migrated with the same code as `npm start`, and drops it afterwards. The migration runs once, into
// a template that nothing connects to: the suite's database and the databases files make for
// themselves (support/db.ts, databaseFromTemplate) are copies of it, which PostgreSQL makes in a
// fraction of the time migrating again takes. The template is this run's own (gw_test_<random>_tpl),
// or, under `npm test`, the one scripts/test.mjs migrated for all its suites (ELYGATE_TEST_TEMPLATE).
// Server: TEST_DATABASE_URL (any database on the server to use, as a superuser), else DATABASE_URL,
// else the project's embedded cluster (provisioned on first use, like `npm start` does).
import type { TestProject } from 'vitest/node';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
// @ts-expect-error plain ESM script without types
import { checkServer, migrateWithCurrent } from '../../../scripts/migrate.mjs';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    masterKey: string;
    templateDatabase: string;
  }
}


let stopEmbedded: (() => Promise<void>) | null = null;

export default async function setup(project: TestProject) {
  const log = (m: string) => console.log(`[test-db] ${m}`);
  let serverUrl = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL;
  if (!serverUrl) {
    // @ts-expect-error plain ESM script without types
    const pg = await import('../../../scripts/pg.mjs');
    const st = await pg.ensurePostgres({ log });
    serverUrl = st.url as string;
    if (st.started) stopEmbedded = () => pg.stopPostgres({ log });
  }
  const name = `gw_test_${randomBytes(4).toString('hex')}`;
  const shared = process.env.ELYGATE_TEST_TEMPLATE;
  const template = shared || `${name}_tpl`;
  const withName = (db: string) => Object.assign(new URL(serverUrl!), { pathname: `/${db}` }).toString();
  const root = postgres(serverUrl, { max: 1, onnotice: () => {} });
  if (!shared) {
    await root.unsafe(`create database ${template}`);
    const templateUrl = withName(template);
    await checkServer(templateUrl, { log: () => {} });
    // The migration in progress too (graphile-migrate's `migrate` runs committed migrations only):
    // `watch --once` applies migrations/current.sql and re-applies sql/, as in development, so the
    // tests run against the schema this checkout will commit.
    await migrateWithCurrent(templateUrl, { log: () => {} });
  }
  await root.unsafe(`create database ${name} template ${template}`);
  await root.end();
  const databaseUrl = withName(name);
  log(`created ${name}`);
  // Most tests are about routing, streaming or errors, not money: they may use models without a
  // price. Billing tests use priced models and turn this off inside their own transactions.
  const opt = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  await opt`select admin.option_set('AllowUnpricedModels', 'true')`;
  // Every mock upstream listens on 127.0.0.1; SSRF tests turn this off for themselves.
  await opt`select admin.option_set('AllowPrivateUpstreams', 'true')`;
  // Likewise the response cache: tests about other things send identical requests and expect the
  // upstream to answer each. Cache tests switch it on for themselves.
  await opt`select admin.option_set('SemanticCacheEnabled', 'false')`;
  await opt.end();

  project.provide('databaseUrl', databaseUrl);
  project.provide('masterKey', randomBytes(32).toString('hex'));
  project.provide('templateDatabase', template);

  return async () => {
    const r = postgres(serverUrl!, { max: 1, onnotice: () => {} });
    await r.unsafe(`drop database if exists ${name} with (force)`);
    if (!shared) await r.unsafe(`drop database if exists ${template} with (force)`);
    log(`dropped ${name}`);
    // Stop the embedded cluster only if this run started it and no other run is using it.
    const [{ others }] = await r`select count(*)::int as others from pg_database where datname like 'gw_test_%'`;
    await r.end();
    if (stopEmbedded && others === 0) await stopEmbedded();
  };
}
