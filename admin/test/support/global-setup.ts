// The admin suite's setup: the gateway suite's throwaway database (reused as is), a current build
// of the panel, Chromium from Debian when it is missing, and the elygate_admin login to run as.
import type { TestProject } from 'vitest/node';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import gatewaySetup from '../../../gateway/test/support/global-setup';
// @ts-expect-error plain ESM script without types
import { ensureAdminBuild } from '../../build.mjs';

declare module 'vitest' {
  export interface ProvidedContext {
    adminDatabaseUrl: string;
  }
}

export const CHROMIUM = '/usr/bin/chromium';

function ensureChromium() {
  if (existsSync(CHROMIUM)) return;
  console.log('[admin-test] /usr/bin/chromium is missing: installing Debian\'s "chromium" package with apt-get (needs root), for the browser tests…');
  const sudo = process.getuid?.() === 0 ? [] : ['sudo', '-n'];
  const run = (args: string[]) => {
    const [cmd, ...rest] = [...sudo, ...args];
    const r = spawnSync(cmd, rest, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed; install chromium by hand (apt-get install -y chromium).`);
  };
  run(['apt-get', 'update', '-qq']);
  run(['apt-get', 'install', '-y', '-qq', 'chromium']);
  console.log('[admin-test] installed chromium.');
}

export default async function setup(project: TestProject) {
  ensureChromium();
  ensureAdminBuild({ log: (m: string) => console.log(`[admin-test] ${m}`) });
  const teardown = await gatewaySetup(project);
  const url = new URL(project.getProvidedContext().databaseUrl as string);
  // Log the panel in as elygate_admin, as `npm start` does. On the embedded cluster its password is
  // in .elygate/state.json (and set here exactly as start.mjs sets it); elsewhere TEST_ADMIN_DATABASE_URL.
  let adminUrl = process.env.TEST_ADMIN_DATABASE_URL;
  if (!adminUrl && !process.env.TEST_DATABASE_URL && !process.env.DATABASE_URL) {
    // @ts-expect-error plain ESM script without types
    const pg = await import('../../../scripts/pg.mjs');
    // @ts-expect-error plain ESM script without types
    const { setRolePasswords } = await import('../../../scripts/migrate.mjs');
    const st = pg.readState();
    await setRolePasswords(url.toString(), { elygate_admin: st.adminPassword });
    const a = new URL(url);
    a.username = 'elygate_admin';
    a.password = st.adminPassword;
    adminUrl = a.toString();
  }
  project.provide('adminDatabaseUrl', adminUrl ?? url.toString());
  return teardown;
}
