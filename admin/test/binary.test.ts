// The newcomer journey against the single executable (issue 21): `npm run build`'s dist/elygate,
// copied alone into an empty folder and started there against an empty database, as someone who
// downloaded it would. Real Chromium through the panel it serves out of itself: first login as
// admin/admin123 from loopback, the forced password change, private upstreams allowed in Settings,
// a channel (the mock upstream, its models imported from its listing) and a price, a user with
// money and a key, a call through the binary's gateway with the openai SDK, that request with its
// cost and routing trace on the logs page, and logging out. The steps are e2e.test.ts's
// (support/journey.ts). The binary migrates with the committed migrations only, as `npm start`
// does: not with migrations/current.sql, the migration in progress.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { freePort } from '../../gateway/test/support/gateway';
import { startMockUpstream, type MockUpstream } from '../../gateway/test/support/mock-upstream';
import { stop, until, userEnv } from './support/admin-server';
import {
  allowPrivateUpstreams, callGateway, choosePassword, createKey, createUserWithMoney, firstAdminLogin, logOut, requestInLogs,
  setPrice, settledCost, submitChannel,
} from './support/journey';
import { usd } from '../src/lib/format';
// @ts-expect-error plain ESM script without types
import { ensureBinary } from '../../scripts/build.mjs';

const work = mkdtempSync(join(tmpdir(), 'elygate-binary-'));
const profile = mkdtempSync(join(tmpdir(), 'elygate-chromium-'));
const dbName = `gw_bin_${randomBytes(4).toString('hex')}`;
const withDb = (name: string) => Object.assign(new URL(inject('databaseUrl')), { pathname: `/${name}` }).toString();
let proc: ChildProcess, out = '', panel = '', gateway = '';
let mock: MockUpstream, su: Sql, ctx: BrowserContext, page: Page;

beforeAll(async () => {
  // The binary alone in an empty folder (the suite's setup built the admin; the binary is rebuilt
  // only when older than its inputs).
  copyFileSync(ensureBinary(), join(work, 'elygate'));
  expect(readdirSync(work)).toEqual(['elygate']);
  // Panels written out by earlier versions: the newest is kept (it may still be running), the older
  // one and an abandoned half-written folder are removed at start.
  const builds = join(work, '.elygate', 'admin');
  for (const [name, age] of [['old-build', 7200], ['previous-build', 3600], ['half.tmp-999999', 60]] as const) {
    mkdirSync(join(builds, name), { recursive: true });
    writeFileSync(join(builds, name, 'index.js'), '');
    const t = Date.now() / 1000 - age;
    utimesSync(join(builds, name), t, t);
  }
  const root = postgres(withDb('postgres'), { max: 1, onnotice: () => {} });
  await root.unsafe(`create database ${dbName}`);
  await root.end();
  mock = await startMockUpstream();
  const [port, adminPort] = [await freePort(), await freePort()];
  proc = spawn(join(work, 'elygate'), [], {
    cwd: work,
    env: userEnv({ DATABASE_URL: withDb(dbName), ELYGATE_MASTER_KEY: inject('masterKey'), PORT: String(port), ADMIN_PORT: String(adminPort), HOST: '127.0.0.1' }),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: stop() takes the admin child with it
  });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  gateway = `http://127.0.0.1:${port}`;
  panel = `http://localhost:${adminPort}`;
  await until(async () => (await fetch(`${gateway}/readyz`)).ok, proc, () => out, 'the gateway was ready');
  await until(async () => (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).ok, proc, () => out, 'the admin panel was up');
  su = postgres(withDb(dbName), { max: 2, onnotice: () => {} });
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1360, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  ctx.setDefaultTimeout(20000); // the first login hashes with argon2id on a shared 2-core machine
  page = ctx.pages()[0] ?? (await ctx.newPage());
}, 240_000);

afterAll(async () => {
  await ctx?.close();
  if (proc) await stop(proc);
  await su?.end();
  await mock?.close();
  const root = postgres(withDb('postgres'), { max: 1, onnotice: () => {} });
  await root.unsafe(`drop database if exists ${dbName} with (force)`);
  await root.end();
  rmSync(work, { recursive: true, force: true });
  rmSync(profile, { recursive: true, force: true });
});

describe('the single executable, alone in an empty folder, in Chromium', () => {
  it('serves the panel it carries, at the address it prints', () => {
    expect(out).toContain(`Open the admin panel at ${panel}`);
    expect(out).toMatch(/admin \/ admin123/);
    // Written out of the binary into the folder it was started in: nothing came from the repository.
    const kept = readdirSync(join(work, '.elygate', 'admin'));
    expect(kept).toHaveLength(2);
    expect(kept).toContain('previous-build');
  });

  let apiKey = '';
  it('first login, forced password change, private upstreams allowed', async () => {
    await firstAdminLogin(page, panel);
    await choosePassword(page, 'binary newcomer password');
    await page.waitForURL((u) => u.pathname === '/');
    await allowPrivateUpstreams(page, panel);
    expect((await su`select value from admin.options where key = 'AllowPrivateUpstreams'`)[0].value).toBe('true');
  });

  it('a channel (its models imported from the upstream) and a price', async () => {
    mock.models = ['gpt-4o-mini', 'gpt-4o'];
    await submitChannel(page, panel, { name: 'mock-openai', baseUrl: mock.url, apiKey: 'sk-upstream-binary', models: 'gpt-4o' });
    await page.waitForURL('**/channels?created=*');
    await page.getByTestId('channels').locator('tr', { hasText: 'mock-openai' }).getByRole('button', { name: 'Import models' }).click();
    await page.getByTestId('import-list').locator('input[value="gpt-4o-mini"]').check();
    await page.getByRole('button', { name: /^Save 2 model/ }).click();
    await page.getByText(/mock-openai now serves 2 model\(s\)/).waitFor();
    expect((await su`select models from admin.channels where name = 'mock-openai'`)[0].models).toEqual(['gpt-4o', 'gpt-4o-mini']);
    await setPrice(page, panel, 'gpt-4o-mini', '0.15', '0.6');
  });

  it('a user with money and a key', async () => {
    await createUserWithMoney(page, panel, 'bob', '3');
    apiKey = await createKey(page, panel, { user: 'bob', name: 'from-binary', models: 'gpt-4o-mini' });
    expect(apiKey).toMatch(/^sk-/);
  });

  it("a call through the binary's gateway with the openai SDK, then the request with its cost in the logs", async () => {
    const { content, requestId } = await callGateway(gateway, apiKey, 'gpt-4o-mini', 'hello from the binary');
    expect(content).toBe('echo: hello from the binary');
    const cost = await settledCost(su, requestId);
    expect(cost).toBeGreaterThan(0);
    const [{ id: keyId }] = await su`select id from admin.api_keys where name = 'from-binary'`;
    const seen = await requestInLogs(page, panel, `key=${keyId}`, requestId);
    expect(seen.row).toMatch(/gpt-4o-mini[\s\S]*bob/);
    expect(seen.row).toContain(usd(cost));
    expect(seen.trace).toMatch(/channel_id/);
  });

  it('logs out', async () => {
    await logOut(page);
    await page.goto(`${panel}/channels`);
    expect(new URL(page.url()).pathname).toBe('/login');
  });
});
