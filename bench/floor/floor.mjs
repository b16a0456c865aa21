// The PostgreSQL floor's client (bench/run.mjs starts it, pinned where the gateway runs): the
// least database work the design needs per request — bench/floor/admit.sql (one request) or
// admit_batch.sql (k requests) for admission, bench/floor/settle.sql per batch of N outcomes —
// sent the way the gateway sends its own:
//   - CONNS client loops (the load's connections), each: wait for its admission, queue its
//     outcome, start again at once (no HTTP, no upstream: only the database's share is measured);
//   - LANES admission connections (the gateway's AdmissionConcurrency, 1 by default): a free lane
//     takes every waiting request, up to ADMIT_BATCH, in one call — one request: admit.sql, more:
//     admit_batch.sql (the gateway's relay_begin / relay_begin_batch, gateway/src/admission.ts);
//   - one settlement connection, one batch in flight at a time, a batch as soon as BATCH outcomes
//     are queued (the rest at the end in one smaller batch).
// ADMIT_BATCH and BATCH are the gateway's own requests per admission call and outcomes per
// relay_finish in the same run and layout, so the floor and elygate are compared at the same batch
// sizes (left to themselves, the floor's loops, with no upstream, would batch more).
// It only drives the load: bench/run.mjs measures the database's CPU around the measured part,
// the same way as for the gateway cells. Protocol on stdio:
//   warm-up (WARMUP s of load, drained), then prints FLOOR_READY and waits for "go" on stdin;
//   runs SECONDS s, drains, prints BENCH_JSON {...}; waits for "end" (or stdin closing), closes its
//   connections and exits. The connections stay open until "end" so their backends' CPU can be
//   read after the run (a backend that has exited cannot be).
//
//   FLOOR_CONFIG='{"url", "conns", "lanes", "admit_batch", "batch", "seconds", "warmup", "sample": {...}}' \
//     node bench/floor/floor.mjs
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

const HERE = dirname(fileURLToPath(import.meta.url));
const cfg = JSON.parse(process.env.FLOOR_CONFIG ?? '{}');
const s = cfg.sample; // one settled request of the hot key, as elygate wrote it (bench/run.mjs)
const ADMIT = readFileSync(join(HERE, 'admit.sql'), 'utf8');
const ADMIT_BATCH_SQL = readFileSync(join(HERE, 'admit_batch.sql'), 'utf8');
const SETTLE = readFileSync(join(HERE, 'settle.sql'), 'utf8');
const CONNS = Math.max(1, Number(cfg.conns) || 1);
const LANES = Math.max(1, Number(cfg.lanes) || 1);
const ADMIT_BATCH = Math.max(1, Math.round(Number(cfg.admit_batch) || 1));
const BATCH = Math.max(1, Math.round(Number(cfg.batch) || 1));
const keyHash = Buffer.from(s.key_hash, 'hex');
const keyHashText = `\\x${s.key_hash}`;
const attempts = JSON.stringify(s.attempts ?? [{ channel_id: Number(s.channel_id), status: 200, ms: 1 }]);
const routePlan = JSON.stringify(s.route_plan);

// why these settings: elygate's functions run with plan_cache_mode = force_generic_plan (a custom
// plan for the array-parameter statements would be planned again at every call) and admission
// commits asynchronously; the floor gets the same, as connection parameters (no extra statement).
const common = { max: 1, onnotice: () => {}, prepare: true, idle_timeout: 0, connect_timeout: 10 };
const lanes = Array.from({ length: LANES }, () => ({
  busy: false,
  db: postgres(cfg.url, { ...common, connection: { application_name: 'elygate-bench-floor', plan_cache_mode: 'force_generic_plan', synchronous_commit: 'off' } }),
}));
const settleDb = postgres(cfg.url, { ...common, connection: { application_name: 'elygate-bench-floor', plan_cache_mode: 'force_generic_plan' } });

let queue = [];
let settling = null;
let running = false;
let admitted = 0;
let settled = 0;
let refused = 0;
let batches = 0;
let admitCalls = 0;

