// Picks the adapter for a (client protocol, channel type) pair and builds the upstream call:
// OpenAI ⇄ OpenAI/Azure and Anthropic ⇄ Anthropic pass the client's bytes through, and so does
// Responses ⇄ a channel that implements Responses (config.responses_api); every other pair
// converts through the OpenAI chat shape (see types.ts). Channel config adds parameter and header
// overrides. Wire formats only: no routing or billing decisions are made here.
import { ANTHROPIC_VERSION, anthropicChunkDecoder, anthropicToChat, chatToAnthropic } from './anthropic';
import { chatToGemini, geminiChunkDecoder, geminiToChat } from './gemini';
import { azureHeaders, azureUrl, openAiChunkDecoder, openAiHeaders, openAiUrl } from './openai';
import { safeJson, type ChatCompletion, type ChatRequest, type ChunkDecoder, type UpstreamCall } from './types';
import { messagesToChat, messagesUnconvertible } from '../inbound/anthropic';
import { responsesToChat, responsesUnconvertible, type Unconvertible } from '../inbound/responses';

/** The protocol the client speaks. */
export type Protocol = 'openai' | 'anthropic' | 'responses';
/** The wire format an upstream answers in. */
export type Wire = 'openai' | 'anthropic' | 'gemini';

export interface ChannelLike {
  type: 'openai' | 'azure' | 'anthropic' | 'gemini';
  baseUrl: string;
  config: Record<string, any>;
}

export interface CallInput {
  protocol: Protocol;
  /** OpenAI endpoint path for protocol openai ('chat/completions', 'completions', 'embeddings'). */
  endpoint: string;
  body: Record<string, any>;
  raw: Uint8Array<ArrayBuffer>;
  stream: boolean;
  upstreamModel: string;
  defaultMaxTokens: number;
  /** The output limit to send in place of the client's none (ReservationPolicy cap: the ticket's
   *  max_tokens, decided by admission); null or absent: the client's own limit, if any, stands. */
  maxTokens?: number | null;
  /** The client's request headers (anthropic-version and anthropic-beta go on to Anthropic channels). */
  headers?: Headers;
  /** audio/transcriptions: the multipart body's content type (raw is the multipart body). */
  multipartType?: string;
}

export interface PreparedCall extends UpstreamCall {
  /** The upstream answers in the client's own format: pass its bytes through. */
  native: boolean;
  wire: Wire;
  /** The upstream operation called, which decides what a valid answer looks like. */
  kind: AnswerKind;
}

/** Upstream operations, by the fields their non-stream answer must have. */
export type AnswerKind = 'chat/completions' | 'completions' | 'embeddings' | 'responses' | 'messages' | 'generateContent' | MediaEndpoint;
/** The media endpoints: billed by a unit of their own beside tokens, and moderations (relay/media.ts
 *  measures their answers). */
const MEDIA_ENDPOINTS = ['images/generations', 'audio/speech', 'audio/transcriptions', 'moderations', 'rerank'] as const;
export type MediaEndpoint = (typeof MEDIA_ENDPOINTS)[number];
const MEDIA_KINDS = new Set<string>(MEDIA_ENDPOINTS);
export const isMedia = (endpoint: string): endpoint is MediaEndpoint => MEDIA_KINDS.has(endpoint);
/** Media endpoints an Azure OpenAI deployment serves in OpenAI's shape (no moderations, no rerank there). */
const AZURE_MEDIA = new Set<string>(['images/generations', 'audio/speech', 'audio/transcriptions']);

const encoder = new TextEncoder();

/** Why a channel cannot serve a request; `param` when the request's field is the reason. */
export interface Unsupported {
  unsupported: string;
  param?: string;
}

const OFFICIAL_RESPONSES_HOSTS = new Set(['api.openai.com']);

