// Starts the built admin panel (node admin/build/index.js) against the test database.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { inject } from 'vitest';
import { freePort } from '../../../gateway/test/support/gateway';

export interface RunningAdmin {
  url: string;
  proc: ChildProcess;
  output: () => string;
  stop: () => Promise<void>;
}

export async function startAdmin(env: Record<string, string> = {}): Promise<RunningAdmin> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let out = '';
  const proc = spawn(process.execPath, [join(__dirname, '..', '..', 'build', 'index.js')], {
    env: {
      ...process.env,
      ADMIN_DATABASE_URL: inject('adminDatabaseUrl'),
      ELYGATE_MASTER_KEY: inject('masterKey'),
      PORT: String(port),
      HOST: '127.0.0.1',
      ORIGIN: url,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const deadline = Date.now() + 20000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`admin exited early:\n${out}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`admin did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    proc,
    output: () => out,
    stop: () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve();
        const force = setTimeout(() => proc.kill('SIGKILL'), 5000);
        proc.once('exit', () => {
          clearTimeout(force);
          resolve();
        });
        proc.kill('SIGTERM');
      }),
  };
}
