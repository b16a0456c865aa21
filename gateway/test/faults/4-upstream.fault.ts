// Fault scenario 4: the upstream misbehaves. Every answer the client gets is either the answer or an
// OpenAI-style error (in-band for a stream that already started), every request is settled, and the
// gateway stays up.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDb, createChannel, db } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startHostileUpstream, type HostileUpstream } from './hostile-upstream';
import { figure, saveLogs, post, readStream, settledAll, short, tenant, type Tenant } from './support';

let mock: MockUpstream;
let hostile: HostileUpstream;
let gw: RunningGateway;
/** Only the hostile upstream. */
let alone: Tenant;
/** The hostile upstream first (priority 10), the well-behaved mock behind it. */
let failover: Tenant;
/** The mock first (its directives fail it), the hostile upstream (which ignores them) behind. */
let storm: Tenant;

async function setOption(key: string, value: string) {
  await db()`select admin.option_set(${key}, ${value})`;
  await new Promise((r) => setTimeout(r, 300)); // NOTIFY reaches the gateway
}

beforeAll(async () => {
  mock = await startMockUpstream();
  hostile = await startHostileUpstream();
  const sql = db();
  alone = await tenant(hostile.url);
  failover = await tenant(hostile.url);
  await sql`update private.channels set priority = 10 where id = ${failover.channel.id}`;
  await createChannel(sql, { base_url: mock.url, models: [failover.model], groups: [failover.group], priority: 0 });
  storm = await tenant(mock.url);
  await sql`update private.channels set priority = 10 where id = ${storm.channel.id}`;
  await createChannel(sql, { base_url: hostile.url, models: [storm.model], groups: [storm.group], priority: 0 });
  gw = await startGateway();
});

afterAll(async () => {
  await gw?.stop();
  if (gw) saveLogs('upstream', gw.output());
  await mock?.close();
  await hostile?.close();
  await closeDb();
});

const chat = (t: Tenant, content: string, stream = true) => post(gw.url, t.key, { model: t.model, stream, messages: [{ role: 'user', content }] });

/** The request's row once settled (a batch may still be on its way to the database). */
async function requestRow(id: string) {
  await settledAll(gw);
  for (let i = 0; ; i++) {
    const [r] = await db()`select status, http_status, error_code, jsonb_array_length(attempts) as attempts from private.requests where id = ${id}`;
    if (r.status !== 'pending' || i >= 100) return r;
    await new Promise((res) => setTimeout(res, 30));
  }
}

async function pendingOf(userIds: number[]) {
  for (let i = 0; ; i++) {
    const [{ pending }] = await db()`select count(*)::int as pending from private.admissions where user_id = any(${userIds})`;
    if (pending === 0 || i >= 100) return pending as number;
    await new Promise((res) => setTimeout(res, 30));
  }
}

function isOpenAiError(body: any) {
  return body && typeof body.error?.message === 'string' && 'type' in body.error && 'code' in body.error && 'param' in body.error;
}

