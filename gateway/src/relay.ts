// The request path (DESIGN §2): one gateway.relay_begin call, then the upstream attempts in the
// order the database planned, streaming the answer through, then one queued outcome.
//
// Failover: an attempt that fails to connect, times out before its first byte, or answers with a
// status in RetryableStatusCodes (after the channel's status_code_mapping) moves on to the next
// candidate the plan names, within the RelayTimeoutMs deadline and MaxAttempts tries. Never after
// a byte reached the client, never on other 4xx answers, never on content-policy refusals. Each
// try is recorded in the outcome's attempts; the database folds them into the circuit breaker.
import { sql } from './db';
import { GatewayError } from './errors';
import { channelsFor, isRetryableStatus, options, type Channel, type PlanEntry } from './snapshot';
import { queueOutcome, type Attempt, type Outcome } from './settle';
import { openAiSseFilter, sseFormat, sseParser, type SseWatch } from './sse';
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
}

type ReadResult = Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>['read']>>;

const HOP_HEADERS = ['content-type', 'openai-processing-ms', 'openai-version', 'x-ratelimit-limit-requests', 'request-id', 'anthropic-organization-id'];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Cheap prompt-size estimate for the request row until the billing work brings a tokenizer. */
function promptEstimate(raw: Uint8Array): number {
  return Math.ceil(raw.byteLength / 4);
}

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

  // The one round trip before the upstream.
  const [ticket] = (await sql`
    select * from gateway.relay_begin(${input.requestId}, ${input.keyHash}, ${body.model}, ${input.endpoint},
                                      ${stream}, ${input.clientIp}, ${promptEstimate(input.raw)}, ${maxTokens})
  `) as unknown as Ticket[];

  const channels = await channelsFor(ticket.plan);
  const attempts: RouteAttempt[] = [];
  const deadline = Date.now() + options.RelayTimeoutMs;
  const settle = (o: Partial<Outcome> & Pick<Outcome, 'status' | 'http_status'>) =>
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
      ...o,
    });

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
      res = await fetch(call.url, { method: 'POST', headers: call.headers, body: call.body, signal: controller.signal });
    } catch (err) {
      release();
      const message = errMessage(controller, err);
      record(null, message);
      lastFailure = { status: 502, body: null, wire: null, message };
      continue;
    }

    const status = mapStatus(channel, res.status);
    if (status < 200 || status > 299) {
      const errBody = new Uint8Array(await res.arrayBuffer().catch(() => new ArrayBuffer(0)));
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
      settle({
        status: 'ok',
        http_status: res.status,
        channel_id: channel.id,
        upstream_model: entry.model,
        prompt_tokens: answer.usage?.prompt_tokens ?? null,
        completion_tokens: answer.usage?.completion_tokens ?? (answer.usage ? 0 : null),
        usage_source: answer.usage ? 'upstream' : 'none',
        ttfb_ms: ms,
      });
      const headers = responseHeaders(input.requestId, res);
      if (!call.native) headers.set('content-type', 'application/json');
      return new Response(answer.bytes, { status: 200, headers });
    }

    // Streams: read until the client would get its first byte. Until then the attempt can still
    // fail over (an upstream that closes, breaks or reports an error before saying anything).
    const reader = res.body!.getReader();
    const text = new TextDecoder();
    const pipe = makePipe(input, call);
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

