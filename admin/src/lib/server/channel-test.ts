// The channel "Test" button. The admin never calls an upstream itself (upstream keys are decrypted
// only in the gateway, DESIGN §7): it asks SQL for a key that lives five minutes, may use one model
// and is routed to this channel only (admin.channel_test_key), calls the gateway's
// /v1/chat/completions with it, revokes it, and reads the request's routing trace to say which
// channel answered, how fast, and what failed.
import { env } from '$env/dynamic/private';
import { sql } from './db';

export interface ChannelTestResult {
  ok: boolean;
  requiresGateway?: boolean;
  status?: number;
  latencyMs?: number;
  answer?: string;
  error?: string;
  servedBy?: number | null;
  requestId?: string | null;
  model: string;
}

interface Trace {
  servedBy: number | null;
  /** This channel's last attempt: upstream status and error, as the gateway recorded them. */
  attempt: { status: number | null; detail: string | null } | null;
  /** Why this channel was not called, if it was not (e.g. no_enabled_key). */
  skipped: string | null;
}

/** Waits for the request to settle, then reads its routing trace (admin.request_routes). */
async function readTrace(requestId: string, channelId: number): Promise<Trace> {
  const db = sql();
  for (let i = 0; i < 30; i++) {
    const [row] = await db`select channel_id, status from admin.requests where id = ${requestId}::uuid`;
    if (row && row.status !== 'pending') {
      const steps = await db`select kind, status, detail from admin.request_routes
                              where request_id = ${requestId}::uuid and channel_id = ${channelId} order by step`;
      const attempts = steps.filter((s) => s.kind === 'attempt');
      const last = attempts[attempts.length - 1];
      return {
        servedBy: row.channel_id === null ? null : Number(row.channel_id),
        attempt: last ? { status: last.status ?? null, detail: last.detail || null } : null,
        // Left out by the plan (skipped) or by the gateway (passed_over: e.g. no usable key here).
        skipped: steps.find((s) => s.kind === 'skipped' || s.kind === 'passed_over')?.detail || null,
      };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { servedBy: null, attempt: null, skipped: null };
}

/** One sentence that says what failed, from the trace first (it names the upstream's answer). */
function failure(channelId: number, httpStatus: number, body: any, t: Trace): string {
  if (t.skipped) return `Channel #${channelId} was not tried: ${t.skipped}.`;
  if (t.attempt) {
    const what = t.attempt.status ? `answered HTTP ${t.attempt.status}` : 'could not be reached';
    const said = t.attempt.detail ?? body?.error?.message ?? null;
    return `Channel #${channelId} ${what}${said ? `: ${said}` : '.'}`;
  }
  const msg = body?.error?.message ?? `HTTP ${httpStatus}`;
  return `The gateway refused the test before calling channel #${channelId} (HTTP ${httpStatus}): ${msg}`;
}

export async function testChannel(channelId: number, model: string): Promise<ChannelTestResult> {
  const gateway = env.GATEWAY_URL;
  if (!gateway) return { ok: false, requiresGateway: true, model, error: 'The admin server was started without GATEWAY_URL, so it cannot reach a gateway to test through.' };
  const db = sql();
  // Said here, not left to the gateway: its refusal would speak of the model, not of this channel.
  const [ch] = await db`select key_count from admin.channels where id = ${channelId}`;
  if (ch && Number(ch.key_count) === 0) {
    return { ok: false, model, error: `Channel #${channelId} has no enabled upstream key, so nothing can call it. Add a key on the channel's page.` };
  }
  const [{ k }] = await db`select admin.channel_test_key(${channelId}, ${model}) as k`;
  const t0 = performance.now();
  try {
    let res: Response;
    try {
      res = await fetch(`${gateway.replace(/\/$/, '')}/v1/chat/completions`, {
        method: 'POST',
        // No cache: a cached answer would say nothing about whether the channel works now.
        headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json', 'x-elygate-cache': 'off', 'cache-control': 'no-store' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16 }),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      return { ok: false, requiresGateway: true, model, error: `The gateway at ${gateway} did not answer: ${(err as Error).message}` };
    }
    const latencyMs = Math.round(performance.now() - t0);
    const requestId = res.headers.get('x-request-id');
    const body = (await res.json().catch(() => null)) as any;
    const trace: Trace = requestId ? await readTrace(requestId, channelId) : { servedBy: null, attempt: null, skipped: null };
    const base = { status: res.status, latencyMs, model, servedBy: trace.servedBy, requestId };
    if (!res.ok) return { ...base, ok: false, error: failure(channelId, res.status, body, trace) };
    // Green only for an answer from this very channel, fresh from its upstream.
    const hit = res.headers.get('x-elygate-cache') ?? '';
    if (/^(exact|semantic)/.test(hit)) return { ...base, ok: false, error: `The answer came from the response cache (${hit}), not from channel #${channelId}.` };
    if (trace.servedBy !== channelId) {
      return { ...base, ok: false, error: `Channel #${trace.servedBy ?? '?'} answered, not channel #${channelId}; this test says nothing about channel #${channelId}.` };
    }
    return { ...base, ok: true, answer: body?.choices?.[0]?.message?.content ?? JSON.stringify(body).slice(0, 300) };
  } finally {
    await db`select admin.key_revoke(${k.id})`;
  }
}
