// Starts the real gateway (Bun) as a child process against the test database.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { databaseUrl, masterKey } from './db';

const root = join(__dirname, '..', '..', '..');

export interface RunningGateway {
  url: string;
  proc: ChildProcess;
  output: () => string;
  metric: (name: string) => Promise<number>;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts the gateway (or another entry file, e.g. a fault-suite fixture) and waits for /readyz. */
export async function startGateway(env: Record<string, string> = {}, entry = join(root, 'gateway', 'src', 'index.ts')): Promise<RunningGateway> {
  const port = await freePort();
  let out = '';
  const proc = spawn(join(root, 'node_modules', 'bun', 'bin', 'bun.exe'), [entry], {
    cwd: join(root, 'gateway'),
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      GATEWAY_DATABASE_URL: '',
      ELYGATE_MASTER_KEY: masterKey,
      PORT: String(port),
      HOST: '127.0.0.1',
      // Each process its own spool: outcomes spooled for one test database must not be replayed
      // into another.
      ELYGATE_SPOOL_DIR: mkdtempSync(join(tmpdir(), 'elygate-spool-')),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`gateway exited early:\n${out}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`gateway did not become ready:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    proc,
    output: () => out,
    metric: async (name: string) => {
      const text = await (await fetch(`${url}/metrics`)).text();
      const escaped = name.replace(/[{}"=]/g, (c) => `\\${c}`);
      const m = new RegExp(`^${escaped} (\\d+(?:\\.\\d+)?)$`, 'm').exec(text);
      return m ? Number(m[1]) : NaN;
    },
    stop: (signal: NodeJS.Signals = 'SIGTERM') =>
      new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve(proc.exitCode);
        proc.once('exit', (code) => resolve(code));
        proc.kill(signal);
      }),
  };
}
