// A fake upstream model provider speaking OpenAI's real wire format (JSON and SSE streaming with a
// usage chunk, tool calls, embeddings, error bodies), with switches for failures. The only fake in
// the test suite: everything between the client and this server is the real gateway and database.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { handleMedia, type MediaState } from './mock-media';

export type Mode =
  | { kind: 'ok' }
  | { kind: 'status'; status: number; body?: unknown } // answer with this HTTP status and an OpenAI error
  | { kind: 'hang' } // accept, never answer
  | { kind: 'reset' } // destroy the socket before answering
  | { kind: 'stream-break'; afterChunks: number } // stream some chunks, then destroy the socket
  | { kind: 'slow-stream'; delayMs: number } // wait between chunks
  | { kind: 'junk'; what: Junk }; // a 200 that is not what the request's protocol answers

/**
 * html: a 200 HTML page (a proxy's error page); empty: a 200 `{}`; json-for-stream: a stream
 * request answered with application/json; event: a stream that sends two chunks, then an event
 * whose data is not JSON, then the rest (combines with a "mock:slow:N" directive for pacing).
 */
export type Junk = 'html' | 'empty' | 'json-for-stream' | 'event';

export interface RecordedCall {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: any;
  aborted: boolean;
  /** The gateway's request id (X-Client-Request-Id), when it sent one. */
  requestId?: string;
  /** The usage this call reported to the gateway, if the answer got that far. */
  usage?: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details?: { cached_tokens: number }; cache_creation_input_tokens?: number };
}

export interface MockUpstream {
  url: string;
  calls: RecordedCall[];
  mode: Mode;
  /** Usage reported on chat answers; null answers without a usage object. */
  reportUsage: boolean;
  /** Whether POST /v1/responses exists (else 404, as on most OpenAI-compatible servers). */
  responsesApi: boolean;
  /** What GET /v1/models lists (OpenAI's list object); null: no listing here (404, as many
   *  OpenAI-compatible servers answer). */
  models: string[] | null;
  /** The media endpoints' state (mock-media.ts): rerank shape, speech size, the calls they took. */
  media: MediaState;
  close(): Promise<void>;
}

/** The models an OpenAI-compatible mock lists until a test says otherwise. */
export const MOCK_OPENAI_MODELS = ['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'];

/** Deterministic "tokens": whitespace-separated words. The gateway never assumes this. */
export function countWords(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}

function promptText(body: any): string {
  if (Array.isArray(body?.messages)) {
    return body.messages
      .map((m: any) => (typeof m.content === 'string' ? m.content : Array.isArray(m.content) ? m.content.map((p: any) => p.text ?? '').join(' ') : ''))
      .join(' ');
  }
  if (typeof body?.prompt === 'string') return body.prompt;
  if (Array.isArray(body?.prompt)) return body.prompt.join(' ');
  return '';
}

function lastUserText(body: any): string {
  if (!Array.isArray(body?.messages)) return typeof body?.prompt === 'string' ? body.prompt : '';
  const m = [...body.messages].reverse().find((x: any) => x?.role === 'user');
  return typeof m?.content === 'string' ? m.content : '';
}

/** The answer the mock gives: "echo:" plus the last user message, so tests can predict it; after
 *  a tool's result (the last message a tool message), "tool said:" plus that result. */
export function answerFor(body: any): string {
  const last = Array.isArray(body?.messages) ? body.messages.at(-1) : null;
  if (last?.role === 'tool') return `tool said: ${typeof last.content === 'string' ? last.content : JSON.stringify(last.content)}`;
  if (Array.isArray(body?.messages)) {
    const lastUser = [...body.messages].reverse().find((m: any) => m.role === 'user');
    const text = typeof lastUser?.content === 'string' ? lastUser.content : 'multimodal input';
    return `echo: ${text}`;
  }
  return `echo: ${promptText(body)}`;
}

