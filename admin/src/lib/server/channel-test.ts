// The channel "Test" button. The admin never calls an upstream itself (upstream keys are decrypted
// only in the gateway, DESIGN §7): it asks SQL for a key that lives five minutes and may use one
// model (admin.channel_test_key), calls the gateway's /v1/chat/completions with it, revokes it, and
// reads the request's row to show which channel answered, how fast, and what it said.
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

export async function testChannel(channelId: number, model: string): Promise<ChannelTestResult> {
  const gateway = env.GATEWAY_URL;
  if (!gateway) return { ok: false, requiresGateway: true, model, error: 'The admin server was started without GATEWAY_URL, so it cannot reach a gateway to test through.' };
  const db = sql();
  const [{ k }] = await db`select admin.channel_test_key(${channelId}, ${model}) as k`;
  const t0 = performance.now();
  try {
    let res: Response;
    try {
      res = await fetch(`${gateway.replace(/\/$/, '')}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16 }),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      return { ok: false, requiresGateway: true, model, error: `The gateway at ${gateway} did not answer: ${(err as Error).message}` };
    }
    const latencyMs = Math.round(performance.now() - t0);
    const requestId = res.headers.get('x-request-id');
    const body = (await res.json().catch(() => null)) as any;
    let servedBy: number | null = null;
    if (requestId) {
      for (let i = 0; i < 20; i++) {
        const [row] = await db`select channel_id, status from admin.requests where id = ${requestId}::uuid`;
        if (row && row.status !== 'pending') {
          servedBy = row.channel_id === null ? null : Number(row.channel_id);
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (!res.ok) return { ok: false, status: res.status, latencyMs, model, error: body?.error?.message ?? `HTTP ${res.status}`, servedBy, requestId };
    return { ok: true, status: res.status, latencyMs, model, answer: body?.choices?.[0]?.message?.content ?? JSON.stringify(body).slice(0, 300), servedBy, requestId };
  } finally {
    await db`select admin.key_revoke(${k.id})`;
  }
}