/**
 * Whether a channel takes /v1/responses as it is (config.responses_api "native") or converted to
 * chat completions ("convert"). Unset: native only where the upstream is known to implement it,
 * OpenAI's own API; OpenAI-compatible servers (vLLM, Ollama, DeepSeek, ...) mostly do not.
 */
export function responsesNative(channel: ChannelLike): boolean {
  const mode = channel.config?.responses_api;
  if (mode === 'native' || mode === 'convert') return mode === 'native';
  if (channel.type !== 'openai') return false;
  try {
    return OFFICIAL_RESPONSES_HOSTS.has(new URL(channel.baseUrl).hostname);
  } catch {
    return false;
  }
}

const unconvertible = (why: Unconvertible): Unsupported => ({ unsupported: why.message, param: why.param });

/** The headers of an Anthropic call: the client's anthropic-version and -beta when it sent them. */
function anthropicHeaders(key: string, cfg: Record<string, any>, client: Headers | undefined): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'x-api-key': key,
    'anthropic-version': client?.get('anthropic-version') || String(cfg.anthropic_version ?? ANTHROPIC_VERSION),
  };
  const beta = client?.get('anthropic-beta');
  if (beta) headers['anthropic-beta'] = beta;
  return headers;
}

function chatOf(input: CallInput, wire: Wire): ChatRequest {
  if (input.protocol === 'anthropic') return messagesToChat(input.body);
  if (input.protocol === 'responses') return responsesToChat(input.body, wire);
  return input.body as ChatRequest;
}

/** The client's bytes when nothing must change; otherwise a re-serialised copy (OpenAI wire). */
function openAiBody(input: CallInput, forceUsage: boolean): Record<string, any> | Uint8Array<ArrayBuffer> {
  const { body } = input;
  const needsUsage = forceUsage && input.stream && !(body.stream_options && body.stream_options.include_usage === true);
  if (input.upstreamModel === body.model && !needsUsage && input.maxTokens == null) return input.raw;
  const copy: Record<string, any> = { ...body, model: input.upstreamModel };
  if (needsUsage) copy.stream_options = { ...(body.stream_options ?? {}), include_usage: true };
  return copy;
}

/** An upstream request before the channel's overrides: its body an object, or the client's own bytes. */
type Draft = Omit<PreparedCall, 'body'> & { body: Record<string, any> | Uint8Array<ArrayBuffer> };

/** Builds the upstream request, or returns why this channel type cannot serve the request. */
export function prepareCall(channel: ChannelLike, key: string, client: CallInput): PreparedCall | Unsupported {
  const cfg = channel.config ?? {};
  const input = capped(channel, client);
  const draft =
    channel.type === 'openai' || channel.type === 'azure' ? openAiCall(channel, key, input)
    : channel.type === 'anthropic' ? anthropicCall(channel, key, input)
    : channel.type === 'gemini' ? geminiCall(channel, key, input)
    : { unsupported: `channel type ${(channel as any).type} has no adapter` };
  if ('unsupported' in draft) return draft;
  let { body } = draft;
  // Per-channel overrides: parameters merged into the upstream body (in the upstream's format),
  // headers set on the upstream request.
  // (Not into a multipart upload: its fields are not JSON.)
  const override = input.multipartType ? null : cfg.param_override;
  if (override && typeof override === 'object' && Object.keys(override).length > 0) {
    const obj = body instanceof Uint8Array ? safeJson(new TextDecoder().decode(body)) : body;
    body = { ...obj, ...override };
  }
  overrideHeaders(draft.headers, cfg);
  return { ...draft, body: body instanceof Uint8Array ? body : encoder.encode(JSON.stringify(body)) };
}

