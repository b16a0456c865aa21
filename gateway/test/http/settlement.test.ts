// One settlement per admission, through the real gateway: whatever throws after admission, the
// client gets a clear error, the reservation and the key's concurrency slot are released by the
// next settlement batch (not by the reaper), and nothing is billed for an error. And upstream
// answers are checked before the first byte: a 200 that is not the protocol's answer, or a stream
// request answered without an event stream, fails over and is never billed; a malformed event
// inside a stream ends it with an error event and bills what was delivered.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let first: MockUpstream;
let second: MockUpstream;

beforeAll(async () => {
  [first, second] = await Promise.all([startMockUpstream(), startMockUpstream()]);
});

afterAll(async () => {
  await Promise.all([first?.close(), second?.close()]);
  await closeDb();
});

beforeEach(() => {
  for (const m of [first, second]) {
    m.mode = { kind: 'ok' };
    m.calls.length = 0;
  }
});

/** A funded user whose key has a concurrency limit, on a priced model served by the given mocks. */
async function tenant(prefix: string, upstreams: MockUpstream[]) {
  const sql = db();
  const group = await createGroup(sql);
  const model = unique(prefix);
  await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1_000_000, output_price: 2_000_000 })})`;
  const user = await createUser(sql, { group });
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 100_000_000 })})`;
  const key = await createKey(sql, { user_id: user.id, concurrency_limit: 2 });
  const channels = [];
  for (const [i, u] of upstreams.entries()) {
    channels.push(Number((await createChannel(sql, { base_url: u.url, models: [model], groups: [group], priority: 10 - i })).id));
  }
  return { model, userId: user.id, keyId: key.id, key: key.key, channels };
}
type Tenant = Awaited<ReturnType<typeof tenant>>;

const post = (gw: RunningGateway, t: Tenant, extra: Record<string, unknown> = {}, content = 'say something') =>
  fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: t.model, messages: [{ role: 'user', content }], ...extra }),
  });

/** The finished request row, once settlement wrote it (settlement runs every few ms). */
async function settledRow(id: string) {
  for (let i = 0; i < 200; i++) {
    const [row] = await db()`select * from private.requests where id = ${id}`;
    if (row) return row;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`request ${id} was not settled within 2 s`);
}

/** What the tenant still has held: open admissions, reserved money, requests in flight. */
async function held(t: Tenant) {
  const [row] = await db()`
    select (select count(*)::int from private.admissions where user_id = ${t.userId}) as admissions,
           (select reserved_micros::bigint from private.wallets where user_id = ${t.userId}) as wallet_reserved,
           (select inflight::int from private.key_counters where key_id = ${t.keyId}) as inflight`;
  return { admissions: row.admissions, wallet_reserved: Number(row.wallet_reserved), inflight: row.inflight };
}

const billed = async (id: string) =>
  Number((await db()`select coalesce(sum(amount_micros), 0)::bigint as a from private.ledger where request_id = ${id}`)[0].a);

describe('a throw after admission settles the admission at once', () => {
  let gw: RunningGateway;
  beforeAll(async () => {
    gw = await startGateway({}, join(__dirname, 'fixtures', 'throwing-entry.ts'));
  });
  afterAll(() => gw?.stop());

  for (const stage of ['cache', 'render', 'usage', 'pipe']) {
    it(`in stage "${stage}": a clear 5xx, nothing billed, nothing held`, async () => {
      const t = await tenant(`throw-${stage}`, [first]);
      const res = await post(gw, t, stage === 'pipe' ? { stream: true } : {});
      expect(res.status).toBeGreaterThanOrEqual(500);
      const body = await res.json();
      expect(body.error).toMatchObject({ type: expect.any(String), code: expect.any(String), message: expect.any(String) });
      const row = await settledRow(res.headers.get('x-request-id')!);
      expect(row).toMatchObject({ status: 'error', http_status: res.status, usage_source: 'none' });
      expect(await billed(row.id)).toBe(0);
      expect(await held(t)).toEqual({ admissions: 0, wallet_reserved: 0, inflight: 0 });
    });
  }

  it('in the channel snapshot (its query refused): 503 with Retry-After, nothing held', async () => {
    const t = await tenant('snapshot', [first]);
    await db()`revoke execute on function gateway.channel_credentials(bigint[]) from elygate_gateway`;
    let res: Response;
    try {
      res = await post(gw, t);
    } finally {
      await db()`grant execute on function gateway.channel_credentials(bigint[]) to elygate_gateway`;
    }
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect((await res.json()).error.code).toBe('channels_unavailable');
    const row = await settledRow(res.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'error', http_status: 503, error_code: 'channels_unavailable' });
    expect(await held(t)).toEqual({ admissions: 0, wallet_reserved: 0, inflight: 0 });
  });

  it('in the middle of a stream: an error event ends it, what was delivered is billed, nothing held', async () => {
    const t = await tenant('throw-midstream', [first]);
    const res = await post(gw, t, { stream: true }, 'mock:slow:20 one two three four five six');
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('"content":"echo:"');
    expect(text).toMatch(/injected failure in stage midstream[\s\S]*"code":"upstream_stream_error"/);
    expect(text).not.toContain('[DONE]');
    const row = await settledRow(res.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'error', error_code: 'upstream_stream_error', usage_source: 'estimated' });
    expect(row.completion_tokens).toBeGreaterThan(0);
    expect(await billed(row.id)).toBeGreaterThan(0);
    expect(await held(t)).toEqual({ admissions: 0, wallet_reserved: 0, inflight: 0 });
  });
});

