// The request path (DESIGN §2): one gateway.relay_begin call, then the upstream attempts in the
// order the database planned, streaming the answer through, then one queued outcome.
//
// Failover: an attempt that fails to connect, times out before its first byte, or answers with a
// status in RetryableStatusCodes (after the channel's status_code_mapping) moves on to the next
// candidate the plan names, within the RelayTimeoutMs deadline and MaxAttempts tries. Never after
// a byte reached the client, never on other 4xx answers, never on content-policy refusals. Each
// try is recorded in the outcome's attempts; the database folds them into the circuit breaker.
import { sql } from './db';
import { admit } from './admission';
import { GatewayError, isConcurrencyRefusal } from './errors';
import { channelsFor, isRetryableStatus, options, type Channel, type PlanEntry } from './snapshot';
import { queueOutcome, settleNowFor, type Attempt, type Outcome } from './settle';
import { newWatch, noteDelivered, openAiSseFilter, sseFormat, sseParser, type SseWatch } from './sse';
import { promptEstimate } from './usage';
import { usageFields } from './outcome';
import { costMicros, embeddingCostMicros, hitCostMicros, receiptHeaders, type PriceCard } from './receipt';
import { upstreamFetch } from './ssrf';
import { redactBytes } from './redact';
import { withKeepalive } from './keepalive';
import { cacheResults } from './metrics';
import { answerOf, cacheHeader, cacheRequest, cosine, embed, hitResponse, StreamAssembler, type CacheRequest, type CachedAnswer } from './cache';
import {
  chunkDecoder,
  decodeCompletion,
  isContentRefusal,
  prepareCall,
  upstreamErrorOf,
  type PreparedCall,
  type Protocol,
  type Wire,
} from './adapters';
import { anthropicError, chatToMessage, messagesEncoder } from './inbound/anthropic';
import { chatToResponse } from './inbound/responses';
import type { ChatChunk } from './adapters/types';

export type Endpoint = 'chat/completions' | 'completions' | 'embeddings' | 'messages' | 'responses';
export type { Protocol };

export interface RelayInput {
  requestId: string;
  /** The protocol the client speaks; decides the shape of answers and errors. */
  protocol: Protocol;
  endpoint: Endpoint;
  keyHash: Buffer | null;
  clientIp: string | null;
  /** The parsed body (an object) and its original bytes, sent on untouched when nothing changes. */
  body: Record<string, any>;
  raw: Uint8Array<ArrayBuffer>;
  /** Fires when the client goes away. */
  clientSignal: AbortSignal;
  /** The client's request headers (cache opt-out). */
  headers: Headers;
}

/** A plan entry as route_plan writes it: the key to use is chosen in SQL as well. */
type RouteEntry = PlanEntry & { key_index?: number; key_ordinal?: number };

/** One try, as stored in the request row's attempts (settle.ts's Attempt plus routing detail). */
type RouteAttempt = Attempt & { key?: number; skipped?: boolean; mapped_from?: number };

interface Ticket {
  request_id: string;
  created_at: string;
  user_id: string;
  key_id: string;
  group_name: string;
  reserved_micros: string;
  plan: RouteEntry[];
  price: PriceCard | null;
  cache: CachePlan | null;
}

/** relay_begin's cache result: an exact hit with its answer, or a miss with the semantic plan. */
interface CachePlan {
  result: 'exact' | 'miss';
  entry_id?: number;
  answer?: CachedAnswer;
  usage?: { prompt_tokens?: number; completion_tokens?: number; cached_tokens?: number; cache_write_tokens?: number };
  semantic?: { channel_id: number; version: number; model: string; dimensions: number } | null;
}

/** What the cache knows about a request by the time it is answered. */
interface CacheState {
  request: CacheRequest;
  result: 'miss' | 'exact' | 'semantic';
  similarity: number | null;
  embedding: number[] | null;
  embeddingTokens: number;
}

type ReadResult = Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>['read']>>;

const HOP_HEADERS = ['content-type', 'openai-processing-ms', 'openai-version', 'x-ratelimit-limit-requests', 'request-id', 'anthropic-organization-id'];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/* why: the bare proxy is the same process with the database switched off, so the benchmark can
   tell the database's cost from the proxy's (bench/). Never for production: nothing is checked. */
const bare = process.env.ELYGATE_BARE_PROXY === '1' ? process.env.ELYGATE_BARE_UPSTREAM ?? '' : null;
const bareChannel: Channel | null = bare
  ? { id: 0, version: 0, name: 'bare', type: 'openai', baseUrl: bare, config: {}, keys: ['bare'] }
  : null;