/** OpenAI and Azure: every OpenAI endpoint (media included) passed through, or converted to Chat Completions. */
function openAiCall(channel: ChannelLike, key: string, input: CallInput): Draft | Unsupported {
  const wire: Wire = 'openai';
  let endpoint = input.endpoint;
  let body: Draft['body'];
  let native = true;
  if (MEDIA_KINDS.has(endpoint)) {
    if (channel.type === 'azure' && !AZURE_MEDIA.has(endpoint)) return { unsupported: `an azure channel cannot serve /v1/${endpoint}` };
    body = endpoint === 'audio/transcriptions' ? multipartBody(input) : openAiBody(input, false);
  } else if (input.protocol === 'openai') {
    body = openAiBody(input, endpoint === 'chat/completions' || endpoint === 'completions');
  } else if (input.protocol === 'responses' && responsesNative(channel)) {
    endpoint = 'responses';
    body = openAiBody(input, false);
  } else {
    const why = input.protocol === 'responses' ? responsesUnconvertible(input.body, 'openai') : messagesUnconvertible(input.body);
    if (why) return unconvertible(why);
    native = false;
    endpoint = 'chat/completions';
    const chat: Record<string, any> = { ...chatOf(input, wire), model: input.upstreamModel };
    if (input.stream) Object.assign(chat, { stream: true, stream_options: { include_usage: true } });
    body = chat;
  }
  const url = channel.type === 'azure' ? azureUrl(channel.baseUrl, endpoint, input.upstreamModel, channel.config ?? {}) : openAiUrl(channel.baseUrl, endpoint);
  const headers = channel.type === 'azure' ? azureHeaders(key) : openAiHeaders(key);
  if (endpoint === 'audio/transcriptions') headers['content-type'] = input.multipartType!;
  if (endpoint === 'audio/speech') headers.accept = '*/*';
  return { url, headers, body, native, wire, kind: endpoint as AnswerKind };
}

/** Anthropic: Messages passed through, or Chat Completions (and Responses) converted to it. */
function anthropicCall(channel: ChannelLike, key: string, input: CallInput): Draft | Unsupported {
  const wire: Wire = 'anthropic';
  let body: Draft['body'];
  if (input.protocol === 'anthropic') {
    body = input.upstreamModel === input.body.model && input.maxTokens == null ? input.raw : { ...input.body, model: input.upstreamModel };
  } else if (input.protocol === 'openai' && input.endpoint !== 'chat/completions') {
    return { unsupported: `an anthropic channel cannot serve /v1/${input.endpoint}` };
  } else {
    const why = input.protocol === 'responses' ? responsesUnconvertible(input.body, 'anthropic') : null;
    if (why) return unconvertible(why);
    body = chatToAnthropic({ ...chatOf(input, wire), stream: input.stream }, input.upstreamModel, input.defaultMaxTokens);
  }
  const headers = anthropicHeaders(key, channel.config ?? {}, input.protocol === 'anthropic' ? input.headers : undefined);
  return { url: `${anthropicRoot(channel.baseUrl)}/v1/messages`, headers, body, native: input.protocol === 'anthropic', wire, kind: 'messages' };
}

