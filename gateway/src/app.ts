// HTTP surface of the gateway (Elysia on Bun). Parsing and shape checks only; every decision is
// made by the gateway.* function the route calls.
import { Elysia } from 'elysia';
import { sql } from './db';
import { GatewayError, toGatewayError } from './errors';
import { sha256 } from './crypto';
import { options, optionsReady } from './snapshot';
import { relay, type Endpoint, type Protocol } from './relay';
import { anthropicError } from './inbound/anthropic';
import { countTokens } from './count-tokens';
import { startProbeWorker } from './adapters/probe';
import { startWebhookWorker } from './webhooks';
import { readinessGate } from './shutdown';
import { observeResponse, renderMetrics } from './metrics';
import { config } from './config';
import { upstreamModels } from './upstream-models';

type Server = { requestIP?: (req: Request) => { address: string } | null; timeout?: (req: Request, s: number) => void } | null;

const decoder = new TextDecoder();

function newRequestId(): string {
  return Bun.randomUUIDv7();
}

function clientKey(request: Request): Buffer | null {
  const auth = request.headers.get('authorization');
  let key: string | null = null;
  if (auth) {
    const m = /^\s*Bearer\s+(.+?)\s*$/i.exec(auth);
    key = m ? m[1] : auth.trim();
  } else {
    key = request.headers.get('x-api-key')?.trim() || null;
  }
  return key ? sha256(key) : null;
}

function clientIp(request: Request, server: Server): string | null {
  if (config.trustProxy) {
    const xff = request.headers.get('x-forwarded-for');
    if (xff) return xff.split(',')[0].trim() || null;
  }
  return server?.requestIP?.(request)?.address ?? null;
}

