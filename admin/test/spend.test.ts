// Issue 17 in the panel: the Webhooks page (add an endpoint, its secret shown once, send a test
// that a real receiver verifies, see the delivery, resend it), the Prices page's Preview step
// before Apply, and the Budgets page, through the real panel (headless Chromium), gateway and database, in a database of
// its own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import type { Sql } from 'postgres';
import type { RunningProduct } from './support/admin-server';
import { startOwnProduct, type OwnProduct } from './support/own-product';

// `npm run screenshots` (ELYGATE_SCREENSHOTS_DIR) refreshes docs/admin/19-webhooks.png, 20-prices-preview.png and 21-budgets.png.
const KEEP = process.env.ELYGATE_SCREENSHOTS_DIR ?? process.env.ELYGATE_SPEND_SHOTS;
const SHOTS = KEEP ? resolve(KEEP) : mkdtempSync(join(tmpdir(), 'elygate-spend-'));
let own: OwnProduct, su: Sql, admin: RunningProduct, page: Page;
let server: Server, receiverUrl = '';
const received: { headers: IncomingMessage['headers']; body: string }[] = [];

const go = async (path: string) => (await page.goto(admin.url + path))!;
const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 20000) {
  const t0 = Date.now();
  while (!(await fn())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  receiverUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}/elygate`;
  // The receiver is on loopback; short polling so a resend goes out within a moment.
  own = await startOwnProduct({ AllowPrivateWebhooks: 'true', WebhookPollIntervalMs: '100', AllowUnpricedModels: 'true' });
  ({ su, admin, page } = own);
});

afterAll(async () => {
  await own?.stop();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  if (!KEEP) rmSync(SHOTS, { recursive: true, force: true });
});

describe('issue 17 in the panel', () => {
  it('Webhooks: adds an endpoint, shows its secret once, sends a signed test, lists the delivery and resends it', async () => {
    await go('/webhooks');
    await page.getByText('No endpoints yet').waitFor();
    await page.fill('#w-name', 'ops-alerts');
    await page.fill('#w-url', receiverUrl);
    await page.getByLabel('key.revoked').check();
    await page.getByLabel('channel.disabled').check();
    await page.getByRole('button', { name: 'Add endpoint' }).click();
    const secret = (await page.getByTestId('secret').textContent())!.trim();
    expect(secret).toMatch(/^whsec_[0-9a-f]{48}$/);
        const row = page.getByTestId('webhook-endpoints').locator('tr', { hasText: 'ops-alerts' });
    expect(await row.textContent()).toMatch(/channel\.disabled, key\.revoked/);
    await row.getByRole('button', { name: 'Send test' }).click();
    await page.getByRole('status').filter({ hasText: /Test event #\d+ queued/ }).waitFor();
    await until('the receiver got the test', () => received.length === 1);
    const [r] = received;
    const expected = 'sha256=' + createHmac('sha256', secret).update(`${r.headers['x-elygate-timestamp']}.${r.body}`).digest('hex');
    expect(r.headers['x-elygate-signature']).toBe(expected);
    expect(JSON.parse(r.body)).toMatchObject({ kind: 'webhook.test', data: { endpoint: 'ops-alerts' } });
    // The delivery log says so (the secret is never shown again).
    await until('delivered', async () => (await su`select 1 from admin.webhook_deliveries where status = 'delivered'`).length === 1);
    await go('/webhooks');
    const delivery = page.getByTestId('webhook-deliveries').locator('tr', { hasText: 'webhook.test' });
    expect(await delivery.textContent()).toMatch(/delivered/);
    expect(await page.content()).not.toContain(secret);
    await shot('19-webhooks');
    await delivery.getByRole('button', { name: 'Resend' }).click();
    await page.getByRole('status').filter({ hasText: /goes out again now/ }).waitFor();
    await until('the receiver got the resend', () => received.length === 2);
    expect(JSON.parse(received[1].body).id).toBe(JSON.parse(r.body).id);
  });

  it('Prices: Preview shows what the period would have cost under the new price, Apply then saves it', async () => {
    await su`select admin.model_upsert('{"name": "m-prev", "input_price": 1000000, "output_price": 2000000}')`;
    const [{ u }] = await su`select admin.user_create('{"username": "dora"}') as u`;
    for (let i = 0; i < 3; i++) {
      // 1000 in + 500 out at $1 / $2 per 1M: 2000 µ$ each.
      await su`insert into private.ledger (request_id, user_id, model, prompt_tokens, completion_tokens, input_price, output_price, amount_micros, usage_source)
               values (${randomUUID()}, ${u.id}, 'm-prev', 1000, 500, 1000000, 2000000, 2000, 'upstream')`;
    }
    await go('/prices');
    const form = page.getByTestId('price-form');
    await form.locator('#p-name').fill('m-prev');
    await form.locator('#p-input_price').fill('3');
    await form.getByRole('button', { name: 'Preview' }).click();
    const preview = page.getByTestId('price-preview');
    await preview.waitFor();
    // New: 1000 × $3/1M + 500 × $2/1M = 4000 µ$ each; 3 requests: $0.006 billed, $0.012 new.
    const totals = await page.getByTestId('preview-total').innerText();
    expect(totals).toMatch(/Requests\s+3/);
    expect(totals).toMatch(/Billed\s+\$0\.006/);
    expect(totals).toMatch(/Under the new prices\s+\$0\.012/);
    expect(totals).toMatch(/\+\$0\.006\s*\+100\.0%/);
    expect(await page.getByTestId('preview-user').textContent()).toContain('dora');
    const [before] = await su`select input_price from private.models where name = 'm-prev'`;
    expect(Number(before.input_price)).toBe(1000000); // a preview applies nothing
    await shot('20-prices-preview');
    await preview.getByRole('button', { name: 'Apply these prices' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved m-prev' }).waitFor();
    const [after] = await su`select input_price, output_price from private.models where name = 'm-prev'`;
    expect([Number(after.input_price), Number(after.output_price)]).toEqual([3000000, 2000000]);
  });

  it('Budgets: sets a key budget and a group model limit, shows what is spent and when it resets, removes them', async () => {
    await su`select admin.model_upsert('{"name": "m-budget", "input_price": 1000000, "output_price": 1000000}')`;
    await su`insert into private.groups (name) values ('trial') on conflict do nothing`;
    const [{ u }] = await su`select admin.user_create('{"username": "erin", "group": "trial"}') as u`;
    const [{ k }] = await su`select admin.key_create(${su.json({ user_id: u.id, name: 'erin-ci' })}) as k`;
    await go('/budgets');
    await page.getByText('No budgets yet').waitFor();
    const form = page.getByTestId('budget-set');
    await form.locator('#b-who').fill(String(k.id));
    await form.locator('#b-period').selectOption('day');
    await form.locator('#b-amount').fill('2.5');
    await form.locator('#b-threshold').fill('80');
    await form.getByRole('button', { name: 'Save budget' }).click();
    await page.getByRole('status').filter({ hasText: `saved: daily for key ${k.key_prefix}.` }).waitFor();
    // Something spent in the current period shows on the page.
    await su`update private.budgets set period_start = date_trunc('day', now(), 'UTC'), spent_micros = 2000000 where key_id = ${k.id}`;
    const lf = page.getByTestId('limit-set');
    await lf.locator('#l-scope').selectOption('group');
    await lf.locator('#l-who').fill('trial');
    await lf.locator('#l-model').fill('m-budget');
    await lf.locator('#l-rpm').fill('30');
    await lf.getByRole('button', { name: 'Save limit' }).click();
    await page.getByRole('status').filter({ hasText: 'Limit on m-budget saved for group trial.' }).waitFor();
    const row = page.getByTestId('budgets').locator('tr', { hasText: k.key_prefix });
    const text = (await row.innerText()).replace(/\s+/g, ' ');
    expect(text).toContain('every model day $2.50 $2.00 $0.50 80%');
    expect(text).toMatch(/\d{4}-\d\d-\d\d 00:00:00/); // resets at the next midnight (BudgetTimeZone UTC)
    expect(await page.getByTestId('model-limits').innerText()).toMatch(/group\s+trial\s+m-budget\s+30/);
    await shot('21-budgets');
    page.once('dialog', (d) => d.accept());
    await row.getByRole('button', { name: 'Remove' }).click();
    await page.getByRole('status').filter({ hasText: 'Budget removed.' }).waitFor();
    expect(await su`select 1 from private.budgets where key_id = ${k.id}`).toHaveLength(0);
  });
});
