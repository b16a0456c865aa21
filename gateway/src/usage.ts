// Usage truth (DESIGN §3): what the upstream reports wins; when it reports nothing (an aborted
// stream, an upstream without usage), the tokens of the prompt and of the text actually delivered
// are counted with a real tokenizer and the outcome is flagged 'estimated'.
//
// Also the prompt estimate relay_begin reserves against. That one runs on every request, so it is a
// cheap, deliberately generous character count, not a tokenizer pass: the reservation only has to
// cover the request, settlement bills what was really used.

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens?: number;
  cache_write_tokens?: number;
  /** A media endpoint's units (images, characters, audio seconds, search units), at the card's unit_price. */
  units?: number;
}

/** Tokens assumed for one image part in the reservation (a high-detail 512px tile set). */
const IMAGE_TOKENS = 1105;
/** Tokens OpenAI adds per chat message for role and framing. */
const MESSAGE_OVERHEAD = 4;

const count = (n: unknown): number => (Number.isFinite(n) ? (n as number) : 0);

/**
 * Usage from a usage object, or null. Three shapes:
 * - OpenAI chat/completions/embeddings: prompt_tokens includes prompt_tokens_details.cached_tokens
 *   (and cache_creation_input_tokens, which OpenAI-shaped usage converted from Anthropic carries, as
 *   LiteLLM does);
 * - OpenAI Responses: input_tokens includes input_tokens_details.cached_tokens;
 * - Anthropic Messages: input_tokens EXCLUDES cache_read_input_tokens and
 *   cache_creation_input_tokens, which are added here, so the prompt is always every input token,
 *   of which cached_tokens were read from and cache_write_tokens written to the provider's cache.
 */
export function readUsage(u: any): Usage | null {
  if (!u || typeof u !== 'object') return null;
  const anthropic = !Number.isFinite(u.prompt_tokens) && Number.isFinite(u.input_tokens) &&
    (Number.isFinite(u.cache_read_input_tokens) || Number.isFinite(u.cache_creation_input_tokens));
  const prompt = Number.isFinite(u.prompt_tokens)
    ? u.prompt_tokens
    : anthropic
      ? u.input_tokens + count(u.cache_read_input_tokens) + count(u.cache_creation_input_tokens)
      : Number.isFinite(u.input_tokens) ? u.input_tokens : null;
  if (prompt === null) return null;
  const completion = Number.isFinite(u.completion_tokens) ? u.completion_tokens : Number.isFinite(u.output_tokens) ? u.output_tokens : 0;
  const usage: Usage = { prompt_tokens: prompt, completion_tokens: completion };
  const cached = u.prompt_tokens_details?.cached_tokens ?? u.input_tokens_details?.cached_tokens ?? u.cache_read_input_tokens;
  if (Number.isFinite(cached) && cached > 0) usage.cached_tokens = cached;
  const written = u.cache_creation_input_tokens;
  if (Number.isFinite(written) && written > 0) usage.cache_write_tokens = written;
  return usage;
}

/** The text a request sends as its prompt (messages, tools, prompt or input), and its image count. */
export function promptParts(body: Record<string, any>): { text: string; images: number; messages: number } {
  const parts: string[] = [];
  let images = 0;
  let messages = 0;
  const addContent = (c: unknown) => {
    if (typeof c === 'string') parts.push(c);
    else if (Array.isArray(c)) {
      for (const p of c) {
        if (typeof p === 'string') parts.push(p);
        else if (p && typeof p === 'object') {
          const q = p as any;
          if (typeof q.text === 'string') parts.push(q.text);
          else if (q.type === 'image_url' || q.type === 'image' || q.type === 'input_image') images++;
          // Responses input items: messages, function calls and their outputs.
          else if (q.content !== undefined) addContent(q.content);
          else if (q.type === 'function_call') parts.push(String(q.name ?? ''), String(q.arguments ?? ''));
          else if (q.type === 'function_call_output') addContent(q.output);
        }
      }
    }
  };
  if (Array.isArray(body.messages)) {
    for (const m of body.messages) {
      messages++;
      addContent(m?.content);
      if (Array.isArray(m?.tool_calls)) parts.push(JSON.stringify(m.tool_calls));
    }
  }
  if (body.system !== undefined) addContent(body.system);
  if (body.prompt !== undefined) addContent(body.prompt);
  if (body.input !== undefined) addContent(body.input);
  if (typeof body.instructions === 'string') parts.push(body.instructions);
  if (Array.isArray(body.tools)) parts.push(JSON.stringify(body.tools));
  return { text: parts.join('\n'), images, messages };
}

/** Generous token estimate of a text: one token per 3 UTF-8 bytes (real English runs near 4, CJK near 3). */
export const textTokensEstimate = (text: string): number => Math.ceil(Buffer.byteLength(text, 'utf8') / 3);

/**
 * Generous prompt-token estimate for the reservation: textTokensEstimate of the prompt's text,
 * plus per-message framing and a fixed allowance per image.
 */
export function promptEstimate(body: Record<string, any>): number {
  const { text, images, messages } = promptParts(body);
  return textTokensEstimate(text) + messages * MESSAGE_OVERHEAD + images * IMAGE_TOKENS;
}

type Counter = (text: string) => number;
let counter: Promise<Counter> | null = null;

/**
 * The tokenizer (gpt-tokenizer, o200k_base), loaded on first use only: it costs ~1 s and ~80 MB,
 * and a gateway whose upstreams always report usage never needs it.
 */
function tokenizer(): Promise<Counter> {
  counter ??= import('gpt-tokenizer').then((m) => (text: string) => (text ? m.countTokens(text) : 0));
  return counter;
}

/** Counted usage for when the upstream reported none: the prompt and what was delivered. */
export async function countUsage(body: Record<string, any>, delivered: string): Promise<Usage> {
  const count = await tokenizer();
  const { text, images, messages } = promptParts(body);
  return {
    prompt_tokens: count(text) + messages * MESSAGE_OVERHEAD + images * IMAGE_TOKENS,
    completion_tokens: count(delivered),
  };
}

/** What a model reads of an Anthropic Messages request: every block's text, tool calls, results and definitions. */
function messagesParts(body: Record<string, any>): { text: string[]; images: number; messages: number } {
  const text: string[] = [];
  let images = 0;
  const blocks = (content: unknown) => {
    if (typeof content === 'string') return void text.push(content);
    if (!Array.isArray(content)) return;
    for (const b of content) {
      if (b?.type === 'text') text.push(String(b.text ?? ''));
      else if (b?.type === 'thinking') text.push(String(b.thinking ?? ''));
      else if (b?.type === 'tool_use') text.push(String(b.name ?? ''), JSON.stringify(b.input ?? {}));
      else if (b?.type === 'tool_result') blocks(b.content);
      else if (b?.type === 'image' || b?.type === 'document') images++;
    }
  };
  blocks(body.system);
  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (const m of messages) blocks(m?.content);
  if (Array.isArray(body.tools)) text.push(JSON.stringify(body.tools));
  return { text, images, messages: messages.length };
}

/**
 * A tokenizer estimate of an Anthropic Messages request's input tokens (o200k_base, not Claude's
 * own tokenizer, which is not published): POST /v1/messages/count_tokens when no Anthropic channel
 * can count exactly.
 */
export async function estimateMessagesTokens(body: Record<string, any>): Promise<number> {
  const count = await tokenizer();
  const { text, images, messages } = messagesParts(body);
  return count(text.join('\n')) + messages * MESSAGE_OVERHEAD + images * IMAGE_TOKENS;
}
