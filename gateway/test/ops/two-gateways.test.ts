// DESIGN §8: gateways are stateless. Two gateway processes on one database share the key's limits,
// the circuit breaker and every settings change, with no sticky sessions and nothing in memory that
// the instances must agree on (docs/scaling.md).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDb, createKey, db } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { post, tenant } from '../faults/support';

let upstream: MockUpstream;
let a: RunningGateway;
let b: RunningGateway;

beforeAll(async () => {
  upstream = await startMockUpstream();
  [a, b] = await Promise.all([startGateway(), startGateway()]);
});
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await upstream?.close();
  await closeDb();
});

const ask = (gw: RunningGateway, key: string, model: string, content = 'hello') => post(gw.url, key, { model, messages: [{ role: 'user', content }] });

describe('two gateways, one database', () => {
  it('share a key\'s rate limit: 6 requests per minute in total, whichever gateway they reach', async () => {
    const t = await tenant(upstream.url);
    const limited = await createKey(db(), { user_id: t.user.id, rpm_limit: 6 });
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await ask(i % 2 ? b : a, limited.key, t.model);
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    expect(statuses.slice(0, 6)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(statuses.slice(6)).toEqual([429, 429, 429, 429]);
  });

  it('share the wallet: reservations made through one gateway count against the other', async () => {
    // Enough for about one reservation of max_tokens 1000 at 600,000 µ$/1M output tokens (600 µ$).
    const t = await tenant(upstream.url, db(), 900);
    const slow = post(a.url, t.key, { model: t.model, stream: true, max_tokens: 1000, messages: [{ role: 'user', content: 'hold it mock:slow:300' }] });
    const first = await slow;
    expect(first.status).toBe(200);
    // While the first request holds its reservation on gateway A, gateway B must refuse.
    const second = await post(b.url, t.key, { model: t.model, max_tokens: 1000, messages: [{ role: 'user', content: 'x' }] });
    expect(second.status).toBe(429);
    expect((await second.json()).error.code).toBe('insufficient_quota');
    await first.text();
  });

  it('share the circuit breaker: failures seen by gateway A take the channel out of gateway B\'s plans', async () => {
    const t = await tenant(upstream.url);
    try {
      await breakerShared(t);
    } finally {
      // Re-enabling by hand closes the breaker: leave no open breaker behind for other files'
      // probe counts (private.probes_schedule counts every channel in the database).
      await db()`select admin.channel_update(${t.channel.id}, ${db().json({ status: 'enabled' })})`;
    }
  });

  async function breakerShared(t: Awaited<ReturnType<typeof tenant>>) {
    for (let i = 0; i < 12; i++) await (await ask(a, t.key, t.model, 'fail mock:status:500')).arrayBuffer();
    // Settlement folds the attempts into the breaker window (batched, a few ms).
    let state = '';
    for (let i = 0; i < 100 && state !== 'open'; i++) {
      [{ state }] = await db()`select breaker_state as state from admin.channel_health where id = ${t.channel.id}`;
      if (state !== 'open') await new Promise((r) => setTimeout(r, 50));
    }
    expect(state).toBe('open');
    const callsBefore = upstream.calls.length;
    const res = await ask(b, t.key, t.model, 'would succeed');
    expect(res.status).toBe(503);
    expect((await res.json()).error.code).toBe('no_available_channel');
    expect(upstream.calls.length).toBe(callsBefore); // gateway B never tried the open channel
  }

  it('share settings: one option change reaches both gateways within a second', async () => {
    const t = await tenant(upstream.url);
    const body = { model: t.model, messages: [{ role: 'user', content: 'x'.repeat(4000) }] };
    expect((await post(a.url, t.key, body)).status).toBe(200);
    await db()`select admin.option_set('MaxRequestBodyBytes', '2048')`;
    try {
      const t0 = Date.now();
      const seen = new Set<string>();
      while (seen.size < 2 && Date.now() - t0 < 1000) {
        for (const gw of [a, b]) if ((await post(gw.url, t.key, body)).status === 413) seen.add(gw.url);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect([...seen].sort()).toEqual([a.url, b.url].sort());
    } finally {
      await db()`select admin.option_set('MaxRequestBodyBytes', '16777216')`;
      await new Promise((r) => setTimeout(r, 200));
    }
  });
});
