// Fallback maintenance runner (DESIGN §6): where pg_cron runs the jobs this does nothing after its
// first call; elsewhere it asks the database to run the jobs that are due, every
// ELYGATE_MAINTENANCE_INTERVAL_S seconds. The database decides what is due and takes an advisory
// lock, so any number of gateways run each job once.
import { sql } from './db';

const intervalS = Number(process.env.ELYGATE_MAINTENANCE_INTERVAL_S ?? 30);
let timer: ReturnType<typeof setInterval> | null = null;

async function runOnce(): Promise<string | null> {
  const [row] = await sql`select gateway.maintenance_run() as r`;
  return (row.r as { runner: string }).runner;
}

export async function startMaintenance(): Promise<void> {
  let runner: string | null = null;
  try {
    runner = await runOnce();
  } catch (err) {
    console.error(JSON.stringify({ level: 'warn', msg: 'maintenance check failed; will retry', error: String((err as Error).message) }));
  }
  if (runner === 'pg_cron') {
    console.log(JSON.stringify({ level: 'info', msg: 'maintenance jobs run in PostgreSQL (pg_cron)' }));
    return;
  }
  console.log(
    JSON.stringify({
      level: 'warn',
      msg: 'pg_cron is not installed in this database: the gateway runs the maintenance jobs itself (partitions, reaper, rollups, purges)',
      every_s: intervalS,
    }),
  );
  timer = setInterval(() => {
    runOnce().catch((err) => console.error(JSON.stringify({ level: 'warn', msg: 'maintenance run failed', error: String(err?.message ?? err) })));
  }, intervalS * 1000);
  timer.unref?.();
}

export function stopMaintenance(): void {
  if (timer) clearInterval(timer);
}
