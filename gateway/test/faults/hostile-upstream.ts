// An upstream that misbehaves on request, for the fault suite. support/mock-upstream.ts covers
// status codes, breaks and even pacing; this one adds what it cannot express: a slow first byte, a
// single long gap in the middle of a stream, malformed SSE, and a reset before the status line.
// The behaviour comes from a directive in the last user message, "hostile:<kind>:<ms>".
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HostileUpstream {
  url: string;
  calls: number;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startHostileUpstream(): Promise<HostileUpstream> {
  const state = { url: '', calls: 0, close: async () => {} };
  const server: Server = createServer(async (req, res) => {
    state.calls++;
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body: any = {};
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      // answered below as a plain stream
    }
    const last = [...(body.messages ?? [])].reverse().find((m: any) => m?.role === 'user');
    const m = /hostile:([a-z-]+):(\d+)/.exec(typeof last?.content === 'string' ? last.content : '');
    const kind = m?.[1] ?? 'none';
    const ms = Number(m?.[2] ?? 0);
    const model = body.model ?? 'm';
    const chunk = (content: string, finish: string | null = null) =>
      `data: ${JSON.stringify({ id: 'chatcmpl-h', object: 'chat.completion.chunk', created: 1, model, choices: [{ index: 0, delta: { content }, finish_reason: finish }] })}\n\n`;
    const usage = `data: ${JSON.stringify({ id: 'chatcmpl-h', object: 'chat.completion.chunk', created: 1, model, choices: [], usage: { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 } })}\n\n`;

    if (kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (kind === 'first-byte') await sleep(ms);
    if (res.destroyed) return;
    if (!body.stream) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ id: 'chatcmpl-h', object: 'chat.completion', created: 1, model, choices: [{ index: 0, message: { role: 'assistant', content: 'slow but fine' }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 } }),
      );
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (kind === 'malformed') {
      // Every way an SSE stream can be wrong, then a proper end so the client is not left waiting.
      res.write('data: {"id": "broken", "choices": [ {"delta": \n\n');
      res.write('data: \u0000\u0001\u0002 not json at all\n\n');
      res.write('event: ping\r\n\r\n');
      res.write(':' + 'x'.repeat(70_000) + '\n\n');
      res.write(`data: ${JSON.stringify({ choices: 'not-an-array' })}\n\n`);
      res.write('data: [DONE');
      res.write('\ndata: {"unterminated": tru');
      await sleep(20);
      res.end();
      return;
    }
    res.write(chunk('one'));
    if (kind === 'gap' || kind === 'stall') await sleep(ms);
    if (res.destroyed) return;
    res.write(chunk(' two'));
    res.write(chunk(' three', 'stop'));
    if (body.stream_options?.include_usage) res.write(usage);
    res.end('data: [DONE]\n\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}
