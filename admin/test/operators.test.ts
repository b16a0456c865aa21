// Issue 21, "what operators expect and cannot do yet": edit a key, clear a price, make redemption
// codes, read a wallet's history, see a channel's breaker and probes, test every channel, read a
// routing trace and see a cache hit, driven through the real panel (headless Chromium), gateway,
// database and two mock upstreams, in a database of its own (as defects.test.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { Sql } from 'postgres';
import { startMockUpstream, type MockUpstream } from '../../gateway/test/support/mock-upstream';
import type { RunningProduct } from './support/admin-server';
import { PASSWORD, startOwnProduct, type OwnProduct } from './support/own-product';

const SHOTS = process.env.ELYGATE_OPERATOR_SHOTS ?? mkdtempSync(join(tmpdir(), 'elygate-operators-'));
let own: OwnProduct, su: Sql, live: MockUpstream, dead: MockUpstream, admin: RunningProduct;
let ctx: BrowserContext, page: Page;
let userWithPassword: OwnProduct['userWithPassword'], login: OwnProduct['login'];

const go = async (path: string, p: Page = page) => (await p.goto(admin.url + path))!;
const shot = (name: string, p: Page = page) => p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const formError = () => page.getByTestId('form-error').first().textContent();

beforeAll(async () => {
  live = await startMockUpstream();
  dead = await startMockUpstream();
  own = await startOwnProduct({ AllowUnpricedModels: 'true' });
  ({ su, admin, ctx, page } = own);
  ({ userWithPassword, login } = own);
});

afterAll(async () => {
  await own?.stop();
  await live?.close();
  await dead?.close();
  if (!process.env.ELYGATE_OPERATOR_SHOTS) rmSync(SHOTS, { recursive: true, force: true });
});

const dbRow = async (q: Promise<any[]>) => (await q)[0];

