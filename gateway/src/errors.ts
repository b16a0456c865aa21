// The one table mapping SQLSTATEs (sql/ERRORS.md) to HTTP statuses and OpenAI-style errors, and
// the error type every gateway refusal travels as.
import { config } from './config';

interface Mapping {
  status: number;
  type: string;
  code: string;
}

const SQLSTATES: Record<string, Mapping> = {
  NOKEY: { status: 401, type: 'invalid_request_error', code: 'invalid_api_key' },
  KREVK: { status: 401, type: 'invalid_request_error', code: 'invalid_api_key' },
  KEXPD: { status: 401, type: 'invalid_request_error', code: 'invalid_api_key' },
  UDSBL: { status: 401, type: 'invalid_request_error', code: 'account_deactivated' },
  IPDNY: { status: 403, type: 'permission_error', code: 'ip_not_allowed' },
  MDENY: { status: 403, type: 'permission_error', code: 'model_not_allowed' },
  NOMDL: { status: 404, type: 'invalid_request_error', code: 'model_not_found' },
  NOCHN: { status: 503, type: 'service_unavailable', code: 'no_available_channel' },
  BADRQ: { status: 400, type: 'invalid_request_error', code: 'invalid_request' },
  BADIN: { status: 400, type: 'invalid_request_error', code: 'invalid_argument' },
  BADCH: { status: 400, type: 'invalid_request_error', code: 'invalid_channel' },
  BADOP: { status: 400, type: 'invalid_request_error', code: 'invalid_option' },
  NOMKY: { status: 400, type: 'invalid_request_error', code: 'master_key_missing' },
  NOPRC: { status: 403, type: 'permission_error', code: 'model_not_priced' },
  QUOTA: { status: 429, type: 'insufficient_quota', code: 'insufficient_quota' },
  RLIMT: { status: 429, type: 'requests', code: 'rate_limit_exceeded' },
  TLIMT: { status: 429, type: 'tokens', code: 'rate_limit_exceeded' },
  BUDGT: { status: 429, type: 'insufficient_quota', code: 'budget_exceeded' },
  MRLIM: { status: 429, type: 'requests', code: 'model_rate_limited' },
  BADCD: { status: 400, type: 'invalid_request_error', code: 'invalid_code' },
  CHDNY: { status: 403, type: 'permission_error', code: 'channel_not_allowed' },
};

/** Seconds a client should wait before retrying when the database is unavailable. */
const DB_RETRY_AFTER = 2;

export class GatewayError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  toJSON() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  toResponse(requestId: string): Response {
    return new Response(JSON.stringify(this.toJSON()), {
      status: this.status,
      headers: { 'content-type': 'application/json', 'x-request-id': requestId, ...this.headers },
    });
  }
}

interface PgLikeError {
  code?: string;
  message?: string;
  column_name?: string;
  hint?: string;
  detail?: string;
  errno?: string;
  /** An AdmissionError's: which limit refused it, and the seconds to wait. */
  reason?: string;
  retryAfter?: number;
}

/** Admission refused the request because its key is at its concurrency_limit (the refusal's
 *  reason field, see AdmissionError in admission.ts). */
export function isConcurrencyRefusal(err: unknown): boolean {
  const pg = (err ?? {}) as PgLikeError;
  return pg.code === 'RLIMT' && pg.reason === 'concurrency';
}

export function isConnectionError(err: PgLikeError): boolean {
  const code = err.code ?? '';
  return (
    code.startsWith('08') ||
    code === '57P01' ||
    code === '57P02' ||
    code === '57P03' ||
    code === 'CONNECTION_CLOSED' ||
    code === 'CONNECTION_ENDED' ||
    code === 'CONNECTION_DESTROYED' ||
    code === 'CONNECT_TIMEOUT' ||
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    code === 'ETIMEDOUT' ||
    code === 'ENOTFOUND'
  );
}

/** A refusal the database raised (a SQLSTATE of the table above), as the client is told it; null
 *  for anything else (the database unreachable, a bug). */
export function refusalOf(err: unknown): { sqlstate: string; error: GatewayError } | null {
  const code = (err as PgLikeError | null)?.code;
  return code && SQLSTATES[code] ? { sqlstate: code, error: toGatewayError(err) } : null;
}

/** Converts anything thrown on the request path into a GatewayError. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  const pg = (err ?? {}) as PgLikeError;
  const mapped = pg.code ? SQLSTATES[pg.code] : undefined;
  if (mapped) {
    return new GatewayError(
      mapped.status,
      pg.message ?? 'Request refused.',
      mapped.type,
      mapped.code,
      pg.column_name ?? null,
      pg.retryAfter ? { 'retry-after': String(pg.retryAfter) } : {},
    );
  }
  if (isConnectionError(pg)) {
    return new GatewayError(
      503,
      'The gateway cannot reach its database right now; no request is admitted until it can. Retry shortly.',
      'service_unavailable',
      'database_unavailable',
      null,
      { 'retry-after': String(DB_RETRY_AFTER) },
    );
  }
  const code = pg.code ?? '';
  if (code === '23505') return new GatewayError(409, pg.message ?? 'Conflict.', 'invalid_request_error', 'conflict');
  if (code === '42501') return new GatewayError(403, 'Permission denied.', 'permission_error', 'permission_denied');
  if (code.startsWith('22') || code.startsWith('23')) {
    return new GatewayError(400, pg.message ?? 'Invalid request.', 'invalid_request_error', 'invalid_request', pg.column_name ?? null);
  }
  console.error(JSON.stringify({ level: 'error', msg: 'unexpected error', error: String((err as Error)?.stack ?? err) }));
  return new GatewayError(
    500,
    config.production ? 'The gateway hit an internal error.' : `The gateway hit an internal error: ${pg.message ?? String(err)}`,
    'server_error',
    'internal_error',
  );
}
