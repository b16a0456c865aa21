// The response cache on the request path: an exact hit relay_begin found, or a semantic hit after
// one embedding call and one lookup. Any failure here is a miss, never an error.
import { sql } from '../db';
import { options, channelsFor } from '../snapshot';
import { cacheResults } from '../metrics';
import { embeddingCostMicros, hitCostMicros, receiptHeaders } from '../receipt';
import { upstreamFetch } from '../ssrf';
import { cacheHeader, cosine, embed, hitResponse, type CachedAnswer } from '../cache';
import { decodeCompletion, prepareCall } from '../adapters';
import { answerText } from './render';
import { bareChannel } from './admit';
import { pickKey } from './attempts';
import type { Settlement } from './settlement';
import type { CacheState, CacheUsage, RelayInput, RequestFacts, Ticket } from './types';

interface Hit {
  answer: CachedAnswer;
  usage: CacheUsage;
  entryId: number;
}

/** The cache's view of this request, when relay_begin consulted the cache for it. */
export function cacheStateOf(facts: RequestFacts, ticket: Ticket): CacheState | null {
  if (!facts.cacheReq || !ticket.cache) return null;
  const result = ticket.cache.result;
  const reason = result === 'bypass' ? ticket.cache.reason ?? 'off' : null;
  return { request: facts.cacheReq, result, reason, similarity: result === 'exact' ? 1 : null, embedding: null, embeddingTokens: 0 };
}

/** x-elygate-cache on every chat answer: miss | exact | semantic; similarity=… | bypass; reason=…. */
export function cacheHeaders(run: { input: RelayInput; facts: RequestFacts; cache: CacheState | null }): Record<string, string> {
  const { input, facts, cache } = run;
  if (input.protocol !== 'openai' || input.endpoint !== 'chat/completions' || bareChannel) return {};
  return { 'x-elygate-cache': cacheHeader(cache?.result ?? 'bypass', cache?.similarity, cache?.reason ?? facts.cacheBypass) };
}

/** The answer from the cache, settled, or null to ask an upstream. */
export async function answerFromCache(
  input: RelayInput,
  facts: RequestFacts,
  ticket: Ticket,
  cache: CacheState | null,
  settlement: Settlement,
): Promise<Response | null> {
  if (facts.cacheReq) cacheResults.inc({ result: ticket.cache ? ticket.cache.result : 'bypass' });
  if (!cache || !ticket.cache || ticket.cache.result === 'bypass') return null;
  const hit =
    ticket.cache.result === 'exact' && ticket.cache.answer
      ? { answer: ticket.cache.answer, usage: ticket.cache.usage ?? {}, entryId: ticket.cache.entry_id! }
      : await semanticHit(input, ticket, cache);
  if (!hit) return null;
  const usage = hit.usage;
  settlement.settle({
    status: 'ok',
    http_status: 200,
    prompt_tokens: usage.prompt_tokens ?? 0,
    completion_tokens: usage.completion_tokens ?? 0,
    cached_tokens: usage.cached_tokens ?? null,
    cache_write_tokens: usage.cache_write_tokens ?? null,
    usage_source: 'upstream',
    ttfb_ms: Math.round(performance.now() - facts.started),
  });
  const billed = { prompt_tokens: usage.prompt_tokens ?? 0, completion_tokens: usage.completion_tokens ?? 0, cached_tokens: usage.cached_tokens, cache_write_tokens: usage.cache_write_tokens };
  const cost = hitCostMicros(ticket.price, billed) + embeddingCostMicros(ticket.price, cache.embeddingTokens);
  return hitResponse({
    requestId: input.requestId,
    model: input.body.model,
    stream: facts.stream,
    includeUsage: input.body.stream_options?.include_usage === true,
    answer: hit.answer,
    usage,
    // (the cached answer is the asked-for model's: a fallback's answer is never stored)
    headers: { ...cacheHeaders({ input, facts, cache }), 'x-elygate-model': input.body.model, ...(facts.stream ? {} : receiptHeaders(input.requestId, cost, 'upstream')) },
  });
}

