// `npm start`: database (embedded by default, or DATABASE_URL), migrations, then the gateway.
//   node scripts/start.mjs                 start everything
//   node scripts/start.mjs --migrate-only  provision and migrate, then exit
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { checkServer, migrateDatabase, setRolePasswords } from './migrate.mjs';
import { adminOrigin, adminOriginEnv, describeOrigin } from '../admin/src/lib/server/origin.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const migrateOnly = process.argv.includes('--migrate-only');
const say = (msg) => console.log(`[elygate] ${msg}`);

function redact(url) {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

async function main() {
  const t0 = Date.now();
  const env = { ...process.env };
  const adminPort = env.ADMIN_PORT || '3001';
  // A malformed ADMIN_ORIGIN stops the start here, before minutes of provisioning, not at login.
  const origin = migrateOnly ? null : adminOrigin(env, adminPort);
  let adminUrl;

  if (process.env.DATABASE_URL) {
    adminUrl = process.env.DATABASE_URL;
    say(`Using the database in DATABASE_URL: ${redact(adminUrl)}`);
    await checkServer(adminUrl, { log: say });
    await migrateDatabase(adminUrl, { log: say });
    if (!env.ELYGATE_MASTER_KEY) {
      say('Note: ELYGATE_MASTER_KEY is not set, so channels with upstream keys cannot be used. Generate one with `openssl rand -hex 32`, keep it safe, and set it for both the gateway and psql sessions that add channels.');
    }
  } else {
    const { ensurePostgres } = await import('./pg.mjs');
    const st = await ensurePostgres({ log: say });
    adminUrl = st.url;
    await checkServer(adminUrl, { log: say });
    say('Migrating the database…');
    await migrateDatabase(adminUrl, { log: say });
    await setRolePasswords(adminUrl, { elygate_gateway: st.gatewayPassword, elygate_admin: st.adminPassword });
    const gw = new URL(st.url);
    gw.username = 'elygate_gateway';
    gw.password = st.gatewayPassword;
    env.GATEWAY_DATABASE_URL = gw.toString();
    // The admin panel logs in as elygate_admin (select on admin views, execute on admin functions).
    const ad = new URL(st.url);
    ad.username = 'elygate_admin';
    ad.password = st.adminPassword;
    env.ADMIN_DATABASE_URL ||= ad.toString();
    Object.assign(env, (await import('./pg.mjs')).masterKeyEnv(st, env));
    say(`Data lives in ${st.dataDir}. Connect with: npm run psql   (or psql "${redact(st.url)}", password in ${join(st.dataDir, 'state.json')})`);
  }

  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  const [{ keys, channels }] = await sql`
    select (select count(*) from private.api_keys)::int as keys, (select count(*) from private.channels)::int as channels`;
  await sql.end({ timeout: 5 });
  const psqlHow = process.env.DATABASE_URL ? 'psql "$DATABASE_URL" (after: set elygate.master_key = \'…\';)' : 'npm run psql';
  if (channels === 0) say(`No channel yet. Add one in ${psqlHow}:  select admin.channel_create('{"name":"openai","base_url":"https://api.openai.com","api_key":"sk-…","models":["gpt-4o-mini"]}');`);
  if (keys === 0) say('No API key yet. Create one: npm run key -- <username>   (or in psql: select admin.key_create(\'{"username":"…"}\');)');
  say(`Database ready in ${((Date.now() - t0) / 1000).toFixed(1)} s.`);
  if (migrateOnly) return;

  // The admin panel: built when its build is missing or older than its sources, then served on
  // ADMIN_PORT (3001) next to the gateway. With DATABASE_URL and no ADMIN_DATABASE_URL it uses
  // DATABASE_URL (give it an elygate_admin login of its own in production).
  const { ensureAdminBuild, serverEntry } = await import('../admin/build.mjs');
  ensureAdminBuild({ log: say });
  const adminEnv = {
    ...env,
    ...adminOriginEnv(env, adminPort),
    ADMIN_DATABASE_URL: env.ADMIN_DATABASE_URL || adminUrl,
    GATEWAY_URL: env.GATEWAY_URL || `http://127.0.0.1:${env.PORT || 3000}`,
    PORT: adminPort,
    HOST: env.ADMIN_HOST || env.HOST || '0.0.0.0',
  };

  const bun = join(root, 'node_modules', 'bun', 'bin', 'bun.exe');
  const child = spawn(bun, [join(root, 'gateway', 'src', 'index.ts')], { cwd: join(root, 'gateway'), env, stdio: 'inherit' });
  say(`Starting the gateway on http://localhost:${env.PORT || 3000}`);
  const admin = spawn(process.execPath, [serverEntry], { cwd: join(root, 'admin'), env: adminEnv, stdio: 'inherit' });
  say(`Starting the admin panel on port ${adminPort}  (first login: admin / admin123 from this machine, or the setup token it prints; see README "Admin panel")`);
  say(describeOrigin(origin));
  const children = [child, admin];
  // Signals are passed on once; each child drains and exits, and onExit below waits for both.
  let forwarded = false;
  for (const sig of ['SIGINT', 'SIGTERM'])
    process.on(sig, () => {
      if (forwarded) return;
      forwarded = true;
      children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill(sig));
    });
  let exiting = false;
  // When one process ends, stop the other and wait for it: the gateway's SIGTERM drain (live
  // streams, settlement) must not be cut short by this script exiting.
  const onExit = (which) => (code, signal) => {
    if (exiting) return;
    exiting = true;
    if (code) say(`The ${which} exited with code ${code}; stopping.`);
    const others = children.filter((c) => c.exitCode === null && c.signalCode === null);
    if (!forwarded) others.forEach((c) => c.kill('SIGTERM'));
    if (!process.env.DATABASE_URL) say('The embedded PostgreSQL keeps running for the next start; stop it with: npm run db:stop');
    const done = () => process.exit(code ?? (signal ? 0 : 1));
    if (others.length === 0) return done();
    let left = others.length;
    others.forEach((c) => c.once('exit', () => --left === 0 && done()));
    setTimeout(done, 60_000).unref();
  };
  child.on('exit', onExit('gateway'));
  admin.on('exit', onExit('admin panel'));
}

main().catch((err) => {
  console.error(`[elygate] ${err.message}`);
  process.exit(1);
});