describe('4. upstream faults', () => {
  it('slow first byte: the stream waits for it and completes', async () => {
    const t0 = Date.now();
    const res = await chat(alone, 'hostile:first-byte:2000');
    const s = await readStream(res);
    const row = await requestRow(res.headers.get('x-request-id')!);
    figure('slow first byte (2 s)', { status: res.status, completed: s.done, ms: Date.now() - t0, settled: row.status });
    expect(res.status).toBe(200);
    expect(s.done).toBe(true);
    expect(row.status).toBe('ok');
  });

  it('first byte later than UpstreamAttemptTimeoutMs: fails over to the next channel', async () => {
    await setOption('UpstreamAttemptTimeoutMs', '1000');
    try {
      const res = await chat(failover, 'hostile:first-byte:5000 and then some');
      const s = await readStream(res);
      const row = await requestRow(res.headers.get('x-request-id')!);
      figure('first byte past the attempt timeout', { status: res.status, completed: s.done, attempts: row.attempts, settled: row.status });
      expect(res.status).toBe(200);
      expect(s.text).toContain('echo:'); // the mock answered
      expect(row.attempts).toBe(2);
    } finally {
      await setOption('UpstreamAttemptTimeoutMs', '120000');
    }
  });

  it('a stall mid-stream past StreamIdleTimeoutMs: cut with an in-band error, settled as an error', async () => {
    await setOption('StreamIdleTimeoutMs', '1000');
    try {
      const res = await chat(alone, 'hostile:stall:4000');
      const s = await readStream(res);
      const row = await requestRow(res.headers.get('x-request-id')!);
      const errorEvent = /data: (\{"error".*\})/.exec(s.text);
      figure('stall mid-stream', { status: res.status, completed: s.done, in_band_error: !!errorEvent, settled: `${row.status}/${row.error_code}` });
      expect(res.status).toBe(200);
      expect(s.done).toBe(false);
      expect(isOpenAiError(JSON.parse(errorEvent![1]))).toBe(true);
      expect(row.status).toBe('error');
    } finally {
      await setOption('StreamIdleTimeoutMs', '300000');
    }
  });

  it('resets: before the status line they fail over (or answer 502), mid-stream they end in-band', async () => {
    const withFallback = await chat(failover, 'hostile:reset:0');
    const fb = await readStream(withFallback);
    const noFallback = await chat(alone, 'hostile:reset:0', false);
    const nfBody = await noFallback.json();
    const mid = await chat(storm, 'mock:break:2');
    const midS = await readStream(mid);
    const midRow = await requestRow(mid.headers.get('x-request-id')!);
    figure('resets', { with_fallback: `${withFallback.status}/${fb.done ? 'complete' : 'cut'}`, without_fallback: noFallback.status, mid_stream: `${mid.status}/${midS.done ? 'complete' : 'cut'}/${midRow.status}` });
    expect(withFallback.status).toBe(200);
    expect(fb.done).toBe(true);
    expect(noFallback.status).toBe(502);
    expect(isOpenAiError(nfBody)).toBe(true);
    expect(midS.done).toBe(false);
    expect(midS.text).toMatch(/"error"/);
    expect(midRow.status).not.toBe('pending');
  });

  it('500 and 429 storms: answered through the next channel, or as OpenAI errors, and the breaker opens', async () => {
    const n = short ? 30 : 200;
    const statuses: Record<string, number> = {};
    const bad: unknown[] = [];
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const code = i % 2 ? 500 : 429;
        const res = await chat(storm, `storm mock:status:${code}`, i % 3 === 0);
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        const text = await res.text();
        if (res.status !== 200) bad.push(text);
      }),
    );
    // The same storm with no channel behind the failing one: the client gets the upstream's error.
    const alone429 = await tenant(mock.url);
    const errs: Record<string, number> = {};
    let shapes = 0;
    await Promise.all(
      Array.from({ length: short ? 10 : 50 }, async () => {
        const res = await post(gw.url, alone429.key, { model: alone429.model, messages: [{ role: 'user', content: 'mock:status:429' }] });
        errs[res.status] = (errs[res.status] ?? 0) + 1;
        if (isOpenAiError(await res.json())) shapes++;
      }),
    );
    await settledAll(gw);
    const [h] = await db()`select breaker_state, status from admin.channel_health where id = ${storm.channel.id}`;
    const pending = await pendingOf([storm.user.id, alone429.user.id]);
    figure('500/429 storm', { requests: n, statuses, ms: Date.now() - t0, alone_statuses: errs, openai_error_shapes: shapes, breaker: `${h.breaker_state}/${h.status}`, pending });
    expect(statuses[200]).toBe(n);
    expect(bad).toEqual([]);
    expect(errs[429]).toBe(short ? 10 : 50);
    expect(shapes).toBe(short ? 10 : 50);
    expect(h.breaker_state).toBe('open');
    expect(pending).toBe(0);
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
  });

  it('malformed SSE: no crash, the request is settled, the gateway keeps serving', async () => {
    const res = await chat(alone, 'hostile:malformed:0');
    const s = await readStream(res).catch((e) => ({ text: String(e), done: false }));
    const row = await requestRow(res.headers.get('x-request-id')!);
    const after = await chat(alone, 'hello again');
    const afterS = await readStream(after);
    figure('malformed SSE', { status: res.status, bytes: s.text.length, settled: `${row.status}/${row.error_code}`, next_request: `${after.status}/${afterS.done ? 'complete' : 'cut'}` });
    expect([200, 502]).toContain(res.status);
    expect(row.status).not.toBe('pending');
    expect(after.status).toBe(200);
    expect(afterS.done).toBe(true);
  });

  it(`a ${short ? 12 : 30}-second gap between chunks: the stream survives (longer than Bun's default 10 s idle timeout)`, async () => {
    const gapMs = short ? 12_000 : 30_000;
    const res = await chat(alone, `hostile:gap:${gapMs}`);
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    const t0 = Date.now();
    let text = '';
    let keepalives = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const part = dec.decode(value, { stream: true });
      // SSE comments (": …") in the gap keep proxies and clients with idle timeouts attached.
      if (Date.now() - t0 > 500 && /^:/m.test(part) && !/data:/.test(part)) keepalives++;
      text += part;
    }
    const row = await requestRow(res.headers.get('x-request-id')!);
    figure('long gap between chunks', { gap_ms: gapMs, completed: /data: \[DONE\]/.test(text), keepalive_comments_in_gap: keepalives, settled: row.status, ms: Date.now() - t0 });
    expect(res.status).toBe(200);
    expect(text).toMatch(/data: \[DONE\]\s*$/);
    expect(row.status).toBe('ok');
  }, 60_000);
});
