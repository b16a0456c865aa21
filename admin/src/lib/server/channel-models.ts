// The channel "Import models" button. The admin never calls an upstream itself (upstream keys are
// decrypted only in the gateway, DESIGN §7): as the Test button does, it asks SQL for a key of the
// channel's internal test user (admin.channel_test_key, with no model: that key may call no model)
// and sends it to the gateway's GET /internal/channels/<id>/upstream-models, which reads the
// upstream's own model listing through its SSRF guard. The key is revoked right after.
import { env } from '$env/dynamic/private';
import { sql } from './db';

export interface UpstreamModels {
  ok: boolean;
  /** The upstream's list, sorted; empty on failure. */
  models: string[];
  truncated?: boolean;
  error?: string;
  code?: string;
}

/** The channel's model list from its upstream, through the gateway. `key` is from admin.channel_test_key(id, null). */
export async function upstreamModels(channelId: number, key: { id: number; key: string }): Promise<UpstreamModels> {
  const gateway = env.GATEWAY_URL;
  try {
    if (!gateway) return { ok: false, models: [], error: 'The admin server was started without GATEWAY_URL, so it cannot ask a gateway for the upstream\'s models.' };
    let res: Response;
    try {
      res = await fetch(`${gateway.replace(/\/$/, '')}/internal/channels/${channelId}/upstream-models`, {
        headers: { authorization: `Bearer ${key.key}` },
        signal: AbortSignal.timeout(120_000),
      });
    } catch (err) {
      return { ok: false, models: [], error: `The gateway at ${gateway} did not answer: ${(err as Error).message}` };
    }
    const body = (await res.json().catch(() => null)) as any;
    if (!res.ok) {
      return { ok: false, models: [], code: body?.error?.code, error: body?.error?.message ?? `The gateway answered HTTP ${res.status}.` };
    }
    return { ok: true, models: (body?.data ?? []).map((m: { id: string }) => m.id), truncated: body?.truncated === true };
  } finally {
    await sql()`select admin.key_revoke(${key.id})`;
  }
}
