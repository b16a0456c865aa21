// Filters for the request log, shared by the page and the CSV export. Values are bound parameters,
// checked here first: a key id of "abc" or a date of "yesterday" is the person's typo, answered
// with a sentence next to the form, never a database error (issue 21).
import type { Tx } from '$lib/server/db';
import { likePattern } from '$lib/server/search';

export const FILTERS = ['from', 'to', 'user', 'key', 'model', 'channel', 'status', 'q'] as const;

export interface Filters {
  from?: Date;
  to?: Date;
  user?: string;
  key?: number;
  model?: string;
  channel?: number;
  status?: string;
  q?: string;
}

/** The filters of a URL, and a sentence per value that is not usable. */
export function parseFilters(p: URLSearchParams): { filters: Filters; problems: string[] } {
  const v = (k: string) => p.get(k)?.trim() || undefined;
  const filters: Filters = { user: v('user'), model: v('model'), status: v('status'), q: v('q') };
  const problems: string[] = [];
  const id = (k: 'key' | 'channel', label: string) => {
    const s = v(k);
    if (s === undefined) return;
    if (/^\d{1,15}$/.test(s)) filters[k] = Number(s);
    else problems.push(`${label} must be a whole number such as 12, got "${s.slice(0, 40)}".`);
  };
  const time = (k: 'from' | 'to', label: string) => {
    const s = v(k);
    if (s === undefined) return;
    // The form's datetime-local has no zone; the labels say UTC, so read it as UTC.
    const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`);
    if (Number.isNaN(d.getTime()) || d.getUTCFullYear() < 1970 || d.getUTCFullYear() > 9999) {
      problems.push(`${label} must be a date and time such as 2030-01-31T12:00 (UTC), got "${s.slice(0, 40)}".`);
    } else filters[k] = d;
  };
  id('key', 'Key id');
  id('channel', 'Channel id');
  time('from', 'From');
  time('to', 'To');
  if (filters.status && filters.status.length > 40) problems.push('Status is a word such as ok or error, or an HTTP status such as 429.');
  return { filters, problems };
}

export function where(tx: Tx, f: Filters) {
  const parts = [tx`true`];
  if (f.from) parts.push(tx`r.created_at >= ${f.from}`);
  if (f.to) parts.push(tx`r.created_at < ${f.to}`);
  if (f.user) parts.push(tx`u.username = ${f.user}`);
  if (f.key !== undefined) parts.push(tx`r.key_id = ${f.key}`);
  if (f.model) parts.push(tx`r.model = ${f.model}`);
  if (f.channel !== undefined) parts.push(tx`r.channel_id = ${f.channel}`);
  if (f.status) parts.push(/^\d{3}$/.test(f.status) ? tx`r.http_status = ${Number(f.status)}` : tx`r.status = ${f.status}`);
  if (f.q) {
    const like = likePattern(f.q);
    parts.push(tx`(r.id::text = ${f.q} or r.model ilike ${like} or u.username ilike ${like} or r.error_code ilike ${like} or r.error_message ilike ${like})`);
  }
  return parts.reduce((a, b) => tx`${a} and ${b}`);
}
