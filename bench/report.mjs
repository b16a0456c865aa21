// Turns the raw runs of bench/run.mjs into medians with spreads, the targets table, the markdown
// results section of docs/performance.md and an SVG plot (no external service, no dependency).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const median = (xs) => {
  const s = xs.filter((x) => x !== null && x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const spreadPct = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x));
  const med = median(s);
  if (s.length < 2 || !med) return null;
  return ((Math.max(...s) - Math.min(...s)) / med) * 100;
};

const FIELDS = ['rps', 'p50_us', 'p90_us', 'p99_us', 'gw_cpu_us_per_req', 'pg_cpu_us_per_req', 'pg_cluster_cpu_us_per_req', 'mock_cpu_us_per_req', 'db_round_trips_per_req', 'relay_begin_per_req', 'requests_per_admission_call', 'critical_rt_per_req', 'outcomes_per_finish'];

/** The layouts of a result (a result from before issue 16 has none: it was the split layout). */
export function layoutsOf(result) {
  return result.layouts?.length ? result.layouts : [{ id: 'split', title: 'split', placement: 'gateways on core 0; wrk, mock, TTFB probe and PostgreSQL backends on core 1' }];
}
/** A raw cell's layout: direct (null) belongs to every layout; old results have none (split). */
const layoutOfRaw = (r, layouts) => (r.target === 'direct' || r.layout === null ? null : r.layout ?? layouts[0].id);

function summarizeCells(rows) {
  const cells = {};
  for (const r of rows) (cells[`${r.scenario}|${r.target}`] ??= []).push(r);
  const out = {};
  for (const [k, rs] of Object.entries(cells)) {
    const [scenario, target] = k.split('|');
    const s = { scenario, target, reps: rs.length, errors: rs.reduce((n, r) => n + r.errors, 0), requests: rs.reduce((n, r) => n + r.requests, 0) };
    for (const f of FIELDS) {
      s[f] = median(rs.map((r) => r[f]));
      s[`${f}_spread`] = spreadPct(rs.map((r) => r[f]));
    }
    s.floor_batch = median(rs.map((r) => r.floor_batch));
    s.floor_admit_batch = median(rs.map((r) => r.floor_admit_batch));
    // Queries other than admission and settlement, summed over the runs.
    s.other_queries = rs.reduce((acc, r) => {
      for (const [f, v] of Object.entries(r.other_queries ?? {})) acc[f] = (acc[f] ?? 0) + v;
      return acc;
    }, {});
    (out[scenario] ??= {})[target] = s;
  }
  return out;
}

function summarizeTtfb(rows) {
  const ttfb = {};
  for (const t of rows) (ttfb[t.target] ??= []).push(t);
  const out = {};
  for (const [target, ts] of Object.entries(ttfb)) {
    out[target] = {
      p50_us: median(ts.map((t) => t.ttfb_us.p50)),
      p50_spread: spreadPct(ts.map((t) => t.ttfb_us.p50)),
      p99_us: median(ts.map((t) => t.ttfb_us.p99)),
      total_p50_us: median(ts.map((t) => t.total_us.p50)),
      errors: ts.reduce((n, t) => n + t.errors, 0),
    };
  }
  return out;
}

/**
 * Medians per layout (direct cells, measured once per run, appear in every layout), and the
 * targets of issue 16 per layout: each is a ratio or a difference within one run, against the bare
 * proxy (the same Bun server with its database calls off) or the PostgreSQL floor
 * (bench/floor/), never an absolute figure of this machine, except the two stated in µs and the RSS.
 */