describe('issue 21: what operators expect and cannot do yet', () => {
  let carolKey = '';
  beforeAll(async () => {
    const [{ u }] = await su`select admin.user_create('{"username": "carol"}') as u`;
    await su`select admin.wallet_credit(${su.json({ user_id: u.id, amount_micros: 5000000, note: 'invoice 42' })})`;
    for (const [name, mock, priority] of [['alpha', live, 10], ['beta', dead, 0]] as const) {
      await su`select admin.channel_create(${su.json({ name, base_url: mock.url, api_key: 'sk-up', models: ['m-op'], priority })})`;
    }
    const [{ k }] = await su`select admin.key_create('{"username": "carol", "name": "ci", "rpm_limit": 10, "tpm_limit": 1000}') as k`;
    carolKey = k.key;
  });

  it("edits a key's limits, models, expiry and label from the Keys page", async () => {
    const [{ id, key_prefix }] = await su`select id, key_prefix from admin.api_keys where username = 'carol'`;
    await go('/keys');
    await page.locator('tr', { hasText: key_prefix }).getByRole('link', { name: 'Edit' }).click();
    const form = page.getByTestId('key-edit');
    // The form starts from the key as it is.
    expect(await form.locator('#ke-rpm').inputValue()).toBe('10');
    expect(await form.locator('#ke-tpm').inputValue()).toBe('1000');
    expect(await form.locator('#ke-name').inputValue()).toBe('ci');
    // A model nobody serves is refused by SQL, next to the form, which keeps the key being edited.
    await form.locator('#ke-models').fill('no-such-model');
    await form.getByRole('button', { name: 'Save key' }).click();
    expect(await formError()).toMatch(/Unknown model\(s\) in "allowed_models": "no-such-model"/);
    await expect.poll(() => page.getByTestId('key-edit').count()).toBe(1);
    await shot('keys-edit-error');
    await page.fill('#ke-models', 'm-op');
    await page.fill('#ke-rpm', '99');
    await page.fill('#ke-tpm', ''); // emptied: no TPM limit any more
    await page.fill('#ke-conc', '3');
    await page.fill('#ke-quota', '2.5');
    await page.fill('#ke-name', 'ci-renamed');
    await page.fill('#ke-exp', '2030-01-31T12:00');
    await page.selectOption('#ke-cache', 'always');
    await page.getByRole('button', { name: 'Save key' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(new RegExp(`Key #${id} saved`));
    const k = await dbRow(su`select * from admin.api_keys where id = ${id}`);
    expect({ rpm: k.rpm_limit, tpm: k.tpm_limit, conc: k.concurrency_limit, quota: Number(k.quota_micros), name: k.name, models: k.allowed_models })
      .toEqual({ rpm: 99, tpm: null, conc: 3, quota: 2500000, name: 'ci-renamed', models: ['m-op'] });
    expect(new Date(k.expires_at).toISOString()).toBe('2030-01-31T12:00:00.000Z');
    expect(k.cache_mode).toBe('always');
    await go(`/keys?edit=${id}`);
    expect(await page.locator('#ke-cache').inputValue()).toBe('always');
    await shot('keys-edit');
  });

  it('clears a price on the Prices page', async () => {
    await su`select admin.model_upsert('{"name": "priced-model", "input_price": 150000, "output_price": 600000}')`;
    await go('/prices');
    page.once('dialog', (d) => void d.accept());
    await page.locator('tr', { hasText: 'priced-model' }).getByRole('button', { name: 'Clear price' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/Cleared the prices of priced-model/);
    const m = await dbRow(su`select * from admin.models where name = 'priced-model'`);
    expect([m.input_price, m.output_price, m.per_call_price]).toEqual([null, null, null]);
    // Nothing left to clear: no button.
    expect(await page.locator('tr', { hasText: 'priced-model' }).getByRole('button', { name: 'Clear price' }).count()).toBe(0);
    await shot('prices');
  });

  it('names fallback models on the Prices page and shows them in order', async () => {
    await su`select admin.model_upsert('{"name": "fb-small", "input_price": 100000}')`;
    await su`select admin.model_upsert('{"name": "fb-tiny", "input_price": 50000}')`;
    await go('/prices');
    await page.fill('#p-name', 'fb-big');
    await page.fill('#p-input_price', '2');
    await page.fill('#p-fallbacks', 'fb-small, fb-tiny');
    await page.click('button:has-text("Save price")');
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/Saved fb-big/);
    expect((await dbRow(su`select fallbacks from admin.models where name = 'fb-big'`)).fallbacks).toEqual(['fb-small', 'fb-tiny']);
    expect(await page.locator('tr', { hasText: 'fb-big' }).getByTestId('fallbacks').textContent()).toBe('fb-small → fb-tiny');
    await shot('prices-fallbacks');
    // A name nobody knows is refused, and says which.
    await page.fill('#p-name', 'fb-big');
    await page.fill('#p-fallbacks', 'fb-nowhere');
    await page.click('button:has-text("Save price")');
    await expect.poll(formError).toMatch(/Unknown model\(s\) in "fallbacks": "fb-nowhere"/);
    // "none" clears them.
    await page.fill('#p-name', 'fb-big');
    await page.fill('#p-fallbacks', 'none');
    await page.click('button:has-text("Save price")');
    await expect.poll(async () => (await dbRow(su`select fallbacks from admin.models where name = 'fb-big'`)).fallbacks).toBeNull();
  });

  it("sets the media endpoints' unit prices on the Prices page and shows them", async () => {
    await go('/prices');
    await page.fill('#p-name', 'img-model');
    await page.fill('#p-image_prices', '1024x1024=0.04, 1024x1024/hd=0.08');
    await page.fill('#p-character_price', '15');
    await page.fill('#p-audio_second_price', '0.0001');
    await page.fill('#p-search_unit_price', '0.002');
    await page.click('button:has-text("Save price")');
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/Saved img-model/);
    const m = await dbRow(su`select image_prices, character_price, audio_second_price, search_unit_price from admin.models where name = 'img-model'`);
    expect(m).toEqual({ image_prices: { '1024x1024': 40000, '1024x1024/hd': 80000 }, character_price: '15000000', audio_second_price: '100', search_unit_price: '2000' });
    const units = await page.locator('tr', { hasText: 'img-model' }).getByTestId('units').textContent();
    expect(units).toContain('image 1024x1024 $0.04 · 1024x1024/hd $0.08');
    expect(units).toContain('speech $15.00 /1M chars');
    expect(units).toContain('transcription $0.0001 /s');
    expect(units).toContain('rerank $0.002 /search unit');
    await shot('prices-units');
    // A size that is not one is refused by SQL, naming the field.
    await page.fill('#p-name', 'img-model');
    await page.fill('#p-image_prices', 'huge=1');
    await page.click('button:has-text("Save price")');
    await expect.poll(formError).toMatch(/"image_prices" takes sizes/);
    // "none" clears them; Clear price clears the unit prices too.
    await page.fill('#p-name', 'img-model');
    await page.fill('#p-image_prices', 'none');
    await page.click('button:has-text("Save price")');
    await expect.poll(async () => (await dbRow(su`select image_prices from admin.models where name = 'img-model'`)).image_prices).toBeNull();
    page.once('dialog', (d) => void d.accept());
    await page.locator('tr', { hasText: 'img-model' }).getByRole('button', { name: 'Clear price' }).click();
    await expect.poll(async () => (await dbRow(su`select character_price from admin.models where name = 'img-model'`)).character_price).toBeNull();
  });

  it('creates redemption codes on the Users page and shows them once', async () => {
    await go('/users');
    const codes = page.getByTestId('codes');
    await codes.locator('#c-count').fill('2');
    await codes.locator('#c-amount').fill('1.5');
    await codes.locator('#c-batch').fill('promo-test');
    await codes.getByRole('button', { name: 'Create codes' }).click();
    const shown = (await page.getByTestId('secret').textContent())!.trim().split('\n');
    expect(shown).toHaveLength(2);
    for (const c of shown) expect(c).toMatch(/^ely-[0-9A-F]{20}$/);
    await shot('users-codes');
    const [{ id: carol }] = await su`select id from admin.users where username = 'carol'`;
    const [{ r }] = await su`select admin.code_redeem(${carol}, ${shown[0]}) as r`;
    expect(Number(r.amount_micros)).toBe(1500000);
    // Shown once: a new visit lists prefixes and who redeemed, never the codes.
    await go('/users');
    const html = await page.content();
    for (const c of shown) expect(html).not.toContain(c);
    expect(await page.getByTestId('codes').locator('tr', { hasText: 'carol' }).textContent()).toMatch(/promo-test[\s\S]*\$1\.50/);
  });

  it("shows a wallet's top-up history on the Users page", async () => {
    await go('/users');
    await page.locator('tr', { hasText: 'carol' }).getByRole('link', { name: 'History' }).click();
    const credits = page.getByTestId('credits');
    expect(await credits.textContent()).toMatch(/Top-up history of carol/);
    const rows = await credits.locator('tbody tr').allTextContents();
    expect(rows.join('|')).toMatch(/\$5\.00[\s\S]*admin[\s\S]*invoice 42/);
    expect(rows.join('|')).toMatch(/\$1\.50[\s\S]*redeem[\s\S]*promo-test/);
    await shot('users-credits');
  });

  it("shows a channel's breaker state and probe history on its page", async () => {
    const [{ id }] = await su`select id from admin.channels where name = 'beta'`;
    await su`insert into private.channel_breakers (channel_id, state, opened_at, next_probe_at, probe_failures, last_error)
             values (${id}, 'open', now() - interval '2 minutes', now() + interval '1 minute', 2, 'HTTP 500 from upstream')`;
    await su`insert into private.channel_probes (channel_id, kind, model, claimed_at, finished_at, ok, http_status, ms, error)
             values (${id}, 'recovery', 'm-op', now(), now(), false, 500, 41, 'upstream said no')`;
    await go(`/channels/${id}`);
    const health = page.getByTestId('health');
    expect(await health.getByTestId('breaker').textContent()).toMatch(/open: skipped by routing/);
    expect(await health.textContent()).toMatch(/HTTP 500 from upstream/);
    expect(await health.getByTestId('probes').locator('tbody tr').first().textContent()).toMatch(/recovery[\s\S]*m-op[\s\S]*failed[\s\S]*500[\s\S]*41[\s\S]*upstream said no/);
    await shot('channel-health');
    await su`delete from private.channel_breakers where channel_id = ${id}`;
  });

  let deadRequest = '', liveRequest = '';
  it('tests every channel at once', async () => {
    dead.mode = { kind: 'status', status: 500 };
    // Disabled by hand still gets tested (the operator wants to know before enabling it), and says so.
    const [{ id: betaId }] = await su`select id from admin.channels where name = 'beta'`;
    await su`select admin.channel_update(${betaId}, '{"status": "manually_disabled"}')`;
    await go('/channels');
    await page.getByRole('button', { name: 'Test all' }).click();
    const all = page.getByTestId('test-all');
    expect(await all.locator('h2').textContent()).toMatch(/1 of 2 OK/);
    const alpha = all.locator('tr', { hasText: 'alpha' });
    const beta = all.locator('tr', { hasText: 'beta' });
    expect(await alpha.textContent()).toMatch(/OK[\s\S]*echo: Say hello\./);
    expect(await beta.textContent()).toMatch(/beta\s*manually_disabled[\s\S]*failed[\s\S]*answered HTTP 500/);
    expect(await alpha.locator('td').nth(1).textContent()).toBe('alpha');
    expect(dead.calls.filter((c) => c.path.endsWith('/chat/completions')).length).toBeGreaterThan(0);
    liveRequest = new URL((await alpha.getByRole('link').last().getAttribute('href'))!, admin.url).pathname.split('/').pop()!;
    deadRequest = new URL((await beta.getByRole('link').last().getAttribute('href'))!, admin.url).pathname.split('/').pop()!;
    await shot('channels-test-all');
    dead.mode = { kind: 'ok' };
    await su`select admin.channel_update(${betaId}, '{"status": "enabled"}')`;
  });

  it("imports a channel's model list from its upstream: checkboxes, new ones marked, saved through SQL", async () => {
    const [{ id }] = await su`select id from admin.channels where name = 'alpha'`;
    live.models = ['gpt-4o', 'gpt-4o-mini', 'm-op'];
    const heard = live.calls.length;
    await go('/channels');
    await page.getByTestId('channels').locator('tr', { hasText: 'alpha' }).getByRole('button', { name: 'Import models' }).click();
    const box = page.getByTestId('import-models');
    expect(await box.getByRole('status').textContent()).toMatch(/lists 3 model\(s\); 2 of them the channel does not serve yet/);
    // The gateway called the upstream's listing with the channel's own key (the admin holds none).
    const listing = live.calls.slice(heard).filter((c) => c.path === '/v1/models');
    expect(listing).toHaveLength(1);
    expect(listing[0].headers.authorization).toBe('Bearer sk-up');
    const item = (model: string) => box.getByTestId('import-list').locator('li', { has: page.locator(`input[value="${model}"]`) });
    expect(await item('m-op').getByRole('checkbox').isChecked()).toBe(true);
    expect(await item('m-op').textContent()).not.toMatch(/new/);
    for (const m of ['gpt-4o', 'gpt-4o-mini']) {
      expect(await item(m).getByRole('checkbox').isChecked()).toBe(false);
      expect(await item(m).textContent()).toMatch(/new/);
    }
    // The filter runs in the page's script: it narrows the list once that has started.
    await page.fill('#im-filter', 'mini');
    await expect.poll(() => box.getByTestId('import-list').locator('li:visible').count()).toBe(1);
    expect(await item('gpt-4o-mini').isVisible()).toBe(true);
    await item('gpt-4o-mini').getByRole('checkbox').check();
    await page.fill('#im-filter', '');
    await shot('channels-import-models');
    await box.getByRole('button', { name: /^Save 2 model/ }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/alpha now serves 2 model\(s\): m-op, gpt-4o-mini/);
    expect((await dbRow(su`select models from admin.channels where id = ${id}`)).models).toEqual(['m-op', 'gpt-4o-mini']);
    // The panel's key for the listing is gone once used.
    expect(Number((await dbRow(su`select count(*) as n from private.api_keys where user_id = (select id from private.users where username = ${`channel-test.${id}`}) and status = 'active'`)).n)).toBe(0);

    // Failures say what failed, next to the channel, and change nothing.
    live.mode = { kind: 'status', status: 401 };
    await page.getByTestId('channels').locator('tr', { hasText: 'alpha' }).getByRole('button', { name: 'Import models' }).click();
    expect(await page.getByTestId('import-error').textContent()).toMatch(/upstream refused the channel's key \(HTTP 401\): mock upstream says 401[\s\S]*upstream_unauthorized/);
    await shot('channels-import-401');
    live.mode = { kind: 'ok' };
    live.models = null;
    await page.getByTestId('channels').locator('tr', { hasText: 'alpha' }).getByRole('button', { name: 'Import models' }).click();
    expect(await page.getByTestId('import-error').textContent()).toMatch(/has no model listing[\s\S]*enter the channel's models by hand/);
    expect((await dbRow(su`select models from admin.channels where id = ${id}`)).models).toEqual(['m-op', 'gpt-4o-mini']);
    live.models = ['m-op'];
    await su`select admin.channel_update(${id}, '{"models": ["m-op"]}')`;
  });

  it("shows a log entry's routing as a table of steps", async () => {
    await go(`/logs/${deadRequest}`);
    const steps = page.getByTestId('route-steps');
    const failed = steps.locator('tbody tr', { hasText: 'attempt' }).first();
    expect(await failed.textContent()).toMatch(/beta[\s\S]*500/);
    expect(await steps.getByText('served').count()).toBe(0);
    await shot('log-trace-failed');
    await go(`/logs/${liveRequest}`);
    const served = page.getByTestId('route-steps').locator('tbody tr', { hasText: 'served' });
    expect(await served.count()).toBe(1);
    expect(await served.textContent()).toMatch(/alpha[\s\S]*200/);
    // The raw JSON is no longer the trace, only a collapsed appendix.
    expect(await page.locator('[data-testid="trace"] details').getAttribute('open')).toBeNull();
    await shot('log-trace');
  });

  it('labels a cache hit as one in the logs list and on its page', async () => {
    const ask = () =>
      fetch(`${admin.gatewayUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${carolKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm-op', messages: [{ role: 'user', content: 'Cache me.' }], max_tokens: 8, temperature: 0 }),
      });
    expect((await ask()).status).toBe(200);
    let hit: Response | null = null;
    await expect.poll(async () => {
      hit = await ask();
      return hit.headers.get('x-elygate-cache') ?? '';
    }, { timeout: 10000, interval: 300 }).toMatch(/^exact/);
    const id = hit!.headers.get('x-request-id')!;
    await expect.poll(async () => (await dbRow(su`select status from admin.requests where id = ${id}::uuid`))?.status, { timeout: 10000 }).toBe('ok');
    await go('/logs?user=carol');
    const row = page.locator('tr', { has: page.locator(`a[href="/logs/${id}"]`) });
    expect(await row.textContent()).toMatch(/exact cache hit/);
    await shot('logs-cache');
    await go(`/logs/${id}`);
    expect(await page.getByTestId('cache-hit').textContent()).toBe('exact cache hit');
    await shot('log-cache-hit');
  });

  it('archives a channel, a key and a user: shown as such, never used again, history kept', async () => {
    // Channel: archived from the list, left out of Test all, restored disabled.
    await go('/channels');
    page.once('dialog', (d) => void d.accept());
    await page.locator('tr', { hasText: 'beta' }).getByRole('button', { name: 'Archive' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/beta archived/);
    const betaRow = page.getByTestId('channels').locator('tr', { hasText: 'beta' });
    expect(await betaRow.locator('.badge').first().textContent()).toBe('archived');
    expect(await betaRow.getByRole('button', { name: 'Test' }).count()).toBe(0);
    await shot('channels-archived');
    await page.getByRole('button', { name: 'Test all' }).click();
    expect(await page.getByTestId('test-all').locator('h2').textContent()).toMatch(/1 of 1 OK/);
    await page.getByTestId('channels').locator('tr', { hasText: 'beta' }).getByRole('button', { name: 'Restore' }).click();
    await expect.poll(async () => (await dbRow(su`select status from admin.channels where name = 'beta'`)).status).toBe('manually_disabled');

    // Key: archived from the Keys page; the gateway refuses it; its requests stay in the log.
    const [{ id: keyId, key_prefix }] = await su`select id, key_prefix from admin.api_keys where username = 'carol'`;
    await go('/keys');
    page.once('dialog', (d) => void d.accept());
    await page.locator('tr', { hasText: key_prefix }).getByRole('button', { name: 'Archive' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(new RegExp(`Key #${keyId} archived`));
    expect(await page.locator('tr', { hasText: key_prefix }).locator('.badge').textContent()).toBe('archived');
    await shot('keys-archived');
    const res = await fetch(`${admin.gatewayUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${carolKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm-op', messages: [{ role: 'user', content: 'Still there?' }], max_tokens: 8 }),
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as any).error.message).toMatch(/has been archived/);
    expect(Number((await dbRow(su`select count(*) as n from admin.requests where key_id = ${keyId} and status = 'ok'`)).n)).toBeGreaterThan(0);

    // User: archived with the status select; their history (credits) stays readable.
    await go('/users');
    const carolRow = page.getByTestId('users').locator('tr', { hasText: 'carol' });
    await carolRow.locator('select[name="status"]').selectOption('archived');
    await carolRow.getByRole('button', { name: 'Save' }).click();
    await expect.poll(async () => (await dbRow(su`select status from admin.users where username = 'carol'`)).status).toBe('archived');
    await page.getByTestId('users').locator('tr', { hasText: 'carol' }).getByRole('link', { name: 'History' }).click();
    expect(await page.getByTestId('credits').textContent()).toMatch(/invoice 42/);
  });
  it('archives a model and a group: refused through the gateway with the reason, unlisted, history kept', async () => {
    await su`select admin.model_upsert('{"name": "m-old", "input_price": 1000000, "output_price": 1000000}')`;
    await su`insert into private.groups (name, price_multiplier) values ('retired-plan', 1) on conflict do nothing`;
    const [{ u }] = await su`select admin.user_create('{"username": "dave", "group": "retired-plan"}') as u`;
    await su`select admin.wallet_credit(${su.json({ user_id: u.id, amount_micros: 10_000_000 })})`;
    const [{ k }] = await su`select admin.key_create(${su.json({ user_id: u.id, name: 'dave' })}) as k`;
    const ask = (key: string, model: string) =>
      fetch(`${admin.gatewayUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello' }], max_tokens: 8 }),
      });

    // Model: archived from the Prices page; requests for it are refused, it is no longer listed.
    await go('/prices');
    page.once('dialog', (d) => void d.accept());
    await page.getByTestId('prices').locator('tr', { hasText: 'm-old' }).getByRole('button', { name: 'Archive' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/Archived m-old/);
    expect(await page.getByTestId('prices').locator('tr', { hasText: 'm-old' }).getByTestId('archived').textContent()).toBe('archived');
    await shot('prices-archived');
    const refused = await ask(k.key, 'm-old');
    expect(refused.status).toBe(404);
    expect(((await refused.json()) as any).error.message).toMatch(/m-old` has been archived/);
    const listed = (await (await fetch(`${admin.gatewayUrl}/v1/models`, { headers: { authorization: `Bearer ${k.key}` } })).json()) as any;
    expect(listed.data.map((m: any) => m.id)).not.toContain('m-old');
    expect((await dbRow(su`select input_price from admin.models where name = 'm-old'`)).input_price).not.toBeNull(); // prices kept

    // Group: archived from the Users page; its users are refused, saying why; nobody can join it.
    await go('/users');
    page.once('dialog', (d) => void d.accept());
    await page.getByTestId('groups').locator('tr', { hasText: 'retired-plan' }).getByRole('button', { name: 'Archive' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toMatch(/Archived the group retired-plan/);
    expect(await page.getByTestId('groups').locator('tr', { hasText: 'default' }).getByRole('button', { name: 'Archive' }).count()).toBe(0);
    const grp = await ask(k.key, 'm-op');
    expect(grp.status).toBe(401); // account_deactivated, as for a disabled account
    expect(((await grp.json()) as any).error.message).toMatch(/in the group `retired-plan`, which has been archived/);
    await expect(su`select admin.user_create('{"username": "erin", "group": "retired-plan"}')`).rejects.toMatchObject({ message: expect.stringMatching(/has been archived/) });
  });

  it("shows a media request's billed units and unit price on its log page", async () => {
    await su`select admin.model_upsert('{"name": "img-op", "image_prices": {"1024x1024": 40000}}')`;
    await su`select admin.channel_create(${su.json({ name: 'images', base_url: live.url, api_key: 'sk-up', models: ['img-op'] })})`;
    // (carol's first key is limited to m-op by now; user mona, default group, is a fresh owner)
    const [{ u }] = await su`select admin.user_create('{"username": "mona"}') as u`;
    await su`select admin.wallet_credit(${su.json({ user_id: u.id, amount_micros: 1000000 })})`;
    const [{ k }] = await su`select admin.key_create('{"username": "mona", "name": "media"}') as k`;
    const res = await fetch(`${admin.gatewayUrl}/v1/images/generations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'img-op', prompt: 'a fox', n: 2, size: '1024x1024' }),
    });
    expect(res.status).toBe(200);
    const id = res.headers.get('x-request-id')!;
    await expect.poll(async () => (await dbRow(su`select status from admin.requests where id = ${id}::uuid`))?.status, { timeout: 10000 }).toBe('ok');
    await go(`/logs/${id}`);
    expect(await page.getByTestId('units').textContent()).toBe('2 × $0.04 each');
    await shot('log-media-units');
  });
});
