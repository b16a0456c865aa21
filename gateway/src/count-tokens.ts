// POST /v1/messages/count_tokens, Anthropic's token counting (Claude Code calls it to size its
// context). Exact through the first Anthropic channel the model's route plan names (that endpoint
// exists there); otherwise, or when no such channel answers, a tokenizer estimate. The header
// x-elygate-token-count says which: "exact; channel=<id>" or "estimate; tokenizer=o200k_base".
// Counting is free: the database checks the key and plans the route (gateway.count_tokens_plan),
// nothing is admitted, reserved, billed or logged.
import { sql } from './db';
import { channelsFor, options, type Channel, type PlanEntry } from './snapshot';
import { upstreamFetch } from './ssrf';
import { redactBytes } from './redact';
import { anthropicCountCall } from './adapters';
import { estimateMessagesTokens } from './usage';

export interface CountInput {
  requestId: string;
  keyHash: Buffer | null;
  clientIp: string | null;
  body: Record<string, any>;
  headers: Headers;
}

const json = (data: unknown, status: number, headers: Record<string, string>) =>
  new Response(typeof data === 'string' ? data : JSON.stringify(data), { status, headers: { 'content-type': 'application/json', ...headers } });

export async function countTokens(input: CountInput): Promise<Response> {
  const [{ plan }] = await sql`select gateway.count_tokens_plan(${input.keyHash}, ${input.clientIp}, ${input.body.model}) as plan`;
  const entries = (plan ?? []) as (PlanEntry & { key_index?: number })[];
  const channels = entries.length > 0 ? await channelsFor(entries) : new Map<number, Channel>();
  for (const entry of entries) {
    const channel = channels.get(entry.channel_id);
    if (!channel || channel.type !== 'anthropic' || channel.unusable || channel.keys.length === 0) continue;
    const exact = await countUpstream(input, channel, entry);
    if (exact) return exact;
  }
  const tokens = await estimateMessagesTokens(input.body);
  return json({ input_tokens: tokens }, 200, { 'x-request-id': input.requestId, 'x-elygate-token-count': 'estimate; tokenizer=o200k_base' });
}

/** The channel's count, or its refusal of the request (4xx); null when it failed (try another, or estimate). */
async function countUpstream(input: CountInput, channel: Channel, entry: PlanEntry & { key_index?: number }): Promise<Response | null> {
  const n = channel.keys.length;
  const key = channel.keys[Number.isInteger(entry.key_index) ? (((entry.key_index as number) % n) + n) % n : 0];
  const call = anthropicCountCall(channel, key, input.body, entry.model, input.headers);
  try {
    const res = await upstreamFetch(
      call.url,
      { method: 'POST', headers: call.headers, body: call.body, signal: AbortSignal.timeout(options.UpstreamAttemptTimeoutMs) },
      options.AllowPrivateUpstreams === true,
    );
    const payload = redactBytes(new Uint8Array(await res.arrayBuffer()), channel.keys);
    const headers = { 'x-request-id': input.requestId };
    if (res.status >= 400 && res.status < 500 && res.status !== 404 && res.status !== 429) return json(new TextDecoder().decode(payload), res.status, headers);
    if (res.status !== 200) return null;
    const counted = JSON.parse(new TextDecoder().decode(payload));
    if (!Number.isInteger(counted?.input_tokens)) return null;
    return json({ input_tokens: counted.input_tokens }, 200, { ...headers, 'x-elygate-token-count': `exact; channel=${channel.id}` });
  } catch {
    return null;
  }
}
