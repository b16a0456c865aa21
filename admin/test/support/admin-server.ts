// Starts the product the way people do: `node scripts/start.mjs` (what `npm start` runs) with
// DATABASE_URL pointing at the test database, so it migrates it, then serves the gateway and the
// admin panel. Only settings a user could set are passed (no ORIGIN, nothing test-only), and not
// the test runner's own environment (NODE_ENV=test, VITEST…), which no user has.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { freePort } from '../../../gateway/test/support/gateway';

const root = join(__dirname, '..', '..', '..');

export interface RunningProduct {
  /** The panel at the address start.mjs prints: http://localhost:<ADMIN_PORT>. */
  url: string;
  adminPort: number;
  gatewayUrl: string;
  proc: ChildProcess;
  output: () => string;
  stop: () => Promise<void>;
}

/** The environment of someone who ran `npm start` with these settings in their shell. */
export function userEnv(settings: Record<string, string>): Record<string, string> {
  const keep = ['PATH', 'HOME', 'LANG', 'TMPDIR', 'USER'];
  const env: Record<string, string> = {};
  for (const k of keep) if (process.env[k]) env[k] = process.env[k]!;
  return { ...env, ...settings };
}

/** Waits until ok() holds, failing early (with the output) if proc exits first. */
export async function until(ok: () => Promise<boolean>, proc: ChildProcess, out: () => string, what: string, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`the product exited (${proc.exitCode}) before ${what}:\n${out()}`);
    try {
      if (await ok()) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms:\n${out()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startProduct(settings: Record<string, string> = {}): Promise<RunningProduct> {
  const port = await freePort();
  const adminPort = await freePort();
  let out = '';
  const proc = spawn(process.execPath, [join(root, 'scripts', 'start.mjs')], {
    cwd: root,
    env: userEnv({
      DATABASE_URL: inject('databaseUrl'),
      ADMIN_DATABASE_URL: inject('adminDatabaseUrl'),
      ELYGATE_MASTER_KEY: inject('masterKey'),
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      // Both listen on loopback only, as someone trying it on a laptop would want.
      HOST: '127.0.0.1',
      // The spool of this run's gateway; another test database must never replay it.
      ELYGATE_SPOOL_DIR: mkdtempSync(join(tmpdir(), 'elygate-spool-')),
      ...settings,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so a stop that has to force it takes the gateway and admin with it.
    detached: true,
  });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const output = () => out;
  const gatewayUrl = `http://127.0.0.1:${port}`;
  const url = `http://localhost:${adminPort}`;
  const running: RunningProduct = { url, adminPort, gatewayUrl, proc, output, stop: () => stop(proc) };
  try {
    await until(async () => (await fetch(`${gatewayUrl}/readyz`)).ok, proc, output, 'the gateway was ready');
    await until(async () => (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).ok, proc, output, 'the admin panel was up');
  } catch (err) {
    await running.stop();
    throw err;
  }
  return running;
}

/** SIGTERM, as Ctrl-C or a service manager would: start.mjs (or the binary) forwards it and waits
 *  for both; anything of its process group left after it exits is killed. */
export function stop(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const force = setTimeout(() => {
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }, 20000);
    proc.once('exit', () => {
      clearTimeout(force);
      // Anything of the group still alive (start.mjs gives its children 60 s) goes too.
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        // the whole group has exited
      }
      resolve();
    });
    proc.kill('SIGTERM');
  });
}
