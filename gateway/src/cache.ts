// The gateway's side of the response cache (DESIGN §4): canonical request hashes and sampling facts, the embedding of
// the last user message, and replaying a cached answer as JSON or as a proper SSE stream. What is
// enabled, for whom, at which threshold and price is decided in SQL (sql/43_cache.sql).
import { options, type Channel } from './snapshot';
import { upstreamFetch } from './ssrf';

/** Request fields that do not change the answer, and so stay out of the hashes. */
const NOT_SEMANTIC = new Set(['stream', 'stream_options', 'user', 'metadata', 'store', 'service_tier', 'safety_identifier', 'prompt_cache_key']);

export interface CacheRequest {
  exact: string; // hex sha256 of the canonical request
  context: string; // hex sha256 of the canonical request without the last user message
  semantic: boolean; // the last user message is plain text: the semantic layer can apply
  prompt: string; // the last user message's text
  sampling: Sampling; // what SQL decides eligibility from (private.cache_eligibility)
}

/** The request's sampling facts, as given: whether its answer is repeatable is decided in SQL. */
export interface Sampling {
  temperature: unknown;
  seed: unknown;
  n: unknown;
  logprobs: unknown;
  tools: number; // tools (and legacy functions) offered
  tool_choice: unknown; // or the legacy function_call
}

const given = (v: unknown) => (v === undefined ? null : v);

/** The sampling facts of a chat request. */
export function samplingOf(body: Record<string, any>): Sampling {
  return {
    temperature: given(body.temperature),
    seed: given(body.seed),
    n: given(body.n),
    logprobs: given(body.logprobs),
    tools: (Array.isArray(body.tools) ? body.tools.length : 0) + (Array.isArray(body.functions) ? body.functions.length : 0),
    tool_choice: given(body.tool_choice ?? body.function_call),
  };
}

/** JSON with object keys sorted at every depth: equal requests hash equally. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value as object)
      .sort()
      .filter((k) => (value as any)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((value as any)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

// Bun's one-shot hash: node:crypto's createHash builds a stream object per call (two per request here).
const sha256hex = (s: string) => Bun.CryptoHasher.hash('sha256', s, 'hex') as string;

/** canonical() of the message that stands for the last user message in the context hash. */
const LAST_PLACEHOLDER = canonical({ role: 'user', content: '<last>' });

function textOf(content: unknown): string | null {
  if (typeof content === 'string') return content;
  if (Array.isArray(content) && content.every((p) => p && typeof p === 'object' && (p as any).type === 'text')) {
    return content.map((p: any) => p.text ?? '').join('\n');
  }
  return null;
}

/**
 * The cache key of a chat request with its sampling facts, or why there is none: the client
 * opted out (reason "client"), or no user message comes last (reason "last-message"). Whether a
 * request with a key is served from the cache is decided in SQL (private.cache_plan).
 */
export function cacheRequest(body: Record<string, any>, headers: Headers): CacheRequest | { bypass: string } {
  const optOut = (headers.get('x-elygate-cache') ?? '').toLowerCase();
  const cc = (headers.get('cache-control') ?? '').toLowerCase();
  if (optOut === 'off' || optOut === 'bypass' || /\bno-cache\b|\bno-store\b/.test(cc)) return { bypass: 'client' };
  if (!Array.isArray(body.messages) || body.messages.length === 0) return { bypass: 'last-message' };
  const last = body.messages[body.messages.length - 1];
  if (!last || last.role !== 'user') return { bypass: 'last-message' };
  // The two hashed texts are canonical(essential fields) and the same with the last message
  // replaced by LAST_PLACEHOLDER; they differ only there, so every other part is serialised once.
  // ('__proto__' is skipped: copied into a plain object it never became an own key.)
  const earlier = (body.messages as unknown[]).slice(0, -1).map(canonical);
  let exactText = '';
  let contextText = '';
  for (const k of Object.keys(body).sort()) {
    if (NOT_SEMANTIC.has(k) || k === '__proto__' || body[k] === undefined) continue;
    const sep = exactText ? ',' : '';
    if (k === 'messages') {
      exactText += `${sep}"messages":[${[...earlier, canonical(last)].join(',')}]`;
      contextText += `${sep}"messages":[${[...earlier, LAST_PLACEHOLDER].join(',')}]`;
    } else {
      const part = `${sep}${JSON.stringify(k)}:${canonical(body[k])}`;
      exactText += part;
      contextText += part;
    }
  }
  const exact = sha256hex(`{${exactText}}`);
  const context = sha256hex(`{${contextText}}`);
  const prompt = textOf(last.content);
  return { exact, context, semantic: prompt !== null && prompt.trim() !== '', prompt: prompt ?? '', sampling: samplingOf(body) };
}

/** A complete answer as the cache keeps it. */
export interface CachedAnswer {
  content: string | null;
  tool_calls?: unknown[];
  refusal?: string | null;
  finish_reason: string;
}

/** What to store from a non-stream chat completion, or null when it is not a complete single choice. */
export function answerOf(completion: any): CachedAnswer | null {
  const choices = completion?.choices;
  if (!Array.isArray(choices) || choices.length !== 1) return null;
  const c = choices[0];
  if (c.finish_reason !== 'stop' && c.finish_reason !== 'tool_calls') return null;
  return {
    content: c.message?.content ?? null,
    ...(c.message?.tool_calls ? { tool_calls: c.message.tool_calls } : {}),
    ...(c.message?.refusal ? { refusal: c.message.refusal } : {}),
    finish_reason: c.finish_reason,
  };
}

/** Assembles a streamed answer from its chunks (content and tool-call deltas). */
export class StreamAssembler {
  private content = '';
  private tools = new Map<number, { id?: string; type: string; function: { name: string; arguments: string } }>();
  private finish: string | null = null;
  private choices = new Set<number>();

