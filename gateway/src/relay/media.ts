// The media endpoints: /v1/images/generations, /v1/audio/speech, /v1/audio/transcriptions,
// /v1/moderations and /v1/rerank. Admitted and settled as chat is (admit.ts, settlement.ts); what
// differs is the unit they are billed by beside tokens, which admission prices
// (private.unit_price, sql/30_cost.sql) and this file measures on the answer:
//   images/generations    images returned (n reserved), at the price of the request's size/quality
//   audio/speech          characters of the input (exact, the request's own), audio streamed through
//   audio/transcriptions  seconds of audio: the upstream's `duration` (verbose_json) or
//                         usage.seconds; else estimated from the file (WAV header, or 128 kbit/s),
//                         marked estimated. Reserved at TranscriptionReserveSeconds.
//   rerank                search units (Cohere: meta.billed_units.search_units), or tokens (Jina:
//                         usage.total_tokens); else the admission's estimate, marked estimated
//   moderations           tokens (usage if reported, else counted: estimated); no unit
import { checkAnswer } from '../adapters';
import { options } from '../snapshot';
import { countUsage, promptEstimate, readUsage, textTokensEstimate } from '../usage';
import { cardFor, costMicros, receiptHeaders } from '../receipt';
import type { Outcome } from '../settle';
import { responseHeaders } from './render';
import { errMessage, readAnswer, servedModel, type Result, type Run, type Try } from './attempts';
import type { MediaUnits, RelayInput } from './types';


/** Documents of one Cohere search unit, and tokens of a document before it counts as another. */
const DOCS_PER_SEARCH_UNIT = 100;
const TOKENS_PER_RERANK_DOC = 500;
/** The bitrate assumed for a compressed upload whose duration the upstream did not report. */
const ESTIMATE_BYTES_PER_SECOND = 16000;

const text = (v: unknown): string => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as any).text === 'string' ? (v as any).text : '');

/** A rerank request's documents as text (strings, or {text} objects). */
function rerankDocs(body: Record<string, any>): string[] {
  return Array.isArray(body.documents) ? body.documents.map(text) : [];
}

/** What admission prices a media request by (private.unit_price); null for moderations. */
export function mediaUnits(input: RelayInput): MediaUnits | null {
  const { body } = input;
  switch (input.endpoint) {
    case 'images/generations': {
      const units: MediaUnits = { count: Number.isInteger(body.n) ? body.n : 1 };
      if (typeof body.size === 'string') units.size = body.size;
      if (typeof body.quality === 'string') units.quality = body.quality;
      return units;
    }
    case 'audio/speech':
      return { count: [...text(body.input)].length };
    case 'audio/transcriptions':
      return { count: 0 }; // (reserved at TranscriptionReserveSeconds: the duration is not known yet)
    case 'rerank': {
      const query = textTokensEstimate(text(body.query));
      const chunks = rerankDocs(body).reduce((n, d) => n + Math.max(1, Math.ceil((query + textTokensEstimate(d)) / TOKENS_PER_RERANK_DOC)), 0);
      return { count: Math.max(1, Math.ceil(chunks / DOCS_PER_SEARCH_UNIT)) };
    }
    default:
      return null;
  }
}

/** The prompt tokens a media request reserves: its text for moderations and rerank, none for the others. */
export function mediaPromptEstimate(input: RelayInput): number {
  if (input.endpoint === 'moderations') return promptEstimate(input.body);
  if (input.endpoint === 'rerank') return textTokensEstimate([text(input.body.query), ...rerankDocs(input.body)].join('\n'));
  return 0;
}

/** What a media answer is billed for. */
interface Measured {
  units: number;
  prompt_tokens: number;
  completion_tokens: number;
  usage_source: Outcome['usage_source'];
}

