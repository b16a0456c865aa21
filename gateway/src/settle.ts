// Group commit of request outcomes: outcomes queue in memory and go to gateway.relay_finish as one
// call every SettleIntervalMs or SettleBatchSize rows, whichever comes first. A request's response
// completes only after its outcome is queued here; replays are harmless (relay_finish is idempotent).
import { sql } from './db';
import { options } from './snapshot';

export interface Attempt {
  channel_id: number;
  status: number | null;
  ms: number;
  error?: string;
}

export interface Outcome {
  id: string;
  created_at: string;
  status: 'ok' | 'error' | 'aborted';
  http_status: number;
  channel_id: number | null;
  upstream_model: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  usage_source: 'upstream' | 'estimated' | 'none';
  attempts: Attempt[];
  ttfb_ms: number | null;
  latency_ms: number;
  error_code: string | null;
  error_message: string | null;
}

export const settleStats = { batches: 0, settled: 0, failures: 0 };

let queue: Outcome[] = [];
let timer: ReturnType<typeof setTimeout> | null = null;
let inFlight: Promise<void> | null = null;
let retryDelay = 0;

export function queueOutcome(outcome: Outcome): void {
  queue.push(outcome);
  schedule();
}

export function pendingOutcomes(): number {
  return queue.length;
}

function schedule(): void {
  if (inFlight || timer) return;
  const delay = retryDelay || (queue.length >= options.SettleBatchSize ? 0 : options.SettleIntervalMs);
  timer = setTimeout(flush, delay);
}

function flush(): void {
  timer = null;
  if (inFlight || queue.length === 0) return;
  const batch = queue.slice(0, options.SettleBatchSize);
  queue = queue.slice(batch.length);
  inFlight = sql`select gateway.relay_finish(${sql.json(batch as never)}) as n`
    .then(() => {
      settleStats.batches++;
      settleStats.settled += batch.length;
      retryDelay = 0;
    })
    .catch((err) => {
      // Keep the outcomes and try again; nothing is dropped. (An on-disk spool for long outages
      // is the billing work's; see docs/architecture.md.)
      settleStats.failures++;
      queue = batch.concat(queue);
      retryDelay = Math.min(retryDelay ? retryDelay * 2 : 100, 5000);
      console.error(JSON.stringify({ level: 'error', msg: 'settlement failed; will retry', rows: batch.length, retry_ms: retryDelay, error: String(err?.message ?? err) }));
    })
    .finally(() => {
      inFlight = null;
      if (queue.length > 0) schedule();
    });
}

/** Settles everything queued; used at shutdown and by tests. */
export async function drainOutcomes(timeoutMs = 10000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while ((queue.length > 0 || inFlight) && Date.now() < deadline) {
    if (!inFlight && !timer) flush();
    await (inFlight ?? new Promise((r) => setTimeout(r, 10)));
  }
  return queue.length === 0;
}
