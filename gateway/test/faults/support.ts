// Shared pieces of the fault suite: a funded tenant on a priced model served by the mock upstream,
// a gateway started from any entry file, and the figure each scenario prints.
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sql } from 'postgres';
import { createChannel, createGroup, createKey, createUser, databaseUrl, db, masterKey, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';

export const root = join(__dirname, '..', '..', '..');
export const bun = join(root, 'node_modules', 'bun', 'bin', 'bun.exe');
/** `npm test` runs the suite short (CI); `npm run test:faults` runs it in full. */
export const short = process.env.ELYGATE_FAULTS === 'short';

/** Prints one scenario's figures on a line of their own, easy to grep from CI logs. */
export function figure(scenario: string, figures: Record<string, unknown>): void {
  console.log(`[fault] ${scenario}: ${Object.entries(figures).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ')}`);
}

/**
 * Evidence for scenario 7 (secrets): every plaintext key the suite creates and every log it sees
 * are written here, one folder per test database (inside the folder of this run of
 * scripts/faults.mjs), and 7-secrets.fault.ts (run last) scans them.
 */
export const evidenceDir = join(process.env.ELYGATE_FAULTS_EVIDENCE || tmpdir(), `elygate-faults-${new URL(databaseUrl).pathname.slice(1)}`);
// Only the fault suite collects (other suites reuse tenant() and must not leave keys in /tmp).
const collecting = process.env.ELYGATE_FAULTS !== undefined;
if (collecting) mkdirSync(join(evidenceDir, 'logs'), { recursive: true });

export function recordSecret(kind: 'client' | 'upstream', value: string): void {
  if (!collecting) return;
  appendFileSync(join(evidenceDir, `${kind}-keys.txt`), value + '\n');
}

export function saveLogs(name: string, text: string): void {
  if (!collecting) return;
  writeFileSync(join(evidenceDir, 'logs', `${name}-${Date.now()}-${randomBytes(2).toString('hex')}.log`), text);
}

export interface Tenant {
  model: string;
  key: string;
  user: { id: number };
  group: string;
  channel: { id: number };
}

/** A user with money and a key, in a fresh group, on a priced model whose channel is the mock. */
export async function tenant(upstreamUrl: string, sql: Sql = db(), balance = 1_000_000_000): Promise<Tenant> {
  const group = await createGroup(sql);
  const model = unique('fault');
  await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 150_000, output_price: 600_000 })})`;
  const user = await createUser(sql, { group });
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: balance })})`;
  const key = (await createKey(sql, { user_id: user.id })).key;
  const upstreamKey = `sk-upstream-${randomBytes(12).toString('hex')}`;
  recordSecret('client', key);
  recordSecret('upstream', upstreamKey);
  const channel = await createChannel(sql, { base_url: upstreamUrl, models: [model], groups: [group], api_key: upstreamKey });
  return { model, key, user, group, channel };
}

export function post(url: string, key: string, body: unknown, init: { signal?: AbortSignal; path?: string } = {}) {
  return fetch(`${url}${init.path ?? '/v1/chat/completions'}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: init.signal,
  });
}

export async function settledAll(gw: RunningGateway): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if ((await gw.metric('elygate_settle_queue_depth')) === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** support/gateway.ts's startGateway, for any entry file (the fixtures under faults/fixtures). */
export async function startEntry(entry: string, env: Record<string, string> = {}): Promise<RunningGateway & { logs: () => string }> {
  const gw = await startGateway(env, entry);
  return { ...gw, logs: gw.output };
}

/** Reads an SSE body to its end; returns the text and whether it ended with [DONE]. */
export async function readStream(res: Response): Promise<{ text: string; done: boolean }> {
  const text = await res.text();
  return { text, done: /data: \[DONE\]\s*$/.test(text) };
}

export { db, masterKey, databaseUrl };
