// The newcomer journey's steps in the panel (README's "Admin panel" section), shared by the two
// suites that walk it in Chromium: e2e.test.ts (the product as `npm start` starts it) and
// binary.test.ts (the single executable, alone in an empty folder). Each step is what a person
// does on the page; the checks particular to a suite stay in that suite.
import type { Page } from 'playwright-core';
import type { Sql } from 'postgres';
import OpenAI from 'openai';

/** Types a username and password into the login form on screen and presses "Log in". */
export async function submitLogin(page: Page, username: string, password: string): Promise<void> {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('button:has-text("Log in")');
}

/** On the password page (forced or not): types the new password twice and saves it. */
export async function choosePassword(page: Page, password: string, confirm = password): Promise<void> {
  await page.fill('#password', password);
  await page.fill('#confirm', confirm);
  await page.click('button:has-text("Save password")');
}

/** The first login as admin/admin123 from loopback, which lands on the forced password change. */
export async function firstAdminLogin(page: Page, panel: string): Promise<void> {
  await page.goto(`${panel}/`);
  await page.waitForURL((u) => u.pathname === '/login');
  await submitLogin(page, 'admin', 'admin123');
  await page.waitForURL('**/password');
  await page.getByTestId('forced').waitFor();
}

/** Settings → AllowPrivateUpstreams → Save, for a mock upstream on this machine. */
export async function allowPrivateUpstreams(page: Page, panel: string): Promise<void> {
  await page.goto(`${panel}/settings`);
  const row = page.locator('form:has(#opt-AllowPrivateUpstreams)');
  await row.locator('#opt-AllowPrivateUpstreams').check();
  await row.getByRole('button', { name: 'Save' }).click();
  await page.locator('form:has(#opt-AllowPrivateUpstreams)').getByText('Saved.').waitFor();
}

export interface ChannelFields {
  name: string;
  baseUrl: string;
  apiKey: string;
  models: string;
  /** The model mapping box, as typed (JSON). */
  mapping?: string;
}

/** Channels → New channel, the form filled in, "Create channel" pressed (success or not). */
export async function submitChannel(page: Page, panel: string, ch: ChannelFields): Promise<void> {
  await page.goto(`${panel}/channels`);
  await page.click('button:has-text("New channel")');
  await page.fill('#ch-name', ch.name);
  await page.fill('#ch-base', ch.baseUrl);
  await page.fill('#ch-key', ch.apiKey);
  await page.fill('#ch-models', ch.models);
  if (ch.mapping !== undefined) await page.fill('#ch-map', ch.mapping);
  await page.click('button:has-text("Create channel")');
}

/** Prices: a model's input and output price in USD per 1M tokens, saved and listed. */
export async function setPrice(page: Page, panel: string, model: string, input: string, output: string): Promise<void> {
  await page.goto(`${panel}/prices`);
  await page.fill('#p-name', model);
  await page.fill('#p-input_price', input);
  await page.fill('#p-output_price', output);
  await page.click('button:has-text("Save price")');
  await page.getByTestId('prices').locator('tr', { hasText: model }).waitFor();
}

/** Users: creates a user, tops up their wallet, and optionally gives them a panel password. */
export async function createUserWithMoney(page: Page, panel: string, username: string, usd: string, panelPassword?: string): Promise<void> {
  await page.goto(`${panel}/users`);
  await page.fill('#u-name', username);
  await page.click('button:has-text("Create")');
  await page.getByRole('status').getByText(`User ${username} created.`).waitFor();
  const row = page.locator('tr', { has: page.locator('div.font-medium', { hasText: new RegExp(`^${username}$`) }) });
  await row.locator('input[id^=ut-]').fill(usd);
  await row.locator('input[id^=ut-]').press('Enter');
  await page.getByText(`Balance is now $${Number(usd).toFixed(2)}`).waitFor();
  if (panelPassword) {
    await row.locator('input[id^=up-]').fill(panelPassword);
    await row.locator('input[id^=up-]').press('Enter');
    await page.getByText('Panel password set').waitFor();
  }
}

/** Keys: a key for the user, allowed the given models; returns it as shown once. */
export async function createKey(page: Page, panel: string, k: { user: string; name: string; models: string; rpm?: string }): Promise<string> {
  await page.goto(`${panel}/keys`);
  await page.selectOption('#k-user', k.user);
  await page.fill('#k-name', k.name);
  await page.fill('#k-models', k.models);
  if (k.rpm) await page.fill('#k-rpm', k.rpm);
  await page.click('button:has-text("Create key")');
  await page.getByTestId('shown-once').waitFor();
  return (await page.getByTestId('secret').textContent())!.trim();
}

/** As the user would call it: the openai SDK pointed at the gateway. */
export async function callGateway(gatewayUrl: string, apiKey: string, model: string, text: string): Promise<{ content: string | null; requestId: string }> {
  const client = new OpenAI({ apiKey, baseURL: `${gatewayUrl}/v1`, maxRetries: 0 });
  const { data, response } = await client.chat.completions.create({ model, messages: [{ role: 'user', content: text }] }).withResponse();
  return { content: data.choices[0].message.content, requestId: response.headers.get('x-request-id')! };
}

/** The request's cost once it is settled (settlement is batched off the request path). */
export async function settledCost(db: Sql, requestId: string): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const [r] = await db`select status, cost_micros from admin.requests where id = ${requestId}::uuid`;
    if (r && r.status !== 'pending' && r.cost_micros !== null) return Number(r.cost_micros);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`request ${requestId} was not settled`);
}

/** Logs, filtered: the one row with its text; then its details page (receipt and routing trace). */
export async function requestInLogs(page: Page, panel: string, filter: string, requestId: string, onList?: () => Promise<void>): Promise<{ row: string; receipt: string; trace: string }> {
  await page.goto(`${panel}/logs?${filter}`);
  const table = page.getByTestId('logs');
  await table.waitFor();
  const rows = table.locator('tbody tr');
  if ((await rows.count()) !== 1) throw new Error(`logs?${filter} lists ${await rows.count()} rows, not 1`);
  const row = (await table.textContent())!;
  await onList?.();
  await table.getByText('Details').click();
  await page.waitForURL(`**/logs/${requestId}`);
  return { row, receipt: (await page.getByTestId('receipt').textContent())!, trace: (await page.getByTestId('trace').textContent())! };
}

/** The menu's "Log out", which lands on the login page. */
export async function logOut(page: Page): Promise<void> {
  await page.locator('nav').getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL((u) => u.pathname === '/login');
}