const errMessage = (controller: AbortController, err: unknown) =>
  controller.signal.aborted ? String(controller.signal.reason?.message ?? 'aborted') : String((err as Error)?.message ?? err);

/** The status the channel's config.status_code_mapping turns an upstream status into. */
function mapStatus(channel: Channel, status: number): number {
  const m = (channel.config as any)?.status_code_mapping;
  const to = m && typeof m === 'object' ? Number(m[String(status)]) : NaN;
  return Number.isInteger(to) && to >= 100 && to <= 599 ? to : status;
}

function pickKey(channel: Channel, entry: RouteEntry): { key: string; ordinal: number | undefined } {
  const n = channel.keys.length;
  const i = Number.isInteger(entry.key_index) ? ((entry.key_index as number) % n + n) % n : Math.floor(Math.random() * n);
  return { key: channel.keys[i], ordinal: entry.key_ordinal ?? undefined };
}

export async function relay(input: RelayInput): Promise<Response> {
  const started = performance.now();
  const { body, protocol } = input;
  const stream = input.endpoint !== 'embeddings' && body.stream === true;
  const maxTokens = Number.isInteger(body.max_completion_tokens)
    ? body.max_completion_tokens
    : Number.isInteger(body.max_tokens)
      ? body.max_tokens
      : Number.isInteger(body.max_output_tokens)
        ? body.max_output_tokens
        : null;

  // The cache key costs a canonical serialisation and two hashes of the body: skip it when the
  // cache is off altogether (SQL still decides per key and model when it is on).
  const cacheReq =
    protocol === 'openai' && input.endpoint === 'chat/completions' && options.SemanticCacheEnabled !== false
      ? cacheRequest(body, input.headers)
      : null;

  // The one round trip before the upstream.
  const keyRef = input.keyHash ? input.keyHash.toString('hex') : undefined;
  const admitThis = () =>
    admit<Ticket>({
      id: input.requestId,
      keyHash: input.keyHash,
      model: body.model,
      endpoint: input.endpoint,
      stream,
      clientIp: input.clientIp,
      promptTokens: promptEstimate(body),
      maxTokens,
      cache: cacheReq ? { exact: cacheReq.exact, context: cacheReq.context, semantic: cacheReq.semantic } : null,
    });
  let ticket: Ticket;
  if (bareChannel) {
    ticket = { request_id: input.requestId, created_at: '', plan: [{ channel_id: 0, version: 0, model: body.model }], price: null, cache: null } as unknown as Ticket;
  } else {
    try {
      ticket = await admitThis();
    } catch (err) {
      /* why: a key's concurrency_limit counts a request until it is settled, up to
         SettleIntervalMs after its answer. A client that waits for each answer before it sends
         the next would otherwise be refused in between. If this process still holds answered
         requests of the key, settle them now and ask once more. */
      if (!(keyRef && isConcurrencyRefusal(err) && (await settleNowFor(keyRef)))) throw err;
      ticket = await admitThis();
    }
  }

  const channels = bareChannel ? new Map([[0, bareChannel]]) : await channelsFor(ticket.plan);
  const attempts: RouteAttempt[] = [];
  const deadline = Date.now() + options.RelayTimeoutMs;
  const cache: CacheState | null =
    cacheReq && ticket.cache
      ? { request: cacheReq, result: ticket.cache.result, similarity: ticket.cache.result === 'exact' ? 1 : null, embedding: null, embeddingTokens: 0 }
      : null;
  const settle = (o: Partial<Outcome> & Pick<Outcome, 'status' | 'http_status'>) => {
    if (bareChannel) return;
    queueOutcome({
      id: ticket.request_id,
      created_at: ticket.created_at,
      channel_id: null,
      upstream_model: null,
      prompt_tokens: null,
      completion_tokens: null,
      usage_source: 'none',
      attempts,
      ttfb_ms: null,
      latency_ms: Math.round(performance.now() - started),
      error_code: null,
      error_message: null,
      embedding_tokens: cache?.embeddingTokens || null,
      ticket: { user_id: ticket.user_id, key_id: ticket.key_id, group_name: ticket.group_name, model: body.model, endpoint: input.endpoint, cache: cache?.result ?? null },
      ...o,
    }, keyRef);
  };
  // x-elygate-cache on every chat answer: miss | exact | semantic; similarity=… | off (opted out or disabled).
  if (cacheReq) cacheResults.inc({ result: ticket.cache ? ticket.cache.result : 'bypass' });
  const cacheHeaders = (): Record<string, string> =>
    protocol === 'openai' && input.endpoint === 'chat/completions' && !bareChannel
      ? { 'x-elygate-cache': cacheHeader(cache?.result ?? 'bypass', cache?.similarity) }
      : {};

  // The response cache: an exact hit from relay_begin, or a semantic hit after one embedding call
  // and one lookup. Any failure on this path is a miss, never an error.
  if (cache && ticket.cache) {
    let hit: { answer: CachedAnswer; usage: NonNullable<CachePlan['usage']>; entryId: number } | null = null;
    if (ticket.cache.result === 'exact' && ticket.cache.answer) {
      hit = { answer: ticket.cache.answer, usage: ticket.cache.usage ?? {}, entryId: ticket.cache.entry_id! };
    } else if (ticket.cache.semantic && cache.request.semantic) {
      try {
        const sem = ticket.cache.semantic;
        const embedChannel = (await channelsFor([{ channel_id: sem.channel_id, version: sem.version, model: sem.model }])).get(sem.channel_id);
        if (!embedChannel || embedChannel.unusable) throw new Error('embedding channel unusable');
        const e = await embed(embedChannel, sem.model, cache.request.prompt, options.SemanticCacheEmbeddingTimeoutMs);
        cache.embeddingTokens = e.tokens;
        if (e.vector.length === sem.dimensions) {
          cache.embedding = e.vector;
          const [row] = await sql`
            select gateway.cache_lookup(${ticket.request_id}, ${ticket.created_at}, ${Buffer.from(cache.request.context, 'hex')},
                                        ${'[' + e.vector.join(',') + ']'}) as r`;
          const r = row.r as any;
          if (r?.result === 'semantic') {
            cacheResults.inc({ result: 'semantic' });
            cache.result = 'semantic';
            cache.similarity = r.similarity;
            hit = { answer: r.answer, usage: r.usage ?? {}, entryId: r.entry_id };
            if (r.audit) auditLater(ticket, channels, body, r);
          }
        } else {
          console.error(JSON.stringify({ level: 'warn', msg: 'embedding size differs from SemanticCacheDimensions; semantic cache bypassed', got: e.vector.length, want: sem.dimensions }));
        }
      } catch (err) {
        console.error(JSON.stringify({ level: 'warn', msg: 'semantic cache bypassed', request_id: input.requestId, error: String((err as Error).message) }));
      }
    }
    if (hit) {
      const usage = hit.usage;
      settle({
        status: 'ok',
        http_status: 200,
        prompt_tokens: usage.prompt_tokens ?? 0,
        completion_tokens: usage.completion_tokens ?? 0,
        cached_tokens: usage.cached_tokens ?? null,
        cache_write_tokens: usage.cache_write_tokens ?? null,
        usage_source: 'upstream',
        ttfb_ms: Math.round(performance.now() - started),
      });
      const cost = hitCostMicros(ticket.price, { prompt_tokens: usage.prompt_tokens ?? 0, completion_tokens: usage.completion_tokens ?? 0, cached_tokens: usage.cached_tokens, cache_write_tokens: usage.cache_write_tokens }) + embeddingCostMicros(ticket.price, cache.embeddingTokens);
      return hitResponse({
        requestId: input.requestId,
        model: body.model,
        stream,
        includeUsage: body.stream_options?.include_usage === true,
        answer: hit.answer,
        usage,
        headers: { ...cacheHeaders(), ...(stream ? {} : receiptHeaders(input.requestId, cost, 'upstream')) },
      });
    }
  }
  /** What settlement should store in the cache for a complete answer of this request. */
  const cacheStore = (answer: CachedAnswer | null) =>
    cache && cache.result === 'miss' && answer
      ? { exact: cache.request.exact, context: cache.request.context, prompt: cache.request.prompt, embedding: cache.embedding ? '[' + cache.embedding.join(',') + ']' : null, answer }
      : null;

  let lastFailure: { status: number; body: Uint8Array<ArrayBuffer> | null; wire: Wire | null; message: string } | null = null;
  let tries = 0;

  for (const entry of ticket.plan) {
    if (tries >= options.MaxAttempts) break;
    if (input.clientSignal.aborted) break;
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    const channel = channels.get(entry.channel_id);
    if (!channel || channel.unusable || channel.keys.length === 0) {
      attempts.push({ channel_id: entry.channel_id, status: null, ms: 0, error: channel?.unusable ?? 'channel has no usable key', skipped: true });
      continue;
    }
    const { key, ordinal } = pickKey(channel, entry);
    const call = prepareCall(channel, key, {
      protocol,
      endpoint: input.endpoint,
      body,
      raw: input.raw,
      stream,
      upstreamModel: entry.model,
      defaultMaxTokens: options.DefaultMaxTokens,
    });
    if ('unsupported' in call) {
      attempts.push({ channel_id: channel.id, status: null, ms: 0, error: call.unsupported, skipped: true });
      continue;
    }
    if (call.wire === 'openai') call.headers['x-client-request-id'] = input.requestId;
    tries++;
    const t0 = performance.now();
    const controller = new AbortController();
    const onClientAbort = () => controller.abort(new Error('client disconnected'));
    input.clientSignal.addEventListener('abort', onClientAbort, { once: true });
    const firstByteTimer = setTimeout(
      () => controller.abort(new Error('upstream first byte timeout')),
      Math.min(options.UpstreamAttemptTimeoutMs, remaining),
    );
    const release = () => {
      clearTimeout(firstByteTimer);
      input.clientSignal.removeEventListener('abort', onClientAbort);
    };
    const record = (status: number | null, error?: string, rawStatus?: number) => {
      const a: RouteAttempt = { channel_id: channel.id, status, ms: Math.round(performance.now() - t0) };
      if (error) a.error = error;
      if (ordinal !== undefined) a.key = ordinal;
      if (rawStatus !== undefined && rawStatus !== status) a.mapped_from = rawStatus;
      attempts.push(a);
      return a.ms;
    };

    let res: Response;
    try {
      res = await upstreamFetch(call.url, { method: 'POST', headers: call.headers, body: call.body, signal: controller.signal }, options.AllowPrivateUpstreams === true);
    } catch (err) {
      release();
      const message = errMessage(controller, err);
      record(null, message);
      lastFailure = { status: 502, body: null, wire: null, message };
      continue;
    }

    const status = mapStatus(channel, res.status);
    if (status < 200 || status > 299) {
      // Some providers quote the key they were sent in their error: mask it before it is recorded or passed on.
      const errBody = redactBytes(new Uint8Array(await res.arrayBuffer().catch(() => new ArrayBuffer(0))), channel.keys) as Uint8Array<ArrayBuffer>;
      release();
      const refusal = isContentRefusal(errBody);
      record(status, refusal ? 'content refusal' : undefined, res.status);
      lastFailure = { status, body: errBody, wire: call.wire, message: `upstream returned ${status}: ${upstreamErrorOf(errBody).message}` };
      if (isRetryableStatus(status) && !refusal) continue;
      // A client error (400-class) or a refusal is the same on every channel: never retried, never billed.
      settle({
        status: 'error',
        http_status: status,
        channel_id: channel.id,
        upstream_model: entry.model,
        error_code: 'upstream_' + status,
        error_message: upstreamErrorOf(errBody).message,
      });
      return upstreamError(input, status, errBody, call, res.headers.get('content-type'));
    }

    if (!stream) {
      let payload: Uint8Array<ArrayBuffer>;
      try {
        payload = new Uint8Array(await res.arrayBuffer());
      } catch (err) {
        release();
        const message = errMessage(controller, err);
        record(res.status, message);
        lastFailure = { status: 502, body: null, wire: null, message };
        continue;
      }
      release();
      const ms = record(res.status);
      const answer = renderCompletion(input, call, payload);
      const usage = await usageFields(body, answer.usage, answer.text, true);
      settle({
        status: 'ok',
        http_status: res.status,
        channel_id: channel.id,
        upstream_model: entry.model,
        ...usage,
        ttfb_ms: ms,
        cache_store: cacheStore(answer.cacheable),
      });
      const headers = responseHeaders(input.requestId, res);
      if (!call.native) headers['content-type'] = 'application/json';
      const cost =
        usage.usage_source === 'none'
          ? 0
          : costMicros(ticket.price, channel.id, {
              prompt_tokens: usage.prompt_tokens ?? 0,
              completion_tokens: usage.completion_tokens ?? 0,
              cached_tokens: usage.cached_tokens ?? undefined,
              cache_write_tokens: usage.cache_write_tokens ?? undefined,
            }) + embeddingCostMicros(ticket.price, cache?.embeddingTokens ?? 0);
      Object.assign(headers, receiptHeaders(input.requestId, cost, usage.usage_source), cacheHeaders());
      return new Response(answer.bytes, { status: 200, headers });
    }

    // Streams: read until the client would get its first byte. Until then the attempt can still
    // fail over (an upstream that closes, breaks or reports an error before saying anything).
    const reader = res.body!.getReader();
    const text = new TextDecoder();
    const pipe = makePipe(input, call);
    const assembler = cache?.result === 'miss' ? new StreamAssembler() : null;
    if (assembler) pipe.watch.onChunk = (c) => assembler.add(c);
    let firstOut: Uint8Array | null = null;
    let upstreamDone = false;
    let failure: string | null = null;
    try {
      while (!firstOut) {
        const next: ReadResult = await reader.read();
        if (next.done) {
          upstreamDone = true;
          firstOut = pipe.push(text.decode(), true);
          break;
        }
        firstOut = pipe.push(text.decode(next.value, { stream: true }));
        if (!firstOut && pipe.error()) break;
      }
    } catch (err) {
      failure = errMessage(controller, err);
    }
    if (!firstOut && !failure) failure = pipe.error() ?? (upstreamDone ? 'upstream closed the stream before any data' : null);
    if (!firstOut && failure) {
      release();
      reader.cancel().catch(() => {});
      record(res.status, failure);
      lastFailure = { status: 502, body: null, wire: null, message: failure };
      continue;
    }
    release();
    const ttfb = record(res.status);
    return streamResponse(input, res, reader, text, firstOut!, upstreamDone, pipe, controller, {
      channel,
      upstreamModel: entry.model,
      ttfb,
      settle,
      assembler,
      cacheStore,
      headers: cacheHeaders(),
    });
  }

  // Every candidate failed (or the client left, or the deadline passed) before the first byte.
  const clientGone = input.clientSignal.aborted;
  const timedOut = Date.now() >= deadline;
  const status = clientGone ? 499 : lastFailure?.status ?? 503;
  const skippedAll = tries === 0 && attempts.length > 0;
  settle({
    status: clientGone ? 'aborted' : 'error',
    http_status: skippedAll ? 503 : status,
    error_code: clientGone ? 'client_closed' : timedOut ? 'upstream_timeout' : skippedAll ? 'no_available_channel' : 'upstream_failed',
    error_message: lastFailure?.message ?? (attempts.map((a) => a.error).filter(Boolean).join('; ') || null),
  });
  if (lastFailure?.body && lastFailure.body.byteLength > 0 && lastFailure.wire) {
    return upstreamError(input, lastFailure.status, lastFailure.body, { wire: lastFailure.wire, native: nativeWire(protocol) === lastFailure.wire } as PreparedCall, null);
  }
  if (timedOut) {
    throw new GatewayError(504, 'No upstream channel answered before the relay deadline.', 'upstream_error', 'upstream_timeout');
  }
  if (skippedAll) {
    throw new GatewayError(
      503,
      `No channel can serve this request: ${attempts.map((a) => `#${a.channel_id} ${a.error}`).join('; ')}.`,
      'service_unavailable',
      'no_available_channel',
      null,
      { 'retry-after': '1' },
    );
  }
  throw new GatewayError(
    attempts.length > 0 ? 502 : 503,
    attempts.length > 0
      ? `Every upstream channel failed: ${attempts.map((a) => `#${a.channel_id} ${a.status ?? a.error}`).join(', ')}.`
      : 'No upstream channel could be tried.',
    'upstream_error',
    'upstream_failed',
  );
}

