// The gateway's only database handle. Every query is a call to a gateway.* function.
import postgres from 'postgres';
import { config } from './config';

export const sql = postgres(config.databaseUrl, {
  max: config.dbPoolMax,
  prepare: true,
  onnotice: () => {},
  debug: () => {
    dbStats.queries++;
  },
  connection: {
    application_name: 'elygate-gateway',
    ...(config.databaseRole ? { role: config.databaseRole } : {}),
  },
  // Timestamps stay text: the request row's partition key must travel back to relay_finish with
  // its full microsecond precision, which a JS Date would truncate.
  types: {
    timestamptz: { to: 1184, from: [1184], serialize: (x: string) => x, parse: (x: string) => x },
  },
});

// Counts database round trips, so tests and the benchmark can prove the hot-path budget.
export const dbStats = { queries: 0 };
