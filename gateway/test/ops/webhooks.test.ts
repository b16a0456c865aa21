// Issue 17, webhooks end to end: the real gateway delivers events to a real HTTP receiver started
// here, which checks the signature; retries after 500s, dead letter after WebhookMaxAttempts,
// resend, nothing lost across a gateway restart, private addresses refused by the SSRF guard.
// Backoff and polling are set short through their options; the tests wait on conditions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createHmac } from 'node:crypto';
import { closeDb, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { post, tenant } from '../faults/support';

interface Received {
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}

/** A webhook receiver: answers each path with its scripted statuses (then 200), records everything. */
async function startReceiver() {
  const received: Received[] = [];
  const scripts = new Map<string, number[]>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      received.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const status = scripts.get(req.url ?? '')?.shift() ?? 200;
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'try later');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    url,
    received: (path: string) => received.filter((r) => r.path === path),
    script: (path: string, statuses: number[]) => scripts.set(path, [...statuses]),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** What a receiver does with X-Elygate-Signature (docs/operations.md, "Webhooks"). */
function verify(secret: string, r: Received): boolean {
  const ts = String(r.headers['x-elygate-timestamp']);
  const expected = 'sha256=' + createHmac('sha256', secret).update(`${ts}.${r.body}`).digest('hex');
  return r.headers['x-elygate-signature'] === expected && Math.abs(Date.now() / 1000 - Number(ts)) < 300;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, ms = 15000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const OPTIONS: Record<string, string> = {
  AllowPrivateWebhooks: 'true', // the receiver listens on 127.0.0.1
  WebhookMaxAttempts: '3',
  WebhookBackoffBaseMs: '50',
  WebhookBackoffMaxMs: '200',
  WebhookPollIntervalMs: '50',
};
let saved: { key: string; value: string }[] = [];
let receiver: Awaited<ReturnType<typeof startReceiver>>;
let gw: RunningGateway;
const endpoints: number[] = [];

beforeAll(async () => {
  saved = [...(await db()`select key, value from private.options where key = any(${Object.keys(OPTIONS)})`)] as never;
  for (const [k, v] of Object.entries(OPTIONS)) await db()`select admin.option_set(${k}, ${v})`;
  receiver = await startReceiver();
  gw = await startGateway();
});
afterAll(async () => {
  await gw?.stop();
  await receiver?.close();
  if (endpoints.length) await db()`delete from private.webhook_endpoints where id = any(${endpoints})`;
  for (const { key, value } of saved) await db()`select admin.option_set(${key}, ${value})`;
  await closeDb();
});

async function endpoint(path: string, kinds: string[] = ['webhook.test']) {
  const [{ w }] = await db()`select admin.webhook_create(${db().json({ name: unique('hook'), url: receiver.url + path, kinds })}) as w`;
  endpoints.push(Number(w.id));
  return w as { id: number; secret: string };
}

const delivery = async (endpointId: number) =>
  (await db()`select * from admin.webhook_deliveries where endpoint_id = ${endpointId} order by id desc limit 1`)[0];

describe('webhook delivery', () => {
  it('signs every attempt, retries after 500s and delivers', async () => {
    const hook = await endpoint('/retries');
    receiver.script('/retries', [500, 500]);
    const [{ id: eventId }] = await db()`select admin.webhook_test(${hook.id}) as id`;
    const d = await waitFor('delivered', async () => ((await delivery(hook.id))?.status === 'delivered' ? delivery(hook.id) : null));
    expect(d).toMatchObject({ attempts: 3, last_status: 200, last_error: null });
    expect(await gw.metric('elygate_webhook_attempts_total{kind="webhook.test",result="failed"}')).toBe(2);
    expect(await gw.metric('elygate_webhook_attempts_total{kind="webhook.test",result="delivered"}')).toBe(1);
    const got = receiver.received('/retries');
    expect(got.map((r) => r.headers['x-elygate-attempt'])).toEqual(['1', '2', '3']);
    for (const r of got) {
      expect(verify(hook.secret, r)).toBe(true);
      expect(verify(hook.secret + 'x', r)).toBe(false);
      expect(JSON.parse(r.body)).toMatchObject({ id: Number(eventId), kind: 'webhook.test', data: { endpoint_id: Number(hook.id) } });
      expect(r.headers['x-elygate-event']).toBe('webhook.test');
    }
  });

  it('gives up after WebhookMaxAttempts (dead letter), and a resend delivers it', async () => {
    const hook = await endpoint('/dead');
    receiver.script('/dead', [500, 503, 500]);
    await db()`select admin.webhook_test(${hook.id})`;
    const d = await waitFor('dead', async () => ((await delivery(hook.id))?.status === 'dead' ? delivery(hook.id) : null));
    expect(d).toMatchObject({ attempts: 3, last_status: 500 });
    expect(d.last_error).toContain('HTTP 500');
    expect(receiver.received('/dead').length).toBe(3);
    await db()`select admin.webhook_resend(${d.id})`;
    await waitFor('resent', async () => (await delivery(hook.id))?.status === 'delivered');
    expect(receiver.received('/dead').length).toBe(4);
  });

  it('loses nothing across a gateway restart: a retry due while no gateway runs is sent by the next one', async () => {
    const hook = await endpoint('/restart', ['key.revoked']);
    receiver.script('/restart', [500]);
    const u = await createUser(db());
    const k = await createKey(db(), { user_id: u.id, name: 'leaked' });
    await db()`select admin.key_revoke(${k.id})`;
    await waitFor('first attempt failed', async () => (await delivery(hook.id))?.status === 'retrying');
    await gw.stop();
    // Past its backoff, with no gateway running, it waits.
    await waitFor('due', async () => (await db()`select 1 from private.webhook_deliveries where endpoint_id = ${hook.id} and next_attempt_at < now()`).length > 0);
    expect((await delivery(hook.id)).status).toBe('retrying');
    gw = await startGateway();
    await waitFor('delivered after restart', async () => (await delivery(hook.id))?.status === 'delivered');
    const got = receiver.received('/restart');
    expect(got.length).toBe(2);
    expect(JSON.parse(got[1].body)).toMatchObject({ kind: 'key.revoked', data: { key_id: Number(k.id), name: 'leaked' } });
    expect(verify(hook.secret, got[1])).toBe(true);
  });

  it('the circuit breaker taking a channel out of real traffic, and an operator bringing it back, are delivered', async () => {
    const upstream: MockUpstream = await startMockUpstream();
    const hook = await endpoint('/breaker', ['channel.disabled', 'channel.enabled']);
    const t = await tenant(upstream.url);
    try {
      for (let i = 0; i < 12; i++) {
        await (await post(gw.url, t.key, { model: t.model, messages: [{ role: 'user', content: 'fail mock:status:500' }] })).arrayBuffer();
      }
      await waitFor('channel.disabled delivered', async () => receiver.received('/breaker').length >= 1);
      await db()`select admin.channel_update(${t.channel.id}, ${db().json({ status: 'enabled' })})`;
      await waitFor('channel.enabled delivered', async () => receiver.received('/breaker').length >= 2);
    } finally {
      await db()`select admin.channel_update(${t.channel.id}, ${db().json({ status: 'enabled' })})`;
      await upstream.close();
    }
    const events = receiver.received('/breaker').map((r) => JSON.parse(r.body));
    expect(events.map((e) => [e.kind, e.data.channel_id])).toEqual([['channel.disabled', Number(t.channel.id)], ['channel.enabled', Number(t.channel.id)]]);
    expect(events[0].data.reason).toMatch(/circuit breaker/);
    for (const r of receiver.received('/breaker')) expect(verify(hook.secret, r)).toBe(true);
  });

  it('refuses a private address unless AllowPrivateWebhooks is on, before connecting', async () => {
    const hook = await endpoint('/private');
    await db()`select admin.option_set('AllowPrivateWebhooks', 'false')`;
    try {
      await db()`select admin.webhook_test(${hook.id})`;
      const d = await waitFor('refused', async () => ((await delivery(hook.id))?.attempts >= 1 && (await delivery(hook.id))?.last_error ? delivery(hook.id) : null));
      expect(d.last_error).toMatch(/webhook host 127\.0\.0\.1 is a private address.*AllowPrivateWebhooks is off/);
      expect(d.last_status).toBe(null);
      expect(receiver.received('/private')).toEqual([]);
      // A delivery still being tried cannot be resent (it may be in flight: a second send). Three
      // quick attempts, all refused, and it is dead.
      await waitFor('dead', async () => (await delivery(hook.id))?.status === 'dead');
    } finally {
      await db()`select admin.option_set('AllowPrivateWebhooks', 'true')`;
    }
    // Allowed again, a resend gets through, once.
    await db()`select admin.webhook_resend(${(await delivery(hook.id)).id})`;
    await waitFor('delivered once allowed', async () => (await delivery(hook.id))?.status === 'delivered');
    expect(receiver.received('/private').length).toBe(1);
  });
});
