// The upstream attempts, in the order the database planned them.
//
// Failover: an attempt that fails to connect, times out before its first byte, answers with a
// status in RetryableStatusCodes (after the channel's status_code_mapping), or answers 200 with
// something that is not its protocol's answer, moves on to the next candidate the plan names,
// within the RelayTimeoutMs deadline and MaxAttempts tries per model (the model asked for, then each
// of its fallbacks: their candidates come after its own in the plan). Never after a byte reached the client,
// never on other 4xx answers, never on content-policy refusals. Each try is recorded in the
// outcome's attempts; the database folds them into the circuit breaker.
import { GatewayError } from '../errors';
import { channelsFor, isRetryableStatus, options, type Channel } from '../snapshot';
import { upstreamFetch } from '../ssrf';
import { redactBytes } from '../redact';
import { isContentRefusal, isMedia, prepareCall, upstreamErrorOf, type PreparedCall, type Wire } from '../adapters';
import { bareChannel } from './admit';
import { completeAnswer } from './answer';
import { openStream } from './stream';
import { mediaAnswer } from './media';
import { nativeWire, upstreamError } from './render';
import type { Settlement } from './settlement';
import type { CacheState, RelayInput, RequestFacts, RouteAttempt, RouteEntry, Ticket } from './types';

/** Everything an attempt needs to know about the request it serves. */
export interface Run {
  input: RelayInput;
  facts: RequestFacts;
  ticket: Ticket;
  cache: CacheState | null;
  settlement: Settlement;
}

/** One try at one channel: its call, its abort controller and how it records itself. */
export interface Try {
  channel: Channel;
  entry: RouteEntry;
  call: PreparedCall;
  controller: AbortController;
  /** Stops the first-byte timer and the client-abort forwarding (the answer's body takes over). */
  release(): void;
  /** Appends the try to the outcome's attempts; returns its duration in ms. */
  record(status: number | null, error?: string, rawStatus?: number): number;
}

/** Why the last try failed: what the client is told when no try is left. */
export interface Failure {
  status: number;
  body: Uint8Array<ArrayBuffer> | null;
  wire: Wire | null;
  message: string;
}

/** An attempt ends with the client's answer (settled or handed to the stream), or a failure. */
export type Result = { response: Response } | { failure: Failure };

export const errMessage = (controller: AbortController, err: unknown) =>
  controller.signal.aborted ? String(controller.signal.reason?.message ?? 'aborted') : String((err as Error)?.message ?? err);

/** A 200 answer read whole (the first-byte timer released): its bytes, or the attempt's failure
 *  (recorded) when the body broke off. Non-stream chat and the media endpoints both read this way. */
export async function readAnswer(t: Try, res: Response): Promise<Uint8Array<ArrayBuffer> | { failure: Failure }> {
  try {
    const payload = new Uint8Array(await res.arrayBuffer());
    t.release();
    return payload;
  } catch (err) {
    t.release();
    const message = errMessage(t.controller, err);
    t.record(res.status, message);
    return { failure: { status: 502, body: null, wire: null, message } };
  }
}

export function pickKey(channel: Channel, entry: RouteEntry): { key: string; ordinal: number | undefined } {
  const n = channel.keys.length;
  const i = Number.isInteger(entry.key_index) ? ((entry.key_index as number) % n + n) % n : Math.floor(Math.random() * n);
  return { key: channel.keys[i], ordinal: entry.key_ordinal ?? undefined };
}

/** The status the channel's config.status_code_mapping turns an upstream status into. */
function mapStatus(channel: Channel, status: number): number {
  const m = (channel.config as any)?.status_code_mapping;
  const to = m && typeof m === 'object' ? Number(m[String(status)]) : NaN;
  return Number.isInteger(to) && to >= 100 && to <= 599 ? to : status;
}

