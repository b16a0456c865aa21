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
const fractions = new Map<string, Fraction>();

/** An exact fraction in lowest terms, as BigInts and, when both fit, as safe integers. */
interface Fraction {
  n: bigint;
  d: bigint;
  safe: [number, number] | null;
}

const gcd = (a: bigint, b: bigint): bigint => (b === 0n ? (a < 0n ? -a : a) : gcd(b, a % b));

/** A non-negative decimal string as an exact fraction. */
function fraction(decimal: string | undefined): Fraction {
  const text = decimal ?? '1';
  let f = fractions.get(text);
  if (!f) {
    const [whole, frac = ''] = text.split('.');
    const n = BigInt(whole + frac);
    const d = 10n ** BigInt(frac.length);
    // (In lowest terms: "1.000000" is 1/1, so most receipts stay within safe integers.)
    const g = gcd(n, d) || 1n;
    const [rn, rd] = [n / g, d / g];
    const fits = (x: bigint) => x <= BigInt(Number.MAX_SAFE_INTEGER) && x >= -BigInt(Number.MAX_SAFE_INTEGER);
    f = { n: rn, d: rd, safe: fits(rn) && fits(rd) ? [Number(rn), Number(rd)] : null };
    if (fractions.size < 1000) fractions.set(text, f);
  }
  return f;
}

const big = (n: number | null | undefined) => BigInt(n ?? 0);

export function costMicros(card: PriceCard | null, channelId: number | null, usage: Usage): number {
  if (!card) return 0;
  const g = fraction(card.group_multiplier);
  const c = fraction(channelId === null ? undefined : card.channel_multipliers?.[String(channelId)]);
  return costInSafeIntegers(card, usage, g, c) ?? costInBigInts(card, usage, g, c);
}

const MAX = Number.MAX_SAFE_INTEGER;
/** x when it is an integer whose every step so far was exact (|x| within safe integers), else NaN. */
const exact = (x: number) => (Number.isSafeInteger(x) ? x : NaN);

/* why: the BigInt arithmetic below allocates a dozen BigInts per receipt. With safe integers every
   product and sum is exact as long as it stays within ±2^53 - 1 (a step past it is caught: the
   rounded result is no longer a safe integer), so the common receipt is computed in Numbers and
   anything larger, or not integral, takes the BigInt path. Same result either way. */
function costInSafeIntegers(card: PriceCard, usage: Usage, g: Fraction, c: Fraction): number | null {
  if (!g.safe || !c.safe) return null;
  const n = (v: number | null | undefined) => exact(v ?? 0);
  const prompt = n(usage.prompt_tokens);
  const cached = n(usage.cached_tokens);
  const written = n(usage.cache_write_tokens);
  const plain = Math.max(exact(prompt - cached - written), 0);
  const input = n(card.input);
  const base = exact(
    exact(plain * input) +
      exact(cached * n(card.cached_input ?? card.input)) +
      exact(written * n(card.cache_write ?? card.input)) +
      exact(n(usage.completion_tokens) * n(card.output)) +
      exact(n(usage.units) * n(card.unit_price)) +
      exact(n(card.per_call) * 1000000),
  );
  const num = exact(exact(base * g.safe[0]) * c.safe[0]);
  const den = exact(exact(1000000 * g.safe[1]) * c.safe[1]);
  const top = exact(2 * num + den);
  const bottom = exact(2 * den);
  // (NaN anywhere above fails this test; a negative top would round differently from BigInt's division.)
  if (!(top >= 0 && bottom > 0 && top <= MAX)) return null;
  let q = Math.floor(top / bottom);
  if (q * bottom > top) q--;
  else if ((q + 1) * bottom <= top) q++;
  return q;
}

function costInBigInts(card: PriceCard, usage: Usage, g: Fraction, c: Fraction): number {
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
  const num = base * g.n * c.n;
  const den = 1000000n * g.d * c.d;
  return Number((2n * num + den) / (2n * den)); // half-up, as PostgreSQL's round(numeric)
}

/** A fraction times an integer amount, half-up (PostgreSQL's round(bigint * numeric)). */
function scaled(amount: number, decimal: string | undefined): number {
  const { n, d } = fraction(decimal ?? '0');
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
