// gateway/src/pg-socket.ts: postgres.js on Bun's own socket behaves as on node:net — intact rows
// across socket reads, large writes through backpressure, errors, LISTEN, server-side disconnects
// and refused connections (the fixture runs under Bun; see fixtures/pg-socket-probe.ts).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { databaseUrl } from '../support/db';
import { freePort } from '../support/gateway';

const root = join(__dirname, '..', '..', '..');

describe('PgSocket', () => {
  it('carries postgres.js like node:net does', async () => {
    const r = spawnSync(join(root, 'node_modules', 'bun', 'bin', 'bun.exe'), [join(__dirname, 'fixtures', 'pg-socket-probe.ts'), databaseUrl, String(await freePort())], {
      cwd: join(root, 'gateway'),
      encoding: 'utf8',
      timeout: 60000,
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    expect(line, r.stderr).toMatch(/^\{/);
    const out = JSON.parse(line);
    expect(out).toMatchObject({
      corruptRows: 0,
      bigParameter: true,
      queryError: '22012',
      afterQueryError: 2,
      notify: 'hello',
      afterTerminate: 3,
      afterTerminateAgain: 4,
    });
    expect(out.terminated).toBeGreaterThan(0);
    expect(out.refused.code).toBe('ECONNREFUSED');
    expect(out.refused.message).toMatch(/^connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
  });
});
