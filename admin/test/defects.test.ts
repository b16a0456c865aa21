// Issue 21, "the admin as people actually start it and use it": each defect, driven through the
// real panel (headless Chromium), gateway, database and two mock upstreams.
// Runs in a database of its own, so its channels, users and traffic never meet e2e.test.ts's
// first-start story (empty dashboard, admin/admin123), whatever order the files run in.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { Sql } from 'postgres';
import { startMockUpstream, type MockUpstream } from '../../gateway/test/support/mock-upstream';
import type { RunningProduct } from './support/admin-server';
import { PASSWORD, startOwnProduct, type OwnProduct } from './support/own-product';

const SHOTS = process.env.ELYGATE_DEFECT_SHOTS ?? mkdtempSync(join(tmpdir(), 'elygate-defects-'));
const RAW_SQL = /value out of range|violates check constraint|numeric field overflow|invalid input syntax|_check\b/;
let own: OwnProduct, su: Sql, live: MockUpstream, dead: MockUpstream, admin: RunningProduct;
let ctx: BrowserContext, page: Page, loginPage = '';
let userWithPassword: OwnProduct['userWithPassword'], login: OwnProduct['login'];

const go = async (path: string, p: Page = page) => (await p.goto(admin.url + path))!;
const shot = (name: string, p: Page = page) => p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
/** A form POST as the browser would send it (bypassing the page's own input checks). */
const post = (path: string, form: Record<string, string>) =>
  page.context().request.post(`${admin.url}${path}`, { form, headers: { origin: admin.url, accept: 'text/html' }, maxRedirects: 0 });
const formError = () => page.getByTestId('form-error').first().textContent();

beforeAll(async () => {
  live = await startMockUpstream();
  dead = await startMockUpstream();
  own = await startOwnProduct({ AllowUnpricedModels: 'true', SemanticCacheEnabled: 'true' });
  ({ su, admin, ctx, page, loginPage } = own);
  ({ userWithPassword, login } = own);
});

afterAll(async () => {
  await own?.stop();
  await live?.close();
  await dead?.close();
  if (!process.env.ELYGATE_DEFECT_SHOTS) rmSync(SHOTS, { recursive: true, force: true });
});

