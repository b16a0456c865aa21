// Display helpers. Money is integer micro-USD everywhere (DESIGN §3); only the display divides,
// and only here: every page shows money with usd(), so a balance, a price and a top-up message
// never disagree. At least two decimals; up to six (one micro-USD) when the amount has them, so
// $4.999876 is not rounded to a misleading $5.00.
export const usd = (micros: unknown) => {
  const n = Number(micros ?? 0);
  const abs = (Math.abs(n) / 1e6).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 6 });
  return `${n < 0 ? '-' : ''}$${abs}`;
};
/** A price in micro-USD per 1M units (a media request's ledger unit_price) as dollars per unit. */
export const usdPerUnit = (microsPer1M: unknown) => usd(Number(microsPer1M ?? 0) / 1e6);
/** Micro-USD as the plain dollar number a form's input field holds ('' for none). */
export const usdInput = (micros: unknown) => (micros === null || micros === undefined || micros === '' ? '' : String(Number(micros) / 1e6));
export const num = (v: unknown) => (v === null || v === undefined ? '—' : Number(v).toLocaleString('en-US'));
export const when = (v: unknown) => (v ? new Date(v as string).toISOString().replace('T', ' ').slice(0, 19) : '—');
export const list = (v: unknown) => (Array.isArray(v) && v.length ? v.join(', ') : '—');
export const statusColor = (s: string) =>
  s === 'archived'
    ? 'bg-slate-200 text-slate-700'
    : s === 'enabled' || s === 'active' || s === 'ok' || s === 'succeeded'
    ? 'bg-emerald-100 text-emerald-800'
    : s === 'pending' || s === 'running' || s === 'starting'
      ? 'bg-amber-100 text-amber-800'
      : 'bg-rose-100 text-rose-800';
/** A request answered from the response cache (requests.cache: exact | semantic), as a label. */
export const cacheLabel = (r: { cache?: string | null }) => (r.cache ? `${r.cache} cache hit` : '');
export const cacheTitle = (r: { cache?: string | null; cache_similarity?: unknown }) =>
  r.cache === 'semantic' && r.cache_similarity != null
    ? `Answered from the semantic cache (similarity ${Number(r.cache_similarity).toFixed(3)}); no upstream was called.`
    : r.cache ? `Answered from the ${r.cache} cache; no upstream was called.` : '';
