// Webhook delivery (issue 17; sql/44_events.sql and sql/45_webhook_delivery.sql decides everything). Every serving gateway
// runs this worker, off the request path: woken by NOTIFY elygate_webhook when events are written,
// and every WebhookPollIntervalMs for retries that are due. It claims due deliveries
// (gateway.webhook_claim: FOR UPDATE SKIP LOCKED, so each attempt happens once across gateways),
// signs each body with its endpoint's secret, POSTs it through the SSRF-guarded client, and reports
// all outcomes in one gateway.webhook_finish call, which schedules retries (exponential backoff) or
// marks deliveries dead. One round at a time per gateway. A gateway that stops mid-attempt loses
// nothing: the claim is a lease, and the delivery is claimed again when it runs out.
//
// The signature (docs/operations.md, "Webhooks"): X-Elygate-Timestamp is the send time in Unix
// seconds; X-Elygate-Signature is "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)), over
// the raw body bytes as sent.
import { createHmac } from 'node:crypto';
import { sql } from './db';
import { config } from './config';
import { keyring, openSealedKey, type SealedKey } from './crypto';
import { webhookAttempts } from './metrics';
import { options, optionsReady } from './snapshot';
import { upstreamFetch, WEBHOOK } from './ssrf';
import { drainer } from './drain';

interface ClaimedDelivery {
  id: string;
  attempt: number;
  event_id: string;
  kind: string;
  url: string;
  body: string;
  secret: SealedKey;
  timeout_ms: number;
  allow_private: boolean;
}

interface Outcome {
  id: string;
  attempt: number;
  ok: boolean;
  http_status: number | null;
  error: string | null;
}

/** The signature header's value for a body sent at timestamp (Unix seconds). */
export function webhookSignature(secret: string, timestamp: number, body: string): string {
  return 'sha256=' + createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

const masterKeys = keyring(config.masterKey, config.masterKeyPrevious);

function openSecret(d: ClaimedDelivery): string {
  if (masterKeys.size === 0) throw new Error('ELYGATE_MASTER_KEY is not set: this gateway cannot open webhook secrets to sign deliveries');
  try {
    return openSealedKey(masterKeys, d.secret, 'webhook');
  } catch (err) {
    throw new Error(`the webhook secret could not be opened: ${(err as Error).message}`);
  }
}

async function send(d: ClaimedDelivery): Promise<Outcome> {
  const done = (ok: boolean, http_status: number | null, error: string | null): Outcome => ({ id: d.id, attempt: d.attempt, ok, http_status, error });
  try {
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = {
      'content-type': 'application/json',
      'user-agent': 'Elygate-Webhooks/1',
      'x-elygate-event': d.kind,
      'x-elygate-event-id': d.event_id,
      'x-elygate-delivery': d.id,
      'x-elygate-attempt': String(d.attempt),
      'x-elygate-timestamp': String(timestamp),
      'x-elygate-signature': webhookSignature(openSecret(d), timestamp, d.body),
    };
    const init = { method: 'POST', headers, body: d.body, signal: AbortSignal.timeout(d.timeout_ms) };
    // No redirects: an endpoint that moved is a failed attempt, not a new destination.
    const res = await upstreamFetch(d.url, init, d.allow_private, { guard: WEBHOOK, maxRedirects: 0 });
    const text = await res.text().catch(() => '');
    return res.ok ? done(true, res.status, null) : done(false, res.status, `HTTP ${res.status}${text ? `: ${text.slice(0, 300)}` : ''}`);
  } catch (err) {
    return done(false, null, String((err as Error)?.message ?? err));
  }
}

let stopped = false;
let timer: ReturnType<typeof setTimeout> | null = null;

/** Claims and sends every due delivery; wake-ups during a round fold into one more round. */
export const runDueWebhooks = drainer<ClaimedDelivery, Awaited<ReturnType<typeof send>>>({
  claim: async () => (await sql`select * from gateway.webhook_claim(20)`) as unknown as ClaimedDelivery[],
  run: send,
  finish: async (claimed, outcomes) => {
    outcomes.forEach((o, i) => webhookAttempts.inc({ result: o.ok ? 'delivered' : 'failed', kind: claimed[i].kind }));
    await sql`select gateway.webhook_finish(${sql.json(outcomes as never)})`;
  },
  stopped: () => stopped,
  what: 'webhook delivery',
});

/** How soon to try reading the options again while the database has not answered (the poll
 *  interval is one of them: WebhookPollIntervalMs, declared in sql/20_options.sql only). */
const OPTIONS_RETRY_MS = 1000;

function schedule(): void {
  if (stopped) return;
  const every = options.WebhookPollIntervalMs as number | undefined;
  timer = every === undefined
    ? setTimeout(() => void optionsReady().catch(() => {}).finally(schedule), OPTIONS_RETRY_MS)
    : setTimeout(() => void runDueWebhooks().finally(schedule), every);
  timer.unref?.();
}

let started = false;
/** Listens for new events and polls for due retries (app.ts starts it with the server). */
export function startWebhookWorker(): void {
  if (started) return;
  started = true;
  sql
    .listen('elygate_webhook', () => void runDueWebhooks(), () => void runDueWebhooks())
    .catch((err) => console.error(JSON.stringify({ level: 'warn', msg: 'cannot listen for webhook events', error: String(err?.message ?? err) })));
  schedule();
}

export function stopWebhookWorker(): void {
  stopped = true;
  if (timer) clearTimeout(timer);
}
