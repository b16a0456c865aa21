// Routing through the real gateway: failover order and exclusion of tried channels, MaxAttempts
// and the deadlines, status-code mapping, refusals and client errors never retried, no retry once
// a byte reached the client, and the circuit breaker end to end: opened by relay_finish's
// batches, skipped in the plan, recovered by a probe the gateway runs after a NOTIFY, and a
// manual disable that stays. The failed-over request's trace is read with one SQL query.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startMockAnthropic, type MockAnthropic } from '../support/mock-anthropic';

let gw: RunningGateway;
let a: MockUpstream;
let b: MockAnthropic;
let c: MockUpstream;
let key: string;
let model: string;
let group: string;
const ids: Record<'a' | 'b' | 'c', number> = {} as never;
const defaults: Record<string, string> = {};
const touched = ['MaxAttempts', 'RelayTimeoutMs', 'UpstreamAttemptTimeoutMs', 'BreakerMinRequests', 'BreakerFailurePercent', 'BreakerOpenSeconds'];

async function setOption(k: string, v: string) {
  await db()`select admin.option_set(${k}, ${v})`;
}
/** Options reach the gateway through NOTIFY; give it a moment. */
const reload = () => new Promise((r) => setTimeout(r, 150));

beforeAll(async () => {
  [a, b, c] = await Promise.all([startMockUpstream(), startMockAnthropic(), startMockUpstream()]);
  const sql = db();
  for (const o of await sql`select key, value from private.options where key = any(${touched})`) defaults[o.key] = o.value;
  group = await createGroup(sql);
  model = unique('routed');
  const user = await createUser(sql, { group });
  key = (await createKey(sql, { user_id: user.id })).key;
  // Three tiers: an OpenAI channel, an Anthropic channel, another OpenAI channel.
  ids.a = Number((await createChannel(sql, { base_url: a.url, models: [model], groups: [group], priority: 30, config: { status_code_mapping: { '418': 503 } } })).id);
  ids.b = Number((await createChannel(sql, { type: 'anthropic', base_url: b.url, models: [model], groups: [group], priority: 20 })).id);
  ids.c = Number((await createChannel(sql, { base_url: c.url, models: [model], groups: [group], priority: 10 })).id);
  gw = await startGateway();
});

afterAll(async () => {
  for (const [k, v] of Object.entries(defaults)) await setOption(k, v);
  await gw?.stop();
  await Promise.all([a?.close(), b?.close(), c?.close()]);
  await closeDb();
});

beforeEach(() => {
  for (const m of [a, b, c]) {
    m.mode = { kind: 'ok' };
    m.calls.length = 0;
  }
});

const chat = (extra: Record<string, unknown> = {}) =>
  fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'route me' }], ...extra }),
  });

async function settled(requestId: string) {
  for (let i = 0; i < 150; i++) {
    const [row] = await db()`select * from private.requests where id = ${requestId} and status <> 'pending'`;
    if (row) return row;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`request ${requestId} was not settled`);
}

const trace = (requestId: string) =>
  db()`select step, kind, channel_id::int, status, detail, served from admin.request_routes where request_id = ${requestId} order by step`;

