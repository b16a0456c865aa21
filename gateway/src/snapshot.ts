// Read-only snapshots the gateway may cache (DESIGN §1): options (with the SSRF guard's rules) and
// channel credentials.
// Never balances or limits. Options reload on NOTIFY elygate_config; a channel's credentials are
// re-read whenever relay_begin's plan names a version this process has not seen.
import { sql } from './db';
import { config } from './config';
import { keyring, openSealedKey, type SealedKey } from './crypto';
import { setSsrfRules, type SsrfRules } from './ssrf';
import { GatewayError } from './errors';

export interface Options {
  MaxRequestBodyBytes: number;
  MaxUploadBytes: number;
  MaxJsonDepth: number;
  RelayTimeoutMs: number;
  UpstreamAttemptTimeoutMs: number;
  StreamIdleTimeoutMs: number;
  MaxAttempts: number;
  RetryableStatusCodes: number[];
  SettleBatchSize: number;
  SettleIntervalMs: number;
  DefaultMaxTokens: number;
  SemanticCacheEmbeddingTimeoutMs: number;
  [key: string]: unknown;
}

// The options as the database declares them (sql/20_options.sql, the one registry): nothing here
// until the first snapshot arrives, and no request body is read before it (optionsReady).
export let options = {} as Options;
let loaded = false;
let retryable = new Set<number>();
export const isRetryableStatus = (status: number) => retryable.has(status);

/** Resolves once the options are loaded (trying now if they are not); a 503 while the database cannot say. */
export async function optionsReady(): Promise<void> {
  if (loaded) return;
  try {
    await loadOptions();
  } catch (err) {
    throw new GatewayError(503, `The gateway has not read its settings from the database yet (${(err as Error).message}).`,
      'service_unavailable', 'database_unavailable', null, { 'retry-after': '2' });
  }
}

export async function loadOptions(): Promise<void> {
  const [row] = await sql`select gateway.options_snapshot() as o, gateway.ssrf_rules() as s`;
  options = { ...options, ...(row.o as Options) };
  setSsrfRules(row.s as SsrfRules);
  retryable = new Set(options.RetryableStatusCodes);
  loaded = true;
}

export interface Channel {
  id: number;
  version: number;
  name: string;
  type: 'openai' | 'azure' | 'anthropic' | 'gemini';
  baseUrl: string;
  config: Record<string, unknown>;
  keys: string[];
  /** Error that makes the channel unusable from this process (e.g. keys sealed with another master key). */
  unusable?: string;
}

const channels = new Map<number, Channel>();
const masterKeys = keyring(config.masterKey, config.masterKeyPrevious);

export interface PlanEntry {
  channel_id: number;
  version: number;
  model: string;
}

/** The plan's channels, refreshing (one query, only on change) any this process has stale. */
export async function channelsFor(plan: PlanEntry[]): Promise<Map<number, Channel>> {
  const stale = plan.filter((p) => channels.get(p.channel_id)?.version !== p.version).map((p) => p.channel_id);
  if (stale.length > 0) {
    // An array literal: with fetch_types off, postgres.js leaves array typing to the server.
    const rows = await sql`select * from gateway.channel_credentials(${`{${stale.join(',')}}`})`;
    for (const r of rows) {
      const ch: Channel = {
        id: Number(r.id),
        version: r.version,
        name: r.name,
        type: r.type,
        baseUrl: r.base_url,
        config: r.config ?? {},
        keys: [],
      };
      try {
        if ((r.keys as SealedKey[]).length > 0 && masterKeys.size === 0) {
          throw new Error(`channel "${ch.name}" has sealed keys but ELYGATE_MASTER_KEY is not set`);
        }
        ch.keys = (r.keys as SealedKey[]).map((k) => openSealedKey(masterKeys, k, ch.name));
      } catch (err) {
        ch.unusable = (err as Error).message;
        console.error(JSON.stringify({ level: 'error', msg: 'channel credentials unusable', channel: ch.id, error: ch.unusable }));
      }
      channels.set(ch.id, ch);
    }
  }
  return channels;
}

export async function listenForChanges(): Promise<void> {
  await sql.listen(
    'elygate_config',
    // Channels need no notice: relay_begin's plan carries each channel's version.
    (table) => {
      if (table === 'options') loadOptions().catch(() => {});
    },
    // After every (re)connect: options may have changed while we were not listening.
    () => {
      loadOptions().catch(() => {});
    },
  );
}
