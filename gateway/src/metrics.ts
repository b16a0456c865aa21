// Prometheus metrics for the gateway: a small registry (counters, gauges, histograms with labels)
// rendered in the text exposition format, and the gateway's own metrics defined on it. Everything
// is per process: Prometheus sums over instances (sum by (...) (rate(...))).
//
// Where they are fed:
//   settle.ts, queueOutcome:              observeOutcome(endpoint, outcome);
//   app.ts, relayRoute, on each answer:   observeResponse(endpoint, res.status, requestId, t0);
//   app.ts, /metrics:                     new Response(renderMetrics(), …)
//   index.ts, at start:                   registerCollectors({...}): counts db.ts, admission.ts and settle.ts keep
//   cache lookups:                        cacheResults.inc({ result: 'exact' | 'semantic' | 'miss' | 'bypass' });
//   webhooks.ts, after each attempt:      webhookAttempts.inc({ result: 'delivered' | 'failed', kind });
//   adapters/probe.ts, every 30 s:        setBreakerStates(gateway.breaker_states());
// Labels never carry request content, keys or user ids (cardinality, and no secrets in metrics).

type Labels = Record<string, string | number>;

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const escapeHelp = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function renderLabels(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  return keys.map((k) => `${k}="${escapeLabel(String(labels[k]))}"`).join(',');
}

/* why: every request records several samples, and sorting and escaping the same few label sets
   each time showed in the gateway's CPU profile. Label sets are few by design (no request content,
   see above), so each one is rendered once and found again by walking its names and values (Map
   lookups of strings the code already holds, no key string built per sample). The bound only
   guards against a caller breaking that. */
type LabelNode = { next: Map<string | number, LabelNode>; key?: string };
const renderedLabels: LabelNode = { next: new Map() };
let labelNodes = 0;
const LABEL_NODES_MAX = 20000;

function labelKey(labels: Labels | undefined): string {
  if (!labels) return '';
  let node = renderedLabels;
  for (const name in labels) {
    const value = labels[name];
    let byName = node.next.get(name);
    if (!byName) {
      if (labelNodes >= LABEL_NODES_MAX) return renderLabels(labels);
      node.next.set(name, (byName = { next: new Map() }));
      labelNodes++;
    }
    let byValue = byName.next.get(value);
    if (!byValue) {
      if (labelNodes >= LABEL_NODES_MAX) return renderLabels(labels);
      byName.next.set(value, (byValue = { next: new Map() }));
      labelNodes++;
    }
    node = byValue;
  }
  return (node.key ??= renderLabels(labels));
}

const fmt = (n: number) => (Number.isFinite(n) ? String(n) : n > 0 ? '+Inf' : n < 0 ? '-Inf' : 'NaN');

interface Metric {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  render(): string[];
}

export class Counter implements Metric {
  readonly type = 'counter' as const;
  private values = new Map<string, number>();
  /** collect: read at scrape time from a count another module keeps (round trips, batches). */
  constructor(readonly name: string, readonly help: string, private collect?: () => number | [Labels, number][]) {}
  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0)) return; // counters only go up; NaN is ignored
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  get(labels?: Labels): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
  render(): string[] {
    return [...[...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${fmt(v)}`), ...collected(this.name, this.collect)];
  }
}

/** A collector's samples, rendered; a failing collector renders nothing (the scrape goes on). */
function collected(name: string, collect?: () => number | [Labels, number][]): string[] {
  if (!collect) return [];
  let got: number | [Labels, number][];
  try {
    got = collect();
  } catch {
    return [];
  }
  if (typeof got === 'number') return [`${name} ${fmt(got)}`];
  return got.map(([l, v]) => (Object.keys(l).length ? `${name}{${labelKey(l)}} ${fmt(v)}` : `${name} ${fmt(v)}`));
}

export class Gauge implements Metric {
  readonly type = 'gauge' as const;
  private values = new Map<string, number>();
  /** collect: read at scrape time (queue depths, pool sizes) instead of being set. */
  constructor(readonly name: string, readonly help: string, private collect?: () => number | [Labels, number][]) {}
  set(value: number, labels?: Labels): void {
    this.values.set(labelKey(labels), value);
  }
  get(labels?: Labels): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
  render(): string[] {
    return [...[...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${fmt(v)}`), ...collected(this.name, this.collect)];
  }
}