/** The wire format a protocol's clients read natively. */
function nativeWire(protocol: Protocol): Wire | null {
  return protocol === 'anthropic' ? 'anthropic' : 'openai';
}

/** A plain record (not a Headers object): the Response builds its headers once from it. */
function responseHeaders(requestId: string, upstream: Response): Record<string, string> {
  const headers: Record<string, string> = { 'x-request-id': requestId };
  for (const h of HOP_HEADERS) {
    const v = upstream.headers.get(h);
    if (v) headers[h] = v;
  }
  headers['content-type'] ??= 'application/json';
  return headers;
}

/** An upstream error answer in the client's error shape (passed through when the shapes agree). */
function upstreamError(input: RelayInput, status: number, body: Uint8Array<ArrayBuffer>, call: Pick<PreparedCall, 'wire' | 'native'>, contentType: string | null): Response {
  const headers = { 'content-type': 'application/json', 'x-request-id': input.requestId };
  if (call.native && body.byteLength > 0) {
    return new Response(body, { status, headers: { ...headers, 'content-type': contentType ?? 'application/json' } });
  }
  const e = upstreamErrorOf(body);
  const payload =
    input.protocol === 'anthropic'
      ? anthropicError(status, e.message)
      : { error: { message: e.message, type: e.type ?? (status >= 500 ? 'upstream_error' : 'invalid_request_error'), param: null, code: e.code ?? `upstream_${status}` } };
  return new Response(JSON.stringify(payload), { status, headers });
}

