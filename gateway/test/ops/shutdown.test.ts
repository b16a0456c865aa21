// gateway/src/shutdown.ts with fakes for the server and the queue: the order of the steps, the
// deadline, and a second signal. (The real process is driven by the fault suite, scenario 3.)
import { describe, expect, it } from 'vitest';
import { createShutdown, isDraining, lifecycle, readinessGate } from '../../src/shutdown';

function fakes(streamsEndAfterMs: number | null) {
  const steps: string[] = [];
  let release: () => void = () => {};
  const streamsDone = new Promise<void>((r) => (release = r));
  if (streamsEndAfterMs !== null) setTimeout(release, streamsEndAfterMs);
  const deps = {
    stopServer: async (force: boolean) => {
      steps.push(force ? 'cut' : 'stop-accepting');
      if (force) release();
      await streamsDone;
    },
    inFlight: () => 3,
    drainOutcomes: async () => {
      steps.push('flush');
      return true;
    },
    closeDb: async () => void steps.push('close-db'),
    beforeStop: () => steps.push('before-stop'),
    exit: (code: number) => steps.push(`exit ${code}`),
    log: () => {},
  };
  return { steps, deps };
}

describe('createShutdown', () => {
  it('streams that end inside the deadline are not cut; the queue is flushed after them; exit 0', async () => {
    lifecycle.draining = false;
    const { steps, deps } = fakes(100);
    expect(readinessGate()).toBeNull();
    const t0 = Date.now();
    const done = createShutdown(deps, { delayMs: 0, drainMs: 2000, flushMs: 100, settleGraceMs: 10 })('SIGTERM');
    expect(isDraining()).toBe(true);
    expect(readinessGate()!.status).toBe(503);
    expect(await done).toBe(0);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(steps).toEqual(['before-stop', 'stop-accepting', 'flush', 'close-db', 'exit 0']);
  });

  it('past the deadline the rest is cut, then flushed', async () => {
    const { steps, deps } = fakes(null);
    const t0 = Date.now();
    expect(await createShutdown(deps, { delayMs: 0, drainMs: 200, flushMs: 100, settleGraceMs: 10 })('SIGTERM')).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(200);
    expect(steps).toEqual(['before-stop', 'stop-accepting', 'cut', 'flush', 'close-db', 'exit 0']);
    expect(lifecycle.interrupted).toBe(3);
  });

  it('a second signal cuts at once instead of waiting out the deadline', async () => {
    const { steps, deps } = fakes(null);
    const shutdown = createShutdown(deps, { delayMs: 0, drainMs: 60_000, flushMs: 100, settleGraceMs: 10 });
    const first = shutdown('SIGTERM');
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    const second = shutdown('SIGINT');
    expect(await first).toBe(0);
    expect(await second).toBe(0);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(steps.filter((s) => s.startsWith('exit'))).toEqual(['exit 0']);
    expect(steps).toContain('cut');
  });
});
