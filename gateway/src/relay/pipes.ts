// Turns upstream stream text into what the client receives, watching usage, completeness and
// malformed events on the way. Native pairs pass bytes through; other pairs go upstream events →
// chat chunks → client events.
import { newWatch, noteDelivered, openAiSseFilter, sseFormat, sseParser, type SseWatch } from '../sse';
import { chunkDecoder, type PreparedCall } from '../adapters';
import { MALFORMED_EVENT, parseEvent, type ChatChunk, type ChunkDecoder } from '../adapters/types';
import { anthropicError, messagesEncoder } from '../inbound/anthropic';
import { responsesEncoder } from '../inbound/responses';
import type { RelayInput } from './types';

const encoder = new TextEncoder();

export interface Pipe {
  watch: SseWatch;
  push(text: string, final?: boolean): Uint8Array | null;
  complete(): boolean;
  /** Why the stream failed (an error event, a malformed event), or null. */
  error(): string | null;
  /** An in-band error for a stream that broke after its status line was sent. */
  errorEvent(reason: string): Uint8Array;
}

export function makePipe(input: RelayInput, call: PreparedCall): Pipe {
  if (call.native && call.wire === 'openai' && input.protocol !== 'responses') return openAiPassthrough(input);
  if (call.native) return nativePassthrough(input, call);
  if (input.protocol === 'responses') return convertedTo(input, call, responsesEncoder(input.body.model, input.body));
  if (input.protocol === 'anthropic') return convertedTo(input, call, messagesEncoder(input.body.model));
  return convertedToOpenAi(input, call);
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

function anthropicStreamError(reason: string): Uint8Array {
  return encoder.encode(sseFormat(anthropicError(502, `Upstream stream failed: ${reason}`), 'error'));
}

/** OpenAI in, OpenAI out: bytes pass through, the usage chunk is dropped unless asked for. */
function openAiPassthrough(input: RelayInput): Pipe {
  const watch = newWatch();
  const filter = openAiSseFilter(input.body.stream_options?.include_usage !== true, watch);
  return {
    watch,
    push: (text, final) => filter(text, final),
    complete: () => watch.sawDone || watch.finishReason !== null,
    error: () => (watch.malformed ? MALFORMED_EVENT : null),
    errorEvent: openAiStreamError,
  };
}

/** Anthropic to Anthropic, Responses to Responses: bytes pass through, a parser reads alongside. */
function nativePassthrough(input: RelayInput, call: PreparedCall): Pipe {
  const watch = newWatch();
  const parse = sseParser();
  const dec = call.wire === 'anthropic' ? chunkDecoder('anthropic', input.body.model) : null;
  let done = false;
  let failure: string | null = null;
  const readResponsesEvent = (name: string | null, data: string) => {
    const ev = parseEvent(data);
    if (!ev) return void (failure ??= MALFORMED_EVENT);
    const type = ev.type ?? name;
    if (type === 'response.completed' || type === 'response.incomplete' || type === 'response.failed') {
      done = true;
      const u = ev.response?.usage;
      if (u) watch.usage = u;   // (input_tokens_details.cached_tokens included: readUsage reads it)
    } else if (type === 'error') {
      failure = String(ev.message ?? ev.error?.message ?? 'upstream error');
    }
  };
  return {
    watch,
    push(text, final) {
      for (const e of parse(text, final)) {
        if (failure) break;
        if (!dec) {
          readResponsesEvent(e.event, e.data);
          continue;
        }
        for (const c of dec.event(e.event, e.data)) watchChunk(watch, c);
        done = dec.complete();
        failure = dec.error();
      }
      // Passed on whole, failure included (the bytes are the client's own protocol); the stream
      // then ends with an error event (stream.ts).
      return text.length > 0 ? encoder.encode(text) : null;
    },
    complete: () => done,
    error: () => failure,
    errorEvent: call.wire === 'anthropic' ? anthropicStreamError : openAiStreamError,
  };
}

/**
 * Drives a chunk decoder over upstream text, emitting each chunk through `emit` and the stream's
 * end once the decoder saw it (OpenAI sends usage after the finish chunk; Gemini has no end marker,
 * so its end is the end of the upstream stream).
 */
function convert(dec: ChunkDecoder, emit: (c: ChatChunk) => string, end: () => string): Pipe['push'] {
  const parse = sseParser();
  let ended = false;
  return (text: string, final?: boolean) => {
    let out = '';
    for (const e of parse(text, final)) {
      if (dec.error()) break;
      for (const c of dec.event(e.event, e.data)) out += emit(c);
    }
    if (!ended && !dec.error() && dec.complete() && (final || dec.terminated())) {
      ended = true;
      for (const c of dec.end()) out += emit(c);
      out += end();
    }
    return out ? encoder.encode(out) : null;
  };
}

/** What a client protocol's stream encoder offers: events for a chunk, the closing events, an error event. */
interface Encoder {
  chunk(c: ChatChunk): string;
  end(): string;
  error(message: string): string;
}

/** Upstream events → chat chunks → the client protocol's events (Anthropic Messages, Responses). */
function convertedTo(input: RelayInput, call: PreparedCall, enc: Encoder): Pipe {
  const watch = newWatch();
  const dec = chunkDecoder(call.wire, input.body.model);
  const push = convert(
    dec,
    (c) => {
      watchChunk(watch, c);
      return enc.chunk(c);
    },
    () => enc.end(),
  );
  return {
    watch,
    push,
    complete: () => dec.complete(),
    error: () => dec.error(),
    errorEvent: (reason) => encoder.encode(enc.error(`Upstream stream failed: ${reason}`)),
  };
}

function convertedToOpenAi(input: RelayInput, call: PreparedCall): Pipe {
  const watch = newWatch();
  const dec = chunkDecoder(call.wire, input.body.model);
  const stripUsage = input.body.stream_options?.include_usage !== true;
  const emit = (c: ChatChunk): string => {
    watchChunk(watch, c);
    if (c.usage && stripUsage) {
      if ((c.choices ?? []).length === 0) return '';
      const { usage: _drop, ...rest } = c;
      return sseFormat(rest);
    }
    return sseFormat(c);
  };
  const push = convert(dec, emit, () => {
    watch.sawDone = true;
    return 'data: [DONE]\n\n';
  });
  return {
    watch,
    push,
    complete: () => dec.complete(),
    error: () => dec.error(),
    errorEvent: openAiStreamError,
  };
}
