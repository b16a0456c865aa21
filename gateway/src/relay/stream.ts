// A stream answer. Until the client's first byte the attempt can still fail over: an answer that
// is not an event stream, an upstream that closes, breaks, reports an error or sends a malformed
// event before saying anything. After it, the stream is the client's: a failure ends it with an
// in-band error event, and what was delivered is billed.
import { options } from '../snapshot';
import { usageFields } from '../outcome';
import { withKeepalive } from '../keepalive';
import { isEventStream } from '../adapters';
import { StreamAssembler } from '../cache';
import type { Outcome } from '../settle';
import { cacheHeaders } from './cache-hit';
import { cacheStore } from './answer';
import { maxTokensHeaders } from './render';
import { makePipe, type Pipe } from './pipes';
import { errMessage, servedModel, type Result, type Run, type Try } from './attempts';

type ReadResult = Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>['read']>>;

/** The upstream's stream as it stands when the client's first byte is ready. */
interface Opened {
  reader: ReadableStreamDefaultReader<Uint8Array>;
  text: TextDecoder;
  pipe: Pipe;
  assembler: StreamAssembler | null;
  first: Uint8Array;
  upstreamDone: boolean;
}

export async function openStream(run: Run, t: Try, res: Response): Promise<Result> {
  if (!isEventStream(res)) {
    const problem = `upstream answered a stream request with ${res.headers.get('content-type') || 'no content type'}`;
    await res.body?.cancel().catch(() => {});
    t.release();
    t.record(res.status, problem);
    return { failure: { status: 502, body: null, wire: null, message: problem } };
  }
  const opened = await readToFirstByte(run, t, res);
  if ('failure' in opened) {
    t.release();
    opened.reader.cancel().catch(() => {});
    t.record(res.status, opened.failure);
    return { failure: { status: 502, body: null, wire: null, message: opened.failure } };
  }
  t.release();
  const ttfb = t.record(res.status);
  const response = streamResponse(run, t, res, opened, ttfb);
  // Only once the stream exists does it own settlement: a throw before this is relay()'s to settle.
  run.settlement.handOff();
  return { response };
}

/** Reads upstream events until there is something for the client, or a reason to fail over. */
async function readToFirstByte(run: Run, t: Try, res: Response): Promise<Opened | { failure: string; reader: ReadableStreamDefaultReader<Uint8Array> }> {
  const reader = res.body!.getReader();
  const text = new TextDecoder();
  const pipe = makePipe(run.input, t.call);
  // (A fallback's answer is not the asked-for model's: it is not kept for the cache.)
  const assembler = run.cache?.result === 'miss' && !t.entry.fallback ? new StreamAssembler() : null;
  if (assembler) pipe.watch.onChunk = (c) => assembler.add(c);
  let first: Uint8Array | null = null;
  let upstreamDone = false;
  try {
    while (!first && !pipe.error()) {
      const next: ReadResult = await reader.read();
      upstreamDone = next.done;
      first = next.done ? pipe.push(text.decode(), true) : pipe.push(text.decode(next.value, { stream: true }));
      if (next.done) break;
    }
  } catch (err) {
    return { failure: errMessage(t.controller, err), reader };
  }
  // Nothing has reached the client yet: an error seen so far is a failed attempt, not a broken stream.
  const failure = pipe.error() ?? (!first ? 'upstream closed the stream before any data' : null);
  if (failure) return { failure, reader };
  return { reader, text, pipe, assembler, first: first!, upstreamDone };
}

/** Queues a stream's outcome, after a tokenizer count of what was delivered if one is needed. */
async function settleStream(run: Run, t: Try, upstream: Response, o: Opened, ttfb: number, status: Outcome['status'], error?: string) {
  const watch = o.pipe.watch;
  const usage = await usageFields(run.input.body, watch.usage, watch.delivered.join(''), status === 'ok').catch(() => null);
  run.settlement.settle({
    status,
    http_status: upstream.status,
    channel_id: t.channel.id,
    upstream_model: t.entry.model,
    fallback: t.entry.fallback ?? null,
    ...(usage ?? {}),
    ttfb_ms: ttfb,
    error_code: error ? (status === 'aborted' ? 'client_closed' : 'upstream_stream_error') : null,
    error_message: error ?? null,
    cache_store: status === 'ok' ? cacheStore(run, o.assembler?.answer() ?? null) : null,
  });
}

/** The client's stream: settles once when it ends, however it ends. */
function streamResponse(run: Run, t: Try, upstream: Response, o: Opened, ttfb: number): Response {
  const { input } = run;
  const { pipe, reader, controller } = { ...o, controller: t.controller };
  let idleTimer: ReturnType<typeof setTimeout> | null = null;
  let finished = false;

  /** Settles the stream; later calls do nothing. */
  const finish = async (status: Outcome['status'], error?: string): Promise<void> => {
    if (finished) return;
    finished = true;
    if (idleTimer) clearTimeout(idleTimer);
    await settleStream(run, t, upstream, o, ttfb, status, error);
  };
  const armIdle = () => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = setTimeout(() => controller.abort(new Error('upstream stream idle timeout')), options.StreamIdleTimeoutMs);
  };
  /** Ends the client's stream: with an error event unless the upstream's answer was complete. */
  const end = async (c: ReadableStreamDefaultController<Uint8Array>, reason: string | null) => {
    const failure = reason ?? pipe.error() ?? (pipe.complete() ? null : 'upstream closed the stream early');
    // The outcome is queued before the client sees the end of the stream.
    await finish(failure ? 'error' : 'ok', failure ?? undefined);
    if (failure) {
      controller.abort(new Error(failure));
      reader.cancel().catch(() => {});
    }
    try {
      if (failure) c.enqueue(pipe.errorEvent(failure));
      c.close();
    } catch {
      // the client is gone as well
    }
  };
  const clientGone = () => {
    controller.abort(new Error('client disconnected'));
    reader.cancel().catch(() => {});
    void finish('aborted', 'client disconnected');
  };

  const body = new ReadableStream<Uint8Array>({
    async start(c) {
      armIdle();
      c.enqueue(o.first);
      if (o.upstreamDone) await end(c, null);
    },
    async pull(c) {
      if (finished) return;
      try {
        const next: ReadResult = await reader.read();
        const out = next.done ? pipe.push(o.text.decode(), true) : pipe.push(o.text.decode(next.value, { stream: true }));
        if (out) c.enqueue(out);
        if (next.done || pipe.error()) return await end(c, null);
        armIdle();
      } catch (err) {
        if (input.clientSignal.aborted) return clientGone();
        // A read error, or a throw of our own while converting: told in-band, the status is long gone.
        await end(c, errMessage(controller, err));
      }
    },
    cancel: clientGone,
  });
  input.clientSignal.addEventListener('abort', clientGone, { once: true });

  return new Response(withKeepalive(body), { status: 200, headers: streamHeaders(run, t) });
}

function streamHeaders(run: Run, t: Try): Headers {
  return new Headers({
    'x-elygate-model': servedModel(run, t),
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-request-id': run.input.requestId,
    ...cacheHeaders(run),
    ...maxTokensHeaders(run.ticket),
  });
}
