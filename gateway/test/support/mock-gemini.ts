// A fake Google Gemini API speaking the real wire format: POST
// /v1beta/models/{model}:generateContent (JSON) and :streamGenerateContent?alt=sse (one
// GenerateContentResponse per SSE event, CRLF-separated, no end marker), key in x-goog-api-key,
// functionCall parts, usageMetadata, and errors as {"error":{code,message,status}}.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { countWords, type Mode, type RecordedCall } from './mock-upstream';

export interface MockGemini {
  url: string;
  calls: (RecordedCall & { query: string })[];
  mode: Mode;
  /** What GET /v1beta/models lists (as models/<name>), in pages of pageSize; embedding models
   *  list embedContent only, as Gemini's do. */
  models: { name: string; methods: string[] }[];
  close(): Promise<void>;
}

export const MOCK_GEMINI_MODELS = [
  { name: 'gemini-2.5-flash', methods: ['generateContent', 'countTokens'] },
  { name: 'gemini-2.5-pro', methods: ['generateContent', 'countTokens'] },
  { name: 'text-embedding-004', methods: ['embedContent'] },
];

/** GET /v1beta/models as Gemini answers it: {models: [Model], nextPageToken}, paged by pageSize (default 50, at most 1000) and pageToken. */
function modelPage(models: MockGemini['models'], query: URLSearchParams) {
  const size = Math.min(1000, Math.max(1, Number(query.get('pageSize') ?? 50) || 50));
  const start = Number(query.get('pageToken') ?? 0) || 0;
  const page = models.slice(start, start + size).map((m) => ({
    name: `models/${m.name}`,
    version: '001',
    displayName: m.name,
    description: `mock ${m.name}`,
    inputTokenLimit: 1048576,
    outputTokenLimit: 8192,
    supportedGenerationMethods: m.methods,
  }));
  return { models: page, ...(start + size < models.length ? { nextPageToken: String(start + size) } : {}) };
}

const STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
};
export const geminiErrorBody = (code: number, message = `mock gemini says ${code}`) => ({ error: { code, message, status: STATUS[code] ?? 'UNKNOWN' } });

const partsText = (parts: any[] = []) =>
  parts.map((p) => p.text ?? (p.functionResponse ? JSON.stringify(p.functionResponse.response) : '')).join(' ');

async function readJson(req: IncomingMessage): Promise<any> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

export async function startMockGemini(): Promise<MockGemini> {
  const state: MockGemini = { url: '', calls: [], mode: { kind: 'ok' }, models: MOCK_GEMINI_MODELS.map((m) => ({ ...m })), close: async () => {} };
  const server: Server = createServer(async (req, res) => {
    const [path, query = ''] = (req.url ?? '').split('?');
    const fail = (code: number, message?: string) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(geminiErrorBody(code, message)));
    let body: any = {};
    try {
      body = await readJson(req);
    } catch {
      return fail(400, 'Invalid JSON payload received.');
    }
    const call = { path, query, headers: req.headers, body, aborted: false };
    state.calls.push(call);
    res.on('close', () => {
      if (!res.writableFinished) call.aborted = true;
    });
    const mode = state.mode;
    if (mode.kind === 'hang') return;
    if (mode.kind === 'reset') return void req.socket.destroy();
    if (mode.kind === 'status') {
      res.writeHead(mode.status, { 'content-type': 'application/json' }).end(JSON.stringify(mode.body ?? geminiErrorBody(mode.status)));
      return;
    }
    if (path === '/v1beta/models' && req.method === 'GET') {
      const q = new URLSearchParams(query);
      if (!req.headers['x-goog-api-key'] && !q.get('key')) return fail(403, 'Method doesn\'t allow unregistered callers. Please use API Key.');
      res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' }).end(JSON.stringify(modelPage(state.models, q)));
      return;
    }
    const m = /^\/v1beta\/models\/([^/:]+):(generateContent|streamGenerateContent)$/.exec(path);
    if (!m) return fail(404, `Method not found: ${path}`);
    const streaming = m[2] === 'streamGenerateContent';
    if (streaming && !/(^|&)alt=sse(&|$)/.test(query)) return fail(400, 'this mock only streams with alt=sse');
    if (!req.headers['x-goog-api-key']) return fail(403, 'Method doesn\'t allow unregistered callers. Please use API Key.');
    if (!Array.isArray(body.contents) || body.contents.length === 0) return fail(400, '* GenerateContentRequest.contents: contents is not specified');
    if (body.messages || body.model) return fail(400, 'Invalid JSON payload received. Unknown name "messages"');

    const last = body.contents.at(-1);
    const fnResponse = last.parts?.find((p: any) => p.functionResponse);
    const decls = body.tools?.[0]?.functionDeclarations ?? [];
    const wantsTool = decls.length > 0 && body.toolConfig?.functionCallingConfig?.mode !== 'NONE' && !fnResponse;
    const answer = fnResponse ? `tool said: ${JSON.stringify(fnResponse.functionResponse.response)}` : `echo: ${partsText(last.parts)}`;
    const words = answer.split(' ');
    const promptTokens = countWords(partsText(body.systemInstruction?.parts)) + body.contents.reduce((n: number, c: any) => n + countWords(partsText(c.parts)), 0);
    const outTokens = wantsTool ? 5 : words.length;
    // "mock:cached:N": N of the prompt's tokens came from a cached content (promptTokenCount includes them).
    const cachedDirective = /mock:cached:(\d+)/.exec(partsText(last.parts));
    const cached = cachedDirective ? Math.min(Number(cachedDirective[1]), promptTokens) : 0;
    const usage = { promptTokenCount: promptTokens, candidatesTokenCount: outTokens, totalTokenCount: promptTokens + outTokens,
                    ...(cached ? { cachedContentTokenCount: cached } : {}) };
    const fnCall = wantsTool ? { functionCall: { name: decls[0].name, args: { city: 'Paris' } } } : null;
    const base = { modelVersion: m[1], responseId: `resp-mock${state.calls.length}` };

    if (!streaming) {
      res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' }).end(
        JSON.stringify({
          candidates: [{ content: { role: 'model', parts: fnCall ? [fnCall] : [{ text: answer }] }, finishReason: 'STOP', index: 0 }],
          usageMetadata: usage,
          ...base,
        }),
      );
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const chunks: any[] = [];
    if (fnCall) {
      chunks.push({ candidates: [{ content: { role: 'model', parts: [fnCall] }, finishReason: 'STOP', index: 0 }], usageMetadata: usage, ...base });
    } else {
      words.forEach((w, i) => {
        const lastOne = i === words.length - 1;
        chunks.push({
          candidates: [{ content: { role: 'model', parts: [{ text: (i ? ' ' : '') + w }] }, ...(lastOne ? { finishReason: 'STOP' } : {}), index: 0 }],
          usageMetadata: lastOne ? usage : { promptTokenCount: promptTokens, totalTokenCount: promptTokens },
          ...base,
        });
      });
    }
    for (let i = 0; i < chunks.length; i++) {
      if (mode.kind === 'stream-break' && i === mode.afterChunks) return void req.socket.destroy();
      if (mode.kind === 'slow-stream') await new Promise((r) => setTimeout(r, mode.delayMs));
      if (mode.kind === 'stream-break' && i > 0) await new Promise((r) => setTimeout(r, 30));
      if (res.destroyed) return;
      res.write(`data: ${JSON.stringify(chunks[i])}\r\n\r\n`);
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
