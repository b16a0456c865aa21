// gateway/src/metrics.ts: the registry renders valid Prometheus text, and the gateway's helpers
// count what they are given; a running gateway serves every metric docs/operations.md names, each
// one produced by the traffic that should produce it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry, observeOutcome, observeResponse, registerCollectors, renderMetrics, setBreakerStates } from '../../src/metrics';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

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
    registerCollectors({
      dbQueries: () => [[{}, 9], [{ function: 'relay_begin' }, 5]], admissions: () => 6,
      admissionCalls: () => [[{ kind: 'single' }, 4], [{ kind: 'batch' }, 1]], settleBatches: () => 3, settledOutcomes: () => 6,
      settleFailures: () => 0, spooledBatches: () => 0, settleQueueDepth: () => 4, spoolDepth: () => 2, dbPoolMax: 10,
      inFlight: () => 1, draining: () => false,
    });
    observeOutcome('chat/completions', {
      status: 'ok',
      http_status: 200,
      prompt_tokens: 12,
      completion_tokens: 30,
      usage_source: 'upstream',
      ttfb_ms: 120,
      latency_ms: 900,
      attempts: [{ status: 500 }, { status: 200 }],
    });
    observeOutcome('chat/completions', { status: 'aborted', http_status: 200, prompt_tokens: null, completion_tokens: null, usage_source: 'none', ttfb_ms: null, latency_ms: 50 });
    observeResponse('chat/completions', 200);
    observeResponse('chat/completions', 429);
    setBreakerStates({ 7: 'open', 8: 'half_open' });
    const text = renderMetrics();
    const { samples } = parse(text);
    const val = (name: string, labels: Record<string, string> = {}) => samples.find((s) => s.name === name && (Object.keys(labels).length > 0 || Object.keys(s.labels).length === 0) && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(val('elygate_requests_total', { endpoint: 'chat/completions', outcome: 'ok' })).toBe(1);
    expect(val('elygate_requests_total', { outcome: 'aborted' })).toBe(1);
    expect(val('elygate_request_duration_seconds_count', { endpoint: 'chat/completions' })).toBe(2);
    expect(val('elygate_time_to_first_token_seconds_count', { endpoint: 'chat/completions' })).toBe(1);
    expect(val('elygate_time_to_first_token_seconds_bucket', { le: '0.25' })).toBe(1);
    expect(val('elygate_tokens_total', { kind: 'completion', source: 'upstream' })).toBe(30);
    expect(val('elygate_upstream_attempts_total', { result: 'failed' })).toBe(1);
    expect(val('elygate_http_responses_total', { status: '429' })).toBe(1);
    expect(val('elygate_breaker_state', { channel: '7' })).toBe(2);
    expect(val('elygate_breaker_state', { channel: '8' })).toBe(1);
    expect(val('elygate_db_queries_total')).toBe(9);
    expect(val('elygate_db_queries_total', { function: 'relay_begin' })).toBe(5);
    expect(val('elygate_admission_calls_total', { kind: 'batch' })).toBe(1);
    expect(val('elygate_settle_queue_depth')).toBe(4);
    expect(val('elygate_spool_batches')).toBe(2);
    expect(val('elygate_db_pool_max_connections')).toBe(10);
    expect(val('elygate_draining')).toBe(0);
  });
});

describe('a running gateway', () => {
  let gw: RunningGateway;
  let upstream: MockUpstream;
  let key: string;
  let model: string;
  let open: { id: number };
  beforeAll(async () => {
    upstream = await startMockUpstream();
    const sql = db();
    const group = await createGroup(sql);
    model = unique('metered');
    await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1000, output_price: 1000 })})`;
    await createChannel(sql, { base_url: upstream.url, models: [model], groups: [group] });
    open = await createChannel(sql, { base_url: upstream.url, models: [unique('other')], groups: [group] });
    // A channel the breaker has taken out before this gateway starts.
    await sql`update private.channels set status = 'auto_disabled', status_reason = 'circuit breaker: test' where id = ${open.id}`;
    const user = await createUser(sql, { group });
    await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 10_000_000 })})`;
    key = (await createKey(sql, { user_id: user.id })).key;
    gw = await startGateway();
  });
  afterAll(async () => {
    await gw?.stop();
    await upstream?.close();
    await closeDb();
  });

  it('serves every metric docs/operations.md names, each fed by real traffic', async () => {
    const post = (body: unknown, auth = `Bearer ${key}`) =>
      fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    for (const stream of [false, true]) await (await post({ model, stream, messages: [{ role: 'user', content: 'hello metrics' }] })).text();
    await (await post({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] })).text(); // a refusal of a known key
    await (await post({ model, messages: [{ role: 'user', content: 'x' }] }, 'Bearer sk-nobody')).text(); // an unknown key
    let text = '';
    for (let i = 0; i < 100; i++) {
      text = await (await fetch(`${gw.url}/metrics`)).text();
      if (/^elygate_settled_outcomes_total [1-9]/m.test(text) && /elygate_breaker_state\{channel="\d+"\} 2/.test(text)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const { samples } = parse(text);
    const has = (name: string, labels: Record<string, string> = {}) =>
      samples.some((s) => s.name === name && s.value > 0 && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    for (const [name, labels] of [
      ['elygate_requests_total', { outcome: 'ok' }], ['elygate_http_responses_total', { status: '200' }],
      ['elygate_request_duration_seconds_count', {}], ['elygate_time_to_first_token_seconds_count', {}],
      ['elygate_tokens_total', { kind: 'completion' }], ['elygate_upstream_attempts_total', { result: 'ok' }],
      ['elygate_refusals_total', {}], ['elygate_auth_failures_total', {}],
      ['elygate_db_queries_total', { function: 'relay_begin' }], ['elygate_admissions_total', {}],
      ['elygate_admission_calls_total', { kind: 'single' }], ['elygate_settle_batches_total', {}],
      ['elygate_settled_outcomes_total', {}], ['elygate_db_pool_max_connections', {}],
      ['elygate_breaker_state', { channel: String(open.id) }],
    ] as const) expect(has(name, labels), name).toBe(true);
    for (const name of ['elygate_settle_queue_depth', 'elygate_spool_batches', 'elygate_in_flight_requests', 'elygate_draining',
                        'elygate_settle_failures_total', 'elygate_spooled_batches_total', 'elygate_cache_results_total', 'elygate_webhook_attempts_total']) {
      expect(text, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
    }
    // Each metric once: nothing renders a second copy by hand.
    const declared = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
    expect(new Set(declared).size).toBe(declared.length);
  });
});