export async function relayToUpstream(run: Run): Promise<Response> {
  const { input, ticket, settlement } = run;
  const channels = bareChannel ? new Map([[0, bareChannel]]) : await planChannels(ticket);
  const deadline = Date.now() + options.RelayTimeoutMs;
  let lastFailure: Failure | null = null;
  let tries = 0;
  let model: string | undefined; // the fallback model of the entries being tried (undefined: the one asked for)
  let triesOfModel = 0;
  for (const entry of ticket.plan) {
    if (input.clientSignal.aborted || deadline - Date.now() <= 0) break;
    if (entry.fallback !== model) [model, triesOfModel] = [entry.fallback, 0];
    if (triesOfModel >= options.MaxAttempts) continue;
    const prepared = prepareTry(run, channels.get(entry.channel_id), entry, deadline);
    if (!prepared) continue;
    tries++;
    triesOfModel++;
    const result = await attempt(run, prepared);
    if ('response' in result) return result.response;
    lastFailure = result.failure;
  }
  return allFailed(run, settlement.attempts, lastFailure, tries, deadline);
}

/** The plan's channels (credentials decrypted); a failure to load them is the gateway's, said so. */
async function planChannels(ticket: Ticket): Promise<Map<number, Channel>> {
  try {
    return await channelsFor(ticket.plan);
  } catch (err) {
    console.error(JSON.stringify({ level: 'error', msg: 'channel snapshot failed', request_id: ticket.request_id, error: String((err as Error)?.message ?? err) }));
    throw new GatewayError(503, 'The gateway could not load the channels planned for this request; retry shortly.', 'service_unavailable', 'channels_unavailable', null, { 'retry-after': '1' });
  }
}

const fallbackOf = (entry: RouteEntry) => (entry.fallback ? { fallback: entry.fallback } : {});

/** The model a try serves: the fallback its plan entry names, else the one asked for (x-elygate-model). */
export const servedModel = (run: Run, t: Try): string => t.entry.fallback ?? run.input.body.model;

/** The try at this plan entry, or null (recorded as skipped) when its channel cannot serve it. */
function prepareTry(run: Run, channel: Channel | undefined, entry: RouteEntry, deadline: number): Try | null {
  const { input, facts, settlement } = run;
  if (!channel || channel.unusable || channel.keys.length === 0) {
    settlement.attempts.push({ channel_id: entry.channel_id, status: null, ms: 0, error: channel?.unusable ?? 'channel has no usable key', skipped: true, ...fallbackOf(entry) });
    return null;
  }
  const { key, ordinal } = pickKey(channel, entry);
  const call = prepareCall(channel, key, {
    protocol: input.protocol,
    endpoint: input.endpoint,
    body: input.body,
    raw: input.raw,
    stream: facts.stream,
    upstreamModel: entry.model,
    defaultMaxTokens: options.DefaultMaxTokens,
    maxTokens: run.ticket.max_tokens,
    headers: input.headers,
    multipartType: input.multipart?.contentType,
  });
  if ('unsupported' in call) {
    settlement.attempts.push({ channel_id: channel.id, status: null, ms: 0, error: call.unsupported, skipped: true, ...(call.param ? { param: call.param } : {}), ...fallbackOf(entry) });
    return null;
  }
  if (call.wire === 'openai') call.headers['x-client-request-id'] = input.requestId;
  const t0 = performance.now();
  const controller = new AbortController();
  const onClientAbort = () => controller.abort(new Error('client disconnected'));
  input.clientSignal.addEventListener('abort', onClientAbort, { once: true });
  const firstByteTimer = setTimeout(
    () => controller.abort(new Error('upstream first byte timeout')),
    Math.min(options.UpstreamAttemptTimeoutMs, deadline - Date.now()),
  );
  return {
    channel,
    entry,
    call,
    controller,
    release() {
      clearTimeout(firstByteTimer);
      input.clientSignal.removeEventListener('abort', onClientAbort);
    },
    record(status, error, rawStatus) {
      const a: RouteAttempt = { channel_id: channel.id, status, ms: Math.round(performance.now() - t0) };
      if (error) a.error = error;
      if (ordinal !== undefined) a.key = ordinal;
      if (rawStatus !== undefined && rawStatus !== status) a.mapped_from = rawStatus;
      if (entry.fallback) a.fallback = entry.fallback;
      settlement.attempts.push(a);
      return a.ms;
    },
  };
}

