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

export function summarize(result) {
  const cells = {};
  for (const r of result.runs_raw) {
    const k = `${r.scenario}|${r.target}`;
    (cells[k] ??= []).push(r);
  }
  const out = {};
  for (const [k, rs] of Object.entries(cells)) {
    const [scenario, target] = k.split('|');
    const s = { scenario, target, reps: rs.length, errors: rs.reduce((n, r) => n + r.errors, 0), requests: rs.reduce((n, r) => n + r.requests, 0) };
    for (const f of FIELDS) {
      s[f] = median(rs.map((r) => r[f]));
      s[`${f}_spread`] = spreadPct(rs.map((r) => r[f]));
    }
    // Queries other than admission and settlement, summed over the runs.
    s.other_queries = rs.reduce((acc, r) => {
      for (const [f, v] of Object.entries(r.other_queries ?? {})) acc[f] = (acc[f] ?? 0) + v;
      return acc;
    }, {});
    (out[scenario] ??= {})[target] = s;
  }
  const ttfb = {};
  for (const t of result.ttfb_raw) (ttfb[t.target] ??= []).push(t);
  const ttfbSum = {};
  for (const [target, ts] of Object.entries(ttfb)) {
    ttfbSum[target] = {
      p50_us: median(ts.map((t) => t.ttfb_us.p50)),
      p50_spread: spreadPct(ts.map((t) => t.ttfb_us.p50)),
      p99_us: median(ts.map((t) => t.ttfb_us.p99)),
      total_p50_us: median(ts.map((t) => t.total_us.p50)),
      errors: ts.reduce((n, t) => n + t.errors, 0),
    };
  }
  const g = (sc, t) => out[sc]?.[t] ?? {};
  const targets = [];
  const add = (name, value, ok, note) => targets.push({ name, value, ok, note });
  const e32 = g('chat-c32', 'elygate');
  add('DB round trips on the critical path (non-stream, 32 conn)', fmt(e32.critical_rt_per_req, 3), e32.critical_rt_per_req !== null && Math.abs(e32.critical_rt_per_req - 1) < 0.01, `one admission per request, ${fmt(e32.requests_per_admission_call, 1)} requests per admission call; all queries/request ${fmt(e32.db_round_trips_per_req, 3)}`);
  add('Settlement batched: outcomes per relay_finish (non-stream, 32 conn) ≥ 20', fmt(e32.outcomes_per_finish, 1), e32.outcomes_per_finish >= 20);
  const added1 = g('chat-c1', 'elygate').p50_us - g('chat-c1', 'direct').p50_us;
  add('Added p50 at 1 connection vs direct ≤ 0.5 ms', `${fmt(added1 / 1000, 3)} ms`, added1 <= 500, `bare proxy adds ${fmt((g('chat-c1', 'bare').p50_us - g('chat-c1', 'direct').p50_us) / 1000, 3)} ms`);
  const ttfbAdded = (ttfbSum.elygate?.p50_us ?? NaN) - (ttfbSum.direct?.p50_us ?? NaN);
  add('Stream TTFB overhead vs direct ≤ 1 ms (p50, 1 conn)', `${fmt(ttfbAdded / 1000, 3)} ms`, ttfbAdded <= 1000, `bare proxy: ${fmt(((ttfbSum.bare?.p50_us ?? NaN) - (ttfbSum.direct?.p50_us ?? NaN)) / 1000, 3)} ms`);
  add('Gateway CPU per non-stream request ≤ 100 µs', `${fmt(e32.gw_cpu_us_per_req, 0)} µs`, e32.gw_cpu_us_per_req <= 100, `bare proxy: ${fmt(g('chat-c32', 'bare').gw_cpu_us_per_req, 0)} µs`);
  add('PostgreSQL CPU per non-stream request ≤ 150 µs', `${fmt(e32.pg_cpu_us_per_req, 0)} µs`, e32.pg_cpu_us_per_req <= 150, `bench backends; whole cluster ${fmt(e32.pg_cluster_cpu_us_per_req, 0)} µs`);
  const ratio = e32.rps / g('chat-c32', 'bare').rps;
  add('Non-stream RPS, everything on ≥ 50% of bare proxy', `${fmt(ratio * 100, 0)}%`, ratio >= 0.5, `${fmt(e32.rps, 0)} vs ${fmt(g('chat-c32', 'bare').rps, 0)} rps`);
  const hot = e32.rps / g('chat-c32-spread', 'elygate').rps;
  add('Hot-key RPS ≥ 80% of spread-key RPS', `${fmt(hot * 100, 0)}%`, hot >= 0.8, `${fmt(e32.rps, 0)} (1 key) vs ${fmt(g('chat-c32-spread', 'elygate').rps, 0)} (1,000 keys)`);
  const rssAfter = result.rss?.elygate?.after_mb;
  add('Gateway RSS after the run ≤ 120 MB', `${fmt(rssAfter, 0)} MB`, rssAfter <= 120, `idle ${fmt(result.rss?.elygate?.idle_mb, 0)} MB, peak ${fmt(result.rss?.elygate?.peak_mb, 0)} MB`);
  const errs = Object.values(out).flatMap((t) => Object.values(t)).reduce((n, s) => n + s.errors, 0) + Object.values(ttfbSum).reduce((n, t) => n + t.errors, 0);
  add('No errors (every target, every run)', String(errs), errs === 0);
  return { cells: out, ttfb: ttfbSum, targets };
}