  add(chunk: any): void {
    for (const c of Array.isArray(chunk?.choices) ? chunk.choices : []) {
      this.choices.add(c.index ?? 0);
      const d = c.delta ?? {};
      if (typeof d.content === 'string') this.content += d.content;
      for (const t of Array.isArray(d.tool_calls) ? d.tool_calls : []) {
        const i = t.index ?? 0;
        const cur = this.tools.get(i) ?? { type: 'function', function: { name: '', arguments: '' } };
        if (t.id) cur.id = t.id;
        if (t.function?.name) cur.function.name += t.function.name;
        if (t.function?.arguments) cur.function.arguments += t.function.arguments;
        this.tools.set(i, cur);
      }
      if (c.finish_reason) this.finish = c.finish_reason;
    }
  }

  answer(): CachedAnswer | null {
    if (this.choices.size > 1 || (this.finish !== 'stop' && this.finish !== 'tool_calls')) return null;
    return {
      content: this.content || (this.tools.size ? null : ''),
      ...(this.tools.size ? { tool_calls: [...this.tools.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => t) } : {}),
      finish_reason: this.finish,
    };
  }
}

interface Usage {
  prompt_tokens?: number;
  completion_tokens?: number;
}

/** A cached answer as a chat completion. */
export function replayJson(answer: CachedAnswer, model: string, requestId: string, usage: Usage): Uint8Array {
  const prompt = usage.prompt_tokens ?? 0;
  const completion = usage.completion_tokens ?? 0;
  return new TextEncoder().encode(
    JSON.stringify({
      id: `chatcmpl-${requestId}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: answer.content, ...(answer.tool_calls ? { tool_calls: answer.tool_calls } : {}), refusal: answer.refusal ?? null },
          logprobs: null,
          finish_reason: answer.finish_reason,
        },
      ],
      usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    }),
  );
}

/** A cached answer as an OpenAI SSE stream: role, content in pieces, tool calls, finish, usage, [DONE]. */
export function replaySse(answer: CachedAnswer, model: string, requestId: string, usage: Usage, includeUsage: boolean): Uint8Array {
  const base = { id: `chatcmpl-${requestId}`, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model };
  const events: unknown[] = [{ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] }];
  const text = answer.content ?? '';
  // Word-sized pieces, as an upstream would send them.
  for (const piece of text.match(/\S+\s*|\s+/g) ?? []) {
    events.push({ ...base, choices: [{ index: 0, delta: { content: piece }, logprobs: null, finish_reason: null }] });
  }
  (answer.tool_calls ?? []).forEach((t: any, index: number) => {
    events.push({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index, id: t.id, type: t.type ?? 'function', function: t.function }] }, logprobs: null, finish_reason: null }] });
  });
  events.push({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: answer.finish_reason }] });
  if (includeUsage) {
    const p = usage.prompt_tokens ?? 0;
    const c = usage.completion_tokens ?? 0;
    events.push({ ...base, choices: [], usage: { prompt_tokens: p, completion_tokens: c, total_tokens: p + c } });
  }
  return new TextEncoder().encode(events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + 'data: [DONE]\n\n');
}

/** The cache header: miss | exact | semantic; similarity=0.97 | bypass; reason=sampling (or off, client, ...). */
export function cacheHeader(result: string | null | undefined, similarity?: number | null, reason?: string | null): string {
  if (result === 'semantic') return `semantic; similarity=${(similarity ?? 0).toFixed(2)}`;
  if (result === 'exact' || result === 'miss') return result;
  return `bypass; reason=${reason ?? 'off'}`;
}

/**
 * The embedding of a text from the configured embedding channel (OpenAI wire format), with its
 * token count. Throws on any failure: callers bypass the cache, they never fail the request.
 */
export async function embed(channel: Channel, model: string, text: string, timeoutMs: number): Promise<{ vector: number[]; tokens: number }> {
  const base = channel.baseUrl.replace(/\/+$/, '');
  const url = `${/^https?:\/\/[^/]+\/./.test(base + '/') ? base : base + '/v1'}/embeddings`;
  const key = channel.keys[0];
  const init = {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify({ model, input: text }),
    signal: AbortSignal.timeout(timeoutMs),
  };
  const res = await upstreamFetch(url, init, options.AllowPrivateUpstreams === true);
  if (!res.ok) throw new Error(`embedding upstream returned ${res.status}`);
  const body: any = await res.json();
  const vector = body?.data?.[0]?.embedding;
  if (!Array.isArray(vector) || vector.length === 0) throw new Error('embedding upstream returned no vector');
  return { vector, tokens: Number(body?.usage?.prompt_tokens ?? body?.usage?.total_tokens ?? 0) };
}

/** Cosine similarity of two vectors (for the false-hit audit of two answers). */
export function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

/** The response for a cache hit: JSON, or SSE when the client asked for a stream. */
export function hitResponse(opts: {
  requestId: string;
  model: string;
  stream: boolean;
  includeUsage: boolean;
  answer: CachedAnswer;
  usage: Usage;
  headers: Record<string, string>;
}): Response {
  const bytes = opts.stream
    ? replaySse(opts.answer, opts.model, opts.requestId, opts.usage, opts.includeUsage)
    : replayJson(opts.answer, opts.model, opts.requestId, opts.usage);
  return new Response(bytes as Uint8Array<ArrayBuffer>, {
    status: 200,
    headers: {
      'content-type': opts.stream ? 'text/event-stream; charset=utf-8' : 'application/json',
      ...(opts.stream ? { 'cache-control': 'no-cache' } : {}),
      'x-request-id': opts.requestId,
      ...opts.headers,
    },
  });
}
