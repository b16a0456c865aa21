// Meta-tests over the catalog: privileges, RLS and search_path hold for every object, present and future.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { closeDb, db, withTx } from '../support/db';

afterAll(closeDb);

describe('catalog rules', () => {
  it('every SECURITY DEFINER function pins its search_path', async () => {
    const rows = await db()`
      select p.oid::regprocedure::text as fn
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
       where n.nspname in ('private', 'gateway', 'admin', 'me', 'analytics_v1') and p.prosecdef
         and not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%')`;
    expect(rows.map((r) => r.fn)).toEqual([]);
  });

  it('every table in private has row level security enabled', async () => {
    const rows = await db()`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'private' and c.relkind in ('r', 'p') and not c.relrowsecurity`;
    expect(rows.map((r) => r.relname)).toEqual([]);
  });

  it('public can execute nothing in private, gateway, admin or me', async () => {
    const rows = await db()`
      select p.oid::regprocedure::text as fn
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
       where n.nspname in ('private', 'gateway', 'admin', 'me')
         and has_function_privilege('public', p.oid, 'execute')`;
    expect(rows.map((r) => r.fn)).toEqual([]);
  });

  it('the gateway role cannot read tables directly, nor call admin functions', async () => {
    await withTx(
      async (tx) => {
        await expect(tx.savepoint((sp) => sp`select * from private.api_keys`)).rejects.toMatchObject({ code: '42501' });
        await expect(tx.savepoint((sp) => sp`select admin.option_set('MaxAttempts', '1')`)).rejects.toMatchObject({ code: '42501' });
        await expect(tx.savepoint((sp) => sp`select * from admin.channels`)).rejects.toMatchObject({ code: '42501' });
      },
      { role: 'elygate_gateway' },
    );
  });

  it('every function in gateway, admin and me has a comment', async () => {
    const rows = await db()`
      select p.oid::regprocedure::text as fn
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
       where n.nspname in ('gateway', 'admin', 'me') and obj_description(p.oid, 'pg_proc') is null`;
    expect(rows.map((r) => r.fn)).toEqual([]);
  });

  it('schema me: public can read none of its views; elygate_user reads only its own rows through them', async () => {
    const views = await db()`select table_name from information_schema.views where table_schema = 'me' order by 1`;
    expect(views.length).toBeGreaterThan(0);
    const readable = await db()`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'me' and has_table_privilege('public', c.oid, 'select')`;
    expect(readable.map((r) => r.relname)).toEqual([]);
    // Without a session, every view of me is empty for elygate_user (me.current_user_id() is null),
    // and nothing in private or admin is readable by it.
    await withTx(
      async (tx) => {
        for (const v of views) {
          const rows = await tx.savepoint((sp) => sp.unsafe(`select * from me.${v.table_name} limit 1`));
          expect(rows, `me.${v.table_name}`).toHaveLength(0);
        }
        await expect(tx.savepoint((sp) => sp`select * from private.users`)).rejects.toMatchObject({ code: '42501' });
        await expect(tx.savepoint((sp) => sp`select * from admin.users`)).rejects.toMatchObject({ code: '42501' });
      },
      { role: 'elygate_user' },
    );
  });
});

describe('the admin role can read every admin view', () => {
  it('selects from each view in schema admin as elygate_admin', async () => {
    const views = await db()`select table_name from information_schema.views where table_schema = 'admin' order by 1`;
    const failures: string[] = [];
    for (const v of views) {
      await withTx(
        async (tx) => {
          await tx.unsafe(`select * from admin.${v.table_name} limit 1`).catch((e: Error) => failures.push(`${v.table_name}: ${e.message}`));
        },
        { role: 'elygate_admin' },
      );
    }
    expect(failures).toEqual([]);
  });
});

describe('the sql/ folder', () => {
  const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'sql');
  const files = readdirSync(dir).filter((f) => /^\d\d_.*\.sql$/.test(f));

  it('sql/README.md lists every file, and only files that exist', () => {
    const readme = readFileSync(join(dir, 'README.md'), 'utf8');
    const listed = [...readme.matchAll(/^\| `(\d\d_[a-z0-9_]+\.sql)` \|/gm)].map((m) => m[1]);
    expect(listed.sort()).toEqual([...files].sort());
  });

  it('no file passes 420 lines (one subject per file)', () => {
    const long = files
      .map((f) => ({ f, lines: readFileSync(join(dir, f), 'utf8').split('\n').length }))
      .filter((x) => x.lines > 420);
    expect(long).toEqual([]);
  });

  it('every option read from the options object (v_opt/p_opt ->> key) is an option, and option_values equals the registry', async () => {
    // private.options_hot() returns every option; a misspelt key would read as null, not raise.
    const keys = new Set(files.flatMap((f) =>
      [...readFileSync(join(dir, f), 'utf8').matchAll(/\b[a-z_]*opt ->> '([A-Za-z]+)'/g)].map((m) => m[1])));
    expect(keys.size).toBeGreaterThan(10);
    const known = new Set((await db()`select key from private.options`).map((r) => r.key as string));
    expect([...keys].filter((k) => !known.has(k))).toEqual([]);
    const [row] = await db()`
      select (select value from private.option_values) = (select jsonb_object_agg(key, value) from private.options) as same`;
    expect(row.same).toBe(true);
  });
});

describe('composite types (sql/10_types.sql)', () => {
  it('are created, appended to, and never left silently different', async () => {
    await withTx(async (tx) => {
      const ensure = (attrs: string) => tx`select private.composite_type_ensure('private.shape_probe', ${attrs})`;
      const shape = async () =>
        (await tx`select string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' order by attnum) as s
                    from pg_attribute where attrelid = 'private.shape_probe'::regclass and attnum > 0 and not attisdropped`)[0].s;
      await ensure('a integer -- a comment, as in the file');
      expect(await shape()).toBe('a integer');
      await ensure('a integer, b text');
      expect(await shape()).toBe('a integer, b text');
      await tx`savepoint s`;
      await expect(ensure('a bigint, b text')).rejects.toThrow(/private.shape_probe differs from sql\/10_types.sql/);
      await tx`rollback to savepoint s`;
      await expect(ensure('a integer')).rejects.toThrow(/it has \(a integer, b text\), the file declares \(a integer\)/);
    });
  });
});