function fmt(x, digits = 1) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
const ms = (us, d = 2) => (us === null || us === undefined ? '–' : fmt(us / 1000, d));
const pm = (spread) => (spread === null || spread === undefined ? '' : ` ±${fmt(spread / 2, 0)}%`);

export function renderMarkdown(result) {
  const { cells, ttfb, targets } = result.summary;
  const e = result.env;
  const L = [];
  L.push(`Run ${result.when} — \`${result.command}\` — ${result.runs} runs × ${result.duration_s} s per cell (after ${result.jit_warmup_s ? `${result.jit_warmup_s} s of unmeasured load per gateway, then ` : ''}a ${result.warmup_s} s warm-up), ${result.elapsed_s} s in all. Code measured: ${result.env.source ?? 'working tree'}.`);
  L.push('');
  L.push(
    `Machine: ${e.cores} cores (${e.cpu_model}); gateway pinned to core 0, wrk + mock + the bench database's PostgreSQL backends to core 1: ${e.pinned ? 'yes' : 'no'}. ` +
      `Bun ${e.bun}, ${e.wrk}, PostgreSQL ${e.postgres} (fsync=${e.pg_settings.fsync}, synchronous_commit=${e.pg_settings.synchronous_commit}, shared_buffers=${e.pg_settings.shared_buffers}×8kB). ` +
      `Load average at start ${e.load_start}, at end ${e.load_end}; other test/bench databases in use on the cluster (at the start or the end of the run): ${e.others_testing}${e.others_testing ? ' (noisy: other engineers were running suites)' : ''}.`,
  );
  if (!result.bare_switch_working) {
    L.push('');
    L.push('> **The bare-proxy switch was not active**: the "bare" gateway called relay_begin or relay_finish, so its numbers are those of a full gateway ' +
      '(is `ELYGATE_BARE_PROXY=1` / `ELYGATE_BARE_UPSTREAM` honoured by gateway/src/relay/?).');
  }
  L.push('');
  L.push('Medians over the runs; `±` is half the min–max spread across runs. Latencies in ms. CPU is utime+stime per request the gateway handled (its settled outcomes; wrk\'s completed requests for direct): the gateway process; PostgreSQL = the bench database\'s backends (whole cluster in brackets, which includes other users\' work when the cluster is shared). Round trips per request count every query the gateway made, relay_finish included, per settled outcome.');
  L.push('');
  for (const sc of result.scenarios) {
    const t = cells[sc.id];
    if (!t) continue;
    L.push(`**${sc.title}** (\`${sc.id}\`)`);
    L.push('');
    L.push('| target | RPS | p50 | p99 | added p50 vs direct | errors | gateway CPU µs/req | PostgreSQL CPU µs/req | DB round trips/req | outcomes per relay_finish |');
    L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    const direct = t.direct ?? cells['chat-c32']?.direct;
    for (const target of sc.targets) {
      const s = t[target];
      if (!s) continue;
      const added = target === 'direct' ? '–' : direct ? ms(s.p50_us - direct.p50_us, 3) + (t.direct ? '' : ' ¹') : '–';
      L.push(
        `| ${target} | ${fmt(s.rps, 0)}${pm(s.rps_spread)} | ${ms(s.p50_us)} | ${ms(s.p99_us)} | ${added} | ${s.errors} | ${target === 'direct' ? '–' : fmt(s.gw_cpu_us_per_req, 0)} | ${target === 'direct' ? '–' : `${fmt(s.pg_cpu_us_per_req, 0)} [${fmt(s.pg_cluster_cpu_us_per_req, 0)}]`} | ${target === 'direct' ? '–' : fmt(s.db_round_trips_per_req, 3)} | ${target === 'direct' || target === 'bare' ? '–' : fmt(s.outcomes_per_finish, 1)} |`,
      );
    }
    if (!t.direct) L.push('', '¹ against direct in `chat-c32`.');
    L.push('');
  }
  L.push('**Stream time to first byte** (1 connection, sequential, 300 requests per run; first SSE byte after the request was written)');
  L.push('');
  L.push('| target | TTFB p50 | TTFB p99 | added TTFB p50 vs direct | whole stream p50 | errors |');
  L.push('|---|---:|---:|---:|---:|---:|');
  for (const target of ['direct', 'bare', 'elygate']) {
    const s = ttfb[target];
    if (!s) continue;
    L.push(`| ${target} | ${ms(s.p50_us, 3)}${pm(s.p50_spread)} | ${ms(s.p99_us, 3)} | ${target === 'direct' ? '–' : ms(s.p50_us - ttfb.direct.p50_us, 3)} | ${ms(s.total_p50_us, 3)} | ${s.errors} |`);
  }
  L.push('');
  L.push('**Gateway memory** (RSS, MB)');
  L.push('');
  L.push('| process | idle | after the run | peak |');
  L.push('|---|---:|---:|---:|');
  for (const [name, r] of Object.entries(result.rss)) L.push(`| ${name} | ${fmt(r.idle_mb, 0)} | ${fmt(r.after_mb, 0)} | ${fmt(r.peak_mb, 0)} |`);
  L.push('');
  const hit = cells['chat-c32-cache']?.elygate;
  const miss = cells['chat-c32']?.elygate;
  L.push(
    hit && miss
      ? `**Cache hit vs miss:** exact cache hits ${hit.rps.toFixed(0)} RPS, p50 ${(hit.p50_us / 1000).toFixed(2)} ms, p99 ${(hit.p99_us / 1000).toFixed(2)} ms, against misses (the upstream path, \`chat-c32\`) ${miss.rps.toFixed(0)} RPS, p50 ${(miss.p50_us / 1000).toFixed(2)} ms, p99 ${(miss.p99_us / 1000).toFixed(2)} ms (hits skip the upstream, not the database: relay_begin finds the entry, relay_finish books the hit). The semantic layer needs an embedding upstream and is not measured here.`
      : '**Cache hit vs miss:** not measured in this run.',
  );
  L.push('');
  L.push('**Targets**');
  L.push('');
  L.push('| target | measured | met? | detail |');
  L.push('|---|---:|:---:|---|');
  for (const t of targets) L.push(`| ${t.name} | ${t.value} | ${t.ok ? 'yes' : '**no**'} | ${t.note ?? ''} |`);
  L.push('');
  const other = cells['chat-c32']?.elygate?.other_queries ?? {};
  if (Object.keys(other).length) {
    L.push(`Queries other than admission (relay_begin, relay_begin_batch) and relay_finish during the non-stream 32-connection elygate runs: ${Object.entries(other).map(([f, n]) => `${f} × ${n}`).join(', ')}.`);
    L.push('');
  }
  if (result.statements?.length) {
    L.push('**Top statements in the bench database** (pg_stat_statements, whole run' + (result.explain ? ', track = all' : ', top-level only') + ')');
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
  const { cells } = result.summary;
  const scs = result.scenarios.filter((s) => cells[s.id]);
  const W = 960;
  const PH = 300;
  const panels = [
    { title: 'Requests per second (median; whiskers: min–max over runs)', field: 'rps', unit: '', scale: 1 },
    { title: 'p99 latency, ms (median; whiskers: min–max over runs)', field: 'p99_us', unit: ' ms', scale: 1 / 1000 },
  ];
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
    const top = 60 + pi * (PH + 40);
    const left = 70;
    const right = W - 20;
    const bottom = top + PH - 50;
    const runsFor = (sc, t) => result.runs_raw.filter((r) => r.scenario === sc && r.target === t).map((r) => r[p.field] * p.scale);
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