interface Rendered {
  bytes: Uint8Array<ArrayBuffer>;
  /** The usage object the upstream reported (any provider's field names), or null. */
  usage: unknown;
  /** The answer's text (for a tokenizer count when no usage was reported). */
  text: string;
  /** The answer as the cache keeps it, when it is a complete single-choice chat answer. */
  cacheable: CachedAnswer | null;
}

/** Text of the answer in a chat completion, legacy completion or Responses object. */
function answerText(parsed: any): string {
  const parts: string[] = [];
  for (const c of parsed?.choices ?? []) {
    if (typeof c?.message?.content === 'string') parts.push(c.message.content);
    if (typeof c?.text === 'string') parts.push(c.text);
    for (const t of c?.message?.tool_calls ?? []) parts.push(t?.function?.arguments ?? '');
  }
  for (const b of parsed?.content ?? []) if (typeof b?.text === 'string') parts.push(b.text);
  if (typeof parsed?.output_text === 'string') parts.push(parsed.output_text);
  return parts.join('');
}

/** A non-stream answer in the client's protocol, and the usage it reports. */
function renderCompletion(input: RelayInput, call: PreparedCall, payload: Uint8Array<ArrayBuffer>): Rendered {
  const model = input.body.model;
  const chatAnswer = input.protocol === 'openai' && input.endpoint === 'chat/completions';
  if (call.native) {
    if (call.wire === 'anthropic') {
      const chat = decodeCompletion('anthropic', payload, model);
      return { bytes: payload, usage: chat.usage ?? null, text: answerText(chat), cacheable: null };
    }
    let parsed: any = null;
    try {
      parsed = JSON.parse(decoder.decode(payload));
    } catch {
      // a non-JSON 200 is passed on as it is; usage unknown
    }
    return { bytes: payload, usage: parsed?.usage ?? null, text: answerText(parsed), cacheable: chatAnswer ? answerOf(parsed) : null };
  }
  const chat = decodeCompletion(call.wire, payload, model);
  const out =
    input.protocol === 'anthropic' ? chatToMessage(chat, model) : input.protocol === 'responses' ? chatToResponse(chat, model, input.body) : chat;
  return { bytes: encoder.encode(JSON.stringify(out)), usage: chat.usage ?? null, text: answerText(chat), cacheable: chatAnswer ? answerOf(chat) : null };
}

