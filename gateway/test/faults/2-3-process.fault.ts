// Fault scenarios 2 and 3: the gateway process dies (kill -9) or is asked to stop (SIGTERM) while
// streams are live.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { closeDb, db } from '../support/db';
import { startGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { figure, post, readStream, saveLogs, short, startEntry, tenant } from './support';

let upstream: MockUpstream;
beforeAll(async () => {
  upstream = await startMockUpstream();
});
afterAll(async () => {
  await upstream?.close();
  await closeDb();
});

const streams = short ? 6 : 24;

describe('2. kill -9 with live streams', () => {
  it('leaves the reservations open, and the reaper closes every one of them', async () => {
    const t = await tenant(upstream.url);
    const gw = await startGateway();
    const live = await Promise.all(
      Array.from({ length: streams }, () => post(gw.url, t.key, { model: t.model, stream: true, max_tokens: 500, messages: [{ role: 'user', content: 'long answer mock:slow:400' }] })),
    );
    for (const s of live) {
      expect(s.status).toBe(200);
      await s.body!.getReader().read(); // each stream has started
    }
    gw.proc.kill('SIGKILL');
    await new Promise((r) => gw.proc.once('exit', r));
    saveLogs('kill9', gw.output());
    const sql = db();
    const [before] = await sql`
      select (select count(*)::int from private.admissions where user_id = ${t.user.id}) as open,
             (select reserved_micros::bigint from private.wallets where user_id = ${t.user.id}) as reserved`;
    // The reaper (pg_cron every minute) settles requests older than ReservationTtlMinutes; run it
    // as it will run an hour later.
    const [{ n: reaped }] = await sql`select private.reservations_reap(now() + interval '61 minutes') as n`;
    const [after] = await sql`
      select (select count(*)::int from private.admissions where user_id = ${t.user.id}) as open,
             (select reserved_micros::bigint from private.wallets where user_id = ${t.user.id}) as reserved,
             (select count(*)::int from private.ledger where user_id = ${t.user.id} and usage_source = 'expired') as expired`;
    figure('kill -9 with live streams', { streams, open_before_reaper: before.open, reserved_before: before.reserved, reaped, open_reservations_after: after.open, reserved_after: after.reserved, expired_ledger_rows: after.expired });
    expect(before.open).toBe(streams);
    expect(Number(before.reserved)).toBeGreaterThan(0);
    expect(after.open).toBe(0);
    expect(Number(after.reserved)).toBe(0);
    expect(after.expired).toBe(streams);
  });
});

describe('3. SIGTERM with live streams', () => {
  async function liveStreams(url: string, key: string, model: string, n: number, slowMs: number) {
    const res = await Promise.all(
      Array.from({ length: n }, () => post(url, key, { model, stream: true, messages: [{ role: 'user', content: `drain me mock:slow:${slowMs}` }] })),
    );
    for (const r of res) expect(r.status).toBe(200);
    return res;
  }

  async function refused(url: string): Promise<boolean> {
    try {
      await fetch(`${url}/healthz`);
      return false;
    } catch {
      return true;
    }
  }

  it('gateway/src/shutdown.ts: not ready at once, new connections refused, streams finish within the deadline, the rest settled as interrupted, exit 0', async () => {
    const t = await tenant(upstream.url);
    const drainMs = 6000;
    const gw = await startEntry(join(__dirname, 'fixtures', 'drain-entry.ts'), { ELYGATE_SHUTDOWN_DRAIN_MS: String(drainMs), ELYGATE_SHUTDOWN_DELAY_MS: '400' });
    // Opened together: one stream of ~8 chunks at 1.5 s (12 s, past the deadline: it must be cut and
    // settled as interrupted) and the others at 400 ms (about 3 s, well inside it).
    const [tooLong, ...ok] = await Promise.all([
      liveStreams(gw.url, t.key, t.model, 1, 1500).then((r) => r[0]),
      ...Array.from({ length: streams }, () => liveStreams(gw.url, t.key, t.model, 1, 400).then((r) => r[0])),
    ]);
    const tooLongId = tooLong.headers.get('x-request-id')!;
    const reads = ok.map((r) => readStream(r).then((x) => ({ ...x, at: Date.now() })));
    const longRead = readStream(tooLong).catch(() => ({ text: '', done: false }));
    const exited = new Promise<number | null>((r) => gw.proc.once('exit', (code) => r(code)));
    const t0 = Date.now();
    gw.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 150));
    const ready = await fetch(`${gw.url}/readyz`).then((r) => r.status);
    await new Promise((r) => setTimeout(r, 500));
    const refusedAfterDelay = await refused(gw.url);
    const done = await Promise.all(reads);
    const code = await exited;
    const exitMs = Date.now() - t0;
    saveLogs('sigterm-shutdown', gw.output());
    const long = await longRead;
    const lastStreamMs = Math.max(...done.map((d) => d.at)) - t0;
    const [cut] = await db()`select status, error_code from private.requests where id = ${tooLongId}`;
    const [{ billed }] = await db()`select count(*)::int as billed from private.ledger where request_id = ${tooLongId}`;
    const [w] = await db()`select reserved_micros::bigint as reserved from private.wallets where user_id = ${t.user.id}`;
    const [{ open }] = await db()`select count(*)::int as open from private.admissions where user_id = ${t.user.id}`;
    figure('SIGTERM with live streams (shutdown.ts)', {
      streams,
      completed: done.filter((d) => d.done).length,
      last_stream_ms: lastStreamMs,
      drain_deadline_ms: drainMs,
      readyz_while_draining: ready,
      new_connections_refused: refusedAfterDelay,
      over_deadline_stream: `${cut?.status}/${cut?.error_code}`,
      over_deadline_ledger_rows: billed,
      open_reservations_after: open,
      reserved_after: w.reserved,
      exit_code: code,
      exit_ms: exitMs,
    });
    expect(ready).toBe(503);
    expect(refusedAfterDelay).toBe(true);
    expect(done.every((d) => d.done)).toBe(true);
    // The streams really were live at the SIGTERM: they finished during the drain, not before it.
    expect(lastStreamMs).toBeGreaterThan(500);
    expect(lastStreamMs).toBeLessThan(drainMs);
    expect(long.done).toBe(false);
    expect(cut.status).toBe('aborted');
    expect(open).toBe(0);
    expect(Number(w.reserved)).toBe(0);
    expect(code).toBe(0);
    expect(exitMs).toBeLessThan(drainMs + 5000);
  }, 60_000);

  it('gateway/src/index.ts (the real entry point): streams complete, new connections refused, exit 0', async () => {
    const t = await tenant(upstream.url);
    const gw = await startGateway();
    const live = await liveStreams(gw.url, t.key, t.model, streams, 250);
    const reads = live.map((r) => readStream(r));
    const exited = new Promise<number | null>((r) => gw.proc.once('exit', (code) => r(code)));
    const t0 = Date.now();
    gw.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    const refusedNow = await refused(gw.url);
    const done = await Promise.all(reads);
    const code = await exited;
    saveLogs('sigterm-index', gw.output());
    figure('SIGTERM with live streams (index.ts)', { streams, completed: done.filter((d) => d.done).length, new_connections_refused: refusedNow, exit_code: code, exit_ms: Date.now() - t0 });
    expect(refusedNow).toBe(true);
    expect(done.every((d) => d.done)).toBe(true);
    expect(code).toBe(0);
  }, 60_000);
});
