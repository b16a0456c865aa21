// Keyset pagination, sorting and a capped count for the list pages (logs, channels, keys, users).
/* why keyset and a reference row: OFFSET re-reads every earlier row on each page (the request log
   has millions), and a cursor that carries the sort value needs a type per column. The cursor is
   just the last row's id ("after"); the next page is the rows that sort after that row, compared as
   (sort value, id) against the row itself, looked up by id. Sort columns come from a fixed list per
   page (never from the URL as text), nullable ones with a fallback so the comparison is total. */
import type { PendingQuery, Row } from 'postgres';
import type { Tx } from './db';

export type Dir = 'asc' | 'desc';
export interface SortCol {
  /** Column of the page's main relation. */
  col: string;
  /** Stands in for null, so rows with no value still sort (and compare) somewhere. */
  nulls?: number | string;
}

export interface KeysetSpec {
  /** The main relation's alias in the page's query, and the relation itself for the lookup. */
  alias: string;
  relation: PendingQuery<Row[]>;
  sorts: Record<string, SortCol>;
  sort: [string, Dir];
  /** What a row id looks like (a cursor that does not match is ignored). */
  id: RegExp;
  limit: number;
}

export interface Keyset {
  sort: string;
  dir: Dir;
  after: string | null;
  limit: number;
  /** `and (...)`: the rows after the cursor (true without one). */
  cond: PendingQuery<Row[]>;
  order: PendingQuery<Row[]>;
}

export function keyset(tx: Tx, url: URL, spec: KeysetSpec): Keyset {
  const p = url.searchParams;
  const sort = p.get('sort') && spec.sorts[p.get('sort')!] ? p.get('sort')! : spec.sort[0];
  const dir: Dir = p.get('dir') === 'asc' || p.get('dir') === 'desc' ? (p.get('dir') as Dir) : sort === spec.sort[0] ? spec.sort[1] : 'asc';
  const rawAfter = p.get('after');
  const after = rawAfter && spec.id.test(rawAfter) ? rawAfter : null;
  const s = spec.sorts[sort];
  const expr = (alias: string) => (s.nulls === undefined ? tx`${tx(`${alias}.${s.col}`)}` : tx`coalesce(${tx(`${alias}.${s.col}`)}, ${s.nulls})`);
  const id = (alias: string) => tx`${tx(`${alias}.id`)}`;
  const cmp = dir === 'asc' ? tx`>` : tx`<`;
  const cond = after
    ? tx`(${expr(spec.alias)}, ${id(spec.alias)}) ${cmp} (select ${expr('ref')}, ref.id from ${spec.relation} ref where ref.id = ${after})`
    : tx`true`;
  const order = dir === 'asc' ? tx`${expr(spec.alias)} asc, ${id(spec.alias)} asc` : tx`${expr(spec.alias)} desc, ${id(spec.alias)} desc`;
  return { sort, dir, after, limit: spec.limit, cond, order };
}

/** The counts a list shows above itself: how many match (exact up to `cap`), and the next cursor. */
export interface PageInfo {
  sort: string;
  dir: Dir;
  total: number;
  capped: boolean;
  shown: number;
  next: string | null;
  first: boolean;
}

export async function pageOf<T extends { id: unknown }>(
  k: Keyset,
  rows: T[],
  count: () => Promise<number>,
  cap = 10000,
): Promise<{ rows: T[]; page: PageInfo }> {
  const more = rows.length > k.limit;
  const shown = more ? rows.slice(0, k.limit) : rows;
  const n = await count();
  return {
    rows: shown,
    page: { sort: k.sort, dir: k.dir, total: Math.min(n, cap), capped: n > cap, shown: shown.length, next: more ? String(shown[shown.length - 1].id) : null, first: !k.after },
  };
}

/** Counts rows of a query, stopping at cap + 1 (an exact count of a huge log is not worth a scan). */
export const countCapped = (tx: Tx, query: PendingQuery<Row[]>, cap = 10000) => async () =>
  Number((await tx`select count(*)::int as n from (${query} limit ${cap + 1}) x`)[0].n);
