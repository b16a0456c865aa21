// One settlement per admission. Whatever a request's path (cache hit, answer, upstream error,
// stream, a throw anywhere after admission), its admission is settled exactly once: the stage that
// knows the outcome settles it, a stream settles when it ends, and relay()'s finally settles
// whatever is still open as a gateway error (nothing billed), so the reservation and the key's
// concurrency slot are released with the next settlement batch, never left to the reaper.
import { GatewayError } from '../errors';
import { queueOutcome, type Outcome } from '../settle';
import type { CacheState, RelayInput, RequestFacts, RouteAttempt, Ticket } from './types';

export type OutcomeFields = Partial<Outcome> & Pick<Outcome, 'status' | 'http_status'>;

export class Settlement {
  /** Every upstream try, in order; stored with the outcome and folded into the breaker by SQL. */
  readonly attempts: RouteAttempt[] = [];
  private state: 'open' | 'streaming' | 'settled' = 'open';

  constructor(
    private readonly input: RelayInput,
    private readonly facts: RequestFacts,
    private readonly ticket: Ticket,
    private readonly cache: CacheState | null,
    /** The bare proxy (benchmark only) admits and settles nothing. */
    private readonly bare: boolean,
  ) {}

  get settled(): boolean {
    return this.state === 'settled';
  }

  /** Queues the outcome; any later call is ignored. */
  settle(o: OutcomeFields): void {
    if (this.state === 'settled') return;
    this.state = 'settled';
    if (this.bare) return;
    queueOutcome(this.outcome(o), this.facts.keyRef);
  }

  /* why one literal of every field: the defaults spread with the stage's fields on top built the
     outcome by copying twice (docs/performance.md, finding 53); one shape for every
     outcome also keeps JSON.stringify on its fast path (settle.ts). An absent field is undefined,
     which JSON leaves out as it did. */
  /** The stage's fields over the admission's and the request's. */
  private outcome(o: OutcomeFields): Outcome {
    const { ticket, input } = this;
    return {
      id: o.id ?? ticket.request_id,
      created_at: o.created_at ?? ticket.created_at,
      status: o.status,
      http_status: o.http_status,
      channel_id: o.channel_id ?? null,
      upstream_model: o.upstream_model ?? null,
      fallback: o.fallback,
      prompt_tokens: o.prompt_tokens ?? null,
      completion_tokens: o.completion_tokens ?? null,
      cached_tokens: o.cached_tokens,
      cache_write_tokens: o.cache_write_tokens,
      usage_source: o.usage_source ?? 'none',
      abort_policy: o.abort_policy,
      units: o.units,
      embedding_tokens: o.embedding_tokens ?? (this.cache?.embeddingTokens || null),
      cache_store: o.cache_store,
      ticket: o.ticket ?? {
        user_id: ticket.user_id,
        key_id: ticket.key_id,
        group_name: ticket.group_name,
        model: input.body.model,
        endpoint: input.endpoint,
        cache: this.cache?.result ?? null,
        // The card it was admitted (and its receipt priced) with, should settlement have to
        // restore an admission a database crash lost.
        price: ticket.price,
      },
      attempts: o.attempts ?? this.attempts,
      ttfb_ms: o.ttfb_ms ?? null,
      latency_ms: o.latency_ms ?? Math.round(performance.now() - this.facts.started),
      error_code: o.error_code ?? null,
      error_message: o.error_message ?? null,
      text_altered: o.text_altered,
    };
  }

  /** The response body settles from now on (streams settle when they end, see stream.ts). */
  handOff(): void {
    if (this.state === 'open') this.state = 'streaming';
  }

  /**
   * relay()'s finally: settles an admission no stage settled. With a failure, as that error (what
   * the client is told); without one, a stage returned an answer it did not settle, which is a bug:
   * recorded as such rather than left for the reaper to bill the whole reservation.
   */
  close(failure: GatewayError | null): void {
    if (this.state !== 'open') return;
    if (this.input.clientSignal.aborted) {
      this.settle({ status: 'aborted', http_status: 499, error_code: 'client_closed', error_message: 'client disconnected' });
      return;
    }
    this.settle({
      status: 'error',
      http_status: failure?.status ?? 500,
      error_code: failure?.code ?? 'gateway_error',
      error_message: failure?.message ?? 'the gateway answered without recording an outcome',
    });
  }
}
