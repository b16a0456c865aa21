// Admission: the one database round trip a request makes before its upstream, batched when the
// gateway is busy. Up to AdmissionConcurrency calls are in flight at once; a request that arrives
// while all of them are busy waits for the next free one and goes with every other waiting
// request in one gateway.relay_begin_batch call (up to AdmissionBatchMax). A lone request never
// waits for company: at low load every admission is a plain gateway.relay_begin.
//
// /* why */ Each call costs PostgreSQL a protocol exchange, a transaction and its commit whatever it
// carries; under load those were a third of an admission's database time (docs/performance.md).
import type postgres from 'postgres';
import { dedicatedConnection } from './db';
import { options } from './snapshot';
import type { Sampling } from './cache';

export interface AdmitArgs {
  id: string;
  keyHash: Buffer | null;
  model: string;
  endpoint: string;
  stream: boolean;
  clientIp: string | null;
  promptTokens: number | null;
  maxTokens: number | null;
  cache: { exact: string; context: string; semantic: boolean; sampling: Sampling } | null;
  /** A media endpoint's units ({count, size, quality}: private.unit_price); null otherwise. */
  units?: { count: number; size?: string; quality?: string } | null;
}

/** What SQL says about a refused request (private.refusal_json): a batch row's `error`, or, for a
 *  single relay_begin call, the raised error's fields with reason and retry_after in its detail. */
export interface Refusal {
  code: string;
  message: string;
  hint?: string | null;
  column?: string | null;
  /** Which limit refused it: concurrency, rpm, tpm, model_rpm, model_tpm or budget (null for the other refusals). */
  reason?: string | null;
  /** Seconds the client should wait (the Retry-After header). */
  retry_after?: number | null;
}

/** A refused admission, shaped like the driver's error (code, message, hint, column_name) plus the
 *  fields the gateway acts on: reason and retryAfter. */
export class AdmissionError extends Error {
  readonly code: string;
  readonly hint?: string;
  readonly column_name?: string;
  readonly reason?: string;
  readonly retryAfter?: number;
  constructor(r: Refusal) {
    super(r.message);
    this.code = r.code;
    this.hint = r.hint ?? undefined;
    this.column_name = r.column ?? undefined;
    this.reason = r.reason ?? undefined;
    this.retryAfter = r.retry_after ?? undefined;
  }
}

/** A single call's error as an AdmissionError when it is a refusal that carries reason or
 *  retry_after (private.refusal_raise puts them in the detail as JSON); anything else unchanged. */
export function refusalFromError(err: unknown): unknown {
  const pg = err as { code?: unknown; message?: string; detail?: unknown; hint?: string; column_name?: string } | null;
  if (!pg || typeof pg.code !== 'string' || typeof pg.detail !== 'string' || !pg.detail.startsWith('{')) return err;
  let fields: { reason?: string | null; retry_after?: number | null };
  try {
    fields = JSON.parse(pg.detail);
  } catch {
    return err;
  }
  return new AdmissionError({
    code: pg.code,
    message: pg.message ?? '',
    // (private.refusal_raise sends an absent hint or column as empty: RAISE takes no null)
    hint: pg.hint || null,
    column: pg.column_name || null,
    reason: fields.reason,
    retry_after: fields.retry_after,
  });
}

interface Waiting {
  args: AdmitArgs;
  resolve: (ticket: any) => void;
  reject: (err: unknown) => void;
}

const waiting: Waiting[] = [];
let inFlight = 0;
/** Which lanes have a call in flight; a call takes the lowest free one (its own connection). */
const laneBusy: boolean[] = [];
/** Admission calls and the requests they carried, for /metrics and the benchmark. */
export const admissionStats = { requests: 0, singleCalls: 0, batchCalls: 0 };

export function admit<T>(args: AdmitArgs): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    waiting.push({ args, resolve, reject });
    pump();
  });
}

function pump(): void {
  // (integers from 1 to 64, checked where they are set: sql/20_options.sql; every request has
  // awaited optionsReady() before it reaches admission)
  const lanes = Number(options.AdmissionConcurrency);
  const max = Number(options.AdmissionBatchMax);
  while (waiting.length > 0 && inFlight < lanes) {
    const batch = waiting.splice(0, max);
    let lane = 0;
    while (laneBusy[lane]) lane++;
    laneBusy[lane] = true;
    inFlight++;
    admissionStats.requests += batch.length;
    const db = dedicatedConnection(`admission-${lane}`);
    const call = batch.length === 1 ? single(db, batch[0]) : many(db, batch);
    call.finally(() => {
      laneBusy[lane] = false;
      inFlight--;
      pump();
    });
  }
}

async function single(sql: postgres.Sql, w: Waiting): Promise<void> {
  admissionStats.singleCalls++;
  const a = w.args;
  try {
    const [ticket] = await sql`
      select * from gateway.relay_begin(${a.id}, ${a.keyHash}, ${a.model}, ${a.endpoint}, ${a.stream},
                                        ${a.clientIp}, ${a.promptTokens}, ${a.maxTokens},
                                        ${a.cache ? sql.json(a.cache as unknown as postgres.JSONValue) : null},
                                        ${a.units ? sql.json(a.units as unknown as postgres.JSONValue) : null})`;
    w.resolve(ticket);
  } catch (err) {
    w.reject(refusalFromError(err));
  }
}

async function many(sql: postgres.Sql, batch: Waiting[]): Promise<void> {
  admissionStats.batchCalls++;
  const body = batch.map(({ args: a }) => ({
    id: a.id,
    key_hash: a.keyHash ? a.keyHash.toString('hex') : null,
    model: a.model,
    endpoint: a.endpoint,
    stream: a.stream,
    client_ip: a.clientIp,
    prompt_tokens: a.promptTokens,
    max_tokens: a.maxTokens,
    cache: a.cache,
    units: a.units ?? null,
  }));
  let rows: any[];
  try {
    rows = await sql`select * from gateway.relay_begin_batch(${sql.json(body as postgres.JSONValue)})`;
  } catch (err) {
    for (const w of batch) w.reject(err);
    return;
  }
  const answered = new Set<number>();
  for (const row of rows) {
    const w = batch[row.idx - 1];
    if (!w || answered.has(row.idx)) continue;
    answered.add(row.idx);
    if (row.error) {
      w.reject(new AdmissionError(row.error as Refusal));
    } else {
      const { idx: _idx, error: _error, ...ticket } = row;
      w.resolve(ticket);
    }
  }
  batch.forEach((w, i) => {
    if (!answered.has(i + 1)) w.reject(new AdmissionError({ code: 'XX000', message: 'relay_begin_batch returned no row for this request.' }));
  });
}