export class Histogram implements Metric {
  readonly type = 'histogram' as const;
  private series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(readonly name: string, readonly help: string, readonly buckets: number[]) {
    this.buckets = [...buckets].sort((a, b) => a - b);
  }
  observe(value: number, labels?: Labels): void {
    if (!Number.isFinite(value)) return;
    const k = labelKey(labels);
    let s = this.series.get(k);
    if (!s) this.series.set(k, (s = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 }));
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }
  count(labels?: Labels): number {
    return this.series.get(labelKey(labels))?.count ?? 0;
  }
  render(): string[] {
    const out: string[] = [];
    for (const [k, s] of this.series) {
      const sep = k ? `${k},` : '';
      this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{${sep}le="${fmt(b)}"} ${s.counts[i]}`));
      out.push(`${this.name}_bucket{${sep}le="+Inf"} ${s.count}`);
      out.push(`${this.name}_sum${k ? `{${k}}` : ''} ${fmt(s.sum)}`);
      out.push(`${this.name}_count${k ? `{${k}}` : ''} ${s.count}`);
    }
    return out;
  }
}

export class Registry {
  private metrics = new Map<string, Metric>();
  private add<T extends Metric>(m: T): T {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(m.name)) throw new Error(`invalid metric name ${m.name}`);
    if (this.metrics.has(m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.set(m.name, m);
    return m;
  }
  counter(name: string, help: string, collect?: () => number | [Labels, number][]) {
    return this.add(new Counter(name, help, collect));
  }
  gauge(name: string, help: string, collect?: () => number | [Labels, number][]) {
    return this.add(new Gauge(name, help, collect));
  }
  histogram(name: string, help: string, buckets: number[]) {
    return this.add(new Histogram(name, help, buckets));
  }
  render(): string {
    const out: string[] = [];
    for (const m of this.metrics.values()) {
      out.push(`# HELP ${m.name} ${escapeHelp(m.help)}`, `# TYPE ${m.name} ${m.type}`, ...m.render());
    }
    return out.join('\n') + '\n';
  }
}

// ---- the gateway's metrics ----------------------------------------------------------------------

export const registry = new Registry();

/** Latency buckets in seconds, from a cache hit to a long generation. */
const LATENCY = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export const responses = registry.counter('elygate_http_responses_total', 'Answers to relay endpoints by endpoint and HTTP status (refusals included).');
export const requests = registry.counter('elygate_requests_total', 'Requests that reached an upstream decision, by endpoint and outcome (ok, error, aborted).');
export const latency = registry.histogram('elygate_request_duration_seconds', 'Time from the request to its settled outcome, by endpoint.', LATENCY);
export const ttft = registry.histogram('elygate_time_to_first_token_seconds', 'Time to the first byte of the upstream answer (first token of a stream), by endpoint.', LATENCY);
export const tokens = registry.counter('elygate_tokens_total', 'Tokens by kind (prompt, completion) and by how they were known (usage source).');
export const refusals = registry.counter('elygate_refusals_total', 'Requests of a known key refused at admission (logged as status refused), by endpoint and error code.');
export const authFailures = registry.counter('elygate_auth_failures_total', 'Requests refused 401 because no key, or no key with that hash, was sent (never logged in the request log), by endpoint.');
export const cacheResults = registry.counter('elygate_cache_results_total', 'Response cache lookups by result (exact, semantic, miss, bypass).');
export const upstreamAttempts = registry.counter('elygate_upstream_attempts_total', 'Upstream attempts by result (ok, failed, skipped).');
export const webhookAttempts = registry.counter('elygate_webhook_attempts_total', 'Webhook delivery attempts by this gateway, by result (delivered, failed) and event kind.');
const breakerStates = new Map<number, string>();
const BREAKER_VALUE: Record<string, number> = { closed: 0, half_open: 1, open: 2 };
registry.gauge('elygate_breaker_state', 'Circuit breaker state per channel, as the database last told this gateway (at most 30 s old): 0 closed, 1 half-open, 2 open.', () =>
  [...breakerStates].map(([channel, state]) => [{ channel }, BREAKER_VALUE[state] ?? 2] as [Labels, number]),
);

/** Scrape-time sources the gateway registers once at start (gateway/src/index.ts): counts and
 *  depths other modules keep, read when /metrics is scraped (kept out of this module's imports). */
