// A gateway whose database cannot be reached at start serves nothing on guesses: until it has read
// its options (sql/20_options.sql, the one registry), a request gets 503 before its body is read,
// and /readyz says not ready. The options have no second copy in the gateway.
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../support/gateway';
import { masterKey } from '../support/db';

const root = join(__dirname, '..', '..', '..');
let proc: ChildProcess | undefined;
afterAll(() => {
  proc?.kill('SIGKILL');
});

describe('a gateway without its database', () => {
  it('answers 503 naming the missing settings, reads no body, and is not ready', async () => {
    const [port, closed] = [await freePort(), await freePort()];
    let out = '';
    proc = spawn(join(root, 'node_modules', 'bun', 'bin', 'bun.exe'), [join(root, 'gateway', 'src', 'index.ts')], {
      cwd: join(root, 'gateway'),
      env: {
        ...process.env,
        DATABASE_URL: `postgres://nobody:nothing@127.0.0.1:${closed}/none`,
        GATEWAY_DATABASE_URL: '',
        ELYGATE_MASTER_KEY: masterKey,
        PORT: String(port),
        HOST: '127.0.0.1',
        ELYGATE_SPOOL_DIR: mkdtempSync(join(tmpdir(), 'elygate-spool-')),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout!.on('data', (d) => (out += d));
    proc.stderr!.on('data', (d) => (out += d));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 30000;
    while (!(await fetch(`${url}/healthz`).then((r) => r.ok, () => false))) {
      if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`the gateway did not start:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(out).toContain('database not reachable at start');
    expect((await fetch(`${url}/readyz`)).status).toBe(503);
    // 64 MB declared: far past any limit, refused without being read because no limit is known yet.
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-anything', 'content-type': 'application/json', 'content-length': String(64 * 1024 * 1024) },
      body: new Uint8Array(64 * 1024 * 1024),
    }).catch((e) => e as Error);
    if (res instanceof Error) throw res;
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('2');
    const body = await res.json();
    expect(body.error).toMatchObject({ type: 'service_unavailable', code: 'database_unavailable' });
    expect(body.error.message).toMatch(/has not read its settings from the database yet/);
  }, 60_000);
});
