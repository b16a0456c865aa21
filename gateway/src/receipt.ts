// The usage receipt a non-stream response carries in its headers. The cost is SQL's: this mirrors
// private.card_cost_micros over private.cost_micros (sql/30_cost.sql) for the price card
// relay_begin returned, in exact integer arithmetic: costMicros its 'answer', hitCostMicros its
// 'hit', embeddingCostMicros its 'embedding'. Settlement bills with the same card, which admission
// kept on the request's admission row, so the header equals the ledger row to the micro-dollar even
// when a price changes while the request is in flight (gateway/test/sql/price_card.test.ts and
// test/http/billing.test.ts check both). The ledger, not this header, is the record.
import type { Usage } from './usage';

export interface PriceCard {
  input: number | null;
  output: number | null;
  cached_input: number | null;
  cache_write: number | null;
  per_call: number | null;
  group_multiplier: string; // numeric as text, e.g. "1.500000"
  channel_multipliers: Record<string, string>;
  cache_hit_ratio?: string; // SemanticCacheHitPriceRatio, as text
  embedding?: { input: number | null; per_call: number | null } | null;
  /** A media endpoint's unit price, micro-USD per 1M units (private.unit_price); null: none. */
  unit_price?: number | null;
  /** The fallback models' prices by name (private.route_fallbacks); null without fallbacks. */
  fallbacks?: Record<string, Pick<PriceCard, 'input' | 'output' | 'cached_input' | 'cache_write' | 'per_call' | 'unit_price'>> | null;
}

/** The card a request is billed with when the fallback model `fallback` served it (settlement does the same). */
export function cardFor(card: PriceCard | null, fallback: string | undefined): PriceCard | null {
  const p = fallback && card?.fallbacks ? card.fallbacks[fallback] : undefined;
  return p
    ? { ...card!, input: p.input, output: p.output, cached_input: p.cached_input, cache_write: p.cache_write, per_call: p.per_call, unit_price: p.unit_price ?? null }
    : card;
}

/* why: every non-stream answer prices its receipt, and the multipliers are the same few decimal
   strings each time ("1.000000"); parsing them into BigInts showed in the CPU profile. */
const fractions = new Map<string, [bigint, bigint]>();

/** A non-negative decimal string as an exact fraction. */
function fraction(decimal: string | undefined): [bigint, bigint] {
  const text = decimal ?? '1';
  let f = fractions.get(text);
  if (!f) {
    const [whole, frac = ''] = text.split('.');
    f = [BigInt(whole + frac), 10n ** BigInt(frac.length)];
    if (fractions.size < 1000) fractions.set(text, f);
  }
  return f;
}

const big = (n: number | null | undefined) => BigInt(n ?? 0);

export function costMicros(card: PriceCard | null, channelId: number | null, usage: Usage): number {
  if (!card) return 0;
  const prompt = big(usage.prompt_tokens);
  const cached = big(usage.cached_tokens);
  const written = big(usage.cache_write_tokens);
  const plain = prompt - cached - written > 0n ? prompt - cached - written : 0n;
  const input = big(card.input);
  const base =
    plain * input +
    cached * big(card.cached_input ?? card.input) +
    written * big(card.cache_write ?? card.input) +
    big(usage.completion_tokens) * big(card.output) +
    big(usage.units) * big(card.unit_price) +
    big(card.per_call) * 1000000n;
  const [gn, gd] = fraction(card.group_multiplier);
  const [cn, cd] = fraction(channelId === null ? undefined : card.channel_multipliers?.[String(channelId)]);
  const num = base * gn * cn;
  const den = 1000000n * gd * cd;
  return Number((2n * num + den) / (2n * den)); // half-up, as PostgreSQL's round(numeric)
}

/** A fraction times an integer amount, half-up (PostgreSQL's round(bigint * numeric)). */
function scaled(amount: number, decimal: string | undefined): number {
  const [n, d] = fraction(decimal ?? '0');
  return Number((2n * BigInt(amount) * n + d) / (2n * d));
}

/** The price of a cache hit: the original answer at the hit ratio (no channel multiplier). */
export function hitCostMicros(card: PriceCard | null, usage: Usage): number {
  return card ? scaled(costMicros(card, null, usage), card.cache_hit_ratio) : 0;
}

/** The price of the semantic cache's embedding call. */
export function embeddingCostMicros(card: PriceCard | null, tokens: number): number {
  if (!card?.embedding || tokens <= 0) return 0;
  const e = card.embedding;
  return costMicros({ ...card, input: e.input, output: 0, cached_input: null, cache_write: null, per_call: e.per_call }, null, {
    prompt_tokens: tokens,
    completion_tokens: 0,
  });
}

export function receiptHeaders(requestId: string, cost: number, source: 'upstream' | 'estimated' | 'none'): Record<string, string> {
  return { 'x-elygate-request-id': requestId, 'x-elygate-cost-micros': String(cost), 'x-elygate-usage-source': source };
}