export interface Collectors {
  dbQueries: () => [Labels, number][];
  admissions: () => number;
  admissionCalls: () => [Labels, number][];
  settleBatches: () => number;
  settledOutcomes: () => number;
  settleFailures: () => number;
  spooledBatches: () => number;
  settleQueueDepth: () => number;
  spoolDepth: () => number;
  dbPoolMax: number;
  inFlight: () => number;
  draining: () => boolean;
}

export function registerCollectors(c: Collectors): void {
  registry.counter('elygate_db_queries_total', 'Database round trips made by this gateway process (unlabelled: all; by function: the gateway.* function called).', c.dbQueries);
  registry.counter('elygate_admissions_total', 'Requests sent for admission (by relay_begin or relay_begin_batch).', c.admissions);
  registry.counter('elygate_admission_calls_total', 'Admission round trips by kind: single relay_begin calls and relay_begin_batch calls.', c.admissionCalls);
  registry.counter('elygate_settle_batches_total', 'relay_finish calls that succeeded.', c.settleBatches);
  registry.counter('elygate_settled_outcomes_total', 'Outcomes settled through relay_finish.', c.settledOutcomes);
  registry.counter('elygate_settle_failures_total', 'relay_finish calls that failed and were retried.', c.settleFailures);
  registry.counter('elygate_spooled_batches_total', 'Outcome batches written to the spool because the database was unreachable.', c.spooledBatches);
  registry.gauge('elygate_settle_queue_depth', 'Outcomes waiting to be settled (queued in memory or in the relay_finish call running).', c.settleQueueDepth);
  registry.gauge('elygate_spool_batches', 'Outcome batches waiting on disk for the database.', c.spoolDepth);
  registry.gauge('elygate_db_pool_max_connections', "Size of the gateway's PostgreSQL pool (ELYGATE_DB_POOL_MAX).", () => c.dbPoolMax);
  registry.gauge('elygate_in_flight_requests', 'Requests being answered right now (streams included).', c.inFlight);
  registry.gauge('elygate_draining', '1 while the gateway is shutting down (not ready).', () => (c.draining() ? 1 : 0));
}

/** The breaker state of every channel, as the database last told this gateway (the probe worker
 *  reads it every 30 s and after each probe); channels not listed are forgotten. */
export function setBreakerStates(states: Record<string, 'closed' | 'half_open' | 'open'>): void {
  breakerStates.clear();
  for (const [channel, state] of Object.entries(states)) breakerStates.set(Number(channel), state);
}

/** The shape of settle.ts's Outcome that metrics read (kept structural: no import cycle). */
export interface ObservedOutcome {
  status: string;
  http_status: number;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  usage_source: string;
  ttfb_ms: number | null;
  latency_ms: number;
  attempts?: { status: number | null; error?: string; skipped?: boolean }[];
}

export function observeOutcome(endpoint: string, o: ObservedOutcome): void {
  requests.inc({ endpoint, outcome: o.status });
  latency.observe(o.latency_ms / 1000, { endpoint });
  if (o.ttfb_ms !== null && o.ttfb_ms !== undefined) ttft.observe(o.ttfb_ms / 1000, { endpoint });
  if (o.prompt_tokens) tokens.inc({ kind: 'prompt', source: o.usage_source }, o.prompt_tokens);
  if (o.completion_tokens) tokens.inc({ kind: 'completion', source: o.usage_source }, o.completion_tokens);
  for (const a of o.attempts ?? []) {
    upstreamAttempts.inc({ result: a.skipped ? 'skipped' : a.error || a.status === null || a.status >= 400 ? 'failed' : 'ok' });
  }
}

const accessLog = process.env.ELYGATE_ACCESS_LOG === '1' || process.env.ELYGATE_ACCESS_LOG === 'true';

/**
 * Counts one answer of a relay endpoint and, with ELYGATE_ACCESS_LOG=1, writes one JSON access-log
 * line: request id, endpoint, status, duration. Never the body, the key or the client's headers.
 */
export function observeResponse(endpoint: string, status: number, requestId?: string, startedAt?: number): void {
  responses.inc({ endpoint, status });
  if (accessLog) {
    const line: Record<string, unknown> = { level: status >= 500 ? 'error' : 'info', msg: 'request', request_id: requestId ?? null, endpoint, status };
    if (startedAt !== undefined) line.ms = Math.round(performance.now() - startedAt);
    console.log(JSON.stringify(line));
  }
}

export const renderMetrics = () => registry.render();