/**
 * Turns upstream stream text into what the client receives, watching usage and completeness on
 * the way. Native pairs pass bytes through; other pairs go upstream events → chat chunks → client
 * events.
 */
interface Pipe {
  watch: SseWatch;
  push(text: string, final?: boolean): Uint8Array | null;
  complete(): boolean;
  error(): string | null;
  /** An in-band error for a stream that broke after its status line was sent. */
  errorEvent(reason: string): Uint8Array;
}

function watchChunk(watch: SseWatch, c: ChatChunk): void {
  if (c.usage) watch.usage = c.usage;
  for (const ch of c.choices ?? []) {
    const d = ch?.delta ?? {};
    if (typeof d.content === 'string') noteDelivered(watch, d.content);
    for (const t of d.tool_calls ?? []) noteDelivered(watch, t?.function?.arguments ?? '');
    if (ch?.finish_reason) watch.finishReason = ch.finish_reason;
  }
  watch.onChunk?.(c);
}

function openAiStreamError(reason: string): Uint8Array {
  const error = { message: `Upstream stream failed: ${reason}`, type: 'upstream_error', param: null, code: 'upstream_stream_error' };
  return encoder.encode(sseFormat({ error }));
}

function makePipe(input: RelayInput, call: PreparedCall): Pipe {
  const watch: SseWatch = newWatch();
  const model = input.body.model;
  const anthropicErrorEvent = (reason: string) => encoder.encode(sseFormat(anthropicError(502, `Upstream stream failed: ${reason}`), 'error'));

  if (call.native && call.wire === 'openai' && input.protocol !== 'responses') {
    const clientAskedUsage = input.body.stream_options?.include_usage === true;
    const filter = openAiSseFilter(!clientAskedUsage, watch);
    return {
      watch,
      push: (text, final) => filter(text, final),
      complete: () => watch.sawDone || watch.finishReason !== null,
      error: () => null,
      errorEvent: openAiStreamError,
    };
  }

  if (call.native) {
    // Bytes pass through untouched; a parser alongside reads usage and the end of the answer.
    const parse = sseParser();
    let done = false;
    let failure: string | null = null;
    const dec = call.wire === 'anthropic' ? chunkDecoder('anthropic', model) : null;
    return {
      watch,
      push(text, final) {
        for (const e of parse(text, final)) {
          if (dec) {
            for (const c of dec.event(e.event, e.data)) watchChunk(watch, c);
            done = dec.complete();
            failure = dec.error();
          } else {
            // Responses API events: the final one carries the usage.
            let data: any = null;
            try {
              data = JSON.parse(e.data);
            } catch {
              continue;
            }
            const type = data?.type ?? e.event;
            if (type === 'response.completed' || type === 'response.incomplete' || type === 'response.failed') {
              done = true;
              const u = data.response?.usage;
              if (u) watch.usage = { prompt_tokens: u.input_tokens, completion_tokens: u.output_tokens };
            } else if (type === 'error') {
              failure = String(data?.message ?? data?.error?.message ?? 'upstream error');
            }
          }
        }
        return text.length > 0 ? encoder.encode(text) : null;
      },
      complete: () => done,
      error: () => failure,
      errorEvent: call.wire === 'anthropic' ? anthropicErrorEvent : openAiStreamError,
    };
  }

  // Converted: upstream events → chat chunks → the client's events.
  const parse = sseParser();
  const dec = chunkDecoder(call.wire, model);
  if (input.protocol === 'anthropic') {
    const enc = messagesEncoder(model);
    let ended = false;
    return {
      watch,
      push(text, final) {
        let out = '';
        for (const e of parse(text, final)) {
          for (const c of dec.event(e.event, e.data)) {
            watchChunk(watch, c);
            out += enc.chunk(c);
          }
        }
        if (!ended && dec.complete() && (final || dec.terminated())) {
          ended = true;
          for (const c of dec.end()) {
            watchChunk(watch, c);
            out += enc.chunk(c);
          }
          out += enc.end();
        }
        return out ? encoder.encode(out) : null;
      },
      complete: () => dec.complete(),
      error: () => dec.error(),
      errorEvent: (reason) => encoder.encode(enc.error(`Upstream stream failed: ${reason}`)),
    };
  }
  // OpenAI chat out.
  const stripUsage = input.body.stream_options?.include_usage !== true;
  let ended = false;
  const emit = (c: ChatChunk): string => {
    watchChunk(watch, c);
    if (c.usage && stripUsage) {
      if ((c.choices ?? []).length === 0) return '';
      const { usage: _drop, ...rest } = c;
      return sseFormat(rest);
    }
    return sseFormat(c);
  };
  return {
    watch,
    push(text, final) {
      let out = '';
      for (const e of parse(text, final)) for (const c of dec.event(e.event, e.data)) out += emit(c);
      // The close waits for the end marker (OpenAI sends usage after the finish chunk), or for
      // the end of the upstream stream (Gemini has no end marker).
      if (!ended && dec.complete() && (final || dec.terminated())) {
        ended = true;
        for (const c of dec.end()) out += emit(c);
        out += 'data: [DONE]\n\n';
        watch.sawDone = true;
      }
      return out ? encoder.encode(out) : null;
    },
    complete: () => dec.complete(),
    error: () => dec.error(),
    errorEvent: openAiStreamError,
  };
}