/** Reads the body, refusing it past MaxRequestBodyBytes (or the named option) without buffering the excess. */
async function readBody(request: Request, option: 'MaxRequestBodyBytes' | 'MaxUploadBytes' = 'MaxRequestBodyBytes'): Promise<Uint8Array<ArrayBuffer>> {
  await optionsReady(); // (the limits below are the database's options)
  const limit = options[option] as number;
  const tooLarge = () =>
    new GatewayError(413, `Request body is larger than the limit of ${limit} bytes (option ${option}).`, 'invalid_request_error', 'request_too_large');
  const declared = request.headers.get('content-length');
  if (declared !== null && Number(declared) > limit) throw tooLarge();
  if (!request.body) return new Uint8Array(0);
  if (declared !== null) return new Uint8Array(await request.arrayBuffer());
  const reader = request.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      reader.cancel().catch(() => {});
      throw tooLarge();
    }
    parts.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Deepest [ / { nesting outside strings: a body nested past MaxJsonDepth is refused before
 *  anything recursive (hashing for the cache, re-serialising for the upstream) walks it. */
function jsonDepth(raw: Uint8Array, limit: number): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) {
        max = depth;
        if (max > limit) return max;
      }
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

function parseJsonObject(raw: Uint8Array): Record<string, any> {
  if (raw.byteLength === 0) {
    throw new GatewayError(400, 'The request body is empty; send a JSON object.', 'invalid_request_error', 'invalid_json');
  }
  if (jsonDepth(raw, options.MaxJsonDepth) > options.MaxJsonDepth) {
    throw new GatewayError(400, `The JSON body is nested deeper than ${options.MaxJsonDepth} levels (option MaxJsonDepth).`, 'invalid_request_error', 'invalid_json');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(raw));
  } catch (err) {
    throw new GatewayError(
      400,
      `We could not parse the JSON body of your request. (${(err as Error).message})`,
      'invalid_request_error',
      'invalid_json',
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new GatewayError(400, 'The request body must be a JSON object.', 'invalid_request_error', 'invalid_json');
  }
  return parsed as Record<string, any>;
}

const invalid = (message: string, param: string) => new GatewayError(400, message, 'invalid_request_error', 'invalid_request', param);

/** Shape checks that need no database: what OpenAI itself would refuse with 400. */
function checkShape(endpoint: Endpoint | 'messages/count_tokens', body: Record<string, any>): void {
  if (body.model === undefined || body.model === null || body.model === '') throw invalid('you must provide a model parameter', 'model');
  if (typeof body.model !== 'string') throw invalid(`Invalid type for 'model': expected a string, but got ${typeof body.model}.`, 'model');
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') {
    throw invalid(`Invalid type for 'stream': expected a boolean, but got ${typeof body.stream}.`, 'stream');
  }
  for (const f of ['max_tokens', 'max_completion_tokens', 'n']) {
    if (body[f] !== undefined && body[f] !== null && (!Number.isInteger(body[f]) || body[f] < 0)) {
      throw invalid(`Invalid '${f}': expected a non-negative integer.`, f);
    }
  }
  if (endpoint === 'chat/completions') {
    if (!Array.isArray(body.messages)) throw invalid("Missing required parameter: 'messages'.", 'messages');
    if (body.messages.length === 0) throw invalid("Invalid 'messages': empty array. Expected an array with minimum length 1.", 'messages');
    body.messages.forEach((m: unknown, i: number) => {
      if (!m || typeof m !== 'object' || typeof (m as any).role !== 'string') {
        throw invalid(`Invalid 'messages[${i}]': expected an object with a 'role'.`, `messages[${i}]`);
      }
    });
  } else if (endpoint === 'completions') {
    if (body.prompt === undefined || body.prompt === null) throw invalid("Missing required parameter: 'prompt'.", 'prompt');
  } else if (endpoint === 'embeddings') {
    if (body.input === undefined || body.input === null || body.input === '') throw invalid("Missing required parameter: 'input'.", 'input');
  } else if (endpoint === 'responses') {
    if (body.input === undefined || body.input === null) throw invalid("Missing required parameter: 'input'.", 'input');
    if (typeof body.input !== 'string' && !Array.isArray(body.input)) throw invalid("Invalid 'input': expected a string or an array of input items.", 'input');
  } else if (endpoint === 'images/generations') {
    if (typeof body.prompt !== 'string' || body.prompt === '') throw invalid("Missing required parameter: 'prompt'.", 'prompt');
    if (body.n !== undefined && body.n !== null && (body.n < 1 || body.n > 10)) throw invalid("Invalid 'n': expected an integer from 1 to 10.", 'n');
    // (partial images as events: each would have to be billed as it streams; not relayed)
    if (body.stream === true) throw invalid('Streaming image generation is not supported by this gateway; leave out "stream".', 'stream');
  } else if (endpoint === 'audio/speech') {
    if (typeof body.input !== 'string' || body.input === '') throw invalid("Missing required parameter: 'input'.", 'input');
    if (typeof body.voice !== 'string' && (typeof body.voice !== 'object' || body.voice === null)) throw invalid("Missing required parameter: 'voice'.", 'voice');
    // (the audio itself is streamed through; its SSE form is not relayed)
    if (body.stream_format === 'sse') throw invalid('stream_format "sse" is not supported by this gateway; the audio is streamed as it comes with the default "audio".', 'stream_format');
  } else if (endpoint === 'moderations') {
    if (body.input === undefined || body.input === null || body.input === '') throw invalid("Missing required parameter: 'input'.", 'input');
  } else if (endpoint === 'rerank') {
    if (typeof body.query !== 'string' || body.query === '') throw invalid("Missing required parameter: 'query'.", 'query');
    if (!Array.isArray(body.documents) || body.documents.length === 0) throw invalid("Invalid 'documents': expected a non-empty array.", 'documents');
  } else if (endpoint === 'messages' || endpoint === 'messages/count_tokens') {
    // What Anthropic's API itself refuses with 400.
    if (endpoint === 'messages' && (!Number.isInteger(body.max_tokens) || body.max_tokens < 1)) {
      throw invalid('max_tokens: Field required (a positive integer).', 'max_tokens');
    }
    if (!Array.isArray(body.messages) || body.messages.length === 0) throw invalid('messages: Field required (a non-empty array).', 'messages');
    body.messages.forEach((m: any, i: number) => {
      if (!m || (m.role !== 'user' && m.role !== 'assistant')) throw invalid(`messages.${i}.role: Input should be 'user' or 'assistant'.`, `messages.${i}.role`);
      if (typeof m.content !== 'string' && !Array.isArray(m.content)) throw invalid(`messages.${i}.content: expected a string or an array of content blocks.`, `messages.${i}.content`);
    });
  }
}

/** A refusal in the client's protocol: OpenAI's error shape, or Anthropic's on /v1/messages. */
function errorResponse(protocol: Protocol, err: unknown, requestId: string): Response {
  const e = toGatewayError(err);
  if (protocol !== 'anthropic') return e.toResponse(requestId);
  return new Response(JSON.stringify(anthropicError(e.status, e.message)), {
    status: e.status,
    headers: { 'content-type': 'application/json', 'x-request-id': requestId, 'request-id': requestId, ...e.headers },
  });
}

