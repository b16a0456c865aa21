// Shared shapes of the provider adapters. Inside the gateway, a request that must change wire
// format travels as an OpenAI chat completion request, and its answer as OpenAI chat completion
// objects or chunks: every adapter converts to and from that one shape, so N providers and M
// client protocols need N + M converters, not N × M.

/** An OpenAI chat completion request (only the fields the converters read are typed). */
export type ChatRequest = Record<string, any> & { model: string; messages: any[]; stream?: boolean };

/** An OpenAI chat completion (non-stream answer). */
export type ChatCompletion = Record<string, any> & { choices: any[]; usage?: ChatUsage };

/** An OpenAI chat completion chunk (one stream event). */
export type ChatChunk = Record<string, any> & { choices: any[]; usage?: ChatUsage | null };

export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number };
  /** Tokens written to the provider's prompt cache (Anthropic), billed at the cache-write price. */
  cache_creation_input_tokens?: number;
}

/** Converts a provider's stream, event by event, into chat chunks. */
export interface ChunkDecoder {
  /** Chunks for one upstream SSE event (`event:` name and `data:`). */
  event(name: string | null, data: string): ChatChunk[];
  /** Chunks owed when the upstream stream ends (e.g. a final usage chunk). */
  end(): ChatChunk[];
  /** True once the upstream said the answer is complete (a finish reason arrived). */
  complete(): boolean;
  /** True once the upstream's end-of-stream marker arrived ([DONE], message_stop); Gemini has none. */
  terminated(): boolean;
  /** An in-band error the upstream sent mid-stream, if any. */
  error(): string | null;
}

/** Where and how to send one upstream request. */
export interface UpstreamCall {
  url: string;
  headers: Record<string, string>;
  body: string | Uint8Array<ArrayBuffer>;
}

export const finishToAnthropic: Record<string, string> = {
  stop: 'end_turn',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  function_call: 'tool_use',
  content_filter: 'refusal',
};

/** OpenAI-shaped usage; prompt counts every input token, of which `cached` were read from the
 *  provider's prompt cache and `written` written to it (Anthropic's cache_creation_input_tokens,
 *  carried under that name as LiteLLM does: OpenAI's usage has no field for it). */
export function usageOf(prompt: number, completion: number, cached?: number, written?: number): ChatUsage {
  const u: ChatUsage = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  if (cached) u.prompt_tokens_details = { cached_tokens: cached };
  if (written) u.cache_creation_input_tokens = written;
  return u;
}

let counter = 0;
/** An id for objects the gateway synthesises (tool calls Gemini leaves unnamed, message ids). */
export function syntheticId(prefix: string): string {
  counter = (counter + 1) % 1e9;
  return `${prefix}${Date.now().toString(36)}${counter.toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

/** Text of an OpenAI message content (string, or array of parts). */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p: any) => (typeof p === 'string' ? p : p?.text ?? '')).join('');
  return '';
}

/** A data: URL split into media type and base64 payload, or null for any other URL. */
export function parseDataUrl(url: string): { mediaType: string; data: string } | null {
  const m = /^data:([^;,]+)(?:;[^,]*)?;base64,(.*)$/s.exec(url);
  return m ? { mediaType: m[1], data: m[2] } : null;
}

/** A stream event's data as a JSON object, or null when it is not one (junk from the upstream). */
export function parseEvent(data: string): Record<string, any> | null {
  if (data.trim() === '') return {}; // an event with a name and no data (e.g. a bare ping)
  try {
    const v = JSON.parse(data);
    return v && typeof v === 'object' && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** What a stream decoder reports when an event's data is not JSON. */
export const MALFORMED_EVENT = 'upstream sent a malformed stream event';

export function safeJson(text: string): any {
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    return {};
  }
}
