// `npm run dev`: the database (embedded by default, or DATABASE_URL), migrations, then the gateway
// under `bun --watch` (restarts on a change in gateway/src) and the admin under `vite dev` (hot
// reload) side by side. Ctrl-C stops both. Changes to sql/ need `npm run migrate` (re-applies sql/).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkServer, migrateDatabase, setRolePasswords } from './migrate.mjs';
import { adminOrigin, adminOriginEnv, describeOrigin } from '../admin/src/lib/server/origin.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (msg) => console.log(`[elygate dev] ${msg}`);

async function main() {
  const env = { ...process.env, NODE_ENV: process.env.NODE_ENV || 'development' };
  const adminPort = env.ADMIN_PORT || '3001';
  const origin = adminOrigin(env, adminPort); // a malformed ADMIN_ORIGIN stops here, before the database
  let adminUrl = process.env.DATABASE_URL;
  if (adminUrl) {
    await checkServer(adminUrl, { log: say });
    await migrateDatabase(adminUrl, { log: say });
  } else {
    const { ensurePostgres } = await import('./pg.mjs');
    const st = await ensurePostgres({ log: say });
    adminUrl = st.url;
    await checkServer(adminUrl, { log: say });
    await migrateDatabase(adminUrl, { log: say });
    await setRolePasswords(adminUrl, { elygate_gateway: st.gatewayPassword, elygate_admin: st.adminPassword });
    const gw = new URL(st.url);
    gw.username = 'elygate_gateway';
    gw.password = st.gatewayPassword;
    env.GATEWAY_DATABASE_URL = gw.toString();
    Object.assign(env, (await import('./pg.mjs')).masterKeyEnv(st, env));
    env.DATABASE_URL = adminUrl;
  }
  env.ADMIN_DATABASE_URL ||= adminUrl;
  env.GATEWAY_URL ||= `http://127.0.0.1:${env.PORT || 3000}`;

  const children = [];
  const bun = join(root, 'node_modules', 'bun', 'bin', 'bun.exe');
  children.push(spawn(bun, ['--watch', join(root, 'gateway', 'src', 'index.ts')], { cwd: join(root, 'gateway'), env, stdio: 'inherit' }));
  say(`gateway: http://localhost:${env.PORT || 3000} (restarts when gateway/src changes)`);
  if (existsSync(join(root, 'admin', 'svelte.config.js'))) {
    const vite = join(root, 'node_modules', 'vite', 'bin', 'vite.js');
    // The admin's own PORT is 3001; the gateway's PORT must not leak into vite. vite dev skips
    // SvelteKit's origin check, but the panel's own (hooks.server.ts) reads the same ORIGIN.
    const adminEnv = { ...env, ...adminOriginEnv(env, adminPort), PORT: adminPort };
    children.push(spawn(process.execPath, [vite, 'dev', '--port', adminEnv.PORT, '--strictPort'], { cwd: join(root, 'admin'), env: adminEnv, stdio: 'inherit' }));
    say(`admin:   http://localhost:${adminEnv.PORT} (hot reload). ${describeOrigin(origin)}`);
  }
  const stop = (sig) => children.forEach((c) => c.exitCode === null && c.kill(sig));
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => stop(sig));
  let left = children.length;
  for (const c of children) {
    c.on('exit', (code) => {
      // One side died: take the other down too, so the terminal does not look half-alive.
      stop('SIGTERM');
      if (--left === 0) process.exit(code ?? 0);
    });
  }
}

main().catch((err) => {
  console.error(`[elygate dev] ${err.message}`);
  process.exit(1);
});
