// Fault scenario 7: secrets. After the suite has run (this file runs last), a full dump of the
// database and every log the suite saw (each gateway's output, PostgreSQL's server log) contain no
// plaintext client key and no plaintext upstream key. This file adds the traffic most likely to
// leak one: wrong keys, an upstream that echoes the key it was sent in its error message, a
// production and a development gateway, and requests that carry a key in the body.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { closeDb, databaseUrl, db, masterKey } from '../support/db';
import { startGateway } from '../support/gateway';
import { evidenceDir, figure, post, recordSecret, saveLogs, tenant } from './support';
// @ts-expect-error plain ESM script without types
import { DATA_DIR, readState } from '../../../scripts/pg.mjs';

/** An upstream that answers 401 quoting the key it received, as careless providers do. */
let echo: Server;
let echoUrl = '';
let echoCalls = 0;
beforeAll(async () => {
  echo = createServer((req, res) => {
    echoCalls++;
    req.resume();
    req.on('end', () => {
      const auth = String(req.headers.authorization ?? req.headers['x-api-key'] ?? '');
      res.writeHead(401, { 'content-type': 'application/json', 'x-echo-key': auth.replace(/[^\x20-\x7e]/g, '') }).end(
        JSON.stringify({ error: { message: `Incorrect API key provided: ${auth}`, type: 'invalid_request_error', param: null, code: 'invalid_api_key' } }),
      );
    });
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoUrl = `http://127.0.0.1:${(echo.address() as AddressInfo).port}`;
});
afterAll(async () => {
  echo?.closeAllConnections();
  await new Promise((r) => echo?.close(r));
  await closeDb();
  // The evidence holds plaintext keys (of a throwaway database): do not leave it in /tmp.
  rmSync(evidenceDir, { recursive: true, force: true });
});

const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');
const lines = (f: string) => read(f).split('\n').filter(Boolean);

describe('7. secrets', () => {
  it('no plaintext client or upstream key in a full database dump or in any log of the suite', async () => {
    // Traffic of its own, on top of what the other scenarios left.
    for (const env of [{ NODE_ENV: 'production' }, { NODE_ENV: 'development' }]) {
      const t = await tenant(echoUrl);
      const gw = await startGateway(env);
      const wrong = t.key.slice(0, -2) + (t.key.endsWith('a') ? 'bb' : 'aa');
      recordSecret('client', wrong);
      await (await post(gw.url, t.key, { model: t.model, messages: [{ role: 'user', content: 'hi' }] })).text();
      await (await post(gw.url, t.key, { model: t.model, stream: true, messages: [{ role: 'user', content: 'hi' }] })).text();
      await (await post(gw.url, wrong, { model: t.model, messages: [{ role: 'user', content: 'hi' }] })).text();
      await (await fetch(`${gw.url}/v1/models`, { headers: { 'x-api-key': wrong } })).text();
      await (await post(gw.url, t.key, { model: 1, messages: [] })).text();
      await (await post(gw.url, t.key, { model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] })).text();
      await new Promise((r) => setTimeout(r, 300));
      await gw.stop();
      saveLogs(`secrets-${env.NODE_ENV}`, gw.output());
    }

    const clientKeys = [...new Set(lines(join(evidenceDir, 'client-keys.txt')))];
    const upstreamKeys = [...new Set(lines(join(evidenceDir, 'upstream-keys.txt')))];
    const logDir = join(evidenceDir, 'logs');
    const logs = readdirSync(logDir).map((f) => ({ name: f, text: read(join(logDir, f)) }));
    // PostgreSQL's own log, when the suite runs on the embedded cluster.
    if (!process.env.TEST_DATABASE_URL && !process.env.DATABASE_URL) logs.push({ name: 'postgres.log', text: read(join(DATA_DIR, 'logs', 'postgres.log')) });

    const st = readState();
    const dump = spawnSync(join(st.binDir, 'pg_dump'), ['--no-owner', '-d', databaseUrl], { encoding: 'utf8', maxBuffer: 1 << 30 });
    expect(dump.status, dump.stderr).toBe(0);
    const [{ requests }] = await db()`select count(*)::int as requests from private.requests`;

    const leaks: string[] = [];
    const scan = (where: string, text: string) => {
      for (const k of clientKeys) if (text.includes(k)) leaks.push(`client key ${k.slice(0, 8)}… in ${where}`);
      for (const k of upstreamKeys) if (text.includes(k)) leaks.push(`upstream key ${k.slice(0, 14)}… in ${where}`);
      if (text.includes(masterKey)) leaks.push(`master key in ${where}`);
    };
    scan('pg_dump', dump.stdout);
    for (const l of logs) scan(l.name, l.text);
    figure('secrets', {
      client_keys: clientKeys.length,
      upstream_keys: upstreamKeys.length,
      dump_bytes: dump.stdout.length,
      request_rows: requests,
      logs_scanned: logs.length,
      log_bytes: logs.reduce((n, l) => n + l.text.length, 0),
      echoing_upstream_calls: echoCalls,
      plaintext_found: leaks.length,
    });
    // The scan must have had something to find: keys were made, traffic was logged and stored.
    expect(clientKeys.length).toBeGreaterThan(3);
    expect(upstreamKeys.length).toBeGreaterThan(1);
    expect(requests).toBeGreaterThan(0);
    // The upstream that quotes keys was really called (a gateway failing earlier would hide a leak).
    expect(echoCalls).toBeGreaterThanOrEqual(4);
    expect(leaks.join("\n")).toBe("");
  }, 120_000);
});
