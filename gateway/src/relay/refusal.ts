// A refused admission, seen to. The refusal of a known key (a 403 model not allowed, a 404 unknown
// model, a 429 limit or quota, …) is logged in the request log as status 'refused', queued with the
// outcomes (off the request path, one batch with the others), so an operator finds a client's
// refusals where its other requests are. A request without a valid key is not: it is counted in
// metrics and logged at most once a second, so a flood of bad keys writes nothing to the database.
import { refusalOf } from '../errors';
import { queueRefusal } from '../settle';
import { authFailures, refusals } from '../metrics';
import type { RelayInput, RequestFacts } from './types';

const AUTH_LOG_INTERVAL_MS = 1000;
let lastAuthLog = 0;
let authSuppressed = 0;

export function recordRefusal(input: RelayInput, facts: RequestFacts, err: unknown): void {
  const refusal = refusalOf(err);
  if (!refusal) return;
  if (refusal.sqlstate === 'NOKEY' || !facts.keyRef) {
    noteAuthFailure(input);
    return;
  }
  refusals.inc({ endpoint: input.endpoint, code: refusal.error.code ?? refusal.sqlstate });
  queueRefusal({
    id: input.requestId,
    created_at: new Date().toISOString(),
    status: 'refused',
    http_status: refusal.error.status,
    channel_id: null,
    upstream_model: null,
    prompt_tokens: null,
    completion_tokens: null,
    usage_source: 'none',
    attempts: [],
    ttfb_ms: null,
    latency_ms: Math.round(performance.now() - facts.started),
    error_code: refusal.error.code,
    error_message: refusal.error.message,
    ticket: { key_hash: facts.keyRef, model: String(input.body.model ?? ''), endpoint: input.endpoint, stream: facts.stream, client_ip: input.clientIp },
  });
}

function noteAuthFailure(input: RelayInput): void {
  authFailures.inc({ endpoint: input.endpoint });
  const now = Date.now();
  if (now - lastAuthLog < AUTH_LOG_INTERVAL_MS) {
    authSuppressed++;
    return;
  }
  const more = authSuppressed;
  lastAuthLog = now;
  authSuppressed = 0;
  console.error(JSON.stringify({ level: 'warn', msg: 'request without a valid API key refused (401)', endpoint: input.endpoint, client_ip: input.clientIp, ...(more ? { suppressed_since_last: more } : {}) }));
}
