// The panel before its scripts have run: on a slow link or a busy machine, SvelteKit's server-made
// page is on screen and clickable a moment before the page's JavaScript has started. Whatever
// someone can click in that moment must do what it says or wait; it must never act without the
// question it asks, and never show or save anything other than what is true:
//   - an irreversible action (revoke, purge, debit, archive...) asks first (data-confirm, answered
//     by the one inline script in src/app.html);
//   - New channel opens its form, and the phone-sized Menu opens the menu (each is also a GET form,
//     ?new and ?menu, which the scripts turn into a toggle in place);
//   - Import models lists the upstream's models with the channel's own already checked (Save shows
//     their number), and a box checked before the scripts start is still checked after, and saved.
// The scripts are held back with the browser's request routing (which also turns its HTTP cache
// off) and let go where a step says so. Stylesheets are not held: the page looks as it will.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import type { Sql } from 'postgres';
import { startMockUpstream, type MockUpstream } from '../../gateway/test/support/mock-upstream';
import type { RunningProduct } from './support/admin-server';
import { startOwnProduct, type OwnProduct } from './support/own-product';

let own: OwnProduct, su: Sql, admin: RunningProduct, mock: MockUpstream;

beforeAll(async () => {
  mock = await startMockUpstream();
  own = await startOwnProduct();
  ({ su, admin } = own);
});

afterAll(async () => {
  await own?.stop();
  await mock?.close();
});

const SCRIPTS = '**/_app/immutable/**/*.js';

/** A new tab (logged in as ops) whose scripts wait until `release()`; `held()` counts those waiting. */
async function tabWithoutScripts(viewport = { width: 1280, height: 860 }) {
  const page: Page = await own.ctx.newPage();
  await page.setViewportSize(viewport);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let waiting = 0;
  await page.route(SCRIPTS, async (route) => {
    waiting++;
    await gate;
    await route.continue();
  });
  return {
    page,
    held: () => waiting,
    /** Opens a path of the panel without waiting for its scripts (they are held). */
    open: (path: string) => page.goto(admin.url + path, { waitUntil: 'domcontentloaded' }),
    release,
    async close() {
      release();
      await page.close();
    },
  };
}

describe('the panel before its scripts have run', () => {
  it('asks before revoking a key; No keeps it, Yes revokes it', async () => {
    const [{ k }] = await su`select admin.key_create('{"username": "ops", "name": "early-revoke"}') as k`;
    const tab = await tabWithoutScripts();
    try {
      await tab.open('/keys');
      const row = tab.page.locator('tr', { hasText: 'early-revoke' });
      const asked: string[] = [];
      tab.page.once('dialog', (d) => {
        asked.push(d.message());
        void d.dismiss();
      });
      await row.getByRole('button', { name: 'Revoke' }).click();
      await expect.poll(() => asked.length).toBe(1);
      expect(asked[0]).toMatch(/^Revoke key .*\(early-revoke\)\? Requests with it get 401 at once/);
      expect(tab.held()).toBeGreaterThan(0); // the scripts were still waiting
      expect((await su`select status from admin.api_keys where id = ${k.id}`)[0].status).toBe('active');

      tab.page.once('dialog', (d) => void d.accept());
      await row.getByRole('button', { name: 'Revoke' }).click();
      await tab.page.getByText(`Key #${k.id} revoked`).waitFor();
      expect((await su`select status from admin.api_keys where id = ${k.id}`)[0].status).toBe('revoked');
    } finally {
      await tab.close();
    }
  });

  it('New channel opens its form', async () => {
    const tab = await tabWithoutScripts();
    try {
      await tab.open('/channels');
      await tab.page.getByRole('button', { name: 'New channel' }).click();
      await tab.page.locator('#ch-name').waitFor();
      expect(tab.held()).toBeGreaterThan(0);
      expect(await tab.page.getByRole('button', { name: 'New channel' }).getAttribute('aria-expanded')).toBe('true');
    } finally {
      await tab.close();
    }
  });

  it("the phone-sized Menu opens the menu", async () => {
    const tab = await tabWithoutScripts({ width: 390, height: 800 });
    try {
      await tab.open('/keys');
      expect(await tab.page.getByRole('link', { name: 'Channels' }).isVisible()).toBe(false);
      await tab.page.getByRole('button', { name: 'Menu' }).click();
      await tab.page.getByRole('link', { name: 'Channels' }).waitFor();
      expect(tab.held()).toBeGreaterThan(0);
      await tab.page.getByRole('link', { name: 'Channels' }).click();
      await tab.page.waitForURL((u) => u.pathname === '/channels');
      expect(await tab.page.getByRole('link', { name: 'Channels' }).isVisible()).toBe(false);
    } finally {
      await tab.close();
    }
  });

  it("Import models checks the channel's models; a box checked early is kept and saved", async () => {
    mock.models = ['m-early', 'm-late'];
    const [{ c }] = await su`select admin.channel_create(${su.json({ name: 'early-import', base_url: mock.url, api_key: 'sk-up', models: ['m-early'] })}) as c`;
    const tab = await tabWithoutScripts();
    try {
      await tab.open('/channels');
      await tab.page.getByTestId('channels').locator('tr', { hasText: 'early-import' }).getByRole('button', { name: 'Import models' }).click();
      const list = tab.page.getByTestId('import-list');
      await list.waitFor();
      expect(tab.held()).toBeGreaterThan(0);
      expect(await list.locator('input[value="m-early"]').isChecked()).toBe(true);
      expect(await list.locator('input[value="m-late"]').isChecked()).toBe(false);
      expect(await tab.page.getByRole('button', { name: /^Save \d+ model/ }).textContent()).toBe('Save 1 model(s)');
      await list.locator('input[value="m-late"]').check();
      tab.release();
      // The scripts start with the box as it was left: Save counts it.
      await tab.page.getByRole('button', { name: 'Save 2 model(s)' }).waitFor();
      expect(await list.locator('input[value="m-late"]').isChecked()).toBe(true);
      await tab.page.getByRole('button', { name: 'Save 2 model(s)' }).click();
      await tab.page.getByText(/early-import now serves 2 model\(s\)/).waitFor();
      expect((await su`select models from admin.channels where id = ${c.id}`)[0].models).toEqual(['m-early', 'm-late']);
    } finally {
      await tab.close();
    }
  });
});