/** A 200 answer of a media endpoint: checked, measured, settled, sent with its receipt. */
export async function mediaAnswer(run: Run, t: Try, res: Response): Promise<Result> {
  if (run.input.endpoint === 'audio/speech') return speechAnswer(run, t, res);
  const payload = await readAnswer(t, res);
  if ('failure' in payload) return payload;
  const measured = await measure(run, payload, res.headers.get('content-type') ?? '');
  if ('problem' in measured) {
    t.record(res.status, measured.problem);
    return { failure: { status: 502, body: null, wire: null, message: measured.problem } };
  }
  const ms = t.record(res.status);
  settleOk(run, t, res.status, measured, ms);
  const headers = responseHeaders(run.input.requestId, res);
  Object.assign(headers, receiptHeaders(run.input.requestId, costOf(run, t, measured), measured.usage_source));
  headers['x-elygate-model'] = servedModel(run, t);
  return { response: new Response(payload, { status: 200, headers }) };
}

function settleOk(run: Run, t: Try, status: number, m: Measured, ms: number): void {
  run.settlement.settle({
    status: 'ok',
    http_status: status,
    channel_id: t.channel.id,
    upstream_model: t.entry.model,
    fallback: t.entry.fallback ?? null,
    prompt_tokens: m.prompt_tokens,
    completion_tokens: m.completion_tokens,
    units: m.units,
    usage_source: m.usage_source,
    ttfb_ms: ms,
  });
}

/** The receipt: what settlement bills with the ticket's card (private.card_cost_micros). */
function costOf(run: Run, t: Try, m: Measured): number {
  return costMicros(cardFor(run.ticket.price, t.entry.fallback), t.channel.id, m);
}

/** Reads what an answer is billed for, or why it is not the endpoint's answer (then the next channel is tried). */
async function measure(run: Run, payload: Uint8Array, contentType: string): Promise<Measured | { problem: string }> {
  const { input } = run;
  const endpoint = input.endpoint;
  const json = /json/i.test(contentType) || endpoint !== 'audio/transcriptions';
  let a: Record<string, any> | null = null;
  if (json) {
    // (JSON, an object, with the fields of the endpoint's answer: adapters' checkAnswer, as for chat)
    const checked = checkAnswer(endpoint, payload);
    if ('problem' in checked) return checked;
    a = checked.parsed;
  }
  const usage = readUsage(a?.usage);
  const tokens = { prompt_tokens: usage?.prompt_tokens ?? 0, completion_tokens: usage?.completion_tokens ?? 0 };
  switch (endpoint) {
    case 'images/generations':
      return { units: a!.data.length, ...tokens, usage_source: 'upstream' };
    case 'moderations': {
      if (usage) return { units: 0, ...tokens, usage_source: 'upstream' };
      const counted = await countUsage(input.body, '');
      return { units: 0, prompt_tokens: counted.prompt_tokens, completion_tokens: 0, usage_source: 'estimated' };
    }
    case 'rerank': {
      const searchUnits = a!.meta?.billed_units?.search_units;
      const jinaTokens = a!.usage?.total_tokens;
      if (Number.isFinite(searchUnits)) return { units: Math.ceil(searchUnits), prompt_tokens: 0, completion_tokens: 0, usage_source: 'upstream' };
      if (Number.isFinite(jinaTokens)) return { units: 0, prompt_tokens: jinaTokens, completion_tokens: 0, usage_source: 'upstream' };
      return { units: run.facts.units?.count ?? 1, prompt_tokens: 0, completion_tokens: 0, usage_source: 'estimated' };
    }
    case 'audio/transcriptions': {
      if (!a && payload.byteLength === 0) return { problem: 'upstream answered 200 with an empty transcription' };
      const seconds = Number.isFinite(a?.duration) ? a!.duration : a?.usage?.type === 'duration' && Number.isFinite(a.usage.seconds) ? a.usage.seconds : null;
      if (seconds !== null) return { units: Math.ceil(seconds), ...tokens, usage_source: 'upstream' };
      return { units: estimateSeconds(input), ...tokens, usage_source: 'estimated' };
    }
  }
  return { problem: `upstream answered 200 without the fields of a ${endpoint} answer` };
}

/**
 * Seconds of an uploaded audio file the upstream did not report: exact for PCM WAV (its header's
 * data size over its byte rate), else the file's size at 128 kbit/s. Rounded up.
 */