interface StreamContext {
  channel: Channel;
  upstreamModel: string;
  ttfb: number;
  settle: (o: Partial<Outcome> & Pick<Outcome, 'status' | 'http_status'>) => void;
  /** Assembles the answer for the cache (null when the request is not cacheable). */
  assembler: StreamAssembler | null;
  cacheStore: (answer: CachedAnswer | null) => Record<string, unknown> | null;
  headers: Record<string, string>;
}

function streamResponse(
  input: RelayInput,
  upstream: Response,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  decoder: TextDecoder,
  first: Uint8Array,
  upstreamDone: boolean,
  pipe: Pipe,
  controller: AbortController,
  ctx: StreamContext,
): Response {
  const watch = pipe.watch;
  let settled = false;
  let idleTimer: ReturnType<typeof setTimeout> | null = null;

  /** Queues the outcome; resolves once it is queued (after a tokenizer count if one is needed). */
  const finish = async (status: Outcome['status'], error?: string): Promise<void> => {
    if (settled) return;
    settled = true;
    if (idleTimer) clearTimeout(idleTimer);
    const usage = await usageFields(input.body, watch.usage, watch.delivered.join(''), status === 'ok');
    ctx.settle({
      status,
      http_status: upstream.status,
      channel_id: ctx.channel.id,
      upstream_model: ctx.upstreamModel,
      ...usage,
      ttfb_ms: ctx.ttfb,
      error_code: error ? (status === 'aborted' ? 'client_closed' : 'upstream_stream_error') : null,
      error_message: error ?? null,
      cache_store: status === 'ok' ? ctx.cacheStore(ctx.assembler?.answer() ?? null) : null,
    });
  };
  const armIdle = () => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = setTimeout(() => controller.abort(new Error('upstream stream idle timeout')), options.StreamIdleTimeoutMs);
  };
  const closeOut = async (c: ReadableStreamDefaultController<Uint8Array>) => {
    const complete = pipe.complete() && !pipe.error();
    const reason = pipe.error() ?? 'upstream closed the stream early';
    // The outcome is queued before the client sees the end of the stream.
    await finish(complete ? 'ok' : 'error', complete ? undefined : reason);
    if (!complete) c.enqueue(pipe.errorEvent(reason));
    c.close();
  };

  const body = new ReadableStream<Uint8Array>({
    async start(c) {
      armIdle();
      c.enqueue(first);
      if (upstreamDone) await closeOut(c);
    },
    async pull(c) {
      if (settled) return;
      let next: ReadResult;
      try {
        next = await reader.read();
      } catch (err) {
        const reason = errMessage(controller, err);
        const clientGone = input.clientSignal.aborted;
        await finish(clientGone ? 'aborted' : 'error', reason);
        // Tell the client in-band: the HTTP status is long gone.
        if (!clientGone) {
          try {
            c.enqueue(pipe.errorEvent(reason));
            c.close();
          } catch {
            // the client is gone as well
          }
        }
        return;
      }
      if (next.done) {
        const tail = pipe.push(decoder.decode(), true);
        if (tail) c.enqueue(tail);
        await closeOut(c);
        return;
      }
      armIdle();
      const out = pipe.push(decoder.decode(next.value, { stream: true }));
      if (out) c.enqueue(out);
    },
    cancel() {
      // The client went away: stop the upstream and settle what was delivered.
      controller.abort(new Error('client disconnected'));
      reader.cancel().catch(() => {});
      finish('aborted', 'client disconnected');
    },
  });

  input.clientSignal.addEventListener(
    'abort',
    () => {
      controller.abort(new Error('client disconnected'));
      reader.cancel().catch(() => {});
      finish('aborted', 'client disconnected');
    },
    { once: true },
  );

  const headers = new Headers({
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-request-id': input.requestId,
    ...ctx.headers,
  });
  return new Response(withKeepalive(body), { status: 200, headers });
}

