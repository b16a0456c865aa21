// The schema as the catalog has it, one line per object, sorted: what a fresh database and an
// upgraded one must agree on (gateway/test/sql/drift.test.ts), and what `npm run schema` writes to
// migrations/schema.txt so every change shows its schema diff in review.
//   node scripts/catalog.mjs [DATABASE_URL]   prints it (default: the embedded cluster's database)
//   npm run schema                            writes migrations/schema.txt (a throwaway database)
// Covers the project's schemas: tables and columns (type, nullability, default), constraints,
// indexes, row level security and policies, views (their definition), functions (signature, result,
// language, volatility, security, settings and a digest of the body), triggers, composite types,
// sequences, and every privilege granted on them.
import postgres from 'postgres';
import { fileURLToPath } from 'node:url';

const SCHEMAS = ['private', 'gateway', 'admin', 'me', 'analytics_v1'];

/** The catalog of the database at url, as sorted lines. */
export async function catalogOf(url) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql`
      with ns as (select oid, nspname from pg_namespace where nspname = any(${SCHEMAS}))
      -- relations: kind, row level security, privileges
      select format('relation %s.%s kind=%s rls=%s acl=%s', ns.nspname, c.relname, c.relkind, c.relrowsecurity,
                    coalesce((select string_agg(a::text, ',' order by a::text) from unnest(c.relacl) a), '-')) as line
        from pg_class c join ns on ns.oid = c.relnamespace
       where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and not c.relispartition
      union all
      -- columns of tables and views
      select format('column %s.%s.%s %s%s%s', ns.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                    case when a.attnotnull then ' not null' else '' end,
                    coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''))
        from pg_attribute a join pg_class c on c.oid = a.attrelid join ns on ns.oid = c.relnamespace
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
       where c.relkind in ('r', 'p', 'v', 'm', 'f') and not c.relispartition and a.attnum > 0 and not a.attisdropped
      union all
      -- composite types (column order matters: it is their shape)
      select format('type %s.%s (%s)', ns.nspname, t.typname,
                    (select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' order by a.attnum)
                       from pg_attribute a where a.attrelid = t.typrelid and a.attnum > 0 and not a.attisdropped))
        from pg_type t join ns on ns.oid = t.typnamespace join pg_class c on c.oid = t.typrelid
       where t.typtype = 'c' and c.relkind = 'c'
      union all
      -- constraints
      select format('constraint %s.%s %s %s', ns.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid))
        from pg_constraint k join pg_class c on c.oid = k.conrelid join ns on ns.oid = c.relnamespace
       where not c.relispartition
      union all
      -- indexes (of partitioned tables: the parent's; their partitions' follow it)
      select format('index %s', regexp_replace(pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON '))
        from pg_index i join pg_class c on c.oid = i.indrelid join ns on ns.oid = c.relnamespace
        join pg_class ic on ic.oid = i.indexrelid
       where not c.relispartition
      union all
      -- views: their definition
      select format('view %s.%s md5=%s', ns.nspname, c.relname, md5(pg_get_viewdef(c.oid)))
        from pg_class c join ns on ns.oid = c.relnamespace where c.relkind in ('v', 'm')
      union all
      -- policies
      select format('policy %s.%s %s %s roles=%s using=%s check=%s', ns.nspname, c.relname, p.polname, p.polcmd,
                    (select string_agg(r::regrole::text, ',' order by r::regrole::text) from unnest(p.polroles) r),
                    coalesce(pg_get_expr(p.polqual, p.polrelid), '-'), coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-'))
        from pg_policy p join pg_class c on c.oid = p.polrelid join ns on ns.oid = c.relnamespace
      union all
      -- functions
      select format('function %s returns %s lang=%s vol=%s secdef=%s config=%s acl=%s body=%s',
                    p.oid::regprocedure, pg_get_function_result(p.oid), l.lanname, p.provolatile, p.prosecdef,
                    coalesce(array_to_string(p.proconfig, ';'), '-'),
                    coalesce((select string_agg(a::text, ',' order by a::text) from unnest(p.proacl) a), '-'),
                    md5(coalesce(p.prosrc, '')))
        from pg_proc p join ns on ns.oid = p.pronamespace join pg_language l on l.oid = p.prolang
      union all
      -- triggers
      select format('trigger %s', pg_get_triggerdef(t.oid))
        from pg_trigger t join pg_class c on c.oid = t.tgrelid join ns on ns.oid = c.relnamespace
       where not t.tgisinternal and not c.relispartition
      union all
      -- the schemas themselves and who may use them
      select format('schema %s acl=%s', ns.nspname,
                    coalesce((select string_agg(a::text, ',' order by a::text) from unnest(n.nspacl) a), '-'))
        from ns join pg_namespace n on n.oid = ns.oid`;
    return rows.map((r) => r.line).sort();
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Lines only in a, and lines only in b. */
export function catalogDiff(a, b) {
  const sa = new Set(a);
  const sb = new Set(b);
  return { onlyA: a.filter((l) => !sb.has(l)), onlyB: b.filter((l) => !sa.has(l)) };
}

/** migrations/schema.txt: the catalog of a database migrated fresh from this tree, in a throwaway
 *  database on the server of `serverUrl`. */
export async function writeSchemaFile(serverUrl) {
  const { randomBytes } = await import('node:crypto');
  const { writeFileSync } = await import('node:fs');
  const { migrateWithCurrent } = await import('./migrate.mjs');
  const name = `schema_${randomBytes(4).toString('hex')}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  try {
    const url = Object.assign(new URL(serverUrl), { pathname: `/${name}` }).toString();
    await migrateWithCurrent(url, { log: () => {} });
    const lines = await catalogOf(url);
    const file = fileURLToPath(new URL('../migrations/schema.txt', import.meta.url));
    writeFileSync(file, lines.join('\n') + '\n');
    return { file, lines: lines.length };
  } finally {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end({ timeout: 5 });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { spawnSync } = await import('node:child_process');
  const write = process.argv.includes('--write');
  const given = process.argv.slice(2).find((a) => !a.startsWith('--'));
  const url = given ?? process.env.DATABASE_URL ??
    spawnSync('node', [fileURLToPath(new URL('./pg.mjs', import.meta.url)), 'url'], { encoding: 'utf8' }).stdout.trim();
  if (write) {
    const { file, lines } = await writeSchemaFile(url);
    console.log(`${file}: ${lines} objects`);
  } else {
    for (const line of await catalogOf(url)) console.log(line);
  }
}
