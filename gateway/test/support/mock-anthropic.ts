// A fake Anthropic Messages API (POST /v1/messages, POST /v1/messages/count_tokens) speaking the
// real wire format: x-api-key and anthropic-version checks, extended thinking (signed thinking
// blocks, thinking_delta and signature_delta), JSON answers with content blocks and usage, SSE streams as
// message_start / content_block_* / message_delta / message_stop events, tool_use blocks, and
// errors in Anthropic's shape ({"type":"error","error":{type,message}}), with failure switches.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { countWords, type Mode, type RecordedCall } from './mock-upstream';

export interface MockAnthropic {
  url: string;
  calls: RecordedCall[];
  mode: Mode;
  /** What GET /v1/models lists, newest first as Anthropic lists them, in pages of `limit`. */
  models: string[];
  close(): Promise<void>;
}

export const MOCK_ANTHROPIC_MODELS = ['claude-sonnet-4-5', 'claude-haiku-4-5', 'claude-opus-4-1'];

/** GET /v1/models as Anthropic answers it: {data, has_more, first_id, last_id}, paged by limit (1..1000, default 20) and after_id. */
function modelPage(models: string[], query: URLSearchParams) {
  const limit = Math.min(1000, Math.max(1, Number(query.get('limit') ?? 20) || 20));
  const after = query.get('after_id');
  const start = after ? models.indexOf(after) + 1 : 0;
  const page = models.slice(start, start + limit);
  const data = page.map((id, i) => ({ type: 'model', id, display_name: id.replace(/-/g, ' '), created_at: new Date(Date.UTC(2025, 0, 1 + i)).toISOString() }));
  return { data, has_more: start + limit < models.length, first_id: page[0] ?? null, last_id: page.at(-1) ?? null };
}

const ERROR_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  529: 'overloaded_error',
};
export const anthropicErrorBody = (status: number, message = `mock anthropic says ${status}`) => ({
  type: 'error',
  error: { type: ERROR_TYPES[status] ?? 'api_error', message },
});

function blocksText(content: any): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((b: any) => (b.type === 'text' ? b.text : b.type === 'tool_result' ? (typeof b.content === 'string' ? b.content : blocksText(b.content)) : ''))
    .join(' ');
}

async function readJson(req: IncomingMessage): Promise<any> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

