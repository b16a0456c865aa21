// gateway/src/metrics.ts: the registry renders valid Prometheus text, and the gateway's helpers
// count what they are given.
import { describe, expect, it } from 'vitest';
import { Registry, observeOutcome, observeResponse, registerCollectors, renderMetrics, setBreakerState } from '../../src/metrics';

/** A strict reading of the text format: every sample line belongs to a declared metric. */
function parse(text: string) {
  const types = new Map<string, string>();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.trimEnd().split('\n')) {
    const t = /^# TYPE (\S+) (counter|gauge|histogram)$/.exec(line);
    if (t) {
      types.set(t[1], t[2]);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    const base = m[1].replace(/_(bucket|sum|count)$/, '');
    if (!types.has(m[1]) && !(types.get(base) === 'histogram')) throw new Error(`sample of an undeclared metric: ${line}`);
    samples.push({ name: m[1], labels, value: m[3] === '+Inf' ? Infinity : Number(m[3]) });
  }
  return { types, samples };
}

describe('Registry', () => {
  it('renders counters, gauges and cumulative histogram buckets', () => {
    const r = new Registry();
    const c = r.counter('t_requests_total', 'Requests.');
    const g = r.gauge('t_depth', 'Depth.', () => 7);
    const h = r.histogram('t_seconds', 'Latency.', [0.1, 1, 10]);
    c.inc({ endpoint: 'chat', status: 200 });
    c.inc({ endpoint: 'chat', status: 200 }, 2);
    c.inc({ endpoint: 'say "hi"\n', status: 500 });
    c.inc(undefined, -5); // ignored: counters never go down
    g.set(3, { kind: 'x' });
    for (const v of [0.05, 0.5, 0.5, 5, 50]) h.observe(v, { endpoint: 'chat' });
    const { types, samples } = parse(r.render());
    expect(types.get('t_seconds')).toBe('histogram');
    const val = (name: string, labels: Record<string, string>) => samples.find((s) => s.name === name && (Object.keys(labels).length > 0 || Object.keys(s.labels).length === 0) && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(val('t_requests_total', { endpoint: 'chat', status: '200' })).toBe(3);
    expect(val('t_requests_total', { endpoint: 'say \\"hi\\"\\n' })).toBe(1);
    expect(val('t_depth', {})).toBe(7);
    expect(val('t_depth', { kind: 'x' })).toBe(3);
    expect([0.1, 1, 10].map((le) => val('t_seconds_bucket', { endpoint: 'chat', le: String(le) }))).toEqual([1, 3, 4]);
    expect(val('t_seconds_bucket', { endpoint: 'chat', le: '+Inf' })).toBe(5);
    expect(val('t_seconds_count', { endpoint: 'chat' })).toBe(5);
    expect(val('t_seconds_sum', { endpoint: 'chat' })).toBeCloseTo(56.05);
    expect(() => r.counter('t_requests_total', 'again')).toThrow(/twice/);
  });

  it('a failing collector does not break the scrape', () => {
    const r = new Registry();
    r.gauge('t_bad', 'Throws.', () => {
      throw new Error('db down');
    });
    r.counter('t_ok_total', 'Fine.').inc();
    expect(r.render()).toMatch(/^t_ok_total 1$/m);
  });
});

describe('the gateway metrics', () => {
  it('count requests, latency, TTFT, tokens, cost, attempts, breaker state and the scrape-time gauges', () => {
    registerCollectors({ settleQueueDepth: () => 4, spoolDepth: () => 2, dbPoolMax: 10, inFlight: () => 1, draining: () => false });
    observeOutcome('chat/completions', {
      status: 'ok',
      http_status: 200,
      prompt_tokens: 12,
      completion_tokens: 30,
      usage_source: 'upstream',
      ttfb_ms: 120,
      latency_ms: 900,
      cost_micros: 25,
      attempts: [{ status: 500 }, { status: 200 }],
    });
    observeOutcome('chat/completions', { status: 'aborted', http_status: 200, prompt_tokens: null, completion_tokens: null, usage_source: 'none', ttfb_ms: null, latency_ms: 50 });
    observeResponse('chat/completions', 200);
    observeResponse('chat/completions', 429);
    setBreakerState(7, 'open');
    const text = renderMetrics();
    const { samples } = parse(text);
    const val = (name: string, labels: Record<string, string> = {}) => samples.find((s) => s.name === name && (Object.keys(labels).length > 0 || Object.keys(s.labels).length === 0) && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(val('elygate_requests_total', { endpoint: 'chat/completions', outcome: 'ok' })).toBe(1);
    expect(val('elygate_requests_total', { outcome: 'aborted' })).toBe(1);
    expect(val('elygate_request_duration_seconds_count', { endpoint: 'chat/completions' })).toBe(2);
    expect(val('elygate_time_to_first_token_seconds_count', { endpoint: 'chat/completions' })).toBe(1);
    expect(val('elygate_time_to_first_token_seconds_bucket', { le: '0.25' })).toBe(1);
    expect(val('elygate_tokens_total', { kind: 'completion', source: 'upstream' })).toBe(30);
    expect(val('elygate_cost_micros_total')).toBe(25);
    expect(val('elygate_upstream_attempts_total', { result: 'failed' })).toBe(1);
    expect(val('elygate_http_responses_total', { status: '429' })).toBe(1);
    expect(val('elygate_breaker_state', { channel: '7' })).toBe(2);
    expect(val('elygate_settle_queue_depth_outcomes')).toBe(4);
    expect(val('elygate_spool_depth_batches')).toBe(2);
    expect(val('elygate_db_pool_max_connections')).toBe(10);
    expect(val('elygate_draining')).toBe(0);
  });
});
