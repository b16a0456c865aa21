// Filters for the request log, shared by the page and the CSV export. Values are bound parameters.
import type { Tx } from '$lib/server/db';

export const FILTERS = ['from', 'to', 'user', 'key', 'model', 'channel', 'status'] as const;

export function where(tx: Tx, p: URLSearchParams) {
  const parts = [tx`true`];
  const v = (k: string) => p.get(k)?.trim() || null;
  if (v('from')) parts.push(tx`r.created_at >= ${new Date(v('from')!)}`);
  if (v('to')) parts.push(tx`r.created_at < ${new Date(v('to')!)}`);
  if (v('user')) parts.push(tx`u.username = ${v('user')}`);
  if (v('key')) parts.push(tx`r.key_id = ${Number(v('key'))}`);
  if (v('model')) parts.push(tx`r.model = ${v('model')}`);
  if (v('channel')) parts.push(tx`r.channel_id = ${Number(v('channel'))}`);
  if (v('status')) parts.push(/^\d+$/.test(v('status')!) ? tx`r.http_status = ${Number(v('status'))}` : tx`r.status = ${v('status')}`);
  return parts.reduce((a, b) => tx`${a} and ${b}`);
}
