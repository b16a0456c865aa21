// Executes channel probes (breaker recovery probes and operator channel tests). The database
// decides which probes are due (private.probes_schedule, by pg_cron) and wakes gateways with
// NOTIFY elygate_probe; a gateway claims a few (FOR UPDATE SKIP LOCKED, so each runs once across
// instances), sends a one-token chat completion through the channel's adapter, and reports the
// results in one gateway.probe_finish call. Off the request path entirely.
import { hostname } from 'node:os';
import { sql } from '../db';
import { channelsFor, options } from '../snapshot';
import { upstreamFetch } from '../ssrf';
import { setBreakerStates } from '../metrics';
import { prepareCall } from './index';
import { drainer } from '../drain';

interface ClaimedProbe {
  id: string;
  channel_id: string;
  version: number;
  kind: string;
  model: string;
  upstream_model: string;
  key_index: number | null;
  key_ordinal: number | null;
  timeout_ms: number;
}

const instance = `${hostname()}:${process.pid}`;
let started = false;

async function runProbe(p: ClaimedProbe) {
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const channels = await channelsFor([{ channel_id: Number(p.channel_id), version: p.version, model: p.upstream_model }]);
  const channel = channels.get(Number(p.channel_id));
  if (!channel || channel.unusable || channel.keys.length === 0 || p.key_index === null) {
    return { id: p.id, ok: false, http_status: null, ms: 0, error: channel?.unusable ?? 'channel has no enabled key' };
  }
  const body = { model: p.model, messages: [{ role: 'user', content: 'ping' }], max_tokens: 1 };
  const raw = new TextEncoder().encode(JSON.stringify(body)) as Uint8Array<ArrayBuffer>;
  const call = prepareCall(channel, channel.keys[p.key_index % channel.keys.length], {
    protocol: 'openai',
    endpoint: 'chat/completions',
    body,
    raw,
    stream: false,
    upstreamModel: p.upstream_model,
    defaultMaxTokens: 1,
  });
  if ('unsupported' in call) return { id: p.id, ok: false, http_status: null, ms: 0, error: call.unsupported };
  try {
    const init = { method: 'POST', headers: call.headers, body: call.body, signal: AbortSignal.timeout(p.timeout_ms) };
    const res = await upstreamFetch(call.url, init, options.AllowPrivateUpstreams === true);
    const text = await res.text();
    return { id: p.id, ok: res.ok, http_status: res.status, ms: ms(), error: res.ok ? null : text.slice(0, 500) };
  } catch (err) {
    return { id: p.id, ok: false, http_status: null, ms: ms(), error: String((err as Error)?.message ?? err) };
  }
}

/** Claims and runs every queued probe; concurrent wake-ups fold into one more round. */
export const runDueProbes = drainer<ClaimedProbe, Awaited<ReturnType<typeof runProbe>>>({
  claim: async () => (await sql`select * from gateway.probe_claim(${instance}, 20)`) as unknown as ClaimedProbe[],
  run: runProbe,
  finish: async (_claimed, results) => {
    await sql`select gateway.probe_finish(${sql.json(results as never)})`;
    void refreshBreakerStates(); // a probe moves a breaker: show it now, not in 30 s
  },
  what: 'channel probes',
});

/** The breaker states /metrics shows, from the database (the next call retries a failure; the
 *  last states stay until then). */
async function refreshBreakerStates(): Promise<void> {
  try {
    const [row] = await sql`select gateway.breaker_states() as states`;
    setBreakerStates(row.states ?? {});
  } catch {
    // kept as they were
  }
}

/** Schedules due probes where pg_cron does not; refreshes the breaker states. */
async function probesTick(): Promise<void> {
  await sql`select gateway.probes_tick() as n`.catch(() => {});
  await refreshBreakerStates();
}

/**
 * Listens for probe wake-ups, and every 30 s asks the database to schedule due probes itself when
 * pg_cron does not (gateway.probes_tick is a no-op where pg_cron runs the schedule).
 */
export function startProbeWorker(): void {
  if (started) return;
  started = true;
  sql
    .listen('elygate_probe', () => void runDueProbes(), () => void runDueProbes())
    .catch((err) => console.error(JSON.stringify({ level: 'warn', msg: 'cannot listen for channel probes', error: String(err?.message ?? err) })));
  void refreshBreakerStates();
  const tick = setInterval(() => void probesTick(), 30000);
  tick.unref?.();
}
