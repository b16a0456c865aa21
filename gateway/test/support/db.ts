// Database helpers for tests: a superuser connection to the throwaway database, transactions that
// always roll back (with an optional role switch), and fixtures built through the admin.* API.
import postgres, { type Sql, type TransactionSql } from 'postgres';
import { inject } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';

export const databaseUrl = inject('databaseUrl');
export const masterKey = inject('masterKey');

/**
 * Creates database `name` on the test server with the suite's schema: a copy of the template the
 * global setup migrated (committed migrations, then the one in progress), as if migrated the same
 * way, in a fraction of the time. For files that need a database of their own. Returns its URL.
 */
export async function databaseFromTemplate(name: string): Promise<string> {
  const root = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await root.unsafe(`create database ${name} template ${inject('templateDatabase')}`);
  } finally {
    await root.end();
  }
  return Object.assign(new URL(databaseUrl), { pathname: `/${name}` }).toString();
}

let shared: Sql | null = null;
/** A superuser connection to the test database (closed by closeDb). */
export function db(): Sql {
  shared ??= postgres(databaseUrl, {
    max: 4,
    onnotice: () => {},
    connection: { 'elygate.master_key': masterKey } as Record<string, string>,
  });
  return shared;
}

export async function closeDb(): Promise<void> {
  await shared?.end({ timeout: 5 });
  shared = null;
}

const ROLLBACK = Symbol('rollback');

/** Runs fn in a transaction that is always rolled back; optionally as another role. */
export async function withTx<T>(fn: (tx: TransactionSql) => Promise<T>, opts: { role?: string } = {}): Promise<T> {
  let result!: T;
  try {
    await db().begin(async (tx) => {
      if (opts.role) await tx.unsafe(`set local role ${opts.role}`);
      result = await fn(tx);
      throw ROLLBACK;
    });
  } catch (err) {
    if (err !== ROLLBACK) throw err;
  }
  return result;
}

/** Runs one statement in a savepoint, so an expected error leaves the transaction usable. */
export function attempt<T>(tx: TransactionSql, fn: (sp: TransactionSql) => Promise<T>): Promise<T> {
  return tx.savepoint(fn) as Promise<T>;
}

export const unique = (prefix: string) => `${prefix}_${randomBytes(4).toString('hex')}`;
export const sha256 = (s: string) => createHash('sha256').update(s).digest();

type Q = Sql | TransactionSql;

export async function createUser(q: Q, fields: Record<string, unknown> = {}) {
  const [{ u }] = await q`select admin.user_create(${q.json({ username: unique('user'), ...fields } as never)}) as u`;
  return u as { id: number; username: string };
}

export async function createKey(q: Q, fields: Record<string, unknown>) {
  const [{ k }] = await q`select admin.key_create(${q.json(fields as never)}) as k`;
  return k as { id: number; key: string; key_prefix: string };
}

export async function createChannel(q: Q, fields: Record<string, unknown>) {
  const [{ c }] = await q`select admin.channel_create(${q.json({ name: unique('ch'), api_key: 'sk-upstream-test', ...fields } as never)}) as c`;
  return c as { id: number; name: string };
}

export async function createGroup(q: Q, name = unique('grp')) {
  await q`insert into private.groups (name) values (${name})`;
  return name;
}