/**
 * The false-hit audit: after a semantic hit was served, ask the first candidate upstream the same
 * question, embed the fresh and the cached answers, and record how similar they are. Background
 * work at the operator's cost (not the tenant's); failures are recorded, never raised.
 */
function auditLater(ticket: Ticket, channels: Map<number, Channel>, body: Record<string, any>, hit: any): void {
  const sem = ticket.cache?.semantic;
  const entry = ticket.plan[0];
  const channel = entry ? channels.get(entry.channel_id) : undefined;
  const record = (agreement: number | null, error: string | null) =>
    sql`select gateway.cache_audit_record(${sql.json([{ request_id: ticket.request_id, entry_id: hit.entry_id, model: body.model, similarity: hit.similarity, threshold: hit.threshold, agreement, error }])})`.catch(() => {});
  void (async () => {
    try {
      if (!sem || !channel || channel.unusable) throw new Error('no channel to re-ask');
      const { key } = pickKey(channel, entry);
      const call = prepareCall(channel, key, { protocol: 'openai', endpoint: 'chat/completions', body: { ...body, stream: false }, raw: new Uint8Array(0) as Uint8Array<ArrayBuffer>, stream: false, upstreamModel: entry.model, defaultMaxTokens: options.DefaultMaxTokens });
      if ('unsupported' in call) throw new Error(call.unsupported);
      const res = await fetch(call.url, { method: 'POST', headers: call.headers, body: call.body, signal: AbortSignal.timeout(options.UpstreamAttemptTimeoutMs) });
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
