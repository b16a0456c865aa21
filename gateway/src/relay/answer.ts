// A non-stream answer: read whole, checked to be its protocol's answer (else the attempt failed
// and the next channel is tried), rendered in the client's protocol, settled, then sent with its
// receipt headers.
import { usageFields } from '../outcome';
import { cardFor, costMicros, embeddingCostMicros, receiptHeaders } from '../receipt';
import { checkAnswer } from '../adapters';
import { cacheHeaders } from './cache-hit';
import { maxTokensHeaders, renderCompletion, responseHeaders } from './render';
import { readAnswer, servedModel, type Result, type Run, type Try } from './attempts';
import type { CachedAnswer } from '../cache';

export async function completeAnswer(run: Run, t: Try, res: Response): Promise<Result> {
  const { input, ticket, cache } = run;
  const payload = await readAnswer(t, res);
  if ('failure' in payload) return payload;
  const checked = checkAnswer(t.call.kind, payload);
  if ('problem' in checked) {
    t.record(res.status, checked.problem);
    return { failure: { status: 502, body: null, wire: null, message: checked.problem } };
  }
  const ms = t.record(res.status);
  const answer = renderCompletion(input, t.call, payload, checked.parsed);
  const usage = await usageFields(input.body, answer.usage, answer.text, true);
  run.settlement.settle({
    status: 'ok',
    http_status: res.status,
    channel_id: t.channel.id,
    upstream_model: t.entry.model,
    fallback: t.entry.fallback ?? null,
    ...usage,
    ttfb_ms: ms,
    // (A fallback's answer is not the asked-for model's: it is not kept for the cache.)
    cache_store: t.entry.fallback ? null : cacheStore(run, answer.cacheable),
  });
  const headers = responseHeaders(input.requestId, res);
  if (!t.call.native) headers['content-type'] = 'application/json';
  const billed = {
    prompt_tokens: usage.prompt_tokens ?? 0,
    completion_tokens: usage.completion_tokens ?? 0,
    cached_tokens: usage.cached_tokens ?? undefined,
    cache_write_tokens: usage.cache_write_tokens ?? undefined,
  };
  const cost = usage.usage_source === 'none' ? 0 : costMicros(cardFor(ticket.price, t.entry.fallback), t.channel.id, billed) + embeddingCostMicros(ticket.price, cache?.embeddingTokens ?? 0);
  Object.assign(headers, receiptHeaders(input.requestId, cost, usage.usage_source), cacheHeaders(run), maxTokensHeaders(ticket));
  headers['x-elygate-model'] = servedModel(run, t);
  return { response: new Response(answer.bytes, { status: 200, headers }) };
}

/** What settlement should store in the cache for a complete answer of this request. */
export function cacheStore(run: Run, answer: CachedAnswer | null): Record<string, unknown> | null {
  const cache = run.cache;
  if (!cache || cache.result !== 'miss' || !answer) return null;
  const embedding = cache.embedding ? '[' + cache.embedding.join(',') + ']' : null;
  return { exact: cache.request.exact, context: cache.request.context, prompt: cache.request.prompt, embedding, answer };
}
