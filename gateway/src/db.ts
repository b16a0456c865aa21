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
    // json and jsonb as postgres.js parses them, keeping the text each object came in (jsonTextOf).
    json: { to: 114, from: [114, 3802], serialize: (x: unknown) => JSON.stringify(x), parse: parseJson },
  },
};

/* why: an admission's price card travels back to relay_finish in every outcome (settle.ts), and
   it maps channel ids to multipliers ({"1": "1.000000"}): an object with an index-like key sends
   JSON.stringify off its fast path for the whole value (docs/performance.md, finding 53). Settlement sends
   the card as the text the database returned, kept here for every json(b) object the gateway
   reads. Only valid while the object is not changed: the request path never changes what the
   database returned. */
const jsonText = new WeakMap<object, string>();

function parseJson(text: string): unknown {
  const value = JSON.parse(text);
  if (value !== null && typeof value === 'object') jsonText.set(value, text);
  return value;
}

/** The JSON text a json(b) value read from the database came in, if this object is one. */
export const jsonTextOf = (value: object): string | undefined => jsonText.get(value);

// postgres() connects lazily: this instance only parses the URL unless it is the one kept.
const viaNodeNet = postgres(config.databaseUrl, options);
type Parsed = { ssl: unknown; path: unknown; host: string[]; port: number[] };
const parsed = viaNodeNet.options as unknown as Parsed;
/* why: postgres.js on Bun's native socket spends less CPU per query than on node:net's stream
   layer (see pg-socket.ts). Plain TCP to one host only; TLS, Unix sockets and multi-host URLs
   keep the node:net path. (`socket` is a documented postgres.js option its typings lack.) */
const viaBunSocket = { socket: (o: Parsed) => new PgSocket(o.host[0], o.port[0]) } as {};
const bunSocket = !parsed.ssl && !parsed.path && parsed.host.length === 1;
const pool = (max: number) => postgres(config.databaseUrl, { ...options, max, ...(bunSocket ? viaBunSocket : {}) });

export const sql = bunSocket ? pool(config.dbPoolMax) : viaNodeNet;

/* why: postgres.js hands each query to the connection idle the longest, so calls made one after
   another go round every open connection of the pool, and each lands on a backend whose caches
   went cold since its last turn. The hot path's callers (each admission lane, settlement) get a
   connection of their own instead: a one-connection pool, which reconnects by itself after the
   database restarts. Sequential relay_begin calls cost the backends about half as much through
   one connection as round a pool (docs/performance.md, finding 22). */
const dedicated = new Map<string, postgres.Sql>();
export function dedicatedConnection(name: string): postgres.Sql {
  let c = dedicated.get(name);
  if (!c) dedicated.set(name, (c = pool(1)));
  return c;
}

/** Closes the shared pool and every dedicated connection (shutdown). */
export async function closeAll(opts: { timeout?: number } = {}): Promise<void> {
  await Promise.all([sql.end(opts), ...[...dedicated.values()].map((c) => c.end(opts))]);
}

// Counts database round trips per gateway.* function, so tests and the benchmark can prove the
// hot-path budget (one relay_begin per request; relay_finish once per batch).
export const dbStats = { queries: 0, byFunction: new Map<string, number>() };
const FN = /gateway\.([a-z_]+)/;