export async function startMockAnthropic(): Promise<MockAnthropic> {
  const state: MockAnthropic = { url: '', calls: [], mode: { kind: 'ok' }, models: [...MOCK_ANTHROPIC_MODELS], close: async () => {} };
  const fail = (res: ServerResponse, status: number, message?: string) =>
    res.writeHead(status, { 'content-type': 'application/json', 'request-id': 'req_mock' }).end(JSON.stringify(anthropicErrorBody(status, message)));

  const server: Server = createServer(async (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    let body: any = {};
    try {
      body = await readJson(req);
    } catch {
      return fail(res, 400, 'invalid JSON');
    }
    const call: RecordedCall = { path, headers: req.headers, body, aborted: false };
    state.calls.push(call);
    res.on('close', () => {
      if (!res.writableFinished) call.aborted = true;
    });
    const mode = state.mode;
    if (mode.kind === 'hang') return;
    if (mode.kind === 'reset') return void req.socket.destroy();
    if (mode.kind === 'status') {
      res.writeHead(mode.status, { 'content-type': 'application/json' }).end(JSON.stringify(mode.body ?? anthropicErrorBody(mode.status)));
      return;
    }
    const counting = path === '/v1/messages/count_tokens';
    if (path === '/v1/models' && req.method === 'GET') {
      if (!req.headers['x-api-key']) return fail(res, 401, 'x-api-key header is required');
      if (!req.headers['anthropic-version']) return fail(res, 400, 'anthropic-version header is required');
      const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_mock' }).end(JSON.stringify(modelPage(state.models, query)));
      return;
    }
    if (path !== '/v1/messages' && !counting) return fail(res, 404, `Not found: ${path}`);
    if (!req.headers['x-api-key']) return fail(res, 401, 'x-api-key header is required');
    if (!req.headers['anthropic-version']) return fail(res, 400, 'anthropic-version header is required');
    if (req.headers.authorization) return fail(res, 400, 'unexpected Authorization header');
    if (!counting && !Number.isInteger(body.max_tokens)) return fail(res, 400, 'max_tokens: Field required');
    // Token counting takes the prompt only, as the real endpoint does.
    for (const f of ['max_tokens', 'stream', 'temperature', 'stop_sequences']) {
      if (counting && f in body) return fail(res, 400, `${f}: Extra inputs are not permitted`);
    }
    if (!Array.isArray(body.messages) || body.messages.length === 0) return fail(res, 400, 'messages: Field required');
    for (let i = 1; i < body.messages.length; i++) {
      if (body.messages[i].role === body.messages[i - 1].role) return fail(res, 400, 'messages: roles must alternate between "user" and "assistant"');
    }
    if (body.messages[0].role !== 'user') return fail(res, 400, 'messages: first message must use the "user" role');
    const thinkingOn = body.thinking?.type === 'enabled';
    if (thinkingOn && !(Number.isInteger(body.thinking.budget_tokens) && body.thinking.budget_tokens >= 1024 && (counting || body.thinking.budget_tokens < body.max_tokens))) {
      return fail(res, 400, 'thinking.budget_tokens: must be at least 1024 and less than max_tokens');
    }

    const last = body.messages.at(-1);
    const lastBlocks = Array.isArray(last.content) ? last.content : [];
    const toolResult = lastBlocks.find((b: any) => b.type === 'tool_result');
    const wantsTool = Array.isArray(body.tools) && body.tools.length > 0 && body.tool_choice?.type !== 'none' && !toolResult;
    const answer = toolResult ? `tool said: ${blocksText(toolResult.content)}` : `echo: ${blocksText(last.content)}`;
    const words = answer.split(' ');
    const system = typeof body.system === 'string' ? body.system : blocksText(body.system);
    const inputTokens = countWords(system) + body.messages.reduce((n: number, m: any) => n + countWords(blocksText(m.content)), 0);
    const outputTokens = wantsTool ? 5 : words.length;
    // "mock:cache:R:W" in the last message: besides input_tokens, R tokens read from the prompt
    // cache and W written to it, reported apart as the API does (input_tokens excludes both).
    const cacheDirective = /mock:cache:(\d+):(\d+)/.exec(blocksText(body.messages.at(-1)?.content));
    const cacheUsage = { cache_creation_input_tokens: cacheDirective ? Number(cacheDirective[2]) : 0,
                         cache_read_input_tokens: cacheDirective ? Number(cacheDirective[1]) : 0 };
    if (counting) {
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_mock' }).end(JSON.stringify({ input_tokens: inputTokens }));
      return;
    }
    const id = `msg_mock${state.calls.length}`;
    // Extended thinking: a thinking block (signed) before the answer, as the API sends it.
    const thinking = thinkingOn ? { type: 'thinking', thinking: 'Let me think about it.', signature: 'EqQBCkYIBxgCKkBmockSignature' } : null;
    const toolUse = wantsTool ? { type: 'tool_use', id: 'toolu_mock1', name: body.tools[0].name, input: { city: 'Paris' } } : null;

    if (!body.stream) {
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_mock' }).end(
        JSON.stringify({
          id,
          type: 'message',
          role: 'assistant',
          model: body.model,
          content: [...(thinking ? [thinking] : []), ...(toolUse ? [{ type: 'text', text: 'Let me check.' }, toolUse] : [{ type: 'text', text: answer }])],
          stop_reason: toolUse ? 'tool_use' : 'end_turn',
          stop_sequence: null,
          usage: { input_tokens: inputTokens, output_tokens: outputTokens, ...cacheUsage },
        }),
      );
      return;
    }

    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': 'req_mock' });
    const events: [string, any][] = [];
    events.push(['message_start', { message: { id, type: 'message', role: 'assistant', model: body.model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: inputTokens, output_tokens: 1, ...cacheUsage } } }]);
    events.push(['ping', {}]);
    const at = thinking ? 1 : 0;
    if (thinking) {
      events.push(['content_block_start', { index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } }]);
      events.push(['content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'Let me think ' } }]);
      events.push(['content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'about it.' } }]);
      events.push(['content_block_delta', { index: 0, delta: { type: 'signature_delta', signature: thinking.signature } }]);
      events.push(['content_block_stop', { index: 0 }]);
    }
    if (toolUse) {
      events.push(['content_block_start', { index: at, content_block: { type: 'text', text: '' } }]);
      events.push(['content_block_delta', { index: at, delta: { type: 'text_delta', text: 'Let me check.' } }]);
      events.push(['content_block_stop', { index: at }]);
      events.push(['content_block_start', { index: at + 1, content_block: { type: 'tool_use', id: toolUse.id, name: toolUse.name, input: {} } }]);
      events.push(['content_block_delta', { index: at + 1, delta: { type: 'input_json_delta', partial_json: '{"city": ' } }]);
      events.push(['content_block_delta', { index: at + 1, delta: { type: 'input_json_delta', partial_json: '"Paris"}' } }]);
      events.push(['content_block_stop', { index: at + 1 }]);
    } else {
      events.push(['content_block_start', { index: at, content_block: { type: 'text', text: '' } }]);
      words.forEach((w, i) => events.push(['content_block_delta', { index: at, delta: { type: 'text_delta', text: (i ? ' ' : '') + w } }]));
      events.push(['content_block_stop', { index: at }]);
    }
    events.push(['message_delta', { delta: { stop_reason: toolUse ? 'tool_use' : 'end_turn', stop_sequence: null }, usage: { output_tokens: outputTokens } }]);
    events.push(['message_stop', {}]);
    for (let i = 0; i < events.length; i++) {
      if (mode.kind === 'stream-break' && i === mode.afterChunks) return void req.socket.destroy();
      if (mode.kind === 'slow-stream') await new Promise((r) => setTimeout(r, mode.delayMs));
      if (mode.kind === 'stream-break' && i > 0) await new Promise((r) => setTimeout(r, 30));
      if (res.destroyed) return;
      const [type, data] = events[i];
      res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
    }
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}
