// Display helpers. Money is integer micro-USD everywhere (DESIGN §3); only the display divides.
export const usd = (micros: unknown) => {
  const n = Number(micros ?? 0) / 1e6;
  const abs = Math.abs(n).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: Math.abs(n) < 1 && n !== 0 ? 6 : 2 });
  return `${n < 0 ? '-' : ''}$${abs}`;
};
export const num = (v: unknown) => (v === null || v === undefined ? '—' : Number(v).toLocaleString('en-US'));
export const when = (v: unknown) => (v ? new Date(v as string).toISOString().replace('T', ' ').slice(0, 19) : '—');
export const list = (v: unknown) => (Array.isArray(v) && v.length ? v.join(', ') : '—');
export const statusColor = (s: string) =>
  s === 'enabled' || s === 'active' || s === 'ok' || s === 'succeeded'
    ? 'bg-emerald-100 text-emerald-800'
    : s === 'pending' || s === 'running' || s === 'starting'
      ? 'bg-amber-100 text-amber-800'
      : 'bg-rose-100 text-rose-800';
