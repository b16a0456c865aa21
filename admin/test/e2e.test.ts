// The whole panel in headless Chromium against the real gateway, database and a mock upstream:
// first login with admin/admin123 and the forced password change, a channel, a price, a user with
// money, a key, a call through the gateway, and that call in the logs. Every page is screenshotted:
// into a temporary folder, or into docs/admin/ with `npm run screenshots` (ELYGATE_SCREENSHOTS_DIR),
// so a test run leaves the tracked images alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { startGateway, type RunningGateway } from '../../gateway/test/support/gateway';
import { startMockUpstream, type MockUpstream } from '../../gateway/test/support/mock-upstream';
import { closeDb, db } from '../../gateway/test/support/db';
import { startAdmin, type RunningAdmin } from './support/admin-server';

const SHOTS = process.env.ELYGATE_SCREENSHOTS_DIR
  ? resolve(process.env.ELYGATE_SCREENSHOTS_DIR)
  : mkdtempSync(join(tmpdir(), 'elygate-screenshots-'));
const NEW_PASSWORD = 'correct horse battery';
let gw: RunningGateway, mock: MockUpstream, admin: RunningAdmin, ctx: BrowserContext, page: Page, profile: string;
let apiKey = '';
let keyId = 0;

async function shot(name: string, p: Page = page) {
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function go(path: string, p: Page = page) {
  const res = await p.goto(admin.url + path);
  return res!;
}

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  mock = await startMockUpstream();
  gw = await startGateway();
  admin = await startAdmin({ GATEWAY_URL: gw.url });
  profile = mkdtempSync(join(tmpdir(), 'elygate-chromium-'));
  // A fresh profile each run (playwright passes it to Chromium as --user-data-dir).
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1360, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  ctx.setDefaultTimeout(10000);
  page = ctx.pages()[0] ?? (await ctx.newPage());
});

afterAll(async () => {
  await ctx?.close();
  await admin?.stop();
  await gw?.stop();
  await mock?.close();
  await closeDb();
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (!process.env.ELYGATE_SCREENSHOTS_DIR) rmSync(SHOTS, { recursive: true, force: true });
});