export function summarize(result) {
  const layouts = layoutsOf(result);
  const byLayout = {};
  const ttfbByLayout = {};
  for (const L of layouts) {
    byLayout[L.id] = summarizeCells(result.runs_raw.filter((r) => [null, L.id].includes(layoutOfRaw(r, layouts))));
    ttfbByLayout[L.id] = summarizeTtfb(result.ttfb_raw.filter((t) => [null, L.id].includes(layoutOfRaw(t, layouts))));
  }
  const targets = [];
  // A target row: its measure in each layout ({value, ok, note}); `only` names the layout the
  // issue states it for (the others show the figure for information); `once` = one measurement
  // for the whole run (not per layout).
  const add = (name, per, { only = null, once = false } = {}) => targets.push({ name, only, once, per });
  const each = (f) => Object.fromEntries(layouts.map((L) => [L.id, f(byLayout[L.id], ttfbByLayout[L.id], L)]));
  const G = (cells) => (sc, t) => cells[sc]?.[t] ?? {};
  const micro = result.micro && !result.micro.error ? result.micro : null;

  add('PostgreSQL CPU per non-stream request, 32 connections: elygate ≤ 2× the floor', each((c) => {
    const e = G(c)('chat-c32', 'elygate'), f = G(c)('chat-c32', 'floor');
    const r = e.pg_cpu_us_per_req / f.pg_cpu_us_per_req;
    return { value: `${fmt(r, 2)}×`, ok: r <= 2, note: `${fmt(e.pg_cpu_us_per_req, 0)} vs ${fmt(f.pg_cpu_us_per_req, 0)} µs` };
  }));
  add('PostgreSQL CPU per non-stream request, 1 connection, settlement included ≤ 300 µs', each((c) => {
    const e = G(c)('chat-c1', 'elygate'), f = G(c)('chat-c1', 'floor');
    return { value: `${fmt(e.pg_cpu_us_per_req, 0)} µs`, ok: e.pg_cpu_us_per_req <= 300, note: `floor ${fmt(f.pg_cpu_us_per_req, 0)} µs: ${fmt(e.pg_cpu_us_per_req / f.pg_cpu_us_per_req, 2)}×` };
  }));
  add('Non-stream RPS, everything on ≥ 50% of the bare proxy (32 connections)', each((c) => {
    const e = G(c)('chat-c32', 'elygate'), b = G(c)('chat-c32', 'bare');
    const r = e.rps / b.rps;
    return { value: `${fmt(r * 100, 0)}%`, ok: r >= 0.5, note: `${fmt(e.rps, 0)} vs ${fmt(b.rps, 0)} rps` };
  }), { only: 'percore' });
  add('Added p50 at 1 connection ≤ the bare proxy\'s + 0.4 ms', each((c) => {
    const g = G(c);
    const d = g('chat-c1', 'elygate').p50_us - g('chat-c1', 'bare').p50_us;
    return { value: `+${fmt(d / 1000, 3)} ms`, ok: d <= 400, note: `vs direct: elygate ${fmt((g('chat-c1', 'elygate').p50_us - g('chat-c1', 'direct').p50_us) / 1000, 3)}, bare ${fmt((g('chat-c1', 'bare').p50_us - g('chat-c1', 'direct').p50_us) / 1000, 3)} ms` };
  }));
  add('Stream TTFB p50 (1 connection) ≤ the bare proxy\'s + 0.4 ms', each((c, t) => {
    const d = (t.elygate?.p50_us ?? NaN) - (t.bare?.p50_us ?? NaN);
    return { value: `+${fmt(d / 1000, 3)} ms`, ok: d <= 400, note: `elygate ${ms(t.elygate?.p50_us, 3)}, bare ${ms(t.bare?.p50_us, 3)}, direct ${ms(t.direct?.p50_us, 3)} ms` };
  }));
  add('Gateway CPU per non-stream request ≤ 1.5× the bare proxy\'s (32 connections)', each((c) => {
    const e = G(c)('chat-c32', 'elygate'), b = G(c)('chat-c32', 'bare');
    const r = e.gw_cpu_us_per_req / b.gw_cpu_us_per_req;
    return { value: `${fmt(r, 2)}×`, ok: r <= 1.5, note: `${fmt(e.gw_cpu_us_per_req, 0)} vs ${fmt(b.gw_cpu_us_per_req, 0)} µs` };
  }));
  add('Hot-key RPS ≥ 80% of spread-key RPS', each((c) => {
    const e = G(c)('chat-c32', 'elygate'), s = G(c)('chat-c32-spread', 'elygate');
    const r = e.rps / s.rps;
    return { value: `${fmt(r * 100, 0)}%`, ok: r >= 0.8, note: `${fmt(e.rps, 0)} (1 key) vs ${fmt(s.rps, 0)} (1,000 keys)` };
  }));
  const rssAfter = result.rss?.elygate?.after_mb;
  add('Gateway RSS after the run ≤ 120 MB', each(() => ({ value: `${fmt(rssAfter, 0)} MB`, ok: rssAfter <= 120, note: `idle ${fmt(result.rss?.elygate?.idle_mb, 0)} MB, peak ${fmt(result.rss?.elygate?.peak_mb, 0)} MB` })), { once: true });
  add('No errors (direct, bare, elygate, TTFB; every run)', each((c, t) => {
    const n = Object.values(c).flatMap((x) => Object.values(x)).filter((s) => s.target !== 'floor').reduce((k, s) => k + s.errors, 0) + Object.values(t).reduce((k, x) => k + x.errors, 0);
    return { value: String(n), ok: n === 0 };
  }));
  add('relay_begin, unbatched: backend CPU per call ≤ 120 µs', each(() => ({ value: `${fmt(micro?.relay_begin_us, 0)} µs`, ok: micro ? micro.relay_begin_us <= 120 : false, note: micro ? `${micro.relay_begin_calls} calls, one connection` : result.micro?.error ?? 'not measured' })), { once: true });
  add('relay_finish: ≤ 150 µs per call + ≤ 20 µs per outcome', each(() => ({
    value: `${fmt(micro?.relay_finish_call_us, 0)} + ${fmt(micro?.relay_finish_outcome_us, 1)}/outcome µs`,
    ok: micro ? micro.relay_finish_call_us <= 150 && micro.relay_finish_outcome_us <= 20 : false,
    note: micro ? `1 outcome: ${fmt(micro.relay_finish_1_us, 0)} µs/call; 100 outcomes: ${fmt(micro.relay_finish_100_us, 0)} µs/call` : result.micro?.error ?? 'not measured',
  })), { once: true });
  // The design's structure (DESIGN §2): one round trip before the upstream, settlement batched.
  add('DB round trips on the critical path (non-stream, 32 connections) = 1', each((c) => {
    const e = G(c)('chat-c32', 'elygate');
    return { value: fmt(e.critical_rt_per_req, 3), ok: e.critical_rt_per_req !== null && Math.abs(e.critical_rt_per_req - 1) < 0.01, note: `${fmt(e.requests_per_admission_call, 1)} requests per admission call` };
  }));
  add('Outcomes per relay_finish (non-stream, 32 connections) ≥ 20', each((c) => {
    const e = G(c)('chat-c32', 'elygate');
    return { value: fmt(e.outcomes_per_finish, 1), ok: e.outcomes_per_finish >= 20 };
  }));
  // (cells and ttfb: the first layout's, for readers of the pre-issue-16 shape.)
  return { layouts: byLayout, ttfb_layouts: ttfbByLayout, cells: byLayout[layouts[0].id], ttfb: ttfbByLayout[layouts[0].id], targets };
}