/** A deterministic unit vector for a text (hash-seeded), so embeddings are comparable in tests. */
export function embeddingFor(text: string, dims = 8): number[] {
  // "vec:0.96,0.28" in the text pins the vector (padded with zeros), so tests can choose the
  // cosine similarity between two prompts exactly.
  const pinned = /vec:(-?[\d.]+(?:,-?[\d.]+)*)/.exec(text);
  if (pinned) {
    const v = pinned[1].split(',').map(Number);
    return Array.from({ length: dims }, (_, i) => v[i] ?? 0);
  }
  const h = createHash('sha256').update(text).digest();
  const v = Array.from({ length: dims }, (_, i) => (h[i % h.length] - 127.5) / 127.5);
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}

/** OpenAI's Responses API, as it answers: a response object, or its SSE events when streaming. */
function respondResponses(res: ServerResponse, body: any, reportUsage: boolean) {
  const input = typeof body.input === 'string' ? body.input : Array.isArray(body.input) ? body.input.map((m: any) => (typeof m?.content === 'string' ? m.content : '')).join(' ') : '';
  const text = `echo: ${input}`;
  const usage = { input_tokens: countWords(input), output_tokens: countWords(text), total_tokens: countWords(input) + countWords(text) };
  const message = { type: 'message', id: 'msg_mock', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] };
  const response = { id: 'resp_mock', object: 'response', created_at: 1700000000, status: 'completed', model: body.model, output: [message], ...(reportUsage ? { usage } : {}) };
  if (!body.stream) {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(response));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const event = (type: string, data: Record<string, unknown>) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  event('response.created', { response: { ...response, status: 'in_progress', output: [] } });
  for (const [i, w] of text.split(' ').entries()) event('response.output_text.delta', { item_id: 'msg_mock', output_index: 0, content_index: 0, delta: (i ? ' ' : '') + w });
  event('response.completed', { response });
  res.end();
}

function openAiError(status: number) {
  const map: Record<number, [string, string]> = {
    400: ['invalid_request_error', 'invalid_value'],
    401: ['invalid_request_error', 'invalid_api_key'],
    429: ['requests', 'rate_limit_exceeded'],
    500: ['server_error', 'server_error'],
    503: ['server_error', 'overloaded'],
  };
  const [type, code] = map[status] ?? ['server_error', 'upstream_error'];
  return { error: { message: `mock upstream says ${status}`, type, param: null, code } };
}

async function readJson(req: IncomingMessage): Promise<any> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