/** One upstream call: connect, then an error answer, a complete answer or a stream. */
async function attempt(run: Run, t: Try): Promise<Result> {
  let res: Response;
  try {
    res = await upstreamFetch(t.call.url, { method: 'POST', headers: t.call.headers, body: t.call.body, signal: t.controller.signal }, options.AllowPrivateUpstreams === true);
  } catch (err) {
    t.release();
    const message = errMessage(t.controller, err);
    t.record(null, message);
    return { failure: { status: 502, body: null, wire: null, message } };
  }
  try {
    const status = mapStatus(t.channel, res.status);
    if (status < 200 || status > 299) return await errorAnswer(run, t, res, status);
    if (run.facts.stream) return await openStream(run, t, res);
    return isMedia(run.input.endpoint) ? await mediaAnswer(run, t, res) : await completeAnswer(run, t, res);
  } catch (err) {
    // A throw of ours while reading the answer: stop its timer and the upstream's body, then let
    // relay() answer and settle it.
    t.release();
    t.controller.abort(err);
    throw err;
  }
}

/** An upstream error status: fail over when it is retryable, else answer the client with it. */
async function errorAnswer(run: Run, t: Try, res: Response, status: number): Promise<Result> {
  // Some providers quote the key they were sent in their error: mask it before it is recorded or passed on.
  const errBody = redactBytes(new Uint8Array(await res.arrayBuffer().catch(() => new ArrayBuffer(0))), t.channel.keys) as Uint8Array<ArrayBuffer>;
  t.release();
  const refusal = isContentRefusal(errBody);
  t.record(status, refusal ? 'content refusal' : undefined, res.status);
  const message = upstreamErrorOf(errBody).message;
  const failure = { status, body: errBody, wire: t.call.wire, message: `upstream returned ${status}: ${message}` };
  if (isRetryableStatus(status) && !refusal) return { failure };
  // A client error (400-class) or a refusal is the same on every channel: never retried, never billed.
  run.settlement.settle({
    status: 'error',
    http_status: status,
    channel_id: t.channel.id,
    upstream_model: t.entry.model,
    fallback: t.entry.fallback ?? null,
    error_code: 'upstream_' + status,
    error_message: message,
  });
  return { response: upstreamError(run.input, status, errBody, t.call, res.headers.get('content-type')) };
}

/** Every candidate failed (or the client left, or the deadline passed) before the first byte. */
function allFailed(run: Run, attempts: RouteAttempt[], lastFailure: Failure | null, tries: number, deadline: number): Response {
  const { input, settlement } = run;
  const clientGone = input.clientSignal.aborted;
  const timedOut = Date.now() >= deadline;
  const skippedAll = tries === 0 && attempts.length > 0;
  // Every channel refused the same field of the request: the request's fault, said as a 400.
  const unconvertible = skippedAll && attempts.every((a) => a.param) ? attempts[0] : null;
  settlement.settle({
    status: clientGone ? 'aborted' : 'error',
    http_status: unconvertible ? 400 : skippedAll ? 503 : clientGone ? 499 : lastFailure?.status ?? 503,
    error_code: clientGone ? 'client_closed' : timedOut ? 'upstream_timeout' : unconvertible ? 'unsupported_parameter' : skippedAll ? 'no_available_channel' : 'upstream_failed',
    error_message: lastFailure?.message ?? (attempts.map((a) => a.error).filter(Boolean).join('; ') || null),
  });
  if (lastFailure?.body && lastFailure.body.byteLength > 0 && lastFailure.wire) {
    return upstreamError(input, lastFailure.status, lastFailure.body, { wire: lastFailure.wire, native: nativeWire(input.protocol) === lastFailure.wire }, null);
  }
  if (unconvertible) throw new GatewayError(400, unconvertible.error!, 'invalid_request_error', 'unsupported_parameter', unconvertible.param);
  if (timedOut) throw new GatewayError(504, 'No upstream channel answered before the relay deadline.', 'upstream_error', 'upstream_timeout');
  if (skippedAll) {
    const why = attempts.map((a) => `#${a.channel_id} ${a.error}`).join('; ');
    throw new GatewayError(503, `No channel can serve this request: ${why}.`, 'service_unavailable', 'no_available_channel', null, { 'retry-after': '1' });
  }
  throw new GatewayError(
    attempts.length > 0 ? 502 : 503,
    attempts.length > 0
      ? `Every upstream channel failed: ${attempts.map((a) => `#${a.channel_id} ${a.status ?? a.error}`).join(', ')}.`
      : 'No upstream channel could be tried.',
    'upstream_error',
    'upstream_failed',
  );
}