describe('admin panel, end to end', () => {
  it('prints how to log in at start', () => {
    expect(admin.output()).toMatch(/admin \/ admin123/);
    expect(admin.output()).toMatch(/setup token \(valid 24 h\): setup-/);
  });

  it('first login with admin/admin123 forces a new password before any other page', async () => {
    await go('/');
    expect(new URL(page.url()).pathname).toBe('/login');
    await shot('01-login');
    await page.fill('#username', 'admin');
    await page.fill('#password', 'admin123');
    await page.click('button:has-text("Log in")');
    await page.waitForURL('**/password');
    await page.getByTestId('forced').waitFor();
    await shot('02-forced-password-change');
    await go('/channels');
    expect(new URL(page.url()).pathname).toBe('/password');
    await page.fill('#password', 'abcdefghijk');
    await page.fill('#confirm', 'abcdefghijx');
    await page.click('button:has-text("Save password")');
    await expect(page.getByTestId('form-error').textContent()).resolves.toMatch(/differ/);
    await page.fill('#password', NEW_PASSWORD);
    await page.fill('#confirm', NEW_PASSWORD);
    await page.click('button:has-text("Save password")');
    await page.waitForURL((u) => u.pathname === '/');
    const cookie = (await page.context().cookies()).find((c) => c.name === 'elygate_session')!;
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
  });

  it('dashboard shows an empty state before any traffic', async () => {
    await page.getByText('No requests in this range').waitFor();
    await expect(page.getByTestId('stats').textContent()).resolves.toContain('n/a');
    await shot('03-dashboard-empty');
  });

  it('creates a channel, shows a SQL error inline, and tests it through the gateway', async () => {
    await go('/channels');
    await page.getByText('No channels yet').waitFor();
    await page.click('button:has-text("New channel")');
    await page.fill('#ch-name', 'mock-openai');
    await page.fill('#ch-base', mock.url);
    await page.fill('#ch-key', 'sk-upstream-e2e');
    await page.fill('#ch-models', 'gpt-4o-mini');
    await page.fill('#ch-map', '[1]'); // not an object: the SQL function says so
    await page.click('button:has-text("Create channel")');
    await expect(page.getByTestId('form-error').textContent()).resolves.toMatch(/model_mapping/);
    await page.fill('#ch-key', 'sk-upstream-e2e');
    await page.fill('#ch-map', '');
    await page.click('button:has-text("Create channel")');
    await page.waitForURL('**/channels?created=*');
    await expect(page.getByTestId('channels').textContent()).resolves.toContain('mock-openai');
    // Price it, or the gateway refuses unpriced models.
    await go('/prices');
    await page.getByText('No prices yet').waitFor();
    await page.fill('#p-name', 'gpt-4o-mini');
    await page.fill('#p-input_price', '0.15');
    await page.fill('#p-output_price', '0.6');
    await page.click('button:has-text("Save price")');
    await expect(page.getByTestId('prices').textContent()).resolves.toContain('$0.15');
    await shot('06-prices');
    const exp = await page.context().request.get(`${admin.url}/prices/export`);
    expect(await exp.json()).toMatchObject({ format: 'elygate.prices.v1', models: [{ name: 'gpt-4o-mini', input_price: 150000, output_price: 600000 }] });

    await go('/channels');
    await page.click('button:has-text("Test")');
    const result = page.getByTestId('test-result');
    await result.waitFor();
    await expect(result.textContent()).resolves.toMatch(/OK[\s\S]*echo: Say hello\./);
    await shot('04-channels');
    // The test key was revoked right after.
    const [{ n }] = await db()`select count(*)::int as n from admin.api_keys where username = 'channel-test' and status = 'active'`;
    expect(n).toBe(0);
    // Edit page: change the priority.
    await page.click('a:has-text("mock-openai")');
    await page.fill('#ch-prio', '5');
    await page.click('button:has-text("Save")');
    await page.waitForURL('**/channels');
    await expect(page.getByTestId('channels').textContent()).resolves.toContain('5 / 1');
    // Disable and enable.
    await page.click('button:has-text("Disable")');
    await page.getByText('manually_disabled').first().waitFor();
    await page.click('button:has-text("Enable")');
    await page.getByRole('button', { name: 'Disable' }).waitFor();
  });

  it('creates a user with money and a panel password', async () => {
    await go('/users');
    await page.fill('#u-name', 'alice');
    await page.click('button:has-text("Create")');
    await page.getByRole('status').getByText('User alice created.').waitFor();
    const [{ id }] = await db()`select id from admin.users where username = 'alice'`;
    await page.fill(`#ut-${id}`, '5');
    await page.locator(`#ut-${id}`).press('Enter');
    await page.getByText('Balance is now $5.00').waitFor();
    await page.fill(`#up-${id}`, 'temporary-pass-1');
    await page.locator(`#up-${id}`).press('Enter');
    await page.getByText('Panel password set').waitFor();
    await shot('05-users');
  });

  it('creates a key shown once, with a copy button', async () => {
    await go('/keys');
    await page.selectOption('#k-user', 'alice');
    await page.fill('#k-name', 'e2e');
    await page.fill('#k-models', 'gpt-4o-mini');
    await page.fill('#k-rpm', '100');
    await page.click('button:has-text("Create key")');
    await page.getByTestId('shown-once').waitFor();
    apiKey = (await page.getByTestId('secret').textContent())!.trim();
    expect(apiKey).toMatch(/^sk-/);
    await page.getByRole('button', { name: 'Copy' }).waitFor();
    await shot('07-keys');
    keyId = Number((await db()`select id from admin.api_keys where name = 'e2e'`)[0].id);
    // Reloading never shows it again.
    await go('/keys');
    expect(await page.getByTestId('shown-once').count()).toBe(0);
  });

  it("shows that key's request in the logs after a call through the gateway", async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello from the e2e test' }] }),
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id')!;
    for (let i = 0; i < 50; i++) {
      const [r] = await db()`select status from admin.requests where id = ${requestId}::uuid`;
      if (r && r.status !== 'pending') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await go(`/logs?key=${keyId}`);
    const table = page.getByTestId('logs');
    await table.waitFor();
    expect(await table.locator('tbody tr').count()).toBe(1);
    await expect(table.textContent()).resolves.toMatch(/gpt-4o-mini[\s\S]*alice/);
    await shot('08-logs');
    await table.getByText('Details').click();
    await page.waitForURL(`**/logs/${requestId}`);
    await expect(page.getByTestId('receipt').textContent()).resolves.toMatch(/upstream/);
    await expect(page.getByTestId('trace').textContent()).resolves.toMatch(/channel_id/);
    await shot('09-log-detail');
    const csv = await (await page.context().request.get(`${admin.url}/logs/export?key=${keyId}`)).text();
    expect(csv.split('\n')[0]).toMatch(/^id,created_at,status/);
    expect(csv).toContain(requestId);
    // Filters that match nothing show the empty state.
    await go('/logs?model=no-such-model');
    await page.getByText('No requests match').waitFor();
  });

  it('dashboard counts the traffic, with a selectable range', async () => {
    await go('/?range=7d');
    await page.getByRole('img', { name: /Requests per hour/ }).waitFor();
    await expect(page.getByTestId('stats').textContent()).resolves.toMatch(/Requests\s*[1-9]/);
    await expect(page.locator('section:has-text("Top models")').textContent()).resolves.toContain('gpt-4o-mini');
    await shot('10-dashboard');
  });

  it('cache, jobs and settings pages', async () => {
    await go('/cache');
    await page.getByText(/Hit rates|The cache is not built yet/).first().waitFor();
    await shot('11-cache');
    await go('/jobs');
    await page.getByTestId('partitions').waitFor();
    await page.getByText(/pg_cron is not active|Scheduled jobs/).first().waitFor();
    await shot('12-jobs');
    await go('/settings');
    const row = page.locator('form:has(#opt-MaxAttempts)');
    await row.locator('#opt-MaxAttempts').fill('999');
    await row.getByRole('button', { name: 'Save' }).click();
    await expect(page.locator('form:has(#opt-MaxAttempts) [data-testid=form-error]').textContent()).resolves.toMatch(/MaxAttempts/);
    await page.locator('#opt-MaxAttempts').fill('2');
    await page.locator('form:has(#opt-MaxAttempts)').getByRole('button', { name: 'Save' }).click();
    await page.locator('form:has(#opt-MaxAttempts)').getByText('Saved.').waitFor();
    expect((await db()`select value from admin.options where key = 'MaxAttempts'`)[0].value).toBe('2');
    await shot('13-settings');
  });

  it('is usable on a phone-sized screen', async () => {
    const phone = await ctx.newPage();
    await phone.setViewportSize({ width: 390, height: 800 });
    await phone.goto(`${admin.url}/`);
    await phone.getByRole('button', { name: 'Menu' }).click();
    await phone.getByRole('link', { name: 'Channels' }).waitFor();
    await shot('14-mobile-menu', phone);
    await phone.close();
  });

  it('a regular user: forced change, self-service, and 403 on every admin page', async () => {
    await page.locator('nav').getByRole('button', { name: 'Log out' }).click();
    await page.waitForURL('**/login');
    await page.fill('#username', 'alice');
    await page.fill('#password', 'temporary-pass-1');
    await page.click('button:has-text("Log in")');
    await page.waitForURL('**/password');
    await page.fill('#password', 'alice-own-password');
    await page.fill('#confirm', 'alice-own-password');
    await page.click('button:has-text("Save password")');
    await page.waitForURL('**/me?changed=1');
    await expect(page.getByTestId('balance').textContent()).resolves.toMatch(/\$4\.99|\$5\.00|\$4\.9/);
    await expect(page.getByTestId('my-requests').textContent()).resolves.toContain('gpt-4o-mini');
    await page.fill('#mk-name', 'mine');
    await page.click('button:has-text("Create key")');
    await page.getByTestId('shown-once').waitFor();
    await page.fill('#code', 'not-a-real-code');
    await page.click('button:has-text("Redeem")');
    await expect(page.getByTestId('form-error').textContent()).resolves.toMatch(/BADCD|unknown/);
    await shot('15-self-service');
    for (const path of ['/', '/channels', '/channels/1', '/keys', '/users', '/prices', '/logs', '/cache', '/jobs', '/settings', '/prices/export', '/logs/export']) {
      const res = await go(path);
      expect(res.status(), path).toBe(403);
    }
    await go('/channels');
    await shot('16-forbidden-for-users');
    // And form actions too: a POST to an admin action is refused by PostgreSQL.
    const post = await page.context().request.post(`${admin.url}/keys?/revoke`, { form: { id: String(keyId) }, headers: { origin: admin.url } });
    expect(post.status()).toBe(403);
    expect((await db()`select status from admin.api_keys where id = ${keyId}`)[0].status).toBe('active');
  });

  it('throttles repeated failed logins', async () => {
    await ctx.clearCookies();
    const p = await ctx.newPage();
    for (let i = 0; i < 6; i++) {
      await p.goto(`${admin.url}/login`);
      await p.fill('#username', 'alice');
      await p.fill('#password', `wrong-${i}`);
      await p.click('button:has-text("Log in")');
      await p.getByTestId('form-error').waitFor();
    }
    await expect(p.getByTestId('form-error').textContent()).resolves.toMatch(/Too many failed attempts/);
    await shot('17-login-throttled', p);
    await p.close();
  });
});
