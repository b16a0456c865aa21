// Group commit of request outcomes: outcomes queue in memory and go to gateway.relay_finish as one
// call every SettleIntervalMs or SettleBatchSize rows, whichever comes first. A request's response
// completes only after its outcome is queued here; replays are harmless (relay_finish is idempotent).
//
// When the database cannot be reached, a batch goes to an on-disk spool (one fsynced JSON file per
// batch) and is replayed, oldest first, once the database answers again; a process that dies with
// spooled batches leaves them for the next start. A batch the database rejects for any other reason
// is retried outcome by outcome, and an outcome that still fails is kept in spool/dead/ with its
// error, never dropped silently.
import { mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { dedicatedConnection, jsonTextOf } from './db';
import { options } from './snapshot';
import { config } from './config';
import { isConnectionError } from './errors';
import { observeOutcome } from './metrics';
import type { PriceCard } from './receipt';
import { storable } from './storable';

export interface Attempt {
  channel_id: number;
  status: number | null;
  ms: number;
  error?: string;
}

export interface Outcome {
  id: string;
  created_at: string;
  /** 'refused': admission refused a known key's request (logged, never billed: see queueRefusal). */
  status: 'ok' | 'error' | 'aborted' | 'refused';
  http_status: number;
  channel_id: number | null;
  upstream_model: string | null;
  /** The fallback model that served (its plan entry's), null for the model asked for: billed at its prices. */
  fallback?: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  cached_tokens?: number | null;
  cache_write_tokens?: number | null;
  usage_source: 'upstream' | 'estimated' | 'none';
  /** How an interrupted answer was billed, e.g. 'prompt+delivered'. */
  abort_policy?: string | null;
  /** A media endpoint's units (images, characters, audio seconds, search units), billed at the card's unit_price. */
  units?: number | null;
  /** Tokens of the semantic cache's embedding call, billed at the embedding model's price. */
  embedding_tokens?: number | null;
  /** An answer for the cache: {exact, context, prompt, embedding, answer} (see gateway/src/cache.ts). */
  cache_store?: Record<string, unknown> | null;
  /** Who the request was admitted for, so settlement can restore an admission a crash lost. */
  ticket?: AdmittedTicket | RefusedTicket;
  attempts: Attempt[];
  ttfb_ms: number | null;
  latency_ms: number;
  error_code: string | null;
  error_message: string | null;
  /** Some text of the outcome could not be stored as it was (see storable.ts). */
  text_altered?: boolean;
}

/** Who the request was admitted for, so settlement can restore an admission a crash lost. */
export interface AdmittedTicket {
  user_id: string | number;
  key_id: string | number;
  group_name: string;
  model: string;
  endpoint: string;
  cache?: string | null;
  price?: PriceCard | null;
}

/** A refused request: the key by its hash (SQL finds its owner), and what was asked. */
export interface RefusedTicket {
  key_hash: string;
  model: string;
  endpoint: string;
  stream: boolean;
  client_ip: string | null;
}

export const settleStats = { batches: 0, settled: 0, failures: 0, spooledBatches: 0, replayedBatches: 0, deadOutcomes: 0 };

let queue: Outcome[] = [];
/* why: a key's concurrency_limit counts a request until it is settled. For each key (by a
   reference only this process knows, the key's hash) count the outcomes queued or being settled,
   so a request refused at the limit can have them settled first (settleNowFor). */
const keyOf = new WeakMap<Outcome, string>();
const unsettledByKey = new Map<string, number>();
let timer: ReturnType<typeof setTimeout> | null = null;
let inFlight: Promise<void> | null = null;
let inFlightRows = 0;
let seq = 0;

const spoolDir = config.spoolDir;
const deadDir = join(spoolDir, 'dead');
mkdirSync(deadDir, { recursive: true });

const log = (level: string, msg: string, extra: Record<string, unknown> = {}) =>
  console.error(JSON.stringify({ level, msg, ...extra }));

export function queueOutcome(outcome: Outcome, keyRef?: string): void {
  observeOutcome(outcome.ticket?.endpoint ?? 'unknown', outcome);
  if (keyRef) {
    keyOf.set(outcome, keyRef);
    unsettledByKey.set(keyRef, (unsettledByKey.get(keyRef) ?? 0) + 1);
  }
  queue.push(outcome);
  schedule();
}

/**
 * Queues a refused request of a key, to be logged by the next batch (private.settle writes its
 * request row; nothing was reserved, so nothing is settled). Not an outcome of the upstream path:
 * no request or latency metrics, no key bookkeeping.
 */
export function queueRefusal(outcome: Outcome & { status: 'refused' }): void {
  queue.push(outcome);
  schedule();
}

function released(batch: Outcome[]): void {
  for (const o of batch) {
    const k = keyOf.get(o);
    if (k === undefined) continue;
    const n = (unsettledByKey.get(k) ?? 1) - 1;
    if (n > 0) unsettledByKey.set(k, n);
    else unsettledByKey.delete(k);
  }
}

/**
 * Settles now, without waiting for SettleIntervalMs, the outcomes of this key that this process
 * holds (queued or already being settled). Resolves true when there were any, once they went
 * through relay_finish (or the spool); false at once when there were none.
 */
export async function settleNowFor(keyRef: string): Promise<boolean> {
  if (!unsettledByKey.has(keyRef)) return false;
  // Bounded: each round settles at least the batch in flight; give up rather than spin.
  for (let round = 0; round < 4 && unsettledByKey.has(keyRef); round++) {
    if (inFlight) {
      await inFlight;
      continue;
    }
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    flush();
    if (!inFlight) break;
  }
  return true;
}

/** Outcomes not yet settled: queued, or in the relay_finish call now running. */
export function pendingOutcomes(): number {
  return queue.length + inFlightRows;
}

export function spoolDepth(): number {
  try {
    return readdirSync(spoolDir).filter((f) => f.endsWith('.json')).length;
  } catch {
    return 0;
  }
}

function schedule(): void {
  if (inFlight || timer) return;
  timer = setTimeout(flush, queue.length >= options.SettleBatchSize ? 0 : options.SettleIntervalMs);
}

async function finish(batch: Outcome[]): Promise<void> {
  const sql = dedicatedConnection('settlement');
  // (Sent as text: a jsonb parameter would have its JSON text serialised once more, as a string.)
  await sql`select gateway.relay_finish(${batchJson(batch)}::text::jsonb) as n`;
}

/** The batch as relay_finish's JSON argument, every string in it storable (storableJson). */
function batchJson(batch: Outcome[]): string {
  let out = '[';
  for (let i = 0; i < batch.length; i++) out += (i === 0 ? '' : ',') + storableJson(batch[i]);
  return out + ']';
}

/* why here, on the text: JSON.stringify writes NUL and a lone surrogate as a \u escape, so an
   outcome whose JSON has no "\u" in it has nothing to fix, and that costs one substring search
   instead of a walk over every string of every outcome (a walk per request showed in the CPU
   profile). An outcome with a \u anywhere (an escape of any control character, or a client's
   literal backslash-u) gets the exact check. */
/** The outcome's JSON with every string storable; an altered answer is not kept for the cache. */
function storableJson(o: Outcome): string {
  const json = outcomeJson(o);
  if (!json.includes('\\u')) return json;
  const { value, altered } = storable(o);
  return altered ? outcomeJson({ ...value, text_altered: true, cache_store: null }) : json;
}

/** `{...}` with one more key, whose value is already JSON text. */
const withKey = (objectJson: string, key: string, valueJson: string) =>
  `${objectJson.length > 2 ? objectJson.slice(0, -1) + ',' : '{'}${JSON.stringify(key)}:${valueJson}}`;

/* why: the price card every admitted outcome carries (so that settlement can restore an admission
   a crash lost) has channel ids for keys, which takes JSON.stringify off its fast path for the
   whole outcome (docs/performance.md, finding 53). The card goes as the
   text the database sent it in (db.ts), the rest of the outcome through the fast path. The same
   JSON value either way; anything else (no card, a card not read from the database) is stringified
   whole. */
function outcomeJson(o: Outcome): string {
  const card = o.ticket && 'price' in o.ticket ? o.ticket.price : null;
  const cardJson = card ? jsonTextOf(card) : undefined;
  if (cardJson === undefined) return JSON.stringify(o);
  const { ticket, ...fields } = o;
  const { price: _card, ...who } = ticket as AdmittedTicket;
  return withKey(JSON.stringify(fields), 'ticket', withKey(JSON.stringify(who), 'price', cardJson));
}

function flush(): void {
  timer = null;
  if (inFlight || queue.length === 0) return;
  const batch = queue.slice(0, options.SettleBatchSize);
  queue = queue.slice(batch.length);
  inFlightRows = batch.length;
  inFlight = finish(batch)
    .then(() => {
      settleStats.batches++;
      settleStats.settled += batch.length;
    })
    .catch((err) => handleFailure(batch, err))
    .finally(() => {
      released(batch);
      inFlight = null;
      inFlightRows = 0;
      if (queue.length > 0) schedule();
    });
}

async function handleFailure(batch: Outcome[], err: any): Promise<void> {
  settleStats.failures++;
  if (isConnectionError(err)) {
    spool(batch);
    log('warn', 'database unreachable at settlement; outcomes spooled to disk', { rows: batch.length, dir: spoolDir, error: String(err?.message ?? err) });
    scheduleReplay();
    return;
  }
  // Not the connection: find the outcome(s) the database refuses, settle the rest.
  log('error', 'relay_finish rejected a batch; settling its outcomes one by one', { rows: batch.length, error: String(err?.message ?? err) });
  for (const o of batch) {
    try {
      await finish([o]);
      settleStats.settled++;
    } catch (e: any) {
      if (isConnectionError(e)) {
        spool([o]);
        scheduleReplay();
      } else {
        settleStats.deadOutcomes++;
        writeDurably(join(deadDir, `${o.id}.json`), JSON.stringify({ outcome: o, error: String(e?.message ?? e) }));
        log('error', 'outcome refused by the database; kept in the dead-letter folder', { request_id: o.id, error: String(e?.message ?? e) });
      }
    }
  }
}

function writeDurably(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, text);
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
}

