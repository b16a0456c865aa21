#!/usr/bin/env node
// The hot path's SQL alone, A/B: `npm run bench:micro [-- --rev REV] [--rounds N]`.
//
// What a PostgreSQL backend spends (CPU from /proc/<pid>/schedstat) per gateway.relay_begin call
// (unbatched) and per gateway.relay_finish call of 1 and of 100 outcomes (a + b·n), on a fresh
// database seeded with one funded user and a limited key, as bench/run.mjs's micro-measures.
// With --rev, the same on a second database built from that commit's migrations and sql/, the
// two measured in alternation in the same run (rounds; default 5) so the machine's drift falls on
// both; the report is each one's median and the ratio. No gateway, no HTTP: this isolates the
// database's share of a request. (The full benchmark is bench/run.mjs.)
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const arg = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const REV = arg('rev', null);
const ROUNDS = Number(arg('rounds', 5));
const BEGINS = Number(arg('begins', 1000));
const PROFILE = args.includes('--profile');
const KEEP = args.includes('--keep');   // keep the databases (their names are printed)
const SINGLES = 300;
const BIG = 100;
const BIGS = 5;

const cpuUs = (pid) => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1000;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** A checkout of rev beside this one (node_modules linked), for its migrations and sql/. */
function checkout(rev) {
  const dir = mkdtempSync(join(tmpdir(), 'elygate-micro-'));
  const r = spawnSync('sh', ['-c', `git -C "${ROOT}" archive ${rev} | tar -x -C "${dir}"`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git archive ${rev}: ${r.stderr}`);
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

/** A database migrated from the tree at root (its committed migrations, current.sql, sql/). */
async function database(baseUrl, root, name) {
  const admin = postgres(baseUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const url = Object.assign(new URL(baseUrl), { pathname: `/${name}` }).toString();
  const { migrateDatabase } = await import(join(root, 'scripts', 'migrate.mjs'));
  const current = join(root, 'migrations', 'current.sql');
  const inProgress = existsSync(current) && readFileSync(current, 'utf8').replace(/--.*$/gm, '').trim() !== '';
  // sql/ waits for current.sql when there is one (it may use what current.sql creates): watch --once applies it after.
  await migrateDatabase(url, { log: () => {}, deferSql: inProgress });
  if (inProgress) {
    const gm = spawnSync(join(root, 'node_modules', '.bin', 'graphile-migrate'), ['watch', '--once'],
      { cwd: root, env: { ...process.env, DATABASE_URL: url }, encoding: 'utf8' });
    if (gm.status !== 0) throw new Error(`current.sql: ${gm.stdout}${gm.stderr}`);
  }
  const sql = postgres(url, { max: 1, onnotice: () => {}, connection: { 'elygate.master_key': randomBytes(32).toString('hex') } });
  await sql`select admin.model_upsert('{"name": "bench-model", "input_price": 150000, "output_price": 600000}')`;
  await sql`select admin.option_set('AllowPrivateUpstreams', 'true')`;
  await sql`select admin.channel_create(${sql.json({ name: 'micro', base_url: 'http://127.0.0.1:9', api_key: 'sk-micro', models: ['bench-model'] })})`;
  await sql`select admin.user_create('{"username": "micro"}')`;
  await sql`select admin.wallet_credit('{"username": "micro", "amount_micros": 1000000000000}')`;
  const [{ key }] = await sql`
    select admin.key_create('{"username": "micro", "name": "micro", "quota_micros": 1000000000000000,
      "rpm_limit": 1000000000, "tpm_limit": 2000000000, "concurrency_limit": 100000, "cache_enabled": false}') ->> 'key' as key`;
  await sql`vacuum analyze`;
  await sql.end();
  return { name, url, key };
}

/** One round on db: relay_begin per call, relay_finish per call of 1 and of BIG outcomes (µs of backend CPU). */
async function round(db) {
  const s = postgres(db.url, { max: 1, onnotice: () => {}, connection: { application_name: 'elygate-micro' } });
  try {
    const [{ pid }] = await s`select pg_backend_pid() as pid`;
    if (PROFILE) {
      // Every statement inside the functions too; only this round's (the last round's report stands).
      await s`create extension if not exists pg_stat_statements`;
      await s`set pg_stat_statements.track = 'all'`;
    }
    const hash = createHash('sha256').update(db.key).digest();
    const begin = () => s`select * from gateway.relay_begin(${randomUUID()}, ${hash}, 'bench-model', 'chat/completions', false, '127.0.0.1', 20, 64)`.then((r) => r[0]);
    const outcome = (t) => {
      const channel = Number(t.plan?.[0]?.channel_id ?? 0);
      return {
        id: t.request_id, created_at: t.created_at, status: 'ok', http_status: 200, channel_id: channel,
        upstream_model: 'bench-model', prompt_tokens: 20, completion_tokens: 30, usage_source: 'upstream',
        attempts: [{ channel_id: channel, status: 200, ms: 1 }], ttfb_ms: 1, latency_ms: 2, error_code: null,
        error_message: null, embedding_tokens: null,
        ticket: { user_id: t.user_id, key_id: t.key_id, group_name: t.group_name, model: 'bench-model', endpoint: 'chat/completions', cache: null },
      };
    };
    const finish = (batch) => s`select gateway.relay_finish(${s.json(batch)}) as n`;
    const warm = [];
    for (let i = 0; i < 50; i++) warm.push(outcome(await begin()));
    for (let i = 0; i < 10; i++) await finish(warm.slice(i * 5, i * 5 + 5));
    if (PROFILE) await s`select pg_stat_statements_reset()`;
    const n = Math.max(BEGINS, SINGLES + BIG * BIGS);
    const tickets = [];
    let c0 = cpuUs(pid);
    for (let i = 0; i < n; i++) tickets.push(await begin());
    const begin_us = (cpuUs(pid) - c0) / n;
    const outcomes = tickets.map(outcome);
    c0 = cpuUs(pid);
    for (let i = 0; i < SINGLES; i++) await finish([outcomes[i]]);
    const one = (cpuUs(pid) - c0) / SINGLES;
    c0 = cpuUs(pid);
    for (let i = 0; i < BIGS; i++) await finish(outcomes.slice(SINGLES + i * BIG, SINGLES + (i + 1) * BIG));
    const big = (cpuUs(pid) - c0) / BIGS;
    await finish(outcomes.slice(SINGLES + BIG * BIGS));
    const outcome_us = (big - one) / (BIG - 1);
    if (PROFILE) {
      const top = await s`
        select calls, round((total_exec_time / calls * 1000)::numeric, 1) as us_per_call, rows,
               left(regexp_replace(query, '[[:space:]]+', ' ', 'g'), 110) as query
          from pg_stat_statements
         where dbid = (select oid from pg_database where datname = current_database())
         order by total_exec_time desc limit 25`;
      console.error(`profile of ${db.name} (pg_stat_statements, track = all; exec time, not CPU):`);
      for (const t of top) console.error(`${String(t.calls).padStart(6)} ${String(t.us_per_call).padStart(8)} µs  ${t.query}`);
    }
    return { begin_us, finish_call_us: one - outcome_us, finish_outcome_us: outcome_us, finish_1_us: one };
  } finally {
    await s.end({ timeout: 5 });
  }
}

async function main() {
  const url = spawnSync('node', [join(ROOT, 'scripts', 'pg.mjs'), 'url'], { encoding: 'utf8' }).stdout.trim();
  const base = process.env.DATABASE_URL ?? url;
  if (!base) throw new Error('No DATABASE_URL and no embedded cluster running (node scripts/pg.mjs start).');
  const tag = randomBytes(3).toString('hex');
  const variants = [{ label: 'this tree', db: await database(base, ROOT, `micro_b_${tag}`) }];
  let other = null;
  if (REV) {
    other = checkout(REV);
    variants.unshift({ label: REV, db: await database(base, other, `micro_a_${tag}`) });
  }
  const results = variants.map(() => []);
  try {
    for (let r = 0; r < ROUNDS; r++) {
      // The order turns every round, so neither variant always runs first.
      const order = r % 2 ? [...variants.keys()].reverse() : [...variants.keys()];
      for (const v of order) results[v].push(await round(variants[v].db));
      console.error(`round ${r + 1}/${ROUNDS} done`);
    }
    const fields = ['begin_us', 'finish_call_us', 'finish_outcome_us', 'finish_1_us'];
    const medians = results.map((rs) => Object.fromEntries(fields.map((f) => [f, median(rs.map((x) => x[f]))])));
    const spread = results.map((rs) => Object.fromEntries(fields.map((f) => [f, rs.map((x) => Math.round(x[f]))])));
    console.log(JSON.stringify({ rounds: ROUNDS, variants: variants.map((v, i) => ({ label: v.label, median: medians[i], all: spread[i] })),
      ratio: medians.length === 2 ? Object.fromEntries(fields.map((f) => [f, +(medians[1][f] / medians[0][f]).toFixed(3)])) : undefined }, null, 1));
  } finally {
    const admin = postgres(base, { max: 1, onnotice: () => {} });
    for (const v of variants) {
      if (KEEP) console.error(`kept: ${v.db.name} (key ${v.db.key})`);
      else await admin.unsafe(`drop database if exists ${v.db.name} with (force)`);
    }
    await admin.end();
    if (other) rmSync(other, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
