// Process configuration, from the environment only. Tunables that operators change at run time
// live in private.options (see gateway/src/snapshot.ts), not here.

function int(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

const databaseUrl = process.env.GATEWAY_DATABASE_URL || process.env.DATABASE_URL;
if (!databaseUrl) {
  throw new Error('Set DATABASE_URL (or GATEWAY_DATABASE_URL). `npm start` does this for the embedded database.');
}

export const config = {
  port: int('PORT', 3000),
  host: process.env.HOST || '0.0.0.0',
  databaseUrl,
  // With only DATABASE_URL (an owner or superuser login), the gateway still acts as the
  // least-privileged role: it switches to elygate_gateway at connection start.
  databaseRole: process.env.GATEWAY_DATABASE_URL ? undefined : 'elygate_gateway',
  dbPoolMax: int('ELYGATE_DB_POOL_MAX', 10),
  masterKey: process.env.ELYGATE_MASTER_KEY || '',
  // Old master keys still accepted for opening sealed values during a master-key rotation
  // (comma-separated; never used to seal).
  masterKeyPrevious: process.env.ELYGATE_MASTER_KEY_PREVIOUS || '',
  // Take the client address from X-Forwarded-For (only behind a proxy you trust).
  trustProxy: process.env.ELYGATE_TRUST_PROXY === '1' || process.env.ELYGATE_TRUST_PROXY === 'true',
  production: process.env.NODE_ENV === 'production',
  // Seconds to wait for a database connection before refusing requests with 503.
  dbConnectTimeout: int('ELYGATE_DB_CONNECT_TIMEOUT_S', 5),
  // Where outcomes wait, fsynced, while the database is unreachable (replayed at next start too).
  spoolDir: process.env.ELYGATE_SPOOL_DIR || new URL('../../.elygate/spool', import.meta.url).pathname,
  // /metrics from anywhere but a direct loopback connection needs "Authorization: Bearer <this>";
  // unset, /metrics answers loopback only (it names channels and models).
  metricsToken: process.env.ELYGATE_METRICS_TOKEN || '',
  // Hard ceiling handed to Bun; the live limit is the MaxRequestBodyBytes option.
  bodyHardLimit: 268435456,
};
