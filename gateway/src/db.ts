// The gateway's only database handle. Every query is a call to a gateway.* function.
import postgres from 'postgres';
import { config } from './config';
import { PgSocket } from './pg-socket';

const options = {
  max: config.dbPoolMax,
  prepare: true,
  connect_timeout: config.dbConnectTimeout,
  // Only built-in types cross this connection; skipping the type lookup saves a round trip per
  // new pooled connection.
  fetch_types: false,
  onnotice: () => {},
  debug: (_conn: number, query: string) => {
    dbStats.queries++;
    const fn = FN.exec(query)?.[1] ?? 'other';
    dbStats.byFunction.set(fn, (dbStats.byFunction.get(fn) ?? 0) + 1);
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
};

// postgres() connects lazily: this instance only parses the URL unless it is the one kept.
const viaNodeNet = postgres(config.databaseUrl, options);
type Parsed = { ssl: unknown; path: unknown; host: string[]; port: number[] };
const parsed = viaNodeNet.options as unknown as Parsed;
/* why: postgres.js on Bun's native socket spends less CPU per query than on node:net's stream
   layer (see pg-socket.ts). Plain TCP to one host only; TLS, Unix sockets and multi-host URLs
   keep the node:net path. (`socket` is a documented postgres.js option its typings lack.) */
const viaBunSocket = { socket: (o: Parsed) => new PgSocket(o.host[0], o.port[0]) } as {};
export const sql = !parsed.ssl && !parsed.path && parsed.host.length === 1 ? postgres(config.databaseUrl, { ...options, ...viaBunSocket }) : viaNodeNet;

// Counts database round trips per gateway.* function, so tests and the benchmark can prove the
// hot-path budget (one relay_begin per request; relay_finish once per batch).
export const dbStats = { queries: 0, byFunction: new Map<string, number>() };
const FN = /gateway\.([a-z_]+)/;