async function relayRoute(endpoint: Endpoint, request: Request, server: Server): Promise<Response> {
  const requestId = newRequestId();
  const protocol: Protocol = endpoint === 'messages' ? 'anthropic' : endpoint === 'responses' ? 'responses' : 'openai';
  try {
    // Long generations must not be cut by Bun's idle timeout; the relay enforces its own deadlines.
    server?.timeout?.(request, 0);
    const raw = await readBody(request);
    const body = parseJsonObject(raw);
    checkShape(endpoint, body);
    const res = await relay({
      requestId,
      protocol,
      endpoint,
      keyHash: clientKey(request),
      clientIp: clientIp(request, server),
      body,
      raw,
      clientSignal: request.signal,
      headers: request.headers,
    });
    observeResponse(endpoint, res.status, requestId);
    return res;
  } catch (err) {
    const res = errorResponse(protocol, err, requestId);
    observeResponse(endpoint, res.status, requestId);
    return res;
  }
}

/**
 * POST /v1/audio/transcriptions: a multipart upload of at most MaxUploadBytes (413 past it, refused
 * by its content-length before a byte is read). Its text fields are the body admission reads; the
 * multipart bytes go to the upstream as they came (only the model field rewritten for a mapped
 * model). /* why read whole: admission needs the model field before the upstream is called, and
 * clients (the openai SDK among them) send it after the file.
 */
async function transcriptionRoute(request: Request, server: Server): Promise<Response> {
  const requestId = newRequestId();
  const endpoint = 'audio/transcriptions';
  try {
    server?.timeout?.(request, 0);
    const contentType = request.headers.get('content-type') ?? '';
    if (!/^multipart\/form-data\s*;.*boundary=/i.test(contentType)) {
      throw invalid('Send the audio as multipart/form-data with a "file" and a "model" field.', 'file');
    }
    const raw = await readBody(request, 'MaxUploadBytes');
    let form: FormData;
    try {
      form = await new Response(raw, { headers: { 'content-type': contentType } }).formData();
    } catch (err) {
      throw invalid(`We could not parse the multipart body of your request. (${(err as Error).message})`, 'file');
    }
    const file = form.get('file');
    if (!file || typeof file === 'string') throw invalid("Missing required parameter: 'file'.", 'file');
    const body: Record<string, any> = {};
    for (const [k, v] of form.entries()) if (typeof v === 'string') body[k] = v;
    // A form's fields are text: "stream" comes as "true" or "false". (A transcription's SSE form,
    // its text in events, is not relayed.)
    if (body.stream === 'true') throw invalid('Streaming transcription is not supported by this gateway; leave out "stream" or send false.', 'stream');
    if (body.stream !== undefined && body.stream !== 'false') throw invalid(`Invalid 'stream': expected true or false.`, 'stream');
    delete body.stream;
    checkShape(endpoint, body);
    const fileHead = new Uint8Array(await file.slice(0, 4096).arrayBuffer());
    const res = await relay({
      requestId, protocol: 'openai', endpoint, keyHash: clientKey(request), clientIp: clientIp(request, server), body, raw,
      clientSignal: request.signal, headers: request.headers, multipart: { contentType, fileBytes: file.size, fileHead },
    });
    observeResponse(endpoint, res.status, requestId);
    return res;
  } catch (err) {
    const res = errorResponse('openai', err, requestId);
    observeResponse(endpoint, res.status, requestId);
    return res;
  }
}

/** POST /v1/messages/count_tokens: Anthropic's request shape and errors; free, so no relay. */
async function countTokensRoute(request: Request, server: Server): Promise<Response> {
  const requestId = newRequestId();
  let res: Response;
  try {
    const body = parseJsonObject(await readBody(request));
    checkShape('messages/count_tokens', body);
    res = await countTokens({ requestId, keyHash: clientKey(request), clientIp: clientIp(request, server), body, headers: request.headers });
  } catch (err) {
    res = errorResponse('anthropic', err, requestId);
  }
  observeResponse('messages/count_tokens', res.status, requestId);
  return res;
}

function json(data: unknown, requestId: string, status = 200): Response {
  return new Response(JSON.stringify(data), {
    status,
    headers: { 'content-type': 'application/json', 'x-request-id': requestId },
  });
}

async function listModels(request: Request, server: Server, only?: string): Promise<Response> {
  const requestId = newRequestId();
  try {
    const rows = await sql`select * from gateway.models_list(${clientKey(request)}, ${clientIp(request, server)})`;
    const data = rows.map((r) => ({ id: r.id, object: 'model', created: Number(r.created), owned_by: r.owned_by }));
    if (only !== undefined) {
      const model = data.find((m) => m.id === only);
      if (!model) {
        throw new GatewayError(404, `The model '${only}' does not exist or you do not have access to it.`, 'invalid_request_error', 'model_not_found', 'model');
      }
      return json(model, requestId);
    }
    return json({ object: 'list', data }, requestId);
  } catch (err) {
    return toGatewayError(err).toResponse(requestId);
  }
}

