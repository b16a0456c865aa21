// Answers in the client's protocol: a non-stream completion (passed through or converted), an
// upstream error in the client's error shape, and the headers an answer carries.
import { answerOf, type CachedAnswer } from '../cache';
import { decodeCompletion, upstreamErrorOf, type PreparedCall, type Protocol, type Wire } from '../adapters';
import { anthropicError, chatToMessage } from '../inbound/anthropic';
import { chatToResponse } from '../inbound/responses';
import type { RelayInput, Ticket } from './types';

const HOP_HEADERS = ['content-type', 'openai-processing-ms', 'openai-version', 'x-ratelimit-limit-requests', 'request-id', 'anthropic-organization-id'];
const encoder = new TextEncoder();

export interface Rendered {
  bytes: Uint8Array<ArrayBuffer>;
  /** The usage object the upstream reported (any provider's field names), or null. */
  usage: unknown;
  /** The answer's text (for a tokenizer count when no usage was reported). */
  text: string;
  /** The answer as the cache keeps it, when it is a complete single-choice chat answer. */
  cacheable: CachedAnswer | null;
}

/** Text of the answer in a chat completion, legacy completion or Responses object. */
export function answerText(parsed: any): string {
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

/**
 * A checked non-stream answer (see adapters' answerProblem) in the client's protocol, and the usage
 * it reports. `parsed` is the upstream's JSON, already known to have its protocol's shape.
 */
export function renderCompletion(input: RelayInput, call: PreparedCall, payload: Uint8Array<ArrayBuffer>, parsed: any): Rendered {
  const model = input.body.model;
  const chatAnswer = input.protocol === 'openai' && input.endpoint === 'chat/completions';
  if (call.native) {
    if (call.wire === 'anthropic') {
      const chat = decodeCompletion('anthropic', payload, model);
      return { bytes: payload, usage: chat.usage ?? null, text: answerText(chat), cacheable: null };
    }
    return { bytes: payload, usage: parsed?.usage ?? null, text: answerText(parsed), cacheable: chatAnswer ? answerOf(parsed) : null };
  }
  const chat = decodeCompletion(call.wire, payload, model);
  const out =
    input.protocol === 'anthropic' ? chatToMessage(chat, model) : input.protocol === 'responses' ? chatToResponse(chat, model, input.body) : chat;
  return { bytes: encoder.encode(JSON.stringify(out)), usage: chat.usage ?? null, text: answerText(chat), cacheable: chatAnswer ? answerOf(chat) : null };
}

/** The wire format a protocol's clients read natively. */
export function nativeWire(protocol: Protocol): Wire {
  return protocol === 'anthropic' ? 'anthropic' : 'openai';
}

/** A plain record (not a Headers object): the Response builds its headers once from it. */
export function responseHeaders(requestId: string, upstream: Response): Record<string, string> {
  const headers: Record<string, string> = { 'x-request-id': requestId };
  for (const h of HOP_HEADERS) {
    const v = upstream.headers.get(h);
    if (v) headers[h] = v;
  }
  headers['content-type'] ??= 'application/json';
  return headers;
}

/** x-elygate-max-tokens when the gateway set the upstream's output limit (ReservationPolicy cap). */
export function maxTokensHeaders(ticket: Ticket): Record<string, string> {
  return ticket.max_tokens == null ? {} : { 'x-elygate-max-tokens': `${ticket.max_tokens}; reason=reservation` };
}

/** An upstream error answer in the client's error shape (passed through when the shapes agree). */
export function upstreamError(
  input: RelayInput,
  status: number,
  body: Uint8Array<ArrayBuffer>,
  call: Pick<PreparedCall, 'wire' | 'native'>,
  contentType: string | null,
): Response {
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