function spool(batch: Outcome[]): void {
  const name = `${Date.now().toString().padStart(15, '0')}-${process.pid}-${seq++}.json`;
  writeDurably(join(spoolDir, name), JSON.stringify(batch));
  settleStats.spooledBatches++;
}

let replayTimer: ReturnType<typeof setTimeout> | null = null;
let replayDelay = 250;

function scheduleReplay(): void {
  if (replayTimer) return;
  replayTimer = setTimeout(() => {
    replayTimer = null;
    replaySpool().catch(() => {});
  }, replayDelay);
}

/** Replays spooled batches, oldest first. Returns true when the spool is empty. */
export async function replaySpool(): Promise<boolean> {
  let files: string[];
  try {
    files = readdirSync(spoolDir).filter((f) => f.endsWith('.json')).sort();
  } catch {
    return true;
  }
  for (const f of files) {
    const path = join(spoolDir, f);
    let batch: Outcome[];
    try {
      batch = JSON.parse(readFileSync(path, 'utf8'));
    } catch {
      continue; // another process replayed and removed it, or a partial file from a crash
    }
    try {
      await finish(batch);
    } catch (err: any) {
      if (isConnectionError(err)) {
        replayDelay = Math.min(replayDelay * 2, 5000);
        scheduleReplay();
        return false;
      }
      await handleFailure(batch, err); // settles or dead-letters each outcome
    }
    try {
      unlinkSync(path);
    } catch {
      // replayed concurrently by another gateway: relay_finish is idempotent, nothing to undo
    }
    settleStats.replayedBatches++;
    settleStats.settled += batch.length;
  }
  replayDelay = 250;
  if (files.length > 0) log('info', 'spooled outcomes replayed', { batches: files.length });
  return true;
}

/** Settles everything queued (and spooled); used at shutdown and by tests. */
export async function drainOutcomes(timeoutMs = 10000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while ((queue.length > 0 || inFlight) && Date.now() < deadline) {
    if (!inFlight && !timer) flush();
    await (inFlight ?? new Promise((r) => setTimeout(r, 10)));
  }
  const settledAll = queue.length === 0;
  if (!settledAll) {
    // Out of time (the database is down?): keep them on disk for the next start.
    spool(queue);
    queue = [];
  }
  return settledAll;
}