describe('upstream answers are checked before the first byte', () => {
  let gw: RunningGateway;
  beforeAll(async () => {
    gw = await startGateway();
  });
  afterAll(() => gw?.stop());

  for (const what of ['html', 'empty'] as const) {
    it(`a 200 ${what === 'html' ? 'HTML page' : '`{}`'} fails over to the next channel, and is never billed`, async () => {
      const t = await tenant('checked', [first, second]);
      first.mode = { kind: 'junk', what };
      const res = await post(gw, t);
      expect(res.status).toBe(200);
      expect((await res.json()).choices[0].message.content).toBe('echo: say something');
      const row = await settledRow(res.headers.get('x-request-id')!);
      expect(row.attempts.map((a: any) => [a.channel_id, a.status, a.error ?? null])).toEqual([
        [t.channels[0], 200, expect.stringMatching(/not JSON|without the fields of a chat\/completions answer/)],
        [t.channels[1], 200, null],
      ]);
      expect(row.channel_id).toBe(String(t.channels[1]));
    });
  }

  it('with no channel left, a junk 200 is a 502 in OpenAI shape, billed nothing', async () => {
    const t = await tenant('checked', [first]);
    first.mode = { kind: 'junk', what: 'empty' };
    const res = await post(gw, t);
    expect(res.status).toBe(502);
    expect((await res.json()).error).toMatchObject({ type: 'upstream_error', code: 'upstream_failed' });
    const row = await settledRow(res.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'error', http_status: 502, usage_source: 'none' });
    expect(await billed(row.id)).toBe(0);
    expect(await held(t)).toEqual({ admissions: 0, wallet_reserved: 0, inflight: 0 });
  });

  it('a stream request answered with application/json fails over; alone it is a 502, never a 200 stream', async () => {
    const t = await tenant('checked', [first, second]);
    first.mode = { kind: 'junk', what: 'json-for-stream' };
    const ok = await post(gw, t, { stream: true });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('data: [DONE]');
    const row = await settledRow(ok.headers.get('x-request-id')!);
    expect(row.attempts[0]).toMatchObject({ channel_id: t.channels[0], status: 200, error: expect.stringContaining('application/json') });

    const alone = await tenant('checked', [first]);
    const res = await post(gw, alone, { stream: true });
    expect(res.status).toBe(502);
    expect(res.headers.get('content-type')).toContain('application/json');
    expect(await billed((await settledRow(res.headers.get('x-request-id')!)).id)).toBe(0);
  });

  it('a malformed event inside a stream ends it with an error event and bills what was delivered', async () => {
    const t = await tenant('checked', [first, second]);
    first.mode = { kind: 'junk', what: 'event' };
    // Paced, so the client has its first bytes before the malformed event arrives.
    const res = await post(gw, t, { stream: true }, 'mock:slow:20 one two three four');
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('"content":"echo:"');
    expect(text).not.toContain('<html>');
    expect(text).toMatch(/malformed stream event[\s\S]*"code":"upstream_stream_error"/);
    expect(text).not.toContain('[DONE]');
    expect(second.calls.length).toBe(0); // bytes had reached the client: no failover
    const row = await settledRow(res.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'error', error_code: 'upstream_stream_error', usage_source: 'estimated' });
    expect(await billed(row.id)).toBeGreaterThan(0);
    expect(await held(t)).toEqual({ admissions: 0, wallet_reserved: 0, inflight: 0 });
  });
});
