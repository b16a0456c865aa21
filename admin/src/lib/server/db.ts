// The admin server's only database client (postgres.js), logged in as elygate_admin.
// Every page query goes through `run(locals, fn)`: one transaction that carries the session token
// (elygate.session) and, for anyone but a fully logged-in admin, drops to role elygate_user, which
// PostgreSQL refuses every admin.* view and function (42501). Who may see what is decided in SQL.
import postgres, { type Sql, type TransactionSql } from 'postgres';
import { env } from '$env/dynamic/private';
import { error, fail, redirect } from '@sveltejs/kit';
import { formProblem } from './forms';

let client: Sql | null = null;

export function sql(): Sql {
  if (!client) {
    const url = env.ADMIN_DATABASE_URL || env.DATABASE_URL;
    if (!url) throw new Error('ADMIN_DATABASE_URL is not set (npm start sets it).');
    const connection: Record<string, string> = { application_name: 'elygate-admin' };
    // Sealing a channel's upstream key (admin.channel_create) needs the master key in the session,
    // exactly as in psql. The admin never decrypts keys; only the gateway does.
    if (env.ELYGATE_MASTER_KEY) connection['elygate.master_key'] = env.ELYGATE_MASTER_KEY;
    client = postgres(url, {
      max: Number(env.ADMIN_DB_POOL_MAX || 5),
      onnotice: () => {},
      connection,
      transform: { undefined: null },
    });
  }
  return client;
}

export type Tx = TransactionSql;

export function isAdmin(user: SessionUser | null): boolean {
  return !!user && user.role === 'admin' && user.stage === 'full' && !user.must_change;
}

/** Runs fn in one transaction as the session's user (see the header). */
export async function run<T>(locals: App.Locals, fn: (tx: Tx) => Promise<T>): Promise<T> {
  try {
    return (await sql().begin(async (tx) => {
      await tx`select set_config('elygate.session', ${locals.token ?? ''}, true)`;
      if (!isAdmin(locals.user)) await tx`select set_config('role', 'elygate_user', true)`;
      return fn(tx);
    })) as T;
  } catch (err) {
    throw toHttp(err);
  }
}

interface PgErr {
  code?: string;
  message?: string;
  hint?: string;
  column_name?: string;
}

/** Maps a database error to SvelteKit's error(): 42501 → 403, NOSES → login, bad input → 400, the rest → 500. */
export function toHttp(err: unknown): unknown {
  const e = err as PgErr;
  if (e && typeof e === 'object' && 'status' in e) return err; // already an HttpError / Redirect
  if (e?.code === '42501') return error(403, { message: 'Admins only: this page is not available to your account.', code: '42501' });
  if (e?.code === 'NOSES') return redirect(303, '/login');
  // Bad input that reached a page's query (a hand-edited URL): a 400 with a sentence, not a 500.
  const problem = formProblem(err);
  if (problem) return error(400, { message: problem.message, code: problem.code });
  console.error('[admin] database error', e?.code, e?.message);
  return error(500, { message: e?.message ?? 'Database error', code: e?.code });
}

/** For form actions: known SQLSTATEs become fail(400, {code, message, field}) (STYLE §7). */
export async function act<T>(locals: App.Locals, fn: (tx: Tx) => Promise<T>): Promise<T | ReturnType<typeof fail>> {
  try {
    return await sql().begin(async (tx) => {
      await tx`select set_config('elygate.session', ${locals.token ?? ''}, true)`;
      if (!isAdmin(locals.user)) await tx`select set_config('role', 'elygate_user', true)`;
      return fn(tx);
    }) as T;
  } catch (err) {
    const e = err as PgErr;
    if (e && typeof e === 'object' && 'status' in e) throw err;
    if (e?.code === '42501') throw error(403, { message: 'Admins only.', code: '42501' });
    if (e?.code === 'NOSES') throw redirect(303, '/login');
    const problem = formProblem(err);
    if (problem) return fail(400, { ...problem });
    throw toHttp(err);
  }
}