// ── admission: the gateway's lanes (gateway/src/admission.ts), with the floor's statements ──
const waiting = [];

function pumpAdmission() {
  for (const lane of lanes) {
    if (waiting.length === 0) return;
    if (lane.busy) continue;
    const batch = waiting.splice(0, ADMIT_BATCH);
    lane.busy = true;
    admitCalls++;
    const n = batch.length;
    const col = (v) => Array(n).fill(v);
    const call = n === 1
      ? lane.db.unsafe(ADMIT, [batch[0].id, keyHash, s.model, s.endpoint, s.client_ip, s.prompt_tokens, s.reserved_micros, s.reserved_tokens, s.route_plan, s.group_name], { prepare: true })
      : lane.db.unsafe(ADMIT_BATCH_SQL, [batch.map((w) => w.id), col(keyHashText), col(s.model), col(s.endpoint), col(s.client_ip), col(s.prompt_tokens),
          col(s.reserved_micros), col(s.reserved_tokens), col(routePlan), col(s.group_name)], { prepare: true });
    call
      .then((rows) => {
        const ok = new Set(rows.map((r) => r.id));
        for (const w of batch) w.resolve(ok.has(w.id));
      }, (err) => {
        for (const w of batch) w.reject(err);
      })
      .finally(() => {
        lane.busy = false;
        pumpAdmission();
      });
  }
}

/** One request: admitted (in whatever call a lane makes for it), then its outcome queued. */
async function admitOne() {
  const id = randomUUID();
  const ok = await new Promise((resolve, reject) => {
    waiting.push({ id, resolve, reject });
    pumpAdmission();
  });
  if (!ok) {
    refused++;
    return;
  }
  admitted++;
  queue.push(id);
  pumpSettle();
}

// ── settlement: the gateway's group commit (gateway/src/settle.ts), one batch in flight ──
function pumpSettle(force = false) {
  if (settling || queue.length === 0 || (!force && queue.length < BATCH)) return;
  const ids = queue.slice(0, BATCH);
  queue = queue.slice(ids.length);
  const n = ids.length;
  const col = (v) => Array(n).fill(v);
  settling = settleDb
    .unsafe(SETTLE, [ids, col(s.prompt_tokens), col(s.completion_tokens), col(s.input_price), col(s.output_price), col(s.channel_id),
      col(s.upstream_model), col(1), col(2), col(attempts)], { prepare: true })
    .then(() => {
      settled += n;
      batches++;
    })
    .finally(() => {
      settling = null;
      pumpSettle(!running);
    });
}

async function load(seconds) {
  running = true;
  const until = Date.now() + seconds * 1000;
  await Promise.all(Array.from({ length: CONNS }, async () => {
    while (Date.now() < until) await admitOne();
  }));
  running = false;
  // Drain: every admission of this phase settled before it ends.
  for (;;) {
    if (settling) await settling;
    else if (queue.length) pumpSettle(true);
    else break;
  }
}

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => {
  lines.once('line', (l) => resolve(l.trim()));
  lines.once('close', () => resolve('end'));
});

try {
  await load(Number(cfg.warmup) || 1);
  const before = { admitted, settled, refused, batches, admitCalls };
  console.log('FLOOR_READY');
  if ((await nextLine()) === 'go') {
    const t0 = process.hrtime.bigint();
    await load(Number(cfg.seconds) || 5);
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    const d = (k) => ({ admitted, settled, refused, batches, admitCalls }[k] - before[k]);
    console.log('BENCH_JSON ' + JSON.stringify({ conns: CONNS, lanes: LANES, admit_batch: ADMIT_BATCH, batch: BATCH, requests: d('settled'), admitted: d('admitted'),
      refused: d('refused'), admit_calls: d('admitCalls'), batches: d('batches'), duration_us: us }));
    await nextLine();
  }
} catch (err) {
  console.error(`floor: ${err.stack ?? err}`);
  process.exitCode = 1;
} finally {
  await Promise.all([...lanes.map((l) => l.db), settleDb].map((db) => db.end({ timeout: 5 })));
  lines.close();
}