describe('issue 21: the admin as people use it', () => {
  it('login page: no admin/admin123 hint once an admin has a password', () => {
    expect(loginPage).toContain('Log in with your panel account');
    expect(loginPage).not.toMatch(/admin123/);
  });

  it('channel Test contacts exactly the channel under test, past the cache, and says what failed', async () => {
    for (const [name, mock, priority] of [['under-test', dead, 0], ['healthy', live, 10]] as const) {
      await su`select admin.channel_create(${su.json({ name, base_url: mock.url, api_key: 'sk-up', models: ['m-test'], priority })})`;
    }
    const [{ id }] = await su`select id from admin.channels where name = 'under-test'`;
    const test = async () => {
      await go('/channels');
      await page.locator('tr', { hasText: 'under-test' }).getByRole('button', { name: 'Test' }).click();
      return (await page.getByTestId('test-result').textContent())!;
    };
    const hello = (m: MockUpstream) => m.calls.filter((c) => c.path.endsWith('/chat/completions')).length;
    // Healthy: green, answered by this channel although "healthy" has the higher priority.
    expect(await test()).toMatch(/OK[\s\S]*echo: Say hello\./);
    expect(hello(dead)).toBe(1);
    // Now dead. The same prompt was answered a moment ago (cacheable) and "healthy" would answer it:
    // neither may turn this green.
    dead.mode = { kind: 'status', status: 500 };
    const text = await test();
    expect(text).toMatch(/failed/);
    expect(text).toContain(`Channel #${id} answered HTTP 500`);
    expect(hello(dead)).toBe(2);
    expect(hello(live)).toBe(0);
    await shot('defects-channel-test-failed');
    dead.mode = { kind: 'ok' };
    // A channel that cannot be called at all (no upstream key): red, and it says why.
    await su`select admin.channel_create(${su.json({ name: 'keyless', base_url: live.url, models: ['m-test'] })})`;
    await go('/channels');
    await page.locator('tr', { hasText: 'keyless' }).getByRole('button', { name: 'Test' }).click();
    const keyless = (await page.getByTestId('test-result').textContent())!;
    expect(keyless).toMatch(/failed[\s\S]*Channel #\d+ has no enabled upstream key/);
    expect(hello(live)).toBe(0);
  });

  it('test traffic stays out of Keys, Users and the dashboard', async () => {
    await go('/keys');
    await expect(page.locator('main').textContent()).resolves.not.toMatch(/test of channel|channel-test/);
    await go('/users');
    await expect(page.locator('main').textContent()).resolves.not.toMatch(/channel-test/);
    await go('/?range=24h');
    await page.getByText('No requests in this range').waitFor();
    await expect(page.getByTestId('stats').textContent()).resolves.toMatch(/Requests\s*0/);
    // They stay in Logs, named for what they are.
    await go('/logs');
    await expect(page.getByTestId('logs').locator('tbody tr').first().textContent()).resolves.toContain('channel test');
    await page.getByTestId('logs').getByText('Details').first().click();
    await page.waitForURL(/\/logs\/[0-9a-f-]{36}$/);
    await expect(page.locator('main').textContent()).resolves.toContain('channel test');
  });

  it('log filters with bad values answer with a sentence, never a 500', async () => {
    for (const [qs, says] of [
      ['key=abc', /Key id must be a whole number/],
      ['channel=99999999999999999999', /Channel id must be a whole number/],
      ['from=yesterday', /From must be a date and time/],
    ] as const) {
      const res = await go(`/logs?${qs}`);
      expect(res.status(), qs).toBeLessThan(500);
      await expect(formError()).resolves.toMatch(says);
    }
    const ch = await go('/channels/abc');
    expect(ch.status()).toBe(404);
    await page.getByText('channel ids are whole numbers').waitFor();
    const csv = await page.context().request.get(`${admin.url}/logs/export?key=abc`);
    expect(csv.status()).toBe(400);
    expect(await csv.text()).toMatch(/Key id must be a whole number/);
  });

  it('Prices → Import with an empty box says what to do', async () => {
    await go('/prices');
    await page.click('button:has-text("Import")');
    await expect(formError()).resolves.toMatch(/Choose a price table file or paste one/);
  });

  it('bad input gets a sentence naming the field, never raw SQL text', async () => {
    const cases: [string, Record<string, string>, RegExp][] = [
      ['/users?/create', { username: 'has space', group: 'default', role: 'user' }, /username is 1 to 64 characters/],
      ['/users?/group', { name: 'g1', price_multiplier: '1e10' }, /price_multiplier" must be a number from/],
      ['/keys?/create', { username: 'ops', rpm_limit: '99999999999' }, /rpm_limit" must be a whole number from 1 to 2147483647/],
      ['/keys?/create', { username: 'ops', name: 'x'.repeat(5000) }, /at most 100 characters/],
      ['/keys?/create', { username: 'ops', allowed_models: 'no-such-model' }, /Unknown model\(s\).*no-such-model/],
      ['/keys?/create', { username: 'ops', expires_at: 'someday' }, /must be a date and time/],
      ['/channels?/create', { name: 'c-space', base_url: 'https://api.example.com/v1 x', models: 'm' }, /spaces.*fragment/],
      ['/channels?/create', { name: 'c-frag', base_url: 'https://api.example.com/#x', models: 'm' }, /fragment/],
      ['/channels?/create', { name: 'c-grp', base_url: 'https://api.example.com', models: 'm', groups: 'nope' }, /Unknown group\(s\).*nope/],
      ['/settings', { key: 'SemanticCacheScope', value: 'bogus' }, /"user" or "group"/],
      ['/settings', { key: 'SemanticCacheEmbeddingChannel', value: 'no-such-channel' }, /no channel "no-such-channel"/],
    ];
    for (const [path, form, says] of cases) {
      const res = await post(path, form);
      const body = await res.text();
      expect(res.status(), `${path} ${body.slice(0, 3000)}`).toBe(400);
      expect(body, `${path} ${JSON.stringify(form).slice(0, 80)}`).toMatch(says);
      expect(body).not.toMatch(RAW_SQL);
    }
    // And in the page itself, inline:
    await go('/keys');
    await page.fill('#k-rpm', '99999999999');
    await page.click('button:has-text("Create key")');
    await expect(formError()).resolves.toMatch(/rpm_limit" must be a whole number/);
  });

  it('the private-address refusal points to Settings', async () => {
    await su`select admin.option_set('AllowPrivateUpstreams', 'false')`;
    try {
      const body = await (await post('/channels?/create', { name: 'lan', base_url: 'http://10.1.2.3', models: 'm' })).text();
      expect(body).toMatch(/AllowPrivateUpstreams in the admin panel.{0,4}s Settings/);
    } finally {
      await su`select admin.option_set('AllowPrivateUpstreams', 'true')`;
    }
  });

  it('a negative top-up is refused; a debit is its own confirmed action with a note', async () => {
    const id = await userWithPassword('carol', 'user');
    await su`select admin.wallet_credit(${su.json({ user_id: id, amount_micros: 5_000_000 })})`;
    const res = await post('/users?/topup', { id: String(id), amount_usd: '-2' });
    expect(await res.text()).toMatch(/A top-up must be positive/);
    await go('/users?q=carol');
    await page.locator('tr', { hasText: 'carol' }).getByText('Debit…').click();
    await page.fill(`#ud-${id}`, '1.5');
    await page.fill(`#un-${id}`, 'refund paid by bank transfer');
    page.once('dialog', (d) => void d.dismiss());
    await page.locator('tr', { hasText: 'carol' }).getByRole('button', { name: 'Debit' }).click();
    await page.waitForTimeout(300);
    expect(Number((await su`select balance_micros from admin.users where id = ${id}`)[0].balance_micros)).toBe(5_000_000);
    page.once('dialog', (d) => void d.accept());
    await page.locator('tr', { hasText: 'carol' }).getByRole('button', { name: 'Debit' }).click();
    await page.getByText('Debited $1.50; balance is now $3.50.').waitFor();
    expect(Number((await su`select balance_micros from admin.users where id = ${id}`)[0].balance_micros)).toBe(3_500_000);
  });

  it('revoking a key asks first, then says it is done', async () => {
    const [{ k }] = await su`select admin.key_create('{"username": "ops", "name": "to-revoke"}') as k`;
    await go('/keys');
    const row = page.locator('tr', { hasText: 'to-revoke' });
    page.once('dialog', (d) => void d.dismiss());
    await row.getByRole('button', { name: 'Revoke' }).click();
    await page.waitForTimeout(300);
    expect((await su`select status from admin.api_keys where id = ${k.id}`)[0].status).toBe('active');
    page.once('dialog', (d) => void d.accept());
    await row.getByRole('button', { name: 'Revoke' }).click();
    await page.getByText(`Key #${k.id} revoked`).waitFor();
    expect((await su`select status from admin.api_keys where id = ${k.id}`)[0].status).toBe('revoked');
  });

  it('disabling a channel says so and offers Undo', async () => {
    await go('/channels');
    await page.locator('tr', { hasText: 'healthy' }).getByRole('button', { name: 'Disable' }).click();
    await expect(page.getByTestId('toggled').textContent()).resolves.toMatch(/healthy is disabled/);
    await page.getByTestId('toggled').getByRole('button', { name: 'Undo' }).click();
    await expect(page.getByTestId('toggled').textContent()).resolves.toMatch(/healthy is enabled/);
  });

  it('pages with balances are never cached', async () => {
    for (const path of ['/', '/users', '/keys', '/logs']) {
      const res = await go(path);
      expect(res.headers()['cache-control'], path).toBe('no-store');
    }
  });

  it('logs, users, keys and channels page with a count, search and sorting', async () => {
    const [{ id: keyId }] = await su`select id from admin.api_keys where name = 'to-revoke'`;
    const [{ id: userId }] = await su`select id from admin.users where username = 'ops'`;
    await su`insert into private.requests (id, created_at, key_id, user_id, endpoint, model, status, http_status, latency_ms)
             select gen_random_uuid(), now() - make_interval(secs => i), ${keyId}, ${userId}, 'chat/completions', 'm-page', 'ok', 200, i
               from generate_series(1, 130) i`;
    await go('/logs?model=m-page');
    await expect(page.getByTestId('pager').first().textContent()).resolves.toMatch(/130 requests match · showing 100/);
    expect(await page.getByTestId('logs').locator('tbody tr').count()).toBe(100);
    await page.getByRole('link', { name: 'Next page →' }).first().click();
    await page.waitForURL(/after=/);
    expect(await page.getByTestId('logs').locator('tbody tr').count()).toBe(30);
    await go('/logs?model=m-page&sort=latency&dir=desc');
    await expect(page.getByTestId('logs').locator('tbody tr').first().textContent()).resolves.toContain('130 ms');
    await shot('defects-logs-paged');

    await su`select admin.user_create(jsonb_build_object('username', 'bulk-' || lpad(i::text, 2, '0'))) from generate_series(1, 60) i`;
    await go('/users?q=bulk-&sort=username&dir=desc');
    await expect(page.getByTestId('pager').first().textContent()).resolves.toMatch(/60 users match · showing 50/);
    await expect(page.getByTestId('users').locator('tbody tr').first().textContent()).resolves.toContain('bulk-60');
    await page.getByRole('link', { name: 'Next page →' }).first().click();
    await page.waitForURL(/after=/);
    await expect(page.getByTestId('users').locator('tbody tr').last().textContent()).resolves.toContain('bulk-01');
    await go('/keys?q=to-revoke');
    expect(await page.getByTestId('keys').locator('tbody tr').count()).toBe(1);
    await go('/channels?q=healthy');
    expect(await page.getByTestId('channels').locator('tbody tr').count()).toBe(1);
  });

  it('at 1280 px the row actions are on screen; at 400 px no page scrolls sideways', async () => {
    await page.setViewportSize({ width: 1280, height: 860 });
    await su`select admin.key_create(${su.json({ username: 'ops', name: 'wide', allowed_models: ['m-test'], allowed_ips: ['10.0.0.0/8', '192.168.0.0/16'], quota_micros: 123456789, rpm_limit: 100, tpm_limit: 100000, concurrency_limit: 5 })})`;
    for (const [path, button] of [['/channels', 'Disable'], ['/keys', 'Revoke']] as const) {
      await go(path);
      const box = (await page.getByRole('button', { name: button, exact: true }).first().boundingBox())!;
      expect(box.x + box.width, `${path} ${button}`).toBeLessThanOrEqual(1280);
    }
    await shot('defects-channels-1280');
    // The dashboard's top lists: nothing cut off inside their boxes either.
    await go('/?range=24h');
    await page.getByRole('heading', { name: 'Top keys' }).waitFor();
    const cut = await page.evaluate(() => [...document.querySelectorAll('section .overflow-x-auto')].filter((e) => e.scrollWidth > e.clientWidth + 1).length);
    expect(cut).toBe(0);
    await shot('defects-dashboard-1280');
    await page.setViewportSize({ width: 400, height: 800 });
    for (const path of ['/', '/channels', '/keys', '/users', '/prices', '/logs', '/cache', '/jobs', '/webhooks', '/security', '/audit', '/settings', '/me']) {
      await go(path);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      await shot(`defects-400${path.replace(/\//g, '-')}`);
      if (overflow > 0) console.log(path, await page.evaluate(() => [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > 401 && e.parentElement!.getBoundingClientRect().right <= 401).slice(0, 8).map((e) => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)));
      expect.soft(overflow, path).toBeLessThanOrEqual(0);
    }
    await shot('defects-keys-400');
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  it('a regular user who logs in from / lands on their own page', async () => {
    await userWithPassword('bob', 'user');
    await ctx.clearCookies();
    const tab = await ctx.newPage();
    await login(tab, 'bob', PASSWORD, '/');
    await tab.waitForURL((u) => u.pathname === '/me');
    await tab.getByTestId('balance').waitFor();
    await tab.close();
  });
});