function responseHeaders(requestId: string, upstream: Response): Headers {
  const headers = new Headers({ 'x-request-id': requestId });
  for (const h of HOP_HEADERS) {
    const v = upstream.headers.get(h);
    if (v) headers.set(h, v);
  }
  if (!headers.has('content-type')) headers.set('content-type', 'application/json');
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

/** A non-stream answer in the client's protocol, and the usage it reports. */
function renderCompletion(input: RelayInput, call: PreparedCall, payload: Uint8Array<ArrayBuffer>): { bytes: Uint8Array<ArrayBuffer>; usage: { prompt_tokens?: number; completion_tokens?: number } | null } {
  const model = input.body.model;
  if (call.native) {
    if (call.wire === 'anthropic') {
      const usage = decodeCompletion('anthropic', payload, model).usage ?? null;
      return { bytes: payload, usage };
    }
    return { bytes: payload, usage: readUsage(payload) };
  }
  const chat = decodeCompletion(call.wire, payload, model);
  const usage = chat.usage ?? null;
  const out =
    input.protocol === 'anthropic' ? chatToMessage(chat, model) : input.protocol === 'responses' ? chatToResponse(chat, model, input.body) : chat;
  return { bytes: encoder.encode(JSON.stringify(out)), usage };
}

function readUsage(payload: Uint8Array): { prompt_tokens?: number; completion_tokens?: number } | null {
  try {
    const parsed = JSON.parse(decoder.decode(payload));
    const u = parsed?.usage;
    if (u && typeof u === 'object') {
      // Chat/completions/embeddings name them prompt/completion; the Responses API input/output.
      const prompt = u.prompt_tokens ?? u.input_tokens;
      const completion = u.completion_tokens ?? u.output_tokens;
      return {
        prompt_tokens: Number.isFinite(prompt) ? prompt : undefined,
        completion_tokens: Number.isFinite(completion) ? completion : 0,
      };
    }
  } catch {
    // a non-JSON 200 is passed on as it is; usage unknown
  }
  return null;
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
    if (typeof d.content === 'string') watch.deliveredChars += d.content.length;
    for (const t of d.tool_calls ?? []) watch.deliveredChars += (t?.function?.arguments ?? '').length;
    if (ch?.finish_reason) watch.finishReason = ch.finish_reason;
  }
}

function openAiStreamError(reason: string): Uint8Array {
  const error = { message: `Upstream stream failed: ${reason}`, type: 'upstream_error', param: null, code: 'upstream_stream_error' };
  return encoder.encode(sseFormat({ error }));
}

function makePipe(input: RelayInput, call: PreparedCall): Pipe {
  const watch: SseWatch = { usage: null, sawDone: false, deliveredChars: 0, finishReason: null };
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

  const finish = (status: Outcome['status'], error?: string) => {
    if (settled) return;
    settled = true;
    if (idleTimer) clearTimeout(idleTimer);
    const usage = watch.usage;
    ctx.settle({
      status,
      http_status: upstream.status,
      channel_id: ctx.channel.id,
      upstream_model: ctx.upstreamModel,
      prompt_tokens: usage?.prompt_tokens ?? null,
      completion_tokens: usage?.completion_tokens ?? null,
      usage_source: usage ? 'upstream' : 'none',
      ttfb_ms: ctx.ttfb,
      error_code: error ? (status === 'aborted' ? 'client_closed' : 'upstream_stream_error') : null,
      error_message: error ?? null,
    });
  };
  const armIdle = () => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = setTimeout(() => controller.abort(new Error('upstream stream idle timeout')), options.StreamIdleTimeoutMs);
  };
  const closeOut = (c: ReadableStreamDefaultController<Uint8Array>) => {
    const complete = pipe.complete() && !pipe.error();
    const reason = pipe.error() ?? 'upstream closed the stream early';
    // The outcome is queued before the client sees the end of the stream.
    finish(complete ? 'ok' : 'error', complete ? undefined : reason);
    if (!complete) c.enqueue(pipe.errorEvent(reason));
    c.close();
  };

  const body = new ReadableStream<Uint8Array>({
    start(c) {
      armIdle();
      c.enqueue(first);
      if (upstreamDone) closeOut(c);
    },
    async pull(c) {
      if (settled) return;
      let next: ReadResult;
      try {
        next = await reader.read();
      } catch (err) {
        const reason = errMessage(controller, err);
        const clientGone = input.clientSignal.aborted;
        finish(clientGone ? 'aborted' : 'error', reason);
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
        closeOut(c);
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
  });
  return new Response(body, { status: 200, headers });
}
