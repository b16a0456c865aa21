// The request path (DESIGN §2): one gateway.relay_begin call, then the upstream attempts in the
// order the database planned, streaming the answer through, then one queued outcome.
import { sql } from './db';
import { GatewayError } from './errors';
import { channelsFor, isRetryableStatus, options, type Channel, type PlanEntry } from './snapshot';
import { queueOutcome, type Attempt, type Outcome } from './settle';
import { openAiSseFilter, type SseWatch } from './sse';

export type Endpoint = 'chat/completions' | 'completions' | 'embeddings';

export interface RelayInput {
  requestId: string;
  endpoint: Endpoint;
  keyHash: Buffer | null;
  clientIp: string | null;
  /** The parsed body (an object) and its original bytes, sent on untouched when nothing changes. */
  body: Record<string, any>;
  raw: Uint8Array<ArrayBuffer>;
  /** Fires when the client goes away. */
  clientSignal: AbortSignal;
}

interface Ticket {
  request_id: string;
  created_at: string;
  user_id: string;
  key_id: string;
  group_name: string;
  reserved_micros: string;
  plan: PlanEntry[];
}

type ReadResult = Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>['read']>>;

const HOP_HEADERS = ['content-type', 'openai-processing-ms', 'openai-version', 'x-ratelimit-limit-requests'];

/** Cheap prompt-size estimate for the request row until the billing work brings a tokenizer. */
function promptEstimate(raw: Uint8Array): number {
  return Math.ceil(raw.byteLength / 4);
}