/** Gemini: every protocol converted to generateContent. */
function geminiCall(channel: ChannelLike, key: string, input: CallInput): Draft | Unsupported {
  if (input.protocol === 'openai' && input.endpoint !== 'chat/completions') {
    return { unsupported: `a gemini channel cannot serve /v1/${input.endpoint}` };
  }
  const why =
    input.protocol === 'responses' ? responsesUnconvertible(input.body, 'gemini') : input.protocol === 'anthropic' ? messagesUnconvertible(input.body) : null;
  if (why) return unconvertible(why);
  const base = channel.baseUrl.replace(/\/+$/, '');
  const root = /\/v1(beta|alpha)?$/.test(base) ? base : `${base}/${channel.config?.api_version ?? 'v1beta'}`;
  const model = encodeURIComponent(input.upstreamModel.replace(/^models\//, ''));
  return {
    url: input.stream ? `${root}/models/${model}:streamGenerateContent?alt=sse` : `${root}/models/${model}:generateContent`,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'x-goog-api-key': key },
    body: chatToGemini(chatOf(input, 'gemini')),
    native: false,
    wire: 'gemini',
    kind: 'generateContent',
  };
}

/**
 * The client's body with the output limit admission decided (ReservationPolicy cap) in the field
 * of the client's protocol, where every conversion reads a client's own limit (Anthropic's and
 * Gemini's converters read max_completion_tokens or max_tokens, Responses' max_output_tokens).
 * An OpenAI-type channel gets max_completion_tokens on OpenAI's own API and Azure (their reasoning
 * models refuse max_tokens), max_tokens elsewhere (what OpenAI-compatible servers read), unless
 * its config.max_tokens_field names one.
 */
function capped(channel: ChannelLike, input: CallInput): CallInput {
  if (input.maxTokens == null) return input;
  let field = 'max_tokens';
  if (input.protocol === 'responses') field = 'max_output_tokens';
  else if (input.protocol === 'openai' && input.endpoint === 'chat/completions') field = openAiMaxTokensField(channel);
  return { ...input, body: { ...input.body, [field]: input.maxTokens } };
}

function openAiMaxTokensField(channel: ChannelLike): string {
  const named = channel.config?.max_tokens_field;
  if (named === 'max_tokens' || named === 'max_completion_tokens') return named;
  if (channel.type === 'azure') return 'max_completion_tokens';
  if (channel.type !== 'openai') return 'max_tokens';
  try {
    return OFFICIAL_RESPONSES_HOSTS.has(new URL(channel.baseUrl).hostname) ? 'max_completion_tokens' : 'max_tokens';
  } catch {
    return 'max_tokens';
  }
}

function overrideHeaders(headers: Record<string, string>, cfg: Record<string, any>): void {
  const headerOverride = cfg.header_override;
  if (headerOverride && typeof headerOverride === 'object') {
    for (const [k, v] of Object.entries(headerOverride)) headers[k.toLowerCase()] = String(v);
  }
}

/** "https://api.anthropic.com" and "https://api.anthropic.com/v1" both work. */
const anthropicRoot = (baseUrl: string) => baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '');

/**
 * Anthropic's token counting (POST /v1/messages/count_tokens) on an Anthropic channel: the
 * client's body with the upstream model name, its anthropic-version and -beta, the channel's
 * header overrides (not its parameter overrides: the endpoint refuses generation parameters).
 */
export function anthropicCountCall(channel: ChannelLike, key: string, body: Record<string, any>, upstreamModel: string, client: Headers): UpstreamCall {
  const cfg = channel.config ?? {};
  const headers = anthropicHeaders(key, cfg, client);
  overrideHeaders(headers, cfg);
  return { url: `${anthropicRoot(channel.baseUrl)}/v1/messages/count_tokens`, headers, body: encoder.encode(JSON.stringify({ ...body, model: upstreamModel })) };
}

/* why: a 200 that is not the protocol's answer (an HTML error page from a proxy, `{}`, a truncated
   body) must fail over like any other upstream failure, not reach the client as a success and be
   billed as an estimate. Each operation's answer is recognised by the fields every client reads. */
const ANSWER_FIELDS: Record<AnswerKind, (a: Record<string, any>) => boolean> = {
  'chat/completions': (a) => Array.isArray(a.choices),
  completions: (a) => Array.isArray(a.choices),
  embeddings: (a) => Array.isArray(a.data),
  responses: (a) => a.object === 'response' || Array.isArray(a.output),
  messages: (a) => Array.isArray(a.content),
  // A prompt Gemini blocks comes back with promptFeedback and no candidates: an answer all the same.
  generateContent: (a) => Array.isArray(a.candidates) || (a.promptFeedback !== null && typeof a.promptFeedback === 'object'),
  'images/generations': (a) => Array.isArray(a.data),
  'audio/speech': () => true,
  'audio/transcriptions': (a) => typeof a.text === 'string',
  moderations: (a) => Array.isArray(a.results),
  rerank: (a) => Array.isArray(a.results),
};