export async function startMockUpstream(opts: { responsesApi?: boolean } = {}): Promise<MockUpstream> {
  const state: MockUpstream = {
    url: '',
    calls: [],
    mode: { kind: 'ok' },
    reportUsage: true,
    responsesApi: opts.responsesApi ?? true,
    models: [...MOCK_OPENAI_MODELS],
    media: { rerankShape: 'cohere', speechBytes: 10240, calls: [] },
    close: async () => {},
  };

  const server: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0];
    if (await handleMedia(req, res, path, state.media, state.mode.kind === 'status' ? state.mode.status : null)) return;
    let body: any = {};
    try {
      body = req.method === 'POST' ? await readJson(req) : {};
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify(openAiError(400)));
      return;
    }
    const call: RecordedCall = { path, headers: req.headers, body, aborted: false };
    state.calls.push(call);
    res.on('close', () => {
      if (!res.writableFinished) call.aborted = true;
    });

    call.requestId = (req.headers['x-client-request-id'] as string | undefined) ?? undefined;
    // A per-request directive in the last user message overrides the mock's mode, so one test can
    // mix behaviours in a single run: "mock:status:500", "mock:break:3", "mock:slow:50".
    const directive = /mock:(status|break|slow):(\d+)/.exec(lastUserText(body));
    const mode: Mode = directive
      ? directive[1] === 'status'
        ? { kind: 'status', status: Number(directive[2]) }
        : directive[1] === 'break'
          ? { kind: 'stream-break', afterChunks: Number(directive[2]) }
          : { kind: 'slow-stream', delayMs: Number(directive[2]) }
      : state.mode;
    if (mode.kind === 'hang') return;
    if (mode.kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (mode.kind === 'junk' && mode.what !== 'event') {
      if (mode.what === 'html') res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>502 Bad Gateway</body></html>');
      else if (mode.what === 'empty') res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('<html>maintenance</html>');
      return;
    }
    if (mode.kind === 'status') {
      res.writeHead(mode.status, { 'content-type': 'application/json' }).end(JSON.stringify(mode.body ?? openAiError(mode.status)));
      return;
    }
    if (req.headers.authorization?.startsWith('Bearer ') !== true) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify(openAiError(401)));
      return;
    }

    if (path.endsWith('/embeddings')) {
      const inputs: string[] = Array.isArray(body.input) ? body.input : [body.input];
      const tokens = inputs.reduce((n, t) => n + countWords(String(t)), 0);
      call.usage = { prompt_tokens: tokens, completion_tokens: 0 };
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          object: 'list',
          model: body.model,
          data: inputs.map((t, index) => ({ object: 'embedding', index, embedding: embeddingFor(String(t), body.dimensions ?? 8) })),
          usage: { prompt_tokens: tokens, total_tokens: tokens },
        }),
      );
      return;
    }

    if (path.endsWith('/models') && req.method === 'GET') {
      if (!state.models) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify(openAiError(404)));
        return;
      }
      const data = state.models.map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'mock' }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data }));
      return;
    }

    if (path.endsWith('/responses') && state.responsesApi) {
      respondResponses(res, body, state.reportUsage);
      return;
    }

    const isChat = path.endsWith('/chat/completions');
    const isCompletion = !isChat && path.endsWith('/completions');
    if (!isChat && !isCompletion) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify(openAiError(404)));
      return;
    }

    const created = 1700000000;
    const id = `chatcmpl-mock${state.calls.length}`;
    const promptTokens = countWords(promptText(body));
    const afterTool = isChat && body.messages?.at(-1)?.role === 'tool';
    const wantsTool = isChat && Array.isArray(body.tools) && body.tools.length > 0 && body.tool_choice !== 'none' && !afterTool;
    // "mock:long:N": an answer of N words (a long answer); either way the answer stops at the
    // request's max_completion_tokens or max_tokens, finish_reason "length", as upstreams do.
    const longDirective = /mock:long:(\d+)/.exec(lastUserText(body));
    let words = longDirective ? Array.from({ length: Number(longDirective[1]) }, (_, i) => `w${i}`) : answerFor(body).split(' ');
    const limit = body.max_completion_tokens ?? body.max_tokens;
    const cut = Number.isInteger(limit) && limit > 0 && words.length > limit;
    if (cut) words = words.slice(0, limit);
    const answer = words.join(' ');
    const finish = cut ? 'length' : 'stop';
    // A reasoning model's thoughts, as OpenAI-compatible servers (DeepSeek, vLLM) return them.
    const reasoning = isChat && body.reasoning_effort && body.reasoning_effort !== 'none' ? `Thinking (${body.reasoning_effort}) first.` : null;
    const completionTokens = (wantsTool ? 5 : words.length) + (reasoning ? countWords(reasoning) : 0);
    // "mock:cached:N": N of the prompt's tokens were read from the provider's prompt cache, as
    // OpenAI reports it (prompt_tokens includes them). "mock:cached:N:W": and W more were written to
    // it, as an OpenAI-compatible server in front of Anthropic reports them (LiteLLM's
    // cache_creation_input_tokens; prompt_tokens includes them too).
    const cachedDirective = /mock:cached:(\d+)(?::(\d+))?/.exec(lastUserText(body));
    const cached = cachedDirective ? Math.min(Number(cachedDirective[1]), promptTokens) : 0;
    const written = cachedDirective?.[2] ? Math.min(Number(cachedDirective[2]), promptTokens - cached) : 0;
    const usage = {
      prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens,
      ...(cached ? { prompt_tokens_details: { cached_tokens: cached } } : {}),
      ...(written ? { cache_creation_input_tokens: written } : {}),
    };
    const toolCall = wantsTool
      ? { id: 'call_mock1', type: 'function', function: { name: body.tools[0].function.name, arguments: JSON.stringify({ city: 'Paris' }) } }
      : null;

    if (!body.stream) {
      const payload = isChat
        ? {
            id,
            object: 'chat.completion',
            created,
            model: body.model,
            choices: [
              {
                index: 0,
                message: {
                  ...(toolCall ? { role: 'assistant', content: null, tool_calls: [toolCall] } : { role: 'assistant', content: answer }),
                  ...(reasoning ? { reasoning_content: reasoning } : {}),
                },
                finish_reason: toolCall ? 'tool_calls' : finish,
                logprobs: null,
              },
            ],
            ...(state.reportUsage ? { usage } : {}),
            system_fingerprint: 'fp_mock',
          }
        : {
            id: `cmpl-mock${state.calls.length}`,
            object: 'text_completion',
            created,
            model: body.model,
            choices: [{ index: 0, text: answer, finish_reason: finish, logprobs: null }],
            ...(state.reportUsage ? { usage } : {}),
          };
      if (state.reportUsage) call.usage = usage;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(payload));
      return;
    }

    // Streaming, as OpenAI does it: role chunk, content chunks, finish chunk, usage chunk, [DONE].
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const send = (obj: unknown) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
    const base = isChat ? { id, object: 'chat.completion.chunk', created, model: body.model, system_fingerprint: 'fp_mock' } : { id, object: 'text_completion', created, model: body.model };
    const chunks: unknown[] = [];
    if (isChat) {
      chunks.push({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
      if (reasoning) {
        for (const piece of [reasoning.slice(0, 9), reasoning.slice(9)]) chunks.push({ ...base, choices: [{ index: 0, delta: { reasoning_content: piece }, finish_reason: null }] });
      }
      if (toolCall) {
        chunks.push({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: toolCall.id, type: 'function', function: { name: toolCall.function.name, arguments: '' } }] }, finish_reason: null }] });
        // The arguments in two pieces, as upstreams stream them.
        const args = toolCall.function.arguments;
        for (const piece of [args.slice(0, 8), args.slice(8)]) {
          chunks.push({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: piece } }] }, finish_reason: null }] });
        }
      } else {
        words.forEach((w, i) => chunks.push({ ...base, choices: [{ index: 0, delta: { content: (i ? ' ' : '') + w }, finish_reason: null }] }));
      }
      chunks.push({ ...base, choices: [{ index: 0, delta: {}, finish_reason: toolCall ? 'tool_calls' : finish }] });
    } else {
      words.forEach((w, i) => chunks.push({ ...base, choices: [{ index: 0, text: (i ? ' ' : '') + w, finish_reason: null, logprobs: null }] }));
      chunks.push({ ...base, choices: [{ index: 0, text: '', finish_reason: finish, logprobs: null }] });
    }
    if (state.reportUsage && body.stream_options?.include_usage) chunks.push({ ...base, choices: [], usage });

    for (let i = 0; i < chunks.length; i++) {
      if (mode.kind === 'stream-break' && i === mode.afterChunks) {
        req.socket.destroy();
        return;
      }
      if (mode.kind === 'slow-stream') await new Promise((r) => setTimeout(r, mode.delayMs));
      // Paced, so the chunks before the break reach the client as chunks of their own.
      if (mode.kind === 'stream-break' && i > 0) await new Promise((r) => setTimeout(r, 30));
      if (res.destroyed) return;
      if (state.mode.kind === 'junk' && state.mode.what === 'event' && i === 2) res.write('data: <html>upstream hiccup</html>\n\n');
      send(chunks[i]);
      if ((chunks[i] as any).usage) call.usage = usage;
    }
    res.end('data: [DONE]\n\n');
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  state.url = `http://127.0.0.1:${port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}
