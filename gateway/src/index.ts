// Gateway entry point: load snapshots, listen for changes, serve, and settle before exiting.
import { createApp } from './app';
import { config } from './config';
import { closeAll, dbStats } from './db';
import { admissionStats } from './admission';
import { listenForChanges, loadOptions } from './snapshot';
import { drainOutcomes, pendingOutcomes, replaySpool, settleStats, spoolDepth } from './settle';
import { startMaintenance, stopMaintenance } from './maintenance';
import { stopWebhookWorker } from './webhooks';
import { installShutdown, isDraining } from './shutdown';
import { registerCollectors } from './metrics';

const log = (msg: string, extra: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ level: 'info', msg, ...extra }));

try {
  await loadOptions();
  await listenForChanges();
  // Outcomes a previous run spooled while the database was away.
  await replaySpool();
  await startMaintenance();
} catch (err) {
  // Serve anyway: /readyz says not ready, and requests get 503 until the database answers.
  console.error(JSON.stringify({ level: 'warn', msg: 'database not reachable at start; will retry on demand', error: String((err as Error).message) }));
}

const app = createApp().listen({ port: config.port, hostname: config.host });
log('gateway listening', { url: `http://${config.host}:${config.port}`, pool: config.dbPoolMax });

const inFlight = () => (app.server as { pendingRequests?: number } | null)?.pendingRequests ?? 0;
registerCollectors({
  dbQueries: () => [[{}, dbStats.queries], ...[...dbStats.byFunction].map(([fn, n]) => [{ function: fn }, n] as [{ function: string }, number])],
  admissions: () => admissionStats.requests,
  admissionCalls: () => [[{ kind: 'single' }, admissionStats.singleCalls], [{ kind: 'batch' }, admissionStats.batchCalls]],
  settleBatches: () => settleStats.batches,
  settledOutcomes: () => settleStats.settled,
  settleFailures: () => settleStats.failures,
  spooledBatches: () => settleStats.spooledBatches,
  settleQueueDepth: pendingOutcomes,
  spoolDepth,
  dbPoolMax: config.dbPoolMax,
  inFlight,
  draining: isDraining,
});

// SIGTERM/SIGINT: not ready, stop accepting, drain live streams (ELYGATE_SHUTDOWN_DRAIN_MS), settle
// what remains as interrupted, flush outcomes (or spool them), exit 0. See gateway/src/shutdown.ts.
installShutdown({
  stopServer: (force) => app.stop(force),
  inFlight,
  drainOutcomes,
  closeDb: () => closeAll({ timeout: 5 }),
  beforeStop: () => {
    stopMaintenance();
    stopWebhookWorker();
  },
});