/**
 * A multipart upload with its "model" field set to the upstream model: the client's bytes when the
 * name is the same, else the same bytes with that one field's value replaced. The field is found
 * part by part, by its headers' `name="model"` (never inside a file's name or a file's bytes).
 */
function multipartBody(input: CallInput): Uint8Array<ArrayBuffer> {
  if (input.upstreamModel === input.body.model) return input.raw;
  const boundary = /boundary="?([^";]+)"?/i.exec(input.multipartType ?? '')?.[1];
  if (!boundary) return input.raw;
  const raw = Buffer.from(input.raw.buffer, input.raw.byteOffset, input.raw.byteLength);
  const next = `\r\n--${boundary}`;
  for (let at = raw.indexOf(`--${boundary}\r\n`); at >= 0; ) {
    const headers = raw.indexOf('\r\n', at) + 2;
    const start = raw.indexOf('\r\n\r\n', headers);
    const end = start < 0 ? -1 : raw.indexOf(next, start + 4);
    if (end < 0) break;
    if (/;\s*name="model"\s*(;|$)/im.test(raw.toString('latin1', headers, start)))
      return new Uint8Array(Buffer.concat([raw.subarray(0, start + 4), Buffer.from(input.upstreamModel), raw.subarray(end)]));
    at = end + 2;
  }
  return input.raw;
}

/** A 200 answer's JSON when it is the operation's answer, else what is wrong with it. */
export function checkAnswer(kind: AnswerKind, payload: Uint8Array): { parsed: Record<string, any> } | { problem: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return { problem: 'upstream answered 200 with a body that is not JSON' };
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return { problem: 'upstream answered 200 with JSON that is not an object' };
  if (!ANSWER_FIELDS[kind](parsed as Record<string, any>)) return { problem: `upstream answered 200 without the fields of a ${kind} answer` };
  return { parsed: parsed as Record<string, any> };
}

/** Whether an upstream answer to a stream request is a stream at all. */
export function isEventStream(res: Response): boolean {
  return (res.headers.get('content-type') ?? '').toLowerCase().includes('text/event-stream');
}

/** An upstream's non-stream answer read as an OpenAI chat completion. */
export function decodeCompletion(wire: Wire, payload: Uint8Array, clientModel: string): ChatCompletion {
  const parsed = safeJson(new TextDecoder().decode(payload));
  if (wire === 'anthropic') return anthropicToChat(parsed, clientModel);
  if (wire === 'gemini') return geminiToChat(parsed, clientModel);
  return { ...parsed, model: clientModel };
}

export function chunkDecoder(wire: Wire, clientModel: string): ChunkDecoder {
  if (wire === 'anthropic') return anthropicChunkDecoder(clientModel);
  if (wire === 'gemini') return geminiChunkDecoder(clientModel);
  return openAiChunkDecoder();
}

/** The message and kind of an upstream error body, whatever the provider. */
export function upstreamErrorOf(payload: Uint8Array): { message: string; type: string | null; code: string | null } {
  const text = new TextDecoder().decode(payload.subarray(0, 64 * 1024));
  const parsed = safeJson(text);
  const e = parsed?.error;
  if (e && typeof e === 'object') {
    return {
      message: String(e.message ?? text.slice(0, 2000)),
      type: e.type ?? e.status ?? null,
      code: e.code != null ? String(e.code) : null,
    };
  }
  return { message: text.slice(0, 2000) || 'upstream error', type: null, code: null };
}

/** A refusal on content grounds: the same on every channel, so never worth a retry. */
export function isContentRefusal(payload: Uint8Array): boolean {
  const { message, type, code } = upstreamErrorOf(payload);
  return /content[_ ]?(policy|filter|management)|safety|responsible ?ai/i.test(`${type ?? ''} ${code ?? ''} ${message}`);
}