function fmt(x, digits = 1) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
const ms = (us, d = 2) => (us === null || us === undefined ? '–' : fmt(us / 1000, d));
const pm = (spread) => (spread === null || spread === undefined ? '' : ` ±${fmt(spread / 2, 0)}%`);

export function renderMarkdown(result) {
  const { layouts: cellsBy, ttfb_layouts: ttfbBy, targets } = result.summary;
  const layouts = layoutsOf(result);
  const lname = (id) => layouts.find((L) => L.id === id)?.title ?? { percore: 'system per core' }[id] ?? id;
  const e = result.env;
  const L = [];
  L.push(`Run ${result.when} — \`${result.command}\` — ${result.runs} runs × ${result.duration_s} s per cell (after ${result.jit_warmup_s ? `${result.jit_warmup_s} s of unmeasured load per gateway, then ` : ''}a ${result.warmup_s} s warm-up), ${result.elapsed_s} s in all. Code measured: ${result.env.source ?? 'working tree'}.`);
  L.push('');
  L.push(
    `Machine: ${e.cores} cores (${e.cpu_model}); pinned: ${e.pinned ? 'yes' : 'no'}. ` +
      `Bun ${e.bun}, ${e.wrk}, PostgreSQL ${e.postgres} (fsync=${e.pg_settings.fsync}, synchronous_commit=${e.pg_settings.synchronous_commit}, shared_buffers=${e.pg_settings.shared_buffers}×8kB). ` +
      `Load average at start ${e.load_start}, at end ${e.load_end}; other test/bench databases in use on the cluster (at the start or the end of the run): ${e.others_testing}${e.others_testing ? ' (noisy: other engineers were running suites)' : ''}.`,
  );
  L.push('');
  L.push(`Layouts (each run goes through ${layouts.length > 1 ? 'both, the order turning each run' : 'this one'}; direct, wrk → mock, is measured once per run):`);
  L.push('');
  for (const x of layouts) L.push(`- **${x.title}** (\`${x.id}\`): ${x.placement}.`);
  if (!result.bare_switch_working) {
    L.push('');
    L.push('> **The bare-proxy switch was not active**: the "bare" gateway called relay_begin or relay_finish, so its numbers are those of a full gateway ' +
      '(is `ELYGATE_BARE_PROXY=1` / `ELYGATE_BARE_UPSTREAM` honoured by gateway/src/relay/?).');
  }
  L.push('');
  L.push('**Targets** (issue 16: ratios within this run, against the bare proxy and the PostgreSQL floor)');
  L.push('');
  L.push(`| target | ${layouts.map((x) => x.title).join(' | ')} | detail |`);
  L.push(`|---|${layouts.map(() => ':---:').join('|')}|---|`);
  for (const t of targets) {
    const cols = layouts.map((x, i) => {
      if (t.once && i > 0) return '(same)';
      const m = t.per[x.id];
      if (/–/.test(m.value)) return '– (not measured)';
      if (t.only && t.only !== x.id) return `${m.value} (info)`;
      return `${m.value} ${m.ok ? 'yes' : '**no**'}`;
    });
    const notes = t.once ? t.per[layouts[0].id].note ?? '' : layouts.map((x) => (t.per[x.id].note ? (layouts.length > 1 ? `${x.title}: ` : '') + t.per[x.id].note : '')).filter(Boolean).join('; ');
    L.push(`| ${t.name}${t.only ? ` (stated for ${lname(t.only)})` : ''} | ${cols.join(' | ')} | ${notes} |`);
  }
  L.push('');
  L.push('Medians over the runs; `±` is half the min–max spread across runs. Latencies in ms. CPU is utime+stime per request the gateway handled (its settled outcomes; wrk\'s completed requests for direct; the floor\'s settled requests): the gateway process; PostgreSQL = the bench database\'s backends (whole cluster in brackets, which includes other users\' work when the cluster is shared). Round trips per request count every query the gateway made, relay_finish included, per settled outcome. The floor row is the database work alone (no HTTP, no upstream): its RPS is not comparable with the others\'.');
  L.push('');
  const first = layouts[0].id;
  for (const sc of result.scenarios) {
    if (!layouts.some((x) => cellsBy[x.id]?.[sc.id])) continue;
    L.push(`**${sc.title}** (\`${sc.id}\`)`);
    L.push('');
    L.push('| target | layout | RPS | p50 | p99 | added p50 vs direct | errors | gateway CPU µs/req | PostgreSQL CPU µs/req | DB round trips/req | outcomes per relay_finish |');
    L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    const direct = cellsBy[first]?.[sc.id]?.direct ?? cellsBy[first]?.['chat-c32']?.direct;
    const ownDirect = !!cellsBy[first]?.[sc.id]?.direct;
    const rows = [];
    if (ownDirect) rows.push(['direct', null, direct]);
    for (const x of layouts) for (const target of [...sc.targets, ...(sc.floor ? ['floor'] : [])]) {
      if (target === 'direct') continue;
      const c = cellsBy[x.id]?.[sc.id]?.[target];
      if (c) rows.push([target, x.id, c]);
    }
    for (const [target, lid, s] of rows) {
      const isDirect = target === 'direct';
      const isFloor = target === 'floor';
      const added = isDirect || isFloor ? '–' : direct ? ms(s.p50_us - direct.p50_us, 3) + (ownDirect ? '' : ' ¹') : '–';
      L.push(
        `| ${target} | ${lid ? lname(lid) : '–'} | ${fmt(s.rps, 0)}${pm(s.rps_spread)} | ${isFloor ? '–' : ms(s.p50_us)} | ${isFloor ? '–' : ms(s.p99_us)} | ${added} | ${s.errors} | ${isDirect || isFloor ? '–' : fmt(s.gw_cpu_us_per_req, 0)} | ${isDirect ? '–' : `${fmt(s.pg_cpu_us_per_req, 0)}${pm(s.pg_cpu_us_per_req_spread)} [${fmt(s.pg_cluster_cpu_us_per_req, 0)}]`} | ${isDirect ? '–' : fmt(s.db_round_trips_per_req, 3)} | ${isDirect || target === 'bare' ? '–' : fmt(s.outcomes_per_finish, 1)} |`,
      );
    }
    if (!ownDirect) L.push('', '¹ against direct in `chat-c32`.');
    L.push('');
  }
  L.push('**Stream time to first byte** (1 connection, sequential, 300 requests per run; first SSE byte after the request was written)');
  L.push('');
  L.push('| target | layout | TTFB p50 | TTFB p99 | added TTFB p50 vs direct | whole stream p50 | errors |');
  L.push('|---|---|---:|---:|---:|---:|---:|');
  const tDirect = ttfbBy[first]?.direct;
  if (tDirect) L.push(`| direct | – | ${ms(tDirect.p50_us, 3)}${pm(tDirect.p50_spread)} | ${ms(tDirect.p99_us, 3)} | – | ${ms(tDirect.total_p50_us, 3)} | ${tDirect.errors} |`);
  for (const x of layouts) for (const target of ['bare', 'elygate']) {
    const s = ttfbBy[x.id]?.[target];
    if (!s) continue;
    L.push(`| ${target} | ${x.title} | ${ms(s.p50_us, 3)}${pm(s.p50_spread)} | ${ms(s.p99_us, 3)} | ${tDirect ? ms(s.p50_us - tDirect.p50_us, 3) : '–'} | ${ms(s.total_p50_us, 3)} | ${s.errors} |`);
  }
  L.push('');
  L.push('**PostgreSQL floor** (bench/floor/: one statement per admission call — key lookup by hash, the wallet reservation, the admission row(s) — and one per settlement batch — the request-log rows, the ledger rows, the wallet settle — on the bench database\'s own tables; 1 and 32 concurrent requests sent like the gateway sends them: its admission lanes, at most as many requests per admission call and as many outcomes per settlement call as elygate had in the cell just before)');
  L.push('');
  L.push('| connections | layout | floor: database-only req/s | requests per admission call | outcomes per settlement call | floor PostgreSQL CPU µs/req | elygate PostgreSQL CPU µs/req | PostgreSQL CPU per request: elygate / floor |');
  L.push('|---:|---|---:|---:|---:|---:|---:|---:|');
  for (const [scId, conns] of [['chat-c32', 32], ['chat-c1', 1]]) {
    for (const x of layouts) {
      const f = cellsBy[x.id]?.[scId]?.floor;
      const el = cellsBy[x.id]?.[scId]?.elygate;
      if (!f) continue;
      L.push(`| ${conns} | ${x.title} | ${fmt(f.rps, 0)}${pm(f.rps_spread)} | ${fmt(f.requests_per_admission_call, 1)} (elygate ${fmt(el?.requests_per_admission_call, 1)}) | ${fmt(f.floor_batch, 0)} | ${fmt(f.pg_cpu_us_per_req, 0)}${pm(f.pg_cpu_us_per_req_spread)} | ${fmt(el?.pg_cpu_us_per_req, 0)} | ${fmt(el?.pg_cpu_us_per_req / f.pg_cpu_us_per_req, 2)}× |`);
    }
  }
  if (result.floor_errors?.length) L.push('', `Floor cells that failed: ${result.floor_errors.join('; ')}.`);
  L.push('');
  const mi = result.micro;
  if (mi && !mi.error) {
    L.push(`**Micro-measures** (one connection, its backend's CPU from ${mi.method}): relay_begin, unbatched, hot key: ${fmt(mi.relay_begin_us, 0)} µs per call (${mi.relay_begin_calls} calls); relay_finish: ${fmt(mi.relay_finish_1_us, 0)} µs per call with 1 outcome (${mi.relay_finish_1_calls} calls), ${fmt(mi.relay_finish_100_us, 0)} µs with 100 (${mi.relay_finish_100_calls} calls), so ${fmt(mi.relay_finish_call_us, 0)} µs per call + ${fmt(mi.relay_finish_outcome_us, 1)} µs per outcome.`);
  } else {
    L.push(`**Micro-measures:** ${mi?.error ? `failed (${mi.error})` : 'not measured in this run'}.`);
  }
  L.push('');
  L.push('**Gateway memory** (RSS, MB; one process through every layout)');
  L.push('');
  L.push('| process | idle | after the run | peak |');
  L.push('|---|---:|---:|---:|');
  for (const [name, r] of Object.entries(result.rss)) L.push(`| ${name} | ${fmt(r.idle_mb, 0)} | ${fmt(r.after_mb, 0)} | ${fmt(r.peak_mb, 0)} |`);
  L.push('');
  for (const x of layouts) {
    const hit = cellsBy[x.id]?.['chat-c32-cache']?.elygate;
    const miss = cellsBy[x.id]?.['chat-c32']?.elygate;
    if (!hit || !miss) continue;
    L.push(`**Cache hit vs miss (${x.title}):** exact cache hits ${hit.rps.toFixed(0)} RPS, p50 ${(hit.p50_us / 1000).toFixed(2)} ms, p99 ${(hit.p99_us / 1000).toFixed(2)} ms, against misses (the upstream path, \`chat-c32\`) ${miss.rps.toFixed(0)} RPS, p50 ${(miss.p50_us / 1000).toFixed(2)} ms, p99 ${(miss.p99_us / 1000).toFixed(2)} ms (hits skip the upstream, not the database: relay_begin finds the entry, relay_finish books the hit).`);
    L.push('');
  }
  L.push('The semantic cache layer needs an embedding upstream and is not measured here.');
  L.push('');
  for (const x of layouts) {
    const other = cellsBy[x.id]?.['chat-c32']?.elygate?.other_queries ?? {};
    if (Object.keys(other).length) {
      L.push(`Queries other than admission (relay_begin, relay_begin_batch) and relay_finish during the non-stream 32-connection elygate runs (${x.title}): ${Object.entries(other).map(([f, n]) => `${f} × ${n}`).join(', ')}.`);
      L.push('');
    }
  }
  if (result.statements?.length) {
    L.push('**Top statements in the bench database** (pg_stat_statements, whole run: every layout, the floor and the micro-measures included' + (result.explain ? ', track = all' : ', top-level only') + ')');
    L.push('');
    L.push('| calls | total ms | mean ms | shared hit | shared read | WAL records | statement |');
    L.push('|---:|---:|---:|---:|---:|---:|---|');
    for (const s of result.statements.slice(0, 10)) {
      L.push(`| ${s.calls} | ${s.total_ms} | ${s.mean_ms} | ${s.shared_blks_hit} | ${s.shared_blks_read} | ${s.wal_records} | \`${String(s.query).replace(/\|/g, '\\|').replace(/`/g, "'")}\` |`);
    }
    L.push('');
  }
  L.push('![RPS and p99 per scenario](../bench/results/plot.svg)');
  return L.join('\n') + '\n';
}

