// Issue 19, the admin's doors: the Security page (active sessions with Revoke, recent login
// attempts) and the Audit log page, driven through the real panel (headless Chromium) on a database
// of its own. A second user logs in from outside the browser (a plain HTTP client with its own user
// agent), so revoking that session can be seen from both sides.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { Sql } from 'postgres';
import type { RunningProduct } from './support/admin-server';
import { PASSWORD, startOwnProduct, type OwnProduct } from './support/own-product';

const SHOTS = process.env.ELYGATE_SECURITY_SHOTS ?? mkdtempSync(join(tmpdir(), 'elygate-security-'));
let own: OwnProduct, su: Sql, admin: RunningProduct, page: Page;

const go = async (path: string) => (await page.goto(admin.url + path))!;
const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

/** Logs in as a browser elsewhere would: the form post, its own user agent; returns the session cookie. */
async function loginElsewhere(username: string, password: string, userAgent: string): Promise<{ ok: boolean; cookie: string }> {
  const res = await fetch(`${admin.url}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: admin.url, 'user-agent': userAgent, 'x-sveltekit-action': 'true', accept: 'application/json' },
    body: new URLSearchParams({ username, password }),
    redirect: 'manual',
  });
  const body = await res.json();
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  return { ok: body.type === 'redirect' && cookie.startsWith('elygate_session='), cookie };
}

/** Where a request with this cookie lands: its own page, or the login page once the session ended. */
async function landsOn(cookie: string, path: string): Promise<string> {
  const res = await fetch(`${admin.url}${path}`, { headers: { cookie }, redirect: 'manual' });
  return res.status === 200 ? path : new URL(res.headers.get('location') ?? '', admin.url).pathname;
}

beforeAll(async () => {
  own = await startOwnProduct();
  ({ su, admin, page } = own);
});

afterAll(async () => {
  await own?.stop();
  if (!process.env.ELYGATE_SECURITY_SHOTS) rmSync(SHOTS, { recursive: true, force: true });
});

describe('Security page', () => {
  it("lists sessions and recent login attempts, and revokes another user's session", async () => {
    await own.userWithPassword('dana', 'user');
    const wrong = await loginElsewhere('dana', 'not-her-password', 'dana-laptop/1.0');
    expect(wrong.ok).toBe(false);
    const dana = await loginElsewhere('dana', PASSWORD, 'dana-laptop/1.0');
    expect(dana.ok).toBe(true);
    expect(await landsOn(dana.cookie, '/me')).toBe('/me');

    await go('/security');
    const sessions = page.getByTestId('sessions');
    const danaRow = sessions.locator('tr', { hasText: 'dana' });
    await expect.poll(() => danaRow.innerText()).toMatch(/127\.0\.0\.1.*dana-laptop\/1\.0/);
    expect(await sessions.locator('tr', { hasText: 'this session' }).innerText()).toMatch(/^ops/);
    // Attempts, newest first: dana's success, her failure, ops's own login.
    const attempts = page.getByTestId('login-attempts');
    const rows = await attempts.locator('tbody tr').allInnerTexts();
    expect(rows.slice(0, 2).map((r) => r.replace(/\s+/g, ' '))).toEqual([
      expect.stringMatching(/dana 127\.0\.0\.1 ok/),
      expect.stringMatching(/dana 127\.0\.0\.1 failed invalid/),
    ]);
    expect(rows.some((r) => /ops 127\.0\.0\.1 ok/.test(r.replace(/\s+/g, ' ')))).toBe(true);
    await shot('security');

    // Filters: only failures, only one user.
    await page.selectOption('select[name=result]', 'failed');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL((u) => u.searchParams.get('result') === 'failed');
    expect(await attempts.locator('tbody tr').allInnerTexts()).toEqual([expect.stringMatching(/dana[\s\S]*failed/)]);

    // Revoke dana's session: the browser's confirmation, then her next request goes to the login page.
    page.once('dialog', (d) => d.accept());
    await danaRow.getByRole('button', { name: /Revoke dana's session/ }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/Session revoked/);
    expect(await sessions.locator('tr', { hasText: 'dana' }).count()).toBe(0);
    expect(await landsOn(dana.cookie, '/me')).toBe('/login');
  });
});

describe('Audit log page', () => {
  it('shows who changed what, before and after, from the panel and from psql, with filters', async () => {
    // From the panel: ops changes an option on the Settings page.
    await go('/settings');
    const form = page.locator('form', { has: page.locator('#opt-LoginWindowMinutes') });
    await form.locator('#opt-LoginWindowMinutes').fill('25');
    await form.getByRole('button', { name: 'Save' }).click();
    await expect.poll(() => form.getByRole('status').textContent()).toMatch(/Saved/);
    // From psql: the database role, no panel session.
    await su`select admin.model_upsert('{"name": "m-audited", "input_price": 100, "output_price": 200}')`;
    const [{ role }] = await su`select session_user::text as role`;

    await go('/audit');
    const table = page.getByTestId('audit');
    const optionRow = table.locator('tr', { hasText: 'options:LoginWindowMinutes' }).first();
    expect((await optionRow.innerText()).replace(/\s+/g, ' ')).toMatch(/ops admin\.option_set options:LoginWindowMinutes value: "15" → "25"/);
    const priceRow = table.locator('tr', { hasText: 'models:m-audited' }).first();
    expect((await priceRow.innerText()).replace(/\s+/g, ' ')).toMatch(new RegExp(`${role} ?database role ?admin\\.model_upsert models:m-audited created`));
    await priceRow.locator('summary').click();
    expect(JSON.parse((await priceRow.getByTestId('audit-after').textContent())!)).toMatchObject({ name: 'm-audited', input_price: 100, output_price: 200 });
    // The session revoked above is there too, with whose it was.
    const revoked = table.locator('tr', { hasText: 'admin.session_revoke' }).first();
    expect(await revoked.innerText()).toMatch(/ops[\s\S]*sessions:[0-9a-f]{12}[\s\S]*deleted/);
    await shot('audit');

    // Filters: by who, by kind, by action prefix.
    await page.fill('input[name=actor]', 'ops');
    await page.selectOption('select[name=kind]', 'options');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL((u) => u.searchParams.get('kind') === 'options');
    const targets = await table.locator('tbody tr td:nth-child(4)').allTextContents();
    expect(targets.length).toBeGreaterThan(0);
    expect(new Set(targets)).toEqual(new Set(['options:LoginWindowMinutes']));
    await go('/audit?action=admin.model');
    expect(new Set(await table.locator('tbody tr td:nth-child(3)').allTextContents())).toEqual(new Set(['admin.model_upsert']));
    // Nothing in the panel edits it, and the role behind it cannot either.
    expect(await page.locator('form[method=POST]', { has: page.getByTestId('audit') }).count()).toBe(0);
  });
});

describe('Keys page: Rotate', () => {
  it('shows the new key once and marks the old one rotated, working until its grace ends', async () => {
    const [{ u }] = await su`select admin.user_create('{"username": "erin"}') as u`;
    const [{ k }] = await su`select admin.key_create(${su.json({ user_id: u.id, name: 'deploy', rpm_limit: 30 })}) as k`;
    await go('/keys');
    const row = page.getByTestId('keys').locator('tr', { hasText: k.key_prefix });
    await row.getByRole('link', { name: 'Rotate' }).click();
    const form = page.getByTestId('key-rotate');
    await form.getByLabel('The old key keeps working for').selectOption('1');
    await shot('keys-rotate-form');
    await form.getByRole('button', { name: 'Rotate key' }).click();
    const shown = page.getByTestId('shown-once');
    await expect.poll(() => shown.textContent()).toMatch(new RegExp(`to replace key #${k.id}, which keeps working until`));
    const secret = (await shown.getByTestId('secret').textContent())!;
    expect(secret).toMatch(/^sk-/);
    const [n] = await su`select k.id, k.key_prefix, k.rpm_limit, k.name from admin.api_keys k where k.key_prefix = ${secret.slice(0, 7) + '...' + secret.slice(-4)}`;
    expect({ rpm: n.rpm_limit, name: n.name }).toEqual({ rpm: 30, name: 'deploy' });
    const [r] = await su`select grace_until - rotated_at as grace from admin.key_rotations where old_key_id = ${k.id}`;
    expect(r.grace).toMatch(/^01:00:00/);
    await go('/keys');
    expect(await page.getByTestId('keys').locator('tr', { hasText: k.key_prefix }).getByTestId('rotated').textContent()).toMatch(new RegExp(`rotated to #${n.id}; works until`));
    // A rotated key offers no second Rotate; its replacement does.
    expect(await page.getByTestId('keys').locator('tr', { hasText: k.key_prefix }).getByRole('link', { name: 'Rotate' }).count()).toBe(0);
    expect(await page.getByTestId('keys').locator('tr', { hasText: n.key_prefix }).getByRole('link', { name: 'Rotate' }).count()).toBe(1);
    await shot('keys-rotated');
  });
});
