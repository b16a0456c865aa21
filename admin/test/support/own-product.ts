// The product on a database of its own, for a browser suite whose data must never meet e2e's
// first-start story (empty dashboard, admin/admin123): a fresh database migrated as the suite's
// setup does (committed migrations, then the one in progress), an admin "ops" with a password
// created in SQL before the panel starts, the product started as `npm start` runs it, and a
// Chromium logged in as ops.
import { inject } from 'vitest';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { argon2id } from 'hash-wasm';
import { startProduct, type RunningProduct } from './admin-server';
import { databaseFromTemplate } from '../../../gateway/test/support/db';

export const PASSWORD = 'ops-password-123';

export interface OwnProduct {
  /** A superuser connection to this database (with the master key, for channels). */
  su: Sql;
  admin: RunningProduct;
  ctx: BrowserContext;
  /** Logged in as ops. */
  page: Page;
  /** The login page as someone not logged in saw it at start. */
  loginPage: string;
  userWithPassword(username: string, role: 'admin' | 'user'): Promise<number>;
  login(p: Page, username: string, password: string, from?: string): Promise<void>;
  stop(): Promise<void>;
}

const hash = (password: string) =>
  argon2id({ password, salt: randomBytes(16), parallelism: 1, iterations: 2, memorySize: 19456, hashLength: 32, outputType: 'encoded' });

export async function startOwnProduct(options: Record<string, string> = {}): Promise<OwnProduct> {
  const dbName = `gw_test_${randomBytes(4).toString('hex')}`;
  const withDb = (url: string) => Object.assign(new URL(url), { pathname: `/${dbName}` }).toString();
  // Committed migrations, then the one in progress, as the suite's own setup applies them (a copy
  // of the template it migrated).
  await databaseFromTemplate(dbName);
  const su = postgres(withDb(inject('databaseUrl')), { max: 2, onnotice: () => {}, connection: { 'elygate.master_key': inject('masterKey') } as never });
  await su`select admin.option_set('AllowPrivateUpstreams', 'true')`; // mocks listen on 127.0.0.1
  for (const [k, v] of Object.entries(options)) await su`select admin.option_set(${k}, ${v})`;
  const userWithPassword = async (username: string, role: 'admin' | 'user') => {
    const [{ u }] = await su`select admin.user_create(${su.json({ username, role })}) as u`;
    await su`select admin.user_password_set(${u.id}, ${await hash(PASSWORD)}, false)`;
    return Number(u.id);
  };
  await userWithPassword('ops', 'admin'); // an admin with a password before the panel starts
  const admin = await startProduct({ DATABASE_URL: withDb(inject('databaseUrl')), ADMIN_DATABASE_URL: withDb(inject('adminDatabaseUrl')) });
  const profile = mkdtempSync(join(tmpdir(), 'elygate-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  ctx.setDefaultTimeout(10000);
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  const loginPage = await (await fetch(`${admin.url}/login`)).text();
  const login = async (p: Page, username: string, password: string, from = '/') => {
    await p.goto(admin.url + from);
    // Typing before the page's scripts have started could be undone when they take the form over.
    await p.waitForLoadState('networkidle');
    await p.fill('#username', username);
    await p.fill('#password', password);
    await p.click('button:has-text("Log in")');
  };
  // The first page of a cold product on a busy 2-core machine can take longer than a click should.
  await login(page, 'ops', PASSWORD);
  await page.waitForURL((u) => u.pathname === '/', { timeout: 45000 }).catch(async (e) => {
    const said = await page.locator('main, body').first().innerText().catch(() => '(no page text)');
    throw new Error(`logging in as ops did not reach /: at ${page.url()}, the page says: ${said.slice(0, 400)}`, { cause: e });
  });
  return {
    su, admin, ctx, page, loginPage, userWithPassword, login,
    async stop() {
      await ctx.close();
      await admin.stop();
      await su.end({ timeout: 5 });
      const r = postgres(inject('databaseUrl'), { max: 1, onnotice: () => {} });
      await r.unsafe(`drop database if exists ${dbName} with (force)`);
      await r.end();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
