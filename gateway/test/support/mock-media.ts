// The media endpoints of the mock upstream, in their providers' real wire formats: OpenAI's
// images/generations, audio/speech (binary audio, streamed in chunks), audio/transcriptions
// (a multipart upload; json, verbose_json with `duration`, or text), moderations; and rerank in
// Cohere's shape (meta.billed_units.search_units) or Jina's (usage.total_tokens).
import type { IncomingMessage, ServerResponse } from 'node:http';

export const MEDIA_PATHS = ['/images/generations', '/audio/speech', '/audio/transcriptions', '/moderations', '/rerank'];

/** What a media call left behind for a test to read. */
export interface MediaCall {
  path: string;
  /** The JSON body, or a multipart upload's text fields. */
  fields: Record<string, any>;
  /** The uploaded file's size (transcriptions). */
  fileBytes?: number;
  contentType?: string;
}

export interface MediaState {
  /** The shape /rerank answers in. */
  rerankShape: 'cohere' | 'jina';
  /** Bytes of audio /audio/speech sends, in chunks of 1024. */
  speechBytes: number;
  calls: MediaCall[];
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Seconds of a PCM WAV file, from its header (what a real provider would decode). */
function wavDuration(file: Buffer): number {
  const byteRate = file.readUInt32LE(28);
  const dataSize = file.readUInt32LE(40);
  return dataSize / byteRate;
}

const json = (res: ServerResponse, status: number, body: unknown) =>
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));

/** Answers a media path; false when the path is not one. `fail`: the status to answer with instead. */
export async function handleMedia(req: IncomingMessage, res: ServerResponse, path: string, state: MediaState, fail: number | null): Promise<boolean> {
  if (!MEDIA_PATHS.some((p) => path.endsWith(p))) return false;
  const raw = await readAll(req);
  const contentType = String(req.headers['content-type'] ?? '');
  const call: MediaCall = { path, fields: {}, contentType };
  let file: Buffer | null = null;
  if (contentType.startsWith('multipart/form-data')) {
    const form = await new Response(new Uint8Array(raw), { headers: { 'content-type': contentType } }).formData();
    for (const [k, v] of form.entries()) {
      if (typeof v === 'string') call.fields[k] = v;
      else file = Buffer.from(await (v as Blob).arrayBuffer());
    }
    call.fileBytes = file?.length;
  } else {
    call.fields = raw.length ? JSON.parse(raw.toString('utf8')) : {};
  }
  state.calls.push(call);
  if (fail !== null) {
    json(res, fail, { error: { message: `mock upstream error ${fail}`, type: 'server_error', param: null, code: 'mock_error' } });
    return true;
  }
  const b = call.fields;
  if (path.endsWith('/images/generations')) {
    const n = Number.isInteger(b.n) ? b.n : 1;
    const data = Array.from({ length: n }, (_, i) =>
      b.response_format === 'b64_json' ? { b64_json: Buffer.from(`image ${i}`).toString('base64'), revised_prompt: b.prompt } : { url: `https://images.example/${i}.png`, revised_prompt: b.prompt },
    );
    json(res, 200, { created: Math.floor(Date.now() / 1000), data });
  } else if (path.endsWith('/audio/speech')) {
    res.writeHead(200, { 'content-type': 'audio/mpeg', 'transfer-encoding': 'chunked' });
    for (let sent = 0; sent < state.speechBytes; sent += 1024) {
      res.write(Buffer.alloc(Math.min(1024, state.speechBytes - sent), sent / 1024));
      await new Promise((r) => setImmediate(r));
    }
    res.end();
  } else if (path.endsWith('/audio/transcriptions')) {
    if (!file) return json(res, 400, { error: { message: "Missing required parameter: 'file'.", type: 'invalid_request_error', param: 'file', code: null } }), true;
    const text = `transcribed ${file.length} bytes`;
    if (b.response_format === 'text') res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(text);
    else if (b.response_format === 'verbose_json') json(res, 200, { task: 'transcribe', language: 'english', duration: wavDuration(file), text, segments: [] });
    else json(res, 200, { text }); // (json without usage: what older OpenAI-compatible servers answer)
  } else if (path.endsWith('/moderations')) {
    const inputs = Array.isArray(b.input) ? b.input : [b.input];
    json(res, 200, {
      id: 'modr-mock',
      model: b.model,
      results: inputs.map((t: unknown) => ({
        flagged: String(t).includes('flag me'),
        categories: { harassment: false, violence: String(t).includes('flag me') },
        category_scores: { harassment: 0.001, violence: String(t).includes('flag me') ? 0.9 : 0.001 },
      })),
    });
  } else {
    const docs: unknown[] = Array.isArray(b.documents) ? b.documents : [];
    const results = docs.map((d, index) => ({ index, relevance_score: 1 / (index + 1), ...(state.rerankShape === 'jina' ? { document: { text: typeof d === 'string' ? d : (d as any)?.text } } : {}) }));
    const top = Number.isInteger(b.top_n) ? results.slice(0, b.top_n) : results;
    if (state.rerankShape === 'jina') {
      const words = [b.query, ...docs.map((d) => (typeof d === 'string' ? d : (d as any)?.text))].join(' ').split(/\s+/).filter(Boolean).length;
      json(res, 200, { model: b.model, usage: { total_tokens: words }, results: top });
    } else {
      json(res, 200, { id: 'rerank-mock', results: top, meta: { api_version: { version: '1' }, billed_units: { search_units: Math.max(1, Math.ceil(docs.length / 100)) } } });
    }
  }
  return true;
}