const BEGIN = '<!-- bench:results:start -->';
const END = '<!-- bench:results:end -->';

/** Replaces the results section of docs/performance.md (creating the file if it has none). */
export function updateDocs(path, md) {
  let doc = existsSync(path) ? readFileSync(path, 'utf8') : '# Performance\n\n## Latest results\n\n' + BEGIN + '\n' + END + '\n';
  if (!doc.includes(BEGIN) || !doc.includes(END)) doc += '\n## Latest results\n\n' + BEGIN + '\n' + END + '\n';
  const a = doc.indexOf(BEGIN) + BEGIN.length;
  const b = doc.indexOf(END);
  writeFileSync(path, doc.slice(0, a) + '\n' + md + doc.slice(b));
}

const COLORS = { direct: '#8c8c8c', bare: '#4e79a7', elygate: '#e15759' };

export function renderSvg(result) {
  const layouts = layoutsOf(result);
  const scs = result.scenarios.filter((s) => layouts.some((x) => result.summary.layouts?.[x.id]?.[s.id]));
  const W = 960;
  const PH = 300;
  // Two panels per layout (direct, measured once per run, appears in each).
  const panels = layouts.flatMap((x) => [
    { layout: x.id, title: `${layouts.length > 1 ? `${x.title}: ` : ''}requests per second (median; whiskers: min–max over runs)`, field: 'rps', unit: '', scale: 1 },
    { layout: x.id, title: `${layouts.length > 1 ? `${x.title}: ` : ''}p99 latency, ms (median; whiskers: min–max over runs)`, field: 'p99_us', unit: ' ms', scale: 1 / 1000 },
  ]);
  const parts = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${panels.length * (PH + 40) + 60}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">Elygate benchmark — ${esc(result.when.slice(0, 16).replace('T', ' '))} UTC, ${result.runs} runs × ${result.duration_s} s, ${result.env.cores}-core box (ratios, not universal figures)</text>`);
  let lx = 60;
  for (const [t, c] of Object.entries(COLORS)) {
    parts.push(`<rect x="${lx}" y="32" width="12" height="12" fill="${c}"/><text x="${lx + 16}" y="42">${t}</text>`);
    lx += 90;
  }
  panels.forEach((p, pi) => {
    const cells = result.summary.layouts?.[p.layout] ?? result.summary.cells;
    const top = 60 + pi * (PH + 40);
    const left = 70;
    const right = W - 20;
    const bottom = top + PH - 50;
    const runsFor = (sc, t) => result.runs_raw.filter((r) => r.scenario === sc && r.target === t && [null, p.layout].includes(layoutOfRaw(r, layouts))).map((r) => r[p.field] * p.scale);
    // Log scale: direct and the gateways differ by orders of magnitude on a small box.
    let lo = Infinity;
    let hi = 0;
    for (const s of scs) for (const t of s.targets) for (const v of runsFor(s.id, t)) if (v > 0) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
    if (!Number.isFinite(lo)) (lo = 1), (hi = 10);
    const e0 = Math.floor(Math.log10(lo));
    const e1 = Math.max(Math.ceil(Math.log10(hi)), e0 + 1);
    const H = bottom - top - 20;
    const yOf = (v) => bottom - (H * (Math.log10(Math.max(v, 10 ** e0)) - e0)) / (e1 - e0);
    parts.push(`<text x="${left}" y="${top + 4}" font-weight="bold">${esc(p.title)} — log scale</text>`);
    for (let e = e0; e <= e1; e++) {
      const y = yOf(10 ** e);
      parts.push(`<line x1="${left}" x2="${right}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
      parts.push(`<text x="${left - 6}" y="${y + 4}" text-anchor="end">${esc(fmtAxis(10 ** e))}</text>`);
    }
    const gw = (right - left) / scs.length;
    scs.forEach((s, si) => {
      const x0 = left + si * gw;
      const bw = Math.min(40, (gw - 30) / 3);
      const startX = x0 + (gw - bw * s.targets.length) / 2;
      s.targets.forEach((t, ti) => {
        const c = cells[s.id]?.[t];
        if (!c) return;
        const v = c[p.field] * p.scale;
        const h = bottom - yOf(v);
        const x = startX + ti * bw;
        parts.push(`<rect x="${x + 2}" y="${bottom - h}" width="${bw - 4}" height="${h}" fill="${COLORS[t]}"><title>${esc(`${s.id} ${t}: ${fmtAxis(v)}${p.unit}`)}</title></rect>`);
        const rs = runsFor(s.id, t);
        if (rs.length > 1) {
          const y1 = yOf(Math.min(...rs));
          const y2 = yOf(Math.max(...rs));
          const cx = x + bw / 2;
          parts.push(`<line x1="${cx}" x2="${cx}" y1="${y1}" y2="${y2}" stroke="black"/><line x1="${cx - 4}" x2="${cx + 4}" y1="${y1}" y2="${y1}" stroke="black"/><line x1="${cx - 4}" x2="${cx + 4}" y1="${y2}" y2="${y2}" stroke="black"/>`);
        }
        parts.push(`<text x="${x + bw / 2}" y="${bottom - h - 4}" text-anchor="middle" font-size="10">${esc(fmtAxis(v))}</text>`);
      });
      parts.push(`<text x="${x0 + gw / 2}" y="${bottom + 18}" text-anchor="middle">${esc(s.id)}</text>`);
    });
    parts.push(`<line x1="${left}" x2="${right}" y1="${bottom}" y2="${bottom}" stroke="black"/>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function niceMax(x) {
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= x * 1.05) return m * p;
  return 10 * p;
}
const fmtAxis = (v) => (v >= 100 ? Math.round(v).toLocaleString('en-US') : v >= 10 ? v.toFixed(1) : v >= 0.1 ? v.toFixed(2) : String(Number(v.toPrecision(2))));
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

// `node bench/report.mjs` re-renders the markdown, the plot and docs/performance.md from
// bench/results/latest.json (after changing this file, without re-running the benchmark).
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const { join, dirname } = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const result = JSON.parse(readFileSync(join(root, 'bench', 'results', 'latest.json'), 'utf8'));
  result.summary = summarize(result);
  writeFileSync(join(root, 'bench', 'results', 'plot.svg'), renderSvg(result));
  const md = renderMarkdown(result);
  writeFileSync(join(root, 'bench', 'results', 'latest.md'), md);
  if (!process.argv.includes('--no-docs')) updateDocs(join(root, 'docs', 'performance.md'), md);
  console.log('re-rendered bench/results/plot.svg, latest.md' + (process.argv.includes('--no-docs') ? '' : ' and docs/performance.md'));
}