describe('failover', () => {
  it('tries candidates in plan order, each at most once, until one answers', async () => {
    a.mode = { kind: 'status', status: 500 };
    b.mode = { kind: 'status', status: 529 };
    const res = await chat();
    expect(res.status).toBe(200);
    expect((await res.json()).choices[0].message.content).toBe('echo: route me');
    expect([a.calls.length, b.calls.length, c.calls.length]).toEqual([1, 1, 1]);
    const id = res.headers.get('x-request-id')!;
    const row = await settled(id);
    expect(row.attempts.map((x: any) => [x.channel_id, x.status])).toEqual([[ids.a, 500], [ids.b, 529], [ids.c, 200]]);
    // The routing trace, one query.
    const t = await trace(id);
    expect(t.map((r) => [r.kind, r.channel_id, r.status, r.served])).toEqual([
      ['attempt', ids.a, 500, false],
      ['attempt', ids.b, 529, false],
      ['attempt', ids.c, 200, true],
    ]);
  });

  it('a connection error and a first-byte timeout fail over too; MaxAttempts bounds the tries', async () => {
    await setOption('UpstreamAttemptTimeoutMs', '500');
    await reload();
    try {
      a.mode = { kind: 'reset' };
      b.mode = { kind: 'hang' };
      const t0 = Date.now();
      const res = await chat();
      expect(res.status).toBe(200);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
      const row = await settled(res.headers.get('x-request-id')!);
      expect(row.attempts.map((x: any) => [x.channel_id, x.status, x.error ?? null])).toEqual([
        [ids.a, null, expect.any(String)],
        [ids.b, null, 'upstream first byte timeout'],
        [ids.c, 200, null],
      ]);

      await setOption('MaxAttempts', '2');
      await reload();
      a.mode = { kind: 'status', status: 503 };
      b.mode = { kind: 'status', status: 503 };
      const capped = await chat();
      expect(capped.status).toBe(503);
      expect(c.calls.length).toBe(1); // only from the first half of this test
      const id = capped.headers.get('x-request-id')!;
      await settled(id);
      const t = await trace(id);
      expect(t.map((r) => r.kind)).toEqual(['attempt', 'attempt', 'not_tried']);
      expect(t[2].channel_id).toBe(ids.c);
    } finally {
      await setOption('MaxAttempts', defaults.MaxAttempts);
      await setOption('UpstreamAttemptTimeoutMs', defaults.UpstreamAttemptTimeoutMs);
      await reload();
    }
  });

  it('the total deadline (RelayTimeoutMs) covers all attempts', async () => {
    await setOption('RelayTimeoutMs', '1000');
    await setOption('UpstreamAttemptTimeoutMs', '700');
    await reload();
    try {
      a.mode = { kind: 'hang' };
      b.mode = { kind: 'hang' };
      const t0 = Date.now();
      const res = await chat();
      const took = Date.now() - t0;
      expect(res.status).toBe(504);
      expect((await res.json()).error.code).toBe('upstream_timeout');
      expect(took).toBeLessThan(1600);
      expect(c.calls.length).toBe(0);
    } finally {
      await setOption('RelayTimeoutMs', defaults.RelayTimeoutMs);
      await setOption('UpstreamAttemptTimeoutMs', defaults.UpstreamAttemptTimeoutMs);
      await reload();
    }
  });

  it('status_code_mapping turns a status into a retryable one; a content refusal is never retried', async () => {
    a.mode = { kind: 'status', status: 418, body: { error: { message: 'teapot', type: 'server_error', code: null } } };
    const res = await chat();
    expect(res.status).toBe(200);
    expect(b.calls.length).toBe(1);
    const row = await settled(res.headers.get('x-request-id')!);
    expect(row.attempts[0]).toMatchObject({ channel_id: ids.a, status: 503, mapped_from: 418 });

    b.calls.length = 0;
    a.mode = { kind: 'status', status: 418, body: { error: { message: 'Your request was rejected by our content filter.', type: 'invalid_request_error', code: 'content_policy_violation' } } };
    const refused = await chat();
    expect(refused.status).toBe(503);
    expect((await refused.json()).error.code).toBe('content_policy_violation');
    expect(b.calls.length + c.calls.length).toBe(0);
  });

  it('never retries a 400-class client error', async () => {
    a.mode = { kind: 'status', status: 422 };
    const res = await chat();
    expect(res.status).toBe(422);
    expect(b.calls.length + c.calls.length).toBe(0);
  });

  it('a stream fails over while nothing reached the client, and never after', async () => {
    a.mode = { kind: 'status', status: 502 };
    b.mode = { kind: 'stream-break', afterChunks: 0 }; // 200, then the connection drops before any event
    const res = await chat({ stream: true });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('data: [DONE]');
    expect([a.calls.length, b.calls.length, c.calls.length]).toEqual([1, 1, 1]);

    for (const m of [a, b, c]) m.calls.length = 0;
    a.mode = { kind: 'stream-break', afterChunks: 2 };
    const broken = await chat({ stream: true });
    expect(broken.status).toBe(200);
    const text = await broken.text();
    expect(text).toContain('"role":"assistant"'); // the first chunk reached the client

    expect(text).toContain('upstream_stream_error');
    expect(b.calls.length + c.calls.length).toBe(0);
  });
});