export async function relay(input: RelayInput): Promise<Response> {
  const started = performance.now();
  const { body } = input;
  const stream = input.endpoint !== 'embeddings' && body.stream === true;
  const maxTokens = Number.isInteger(body.max_completion_tokens)
    ? body.max_completion_tokens
    : Number.isInteger(body.max_tokens)
      ? body.max_tokens
      : null;

  // The one round trip before the upstream.
  const [ticket] = (await sql`
    select * from gateway.relay_begin(${input.requestId}, ${input.keyHash}, ${body.model}, ${input.endpoint},
                                      ${stream}, ${input.clientIp}, ${promptEstimate(input.raw)}, ${maxTokens})
  `) as unknown as Ticket[];

  const channels = await channelsFor(ticket.plan);
  const attempts: Attempt[] = [];
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

  let lastFailure: { status: number; body: Uint8Array<ArrayBuffer> | null; contentType: string | null; message: string } | null = null;
  const plan = ticket.plan.slice(0, options.MaxAttempts);

  for (const entry of plan) {
    if (input.clientSignal.aborted) break;
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    const channel = channels.get(entry.channel_id);
    const t0 = performance.now();
    if (!channel || channel.unusable || channel.keys.length === 0) {
      attempts.push({ channel_id: entry.channel_id, status: null, ms: 0, error: channel?.unusable ?? 'channel has no usable key' });
      continue;
    }
    if (channel.type !== 'openai') {
      attempts.push({ channel_id: channel.id, status: null, ms: 0, error: `channel type ${channel.type} has no adapter yet` });
      continue;
    }

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

    let res: Response;
    try {
      res = await fetch(upstreamUrl(channel, input.endpoint), {
        method: 'POST',
        headers: upstreamHeaders(channel),
        body: upstreamBody(input, entry.model, stream),
        signal: controller.signal,
      });
    } catch (err) {
      release();
      const message = controller.signal.aborted ? String(controller.signal.reason?.message ?? 'aborted') : String((err as Error).message);
      attempts.push({ channel_id: channel.id, status: null, ms: Math.round(performance.now() - t0), error: message });
      lastFailure = { status: 502, body: null, contentType: null, message };
      continue;
    }

    if (!res.ok) {
      const errBody = new Uint8Array(await res.arrayBuffer().catch(() => new ArrayBuffer(0)));
      release();
      attempts.push({ channel_id: channel.id, status: res.status, ms: Math.round(performance.now() - t0) });
      lastFailure = { status: res.status, body: errBody, contentType: res.headers.get('content-type'), message: `upstream returned ${res.status}` };
      if (isRetryableStatus(res.status)) continue;
      // A client error (400-class) is the same on every channel: never retried, never billed.
      settle({
        status: 'error',
        http_status: res.status,
        channel_id: channel.id,
        upstream_model: entry.model,
        error_code: 'upstream_' + res.status,
        error_message: new TextDecoder().decode(errBody.subarray(0, 2000)),
      });
      return passUpstreamError(input.requestId, res.status, errBody, res.headers.get('content-type'));
    }

    if (!stream) {
      let payload: Uint8Array<ArrayBuffer>;
      try {
        payload = new Uint8Array(await res.arrayBuffer());
      } catch (err) {
        release();
        const message = controller.signal.aborted ? String(controller.signal.reason?.message ?? 'aborted') : String((err as Error).message);
        attempts.push({ channel_id: channel.id, status: res.status, ms: Math.round(performance.now() - t0), error: message });
        lastFailure = { status: 502, body: null, contentType: null, message };
        continue;
      }
      release();
      const ms = Math.round(performance.now() - t0);
      attempts.push({ channel_id: channel.id, status: res.status, ms });
      const usage = readUsage(payload);
      settle({
        status: 'ok',
        http_status: res.status,
        channel_id: channel.id,
        upstream_model: entry.model,
        prompt_tokens: usage?.prompt_tokens ?? null,
        completion_tokens: usage?.completion_tokens ?? (usage ? 0 : null),
        usage_source: usage ? 'upstream' : 'none',
        ttfb_ms: ms,
      });
      return new Response(payload, { status: res.status, headers: responseHeaders(input.requestId, res) });
    }

    // Streams: wait for the first chunk before answering, so a channel that fails before its first
    // byte can still be swapped for the next one.
    const reader = res.body!.getReader();
    let first: ReadResult;
    try {
      first = await reader.read();
    } catch (err) {
      release();
      const message = controller.signal.aborted ? String(controller.signal.reason?.message ?? 'aborted') : String((err as Error).message);
      attempts.push({ channel_id: channel.id, status: res.status, ms: Math.round(performance.now() - t0), error: message });
      lastFailure = { status: 502, body: null, contentType: null, message };
      continue;
    }
    release();
    const ttfb = Math.round(performance.now() - t0);
    attempts.push({ channel_id: channel.id, status: res.status, ms: ttfb });
    return streamResponse(input, res, reader, first, controller, {
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
  settle({
    status: clientGone ? 'aborted' : 'error',
    http_status: status,
    error_code: clientGone ? 'client_closed' : timedOut ? 'upstream_timeout' : 'upstream_failed',
    error_message: lastFailure?.message ?? attempts.map((a) => a.error).filter(Boolean).join('; ') ?? null,
  });
  if (lastFailure?.body && lastFailure.body.byteLength > 0) {
    return passUpstreamError(input.requestId, lastFailure.status, lastFailure.body, lastFailure.contentType);
  }
  if (timedOut) {
    throw new GatewayError(504, 'No upstream channel answered before the relay deadline.', 'upstream_error', 'upstream_timeout');
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

function upstreamUrl(channel: Channel, endpoint: Endpoint): string {
  // "https://api.openai.com" and "https://api.openai.com/v1" both work; any other path is kept.
  const base = channel.baseUrl.replace(/\/+$/, '');
  const hasPath = /^https?:\/\/[^/]+\/./.test(base + '/');
  return `${hasPath ? base : base + '/v1'}/${endpoint}`;
}

function upstreamHeaders(channel: Channel): Record<string, string> {
  const key = channel.keys.length === 1 ? channel.keys[0] : channel.keys[Math.floor(Math.random() * channel.keys.length)];
  return {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    authorization: `Bearer ${key}`,
  };
}

/** The client's bytes when nothing must change; otherwise a re-serialised copy. */
function upstreamBody(input: RelayInput, upstreamModel: string, stream: boolean): BodyInit {
  const { body } = input;
  const needsUsage = stream && !(body.stream_options && body.stream_options.include_usage === true);
  if (upstreamModel === body.model && !needsUsage) return input.raw;
  const copy: Record<string, any> = { ...body, model: upstreamModel };
  if (needsUsage) copy.stream_options = { ...(body.stream_options ?? {}), include_usage: true };
  return JSON.stringify(copy);
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

function passUpstreamError(requestId: string, status: number, body: Uint8Array<ArrayBuffer>, contentType: string | null): Response {
  return new Response(body, {
    status,
    headers: { 'content-type': contentType ?? 'application/json', 'x-request-id': requestId },
  });
}

function readUsage(payload: Uint8Array): { prompt_tokens?: number; completion_tokens?: number } | null {
  try {
    const parsed = JSON.parse(new TextDecoder().decode(payload));
    const u = parsed?.usage;
    if (u && typeof u === 'object') {
      return {
        prompt_tokens: Number.isFinite(u.prompt_tokens) ? u.prompt_tokens : undefined,
        completion_tokens: Number.isFinite(u.completion_tokens) ? u.completion_tokens : 0,
      };
    }
  } catch {
    // a non-JSON 200 is passed on as it is; usage unknown
  }
  return null;
}

/** An in-band error for a stream that broke after its status line was sent. */
function streamErrorEvent(reason: string): Uint8Array {
  const error = { message: `Upstream stream failed: ${reason}`, type: 'upstream_error', param: null, code: 'upstream_stream_error' };
  return new TextEncoder().encode(`data: ${JSON.stringify({ error })}\n\n`);
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
  first: ReadResult,
  controller: AbortController,
  ctx: StreamContext,
): Response {
  const clientAskedUsage = input.body.stream_options?.include_usage === true;
  const watch: SseWatch = { usage: null, sawDone: false, deliveredChars: 0, finishReason: null };
  const filter = openAiSseFilter(!clientAskedUsage, watch);
  const decoder = new TextDecoder();
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

  const body = new ReadableStream<Uint8Array>({
    start(c) {
      armIdle();
      if (first.done) {
        const tail = filter(decoder.decode(), true);
        if (tail) c.enqueue(tail);
        finish('ok');
        c.close();
        return;
      }
      const out = filter(decoder.decode(first.value, { stream: true }));
      if (out) c.enqueue(out);
    },
    async pull(c) {
      let next: ReadResult;
      try {
        next = await reader.read();
      } catch (err) {
        const reason = controller.signal.aborted ? String(controller.signal.reason?.message ?? 'aborted') : String((err as Error).message);
        const clientGone = input.clientSignal.aborted;
        finish(clientGone ? 'aborted' : 'error', reason);
        // Tell the client in-band: the HTTP status is long gone.
        if (!clientGone) {
          try {
            c.enqueue(streamErrorEvent(reason));
            c.close();
          } catch {
            // the client is gone as well
          }
        }
        return;
      }
      if (next.done) {
        const tail = filter(decoder.decode(), true);
        if (tail) c.enqueue(tail);
        const complete = watch.sawDone || watch.finishReason !== null;
        // The outcome is queued before the client sees the end of the stream.
        finish(complete ? 'ok' : 'error', complete ? undefined : 'upstream closed the stream early');
        if (!complete) c.enqueue(streamErrorEvent('upstream closed the stream early'));
        c.close();
        return;
      }
      armIdle();
      const out = filter(decoder.decode(next.value, { stream: true }));
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
