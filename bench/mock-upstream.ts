// The benchmark's fixed upstream: an OpenAI-format server on 127.0.0.1 that answers instantly (or
// after MOCK_DELAY_MS), so every microsecond measured above it belongs to the gateway.
//
//   POST /v1/chat/completions   non-stream: one chat.completion with usage
//                               stream:     MOCK_CHUNKS content chunks (the last with
//                                           finish_reason), a usage chunk, then [DONE];
//                                           MOCK_CHUNK_DELAY_MS between chunks (default 0)
//   POST /v1/embeddings         one embedding of MOCK_EMBED_DIMS floats, with usage
//
// Run with Bun (node_modules/bun/bin/bun.exe bench/mock-upstream.ts); prints {"port": N} on stdout
// once listening. Started, pinned and stopped by bench/run.mjs.

const delayMs = Number(process.env.MOCK_DELAY_MS ?? 0);
const chunkDelayMs = Number(process.env.MOCK_CHUNK_DELAY_MS ?? 0);
const nChunks = Number(process.env.MOCK_CHUNKS ?? 20);
const dims = Number(process.env.MOCK_EMBED_DIMS ?? 64);
const port = Number(process.env.MOCK_PORT ?? 0);

const created = 1700000000;
const usage = { prompt_tokens: 12, completion_tokens: nChunks, total_tokens: 12 + nChunks };
const answer = Array.from({ length: nChunks }, (_, i) => `word${i}`).join(' ');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();

function completion(model: string) {
  return JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion',
    created,
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: answer }, finish_reason: 'stop', logprobs: null }],
    usage,
    system_fingerprint: 'fp_bench',
  });
}

/** The SSE events of one streamed answer, pre-encoded per model name. */
const streamCache = new Map<string, Uint8Array[]>();
function streamEvents(model: string): Uint8Array[] {
  let ev = streamCache.get(model);
  if (ev) return ev;
  const base = { id: 'chatcmpl-bench', object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_bench' };
  const out: string[] = [];
  for (let i = 0; i < nChunks; i++) {
    const delta = i === 0 ? { role: 'assistant', content: `word${i}` } : { content: ` word${i}` };
    out.push(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta, finish_reason: i === nChunks - 1 ? 'stop' : null }] })}\n\n`);
  }
  out.push(`data: ${JSON.stringify({ ...base, choices: [], usage })}\n\n`);
  out.push('data: [DONE]\n\n');
  ev = out.map((s) => enc.encode(s));
  streamCache.set(model, ev);
  return ev;
}

const embedding = JSON.stringify(Array.from({ length: dims }, (_, i) => Math.round(Math.sin(i) * 1e6) / 1e6));

const json = (body: string, status = 200) => new Response(body, { status, headers: { 'content-type': 'application/json' } });

const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  idleTimeout: 60,
  async fetch(req) {
    const path = new URL(req.url).pathname;
    if (req.method === 'GET' && path === '/healthz') return json('{"ok":true}');
    if (req.method !== 'POST') return json('{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}', 404);
    let body: any;
    try {
      body = await req.json();
    } catch {
      return json('{"error":{"message":"bad json","type":"invalid_request_error","param":null,"code":null}}', 400);
    }
    if (delayMs > 0) await sleep(delayMs);
    const model = typeof body?.model === 'string' ? body.model : 'bench-model';
    if (path.endsWith('/embeddings')) {
      return json(
        `{"object":"list","model":${JSON.stringify(model)},"data":[{"object":"embedding","index":0,"embedding":${embedding}}],"usage":{"prompt_tokens":8,"total_tokens":8}}`,
      );
    }
    if (!path.endsWith('/chat/completions')) return json('{"error":{"message":"unknown path","type":"invalid_request_error","param":null,"code":null}}', 404);
    if (body?.stream !== true) return json(completion(model));
    const events = streamEvents(model);
    // One write (and flush) per event, as a real provider sends them.
    const stream = new ReadableStream({
      type: 'direct',
      async pull(controller: any) {
        for (const e of events) {
          controller.write(e);
          controller.flush();
          if (chunkDelayMs > 0) await sleep(chunkDelayMs);
        }
        controller.close();
      },
    } as any);
    return new Response(stream, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } });
  },
});

console.log(JSON.stringify({ port: server.port }));
process.on('SIGTERM', () => {
  server.stop(true);
  process.exit(0);
});