/** The admin panel's "Import models": a channel's model list from its upstream (upstream-models.ts). */
async function upstreamModelsRoute(request: Request, id: string): Promise<Response> {
  const requestId = newRequestId();
  try {
    if (!/^\d{1,18}$/.test(id)) throw new GatewayError(400, `"${id.slice(0, 40)}" is not a channel id (a whole number).`, 'invalid_request_error', 'invalid_request', 'id');
    return json(await upstreamModels(Number(id), clientKey(request)), requestId);
  } catch (err) {
    return toGatewayError(err).toResponse(requestId);
  }
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'];

/* why: the metrics name channels and models and count traffic; on the public port they are for a
   scraper on this machine (a direct loopback connection: a request through a proxy on this host is
   loopback too, so forwarding headers disqualify it) or one holding ELYGATE_METRICS_TOKEN. */
function metricsRoute(request: Request, server: Server): Response {
  const requestId = newRequestId();
  const token = config.metricsToken;
  const bearer = request.headers.get('authorization');
  const local = LOOPBACK.test(server?.requestIP?.(request)?.address ?? '') && !FORWARDING_HEADERS.some((h) => request.headers.has(h));
  const allowed = token ? bearer === `Bearer ${token}` || (local && !bearer) : local;
  if (!allowed) {
    const why = token ? 'a valid bearer token (ELYGATE_METRICS_TOKEN)' : 'a direct connection from this machine; set ELYGATE_METRICS_TOKEN to scrape from elsewhere';
    return new GatewayError(401, `/metrics needs ${why}.`, 'invalid_request_error', 'metrics_forbidden').toResponse(requestId);
  }
  return new Response(renderMetrics(), { headers: { 'content-type': 'text/plain; version=0.0.4', 'x-request-id': requestId } });
}

export function createApp() {
  return new Elysia({ serve: { idleTimeout: 255, maxRequestBodySize: config.bodyHardLimit } })
    // Channel probes (breaker recovery, channel tests) and webhook deliveries run in every serving gateway.
    .onStart(() => {
      startProbeWorker();
      startWebhookWorker();
    })
    .onError(({ code, request, error }) => {
      const requestId = newRequestId();
      if (code === 'NOT_FOUND') {
        const url = new URL(request.url);
        return new GatewayError(404, `Invalid URL (${request.method} ${url.pathname})`, 'invalid_request_error', 'unknown_url').toResponse(requestId);
      }
      return toGatewayError(error).toResponse(requestId);
    })
    .get('/healthz', () => json({ status: 'ok' }, newRequestId()))
    .get('/readyz', async () => {
      const gate = readinessGate();
      if (gate) return gate;
      const requestId = newRequestId();
      try {
        await Promise.race([
          sql`select gateway.ping()`,
          new Promise((_, reject) => setTimeout(() => reject(new Error('database did not answer within 2 s')), 2000)),
        ]);
        return json({ status: 'ready' }, requestId);
      } catch (err) {
        return new GatewayError(503, `Not ready: ${(err as Error).message}`, 'service_unavailable', 'database_unavailable', null, { 'retry-after': '2' }).toResponse(requestId);
      }
    })
    .get('/metrics', ({ request, server }) => metricsRoute(request, server as Server))
    .post('/v1/chat/completions', ({ request, server }) => relayRoute('chat/completions', request, server as Server), { parse: 'none' })
    .post('/v1/completions', ({ request, server }) => relayRoute('completions', request, server as Server), { parse: 'none' })
    .post('/v1/embeddings', ({ request, server }) => relayRoute('embeddings', request, server as Server), { parse: 'none' })
    .post('/v1/messages', ({ request, server }) => relayRoute('messages', request, server as Server), { parse: 'none' })
    .post('/v1/messages/count_tokens', ({ request, server }) => countTokensRoute(request, server as Server), { parse: 'none' })
    .post('/v1/responses', ({ request, server }) => relayRoute('responses', request, server as Server), { parse: 'none' })
    .post('/v1/images/generations', ({ request, server }) => relayRoute('images/generations', request, server as Server), { parse: 'none' })
    .post('/v1/audio/speech', ({ request, server }) => relayRoute('audio/speech', request, server as Server), { parse: 'none' })
    .post('/v1/audio/transcriptions', ({ request, server }) => transcriptionRoute(request, server as Server), { parse: 'none' })
    .post('/v1/moderations', ({ request, server }) => relayRoute('moderations', request, server as Server), { parse: 'none' })
    .post('/v1/rerank', ({ request, server }) => relayRoute('rerank', request, server as Server), { parse: 'none' })
    .get('/internal/channels/:id/upstream-models', ({ request, params }) => upstreamModelsRoute(request, params.id))
    .get('/v1/models', ({ request, server }) => listModels(request, server as Server))
    .get('/v1/models/*', ({ request, server, params }) => listModels(request, server as Server, decodeURIComponent((params as any)['*'])));
}