export function estimateSeconds(input: RelayInput): number {
  const file = input.multipart;
  if (!file) return 0;
  const wav = wavSeconds(file.fileHead, file.fileBytes);
  return Math.max(1, Math.ceil(wav ?? file.fileBytes / ESTIMATE_BYTES_PER_SECOND));
}

/** A PCM WAV file's seconds from its first bytes (head) and its size, or null for another format. */
function wavSeconds(head: Uint8Array, fileBytes: number): number | null {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length < 44 || b.toString('latin1', 0, 4) !== 'RIFF' || b.toString('latin1', 8, 12) !== 'WAVE') return null;
  let byteRate = 0;
  for (let p = 12; p + 8 <= b.length; ) {
    const id = b.toString('latin1', p, p + 4);
    const size = b.readUInt32LE(p + 4);
    if (id === 'fmt ' && p + 20 <= b.length) byteRate = b.readUInt32LE(p + 16); // (byte rate: bytes 16-19 of the chunk)
    if (id === 'data') return byteRate > 0 ? Math.min(size, fileBytes - p - 8) / byteRate : null;
    p += 8 + size + (size % 2);
  }
  return null;
}

/** /v1/audio/speech: the upstream's audio streamed through as it comes, settled when it ends. */
async function speechAnswer(run: Run, t: Try, res: Response): Promise<Result> {
  const type = res.headers.get('content-type') ?? '';
  if (!res.body || /json|html|text\//i.test(type)) {
    const why = `upstream answered a speech request with ${type || 'no content type'}, not audio`;
    await res.body?.cancel().catch(() => {});
    t.release();
    t.record(res.status, why);
    return { failure: { status: 502, body: null, wire: null, message: why } };
  }
  t.release();
  const ms = t.record(res.status);
  const measured: Measured = { units: run.facts.units?.count ?? 0, prompt_tokens: 0, completion_tokens: 0, usage_source: 'upstream' };
  const headers = responseHeaders(run.input.requestId, res);
  Object.assign(headers, receiptHeaders(run.input.requestId, costOf(run, t, measured), 'upstream'));
  headers['x-elygate-model'] = servedModel(run, t);
  const body = speechBody(run, t, res, measured, ms);
  run.settlement.handOff();
  return { response: new Response(body, { status: 200, headers }) };
}

/** The audio as the client reads it: billed once the upstream sent it all; a client that leaves or
 *  an upstream that breaks mid-audio settles as aborted or error (not billed). */
function speechBody(run: Run, t: Try, res: Response, measured: Measured, ms: number): ReadableStream<Uint8Array> {
  const reader = res.body!.getReader();
  let idle: ReturnType<typeof setTimeout> | null = null;
  let finished = false;
  const finish = (status: Outcome['status'], error?: string) => {
    if (finished) return;
    finished = true;
    if (idle) clearTimeout(idle);
    if (status === 'ok') return settleOk(run, t, res.status, measured, ms);
    run.settlement.settle({
      status, http_status: status === 'aborted' ? 499 : 502, channel_id: t.channel.id, upstream_model: t.entry.model,
      fallback: t.entry.fallback ?? null, ttfb_ms: ms, error_code: status === 'aborted' ? 'client_closed' : 'upstream_stream_error', error_message: error ?? null,
    });
  };
  const armIdle = () => {
    if (idle) clearTimeout(idle);
    idle = setTimeout(() => t.controller.abort(new Error('upstream stream idle timeout')), options.StreamIdleTimeoutMs);
  };
  const clientGone = () => {
    t.controller.abort(new Error('client disconnected'));
    reader.cancel().catch(() => {});
    finish('aborted', 'client disconnected');
  };
  run.input.clientSignal.addEventListener('abort', clientGone, { once: true });
  armIdle();
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      try {
        const next = await reader.read();
        if (next.done) {
          finish('ok');
          return c.close();
        }
        armIdle();
        c.enqueue(next.value);
      } catch (err) {
        if (run.input.clientSignal.aborted) return clientGone();
        finish('error', errMessage(t.controller, err));
        c.error(err);
      }
    },
    cancel: clientGone,
  });
}
