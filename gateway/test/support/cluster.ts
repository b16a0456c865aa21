// A private, throwaway PostgreSQL cluster for tests that must stop and start the database (the
// shared one serves every other test). Same binaries and extensions as the embedded cluster.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, rmSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { freePort } from './gateway';
// @ts-expect-error plain ESM script without types
import { readState } from '../../../scripts/pg.mjs';
// @ts-expect-error plain ESM script without types
import { migrateDatabase } from '../../../scripts/migrate.mjs';

export interface PrivateCluster {
  url: string;
  stop: () => void;
  start: () => void;
  destroy: () => void;
}

export async function startPrivateCluster(): Promise<PrivateCluster> {
  const st = readState();
  if (!st) throw new Error('the embedded cluster is not provisioned (global setup should have done it)');
  const bin = st.binDir as string;
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const run = (cmd: string, args: string[]) => {
    const [c, a] = root ? ['runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]] : [join(bin, cmd), args];
    const r = spawnSync(c, a, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr || r.stdout}`);
  };
  const dir = mkdtempSync(join(tmpdir(), 'elygate-pg-'));
  chmodSync(dir, 0o777);
  const data = join(dir, 'data');
  const port = await freePort();
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C']);
  appendFileSync(
    join(data, 'postgresql.auto.conf'),
    `port = ${port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${dir}'\nfsync = off\n` +
      `shared_preload_libraries = 'pg_cron'\ncron.database_name = 'elygate'\ncron.use_background_workers = on\nmax_worker_processes = 16\n`,
  );
  const start = () => run('pg_ctl', ['-D', data, '-l', join(dir, 'log'), '-w', 'start']);
  const stop = () => run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
  start();
  const url = `postgres://postgres@127.0.0.1:${port}/elygate`;
  const admin = postgres(`postgres://postgres@127.0.0.1:${port}/postgres`, { max: 1, onnotice: () => {} });
  await admin`create database elygate`;
  await admin.end();
  await migrateDatabase(url, { log: () => {} });
  // The migration in progress too, as the suite's global setup applies it (sql/ may rely on it).
  const project = join(__dirname, '..', '..', '..');
  const gm = spawnSync(join(project, 'node_modules', '.bin', 'graphile-migrate'), ['watch', '--once'], {
    cwd: project, env: { ...process.env, DATABASE_URL: url }, encoding: 'utf8',
  });
  if (gm.status !== 0) throw new Error(`graphile-migrate watch --once failed:\n${gm.stdout}${gm.stderr}`);
  return {
    url,
    stop,
    start,
    destroy: () => {
      try {
        stop();
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
