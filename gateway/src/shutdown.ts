// Graceful shutdown (issue #8): on SIGTERM the gateway
//   1. reports not-ready (/readyz answers 503, see readinessGate) for ELYGATE_SHUTDOWN_DELAY_MS, so a
//      load balancer that polls readiness stops sending before the listener goes away (default 0:
//      with no such balancer, waiting only delays the stop);
//   2. stops accepting: the listening socket closes, new connections are refused, idle keep-alive
//      connections close, requests in flight (live streams) carry on;
//   3. waits up to ELYGATE_SHUTDOWN_DRAIN_MS (default 25 s) for them to finish;
//   4. cuts what remains: closing the connections fires each request's abort signal, and relay/
//      settles those streams as interrupted (status 'aborted', billed prompt + delivered);
//   5. flushes the settlement queue (outcomes that cannot reach the database go to the spool) and
//      closes the pool, then exits 0.
// A second SIGTERM (or SIGINT) during the drain skips to step 4.
//
// Kept free of imports from the rest of the gateway so index.ts can wire it with one call and tests
// can drive it with fakes for the server and the queue.

export interface ShutdownDeps {
  /** Stop the HTTP server; force = close connections that are still in flight. */
  stopServer: (force: boolean) => Promise<unknown>;
  /** Requests/streams still being answered, e.g. Bun's server.pendingRequests (for the log). */
  inFlight: () => number;
  /** Flush queued outcomes within ms (spooling what cannot be settled); true when all settled. */
  drainOutcomes: (ms: number) => Promise<boolean>;
  /** Close the database pool. */
  closeDb: () => Promise<unknown>;
  /** Anything else to stop first (maintenance timers, LISTEN). */
  beforeStop?: () => void;
  exit?: (code: number) => void;
  log?: (level: string, msg: string, extra?: Record<string, unknown>) => void;
}

export interface ShutdownTimings {
  delayMs: number;
  drainMs: number;
  flushMs: number;
  /** After cutting streams: time for their outcomes to be queued (default 1500 ms). */
  settleGraceMs?: number;
}

function envMs(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer (ms), got "${raw}"`);
  return n;
}

export const shutdownTimings = (): ShutdownTimings => ({
  delayMs: envMs('ELYGATE_SHUTDOWN_DELAY_MS', 0),
  drainMs: envMs('ELYGATE_SHUTDOWN_DRAIN_MS', 25000),
  flushMs: envMs('ELYGATE_SHUTDOWN_FLUSH_MS', 10000),
});

export const lifecycle = {
  draining: false,
  /** When the drain deadline passes (epoch ms), once draining. */
  deadline: 0 as number,
  interrupted: 0,
};

export const isDraining = () => lifecycle.draining;

/**
 * For /readyz: a 503 while draining, else null (go on with the normal readiness check).
 * app.ts: `.get('/readyz', async () => { const gate = readinessGate(); if (gate) return gate; ... })`
 */
export function readinessGate(): Response | null {
  if (!lifecycle.draining) return null;
  return new Response(
    JSON.stringify({ error: { message: 'Not ready: the gateway is shutting down.', type: 'service_unavailable', param: null, code: 'shutting_down' } }),
    { status: 503, headers: { 'content-type': 'application/json', 'retry-after': '1', connection: 'close' } },
  );
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/* why: the binary's admin panel is a child process. Signalled only from process.on('exit'), it
   was still answering for a moment after the gateway had exited 0; its stop now starts with the
   shutdown and is awaited before the exit. */
const companions: Array<() => Promise<unknown>> = [];
/** Something that must stop with the gateway (started when shutdown starts, awaited before exit). */
export function stopWithGateway(stop: () => Promise<unknown>): void {
  companions.push(stop);
}

/** Runs the shutdown sequence once; returns the exit code it used. */
export function createShutdown(deps: ShutdownDeps, timings: ShutdownTimings = shutdownTimings()) {
  const log = deps.log ?? ((level, msg, extra = {}) => console.error(JSON.stringify({ level, msg, ...extra })));
  const exit = deps.exit ?? ((code: number) => process.exit(code));
  let running: Promise<number> | null = null;
  let hurry: (() => void) | null = null;

  async function run(signal: string): Promise<number> {
    const t0 = Date.now();
    lifecycle.draining = true;
    lifecycle.deadline = t0 + timings.delayMs + timings.drainMs;
    log('info', 'shutting down: not ready, draining', { signal, in_flight: deps.inFlight(), drain_ms: timings.drainMs, delay_ms: timings.delayMs });
    deps.beforeStop?.();
    const companionsStopped = Promise.all(companions.map((stop) => stop().catch(() => {})));
    const hurried = new Promise<void>((r) => (hurry = r));
    if (timings.delayMs > 0) await Promise.race([sleep(timings.delayMs), hurried]);
    // Graceful stop: resolves when every connection has closed (all streams finished).
    const graceful = deps.stopServer(false).then(
      () => true,
      () => true,
    );
    const left = Math.max(0, lifecycle.deadline - Date.now());
    const finished = await Promise.race([graceful, sleep(left).then(() => false), hurried.then(() => false)]);
    if (!finished) {
      lifecycle.interrupted = deps.inFlight();
      log('warn', 'drain deadline passed: cutting the remaining streams, settled as interrupted', { in_flight: lifecycle.interrupted });
      await Promise.race([deps.stopServer(true).catch(() => {}), sleep(2000)]);
      // relay/stream.ts queues the interrupted outcomes from the requests' abort signals, after counting
      // the delivered text with the tokenizer (asynchronous, slowest on its first use): give
      // those a moment before the last flush, or they would be left to the reaper.
      await sleep(timings.settleGraceMs ?? 1500);
    }
    const settled = await deps.drainOutcomes(timings.flushMs);
    if (!settled) log('error', 'outcomes left unsettled at exit are in the spool; the next start replays them');
    await deps.closeDb().catch(() => {});
    await companionsStopped;
    log('info', 'shut down', { ms: Date.now() - t0, interrupted: lifecycle.interrupted });
    return 0;
  }

  return function shutdown(signal: string): Promise<number> {
    if (running) {
      hurry?.();
      return running;
    }
    running = run(signal).then(
      (code) => {
        exit(code);
        return code;
      },
      (err) => {
        log('error', 'shutdown failed', { error: String((err as Error)?.message ?? err) });
        exit(1);
        return 1;
      },
    );
    return running;
  };
}

/** Installs the handlers: `installShutdown({...})` in index.ts replaces its own shutdown(). */
export function installShutdown(deps: ShutdownDeps, timings?: ShutdownTimings) {
  const shutdown = createShutdown(deps, timings);
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  return shutdown;
}
