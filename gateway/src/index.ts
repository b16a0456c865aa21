// Gateway entry point: load snapshots, listen for changes, serve, and settle before exiting.
import { createApp } from './app';
import { config } from './config';
import { sql } from './db';
import { listenForChanges, loadOptions } from './snapshot';
import { drainOutcomes, replaySpool } from './settle';
import { startMaintenance, stopMaintenance } from './maintenance';

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

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  log('shutting down', { signal });
  stopMaintenance();
  await app.stop();
  const drained = await drainOutcomes(10000);
  if (!drained) console.error(JSON.stringify({ level: 'error', msg: 'outcomes left unsettled at exit; the reaper will settle them' }));
  await sql.end({ timeout: 5 });
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