/** Embeds the prompt and asks the database for a close enough answer; null on a miss or any failure. */
async function semanticHit(input: RelayInput, ticket: Ticket, cache: CacheState): Promise<Hit | null> {
  const sem = ticket.cache?.semantic;
  if (!sem || !cache.request.semantic) return null;
  try {
    const embedChannel = (await channelsFor([{ channel_id: sem.channel_id, version: sem.version, model: sem.model }])).get(sem.channel_id);
    if (!embedChannel || embedChannel.unusable) throw new Error('embedding channel unusable');
    const e = await embed(embedChannel, sem.model, cache.request.prompt, options.SemanticCacheEmbeddingTimeoutMs);
    cache.embeddingTokens = e.tokens;
    if (e.vector.length !== sem.dimensions) {
      console.error(JSON.stringify({ level: 'warn', msg: 'embedding size differs from SemanticCacheDimensions; semantic cache bypassed', got: e.vector.length, want: sem.dimensions }));
      return null;
    }
    cache.embedding = e.vector;
    const [row] = await sql`
      select gateway.cache_lookup(${ticket.request_id}, ${Buffer.from(cache.request.context, 'hex')},
                                  ${'[' + e.vector.join(',') + ']'}) as r`;
    const r = row.r as any;
    if (r?.result !== 'semantic') return null;
    cacheResults.inc({ result: 'semantic' });
    cache.result = 'semantic';
    cache.similarity = r.similarity;
    if (r.audit) auditLater(ticket, input.body, r);
    return { answer: r.answer, usage: r.usage ?? {}, entryId: r.entry_id };
  } catch (err) {
    console.error(JSON.stringify({ level: 'warn', msg: 'semantic cache bypassed', request_id: input.requestId, error: String((err as Error).message) }));
    return null;
  }
}

/**
 * The false-hit audit: after a semantic hit was served, ask the first candidate upstream the same
 * question, embed the fresh and the cached answers, and record how similar they are. Background
 * work at the operator's cost (not the tenant's); failures are recorded, never raised.
 */
function auditLater(ticket: Ticket, body: Record<string, any>, hit: any): void {
  const sem = ticket.cache?.semantic;
  const entry = ticket.plan[0];
  const record = (agreement: number | null, error: string | null) =>
    sql`select gateway.cache_audit_record(${sql.json([{ request_id: ticket.request_id, entry_id: hit.entry_id, model: body.model, similarity: hit.similarity, threshold: hit.threshold, agreement, error }])})`.catch(() => {});
  void (async () => {
    try {
      const channel = entry ? (await channelsFor([entry])).get(entry.channel_id) : undefined;
      if (!sem || !channel || channel.unusable) throw new Error('no channel to re-ask');
      const { key } = pickKey(channel, entry);
      const call = prepareCall(channel, key, { protocol: 'openai', endpoint: 'chat/completions', body: { ...body, stream: false }, raw: new Uint8Array(0) as Uint8Array<ArrayBuffer>, stream: false, upstreamModel: entry.model, defaultMaxTokens: options.DefaultMaxTokens });
      if ('unsupported' in call) throw new Error(call.unsupported);
      const init = { method: 'POST', headers: call.headers, body: call.body, signal: AbortSignal.timeout(options.UpstreamAttemptTimeoutMs) };
      const res = await upstreamFetch(call.url, init, options.AllowPrivateUpstreams === true);
      if (!res.ok) throw new Error(`upstream returned ${res.status}`);
      const fresh = answerText(decodeCompletion(call.wire, new Uint8Array(await res.arrayBuffer()), body.model));
      const embedChannel = (await channelsFor([{ channel_id: sem.channel_id, version: sem.version, model: sem.model }])).get(sem.channel_id)!;
      const cached = answerText({ choices: [{ message: hit.answer }] });
      const [a, b] = await Promise.all([embed(embedChannel, sem.model, fresh, 10000), embed(embedChannel, sem.model, cached, 10000)]);
      await record(cosine(a.vector, b.vector), null);
    } catch (err) {
      await record(null, String((err as Error).message));
    }
  })();
}