describe('circuit breaker through the gateway', () => {
  it('opens after the threshold, is skipped, recovers through a probe, and a manual disable stays', async () => {
    // A clean window for channel a: re-enabling resets it (earlier tests failed over from a), once
    // their outcomes have all been settled.
    for (let i = 0; i < 200; i++) {
      const [{ n }] = await db()`select count(*)::int as n from private.admissions where model = ${model}`;
      if (n === 0 && (await gw.metric('elygate_settle_queue_depth')) === 0) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const all = [ids.a, ids.b, ids.c];
    await db()`update private.channels set status = 'manually_disabled' where id = any(${all})`;
    await db()`update private.channels set status = 'enabled' where id = any(${all})`;
    await setOption('BreakerMinRequests', '3');
    await setOption('BreakerFailurePercent', '50');
    await setOption('BreakerOpenSeconds', '30');
    try {
      a.mode = { kind: 'status', status: 500 };
      for (let i = 0; i < 3; i++) {
        const r = await chat();
        expect(r.status).toBe(200);
        await settled(r.headers.get('x-request-id')!);
      }
      const [ch] = await db()`select status, status_reason from private.channels where id = ${ids.a}`;
      expect(ch.status).toBe('auto_disabled');
      expect(ch.status_reason).toMatch(/^circuit breaker: 3 of 3 attempts failed/);

      // Now skipped by the plan: a gets no more calls, and the trace says why.
      const before = a.calls.length;
      const r = await chat();
      expect(r.status).toBe(200);
      expect(a.calls.length).toBe(before);
      const id = r.headers.get('x-request-id')!;
      await settled(id);
      const t = await trace(id);
      expect(t[0]).toMatchObject({ kind: 'skipped', channel_id: ids.a });
      expect(t[0].detail).toMatch(/^breaker_open: circuit breaker: 3 of 3/);

      // The upstream recovers; pg_cron's job (called here with a later clock) queues a probe and
      // NOTIFYs; the gateway runs it and the channel comes back.
      a.mode = { kind: 'ok' };
      const [{ n }] = await db()`select private.probes_schedule(now() + interval '31 seconds') as n`;
      expect(n).toBeGreaterThanOrEqual(1);
      let status = 'auto_disabled';
      for (let i = 0; i < 100 && status !== 'enabled'; i++) {
        await new Promise((res) => setTimeout(res, 50));
        status = (await db()`select status from private.channels where id = ${ids.a}`)[0].status;
      }
      expect(status).toBe('enabled');
      const [probe] = await db()`select kind, ok, http_status, claimed_by from admin.channel_probes where channel_id = ${ids.a} order by id desc limit 1`;
      expect(probe).toMatchObject({ kind: 'recovery', ok: true, http_status: 200 });
      expect(a.calls.at(-1)!.body).toMatchObject({ model, max_tokens: 1 });

      // An operator disables it by hand; even a successful test leaves it disabled.
      await db()`select admin.channel_update(${ids.a}, '{"status": "manually_disabled", "status_reason": "contract ended"}')`;
      const [{ id: testId }] = await db()`select admin.channel_test(${ids.a}) as id`;
      let done = null;
      for (let i = 0; i < 100 && !done; i++) {
        await new Promise((res) => setTimeout(res, 50));
        [done] = await db()`select ok from admin.channel_probes where id = ${testId} and finished_at is not null`;
      }
      expect(done).toEqual({ ok: true });
      expect((await db()`select status from private.channels where id = ${ids.a}`)[0].status).toBe('manually_disabled');
    } finally {
      await db()`update private.channels set status = 'enabled' where id = ${ids.a}`;
      for (const k of ['BreakerMinRequests', 'BreakerFailurePercent', 'BreakerOpenSeconds']) await setOption(k, defaults[k]);
    }
  });
});
