// bench/compare.mjs — an A/B of two builds on this machine, runs interleaved.
//
//   npm run bench:compare -- BASE [--against REV] [--runs N] [--duration S] [--layout L] [--option Key=Value]
//
// Runs bench/run.mjs once for BASE (a commit), once for the candidate (REV, or the working tree
// when --against is not given), and again, alternating, N times each (default 3; the order
// turns each pair: base first, then candidate first, …); then prints the medians of both side by
// side with the change within pairs, and writes them to bench/results/compare/compare.md
// (ignored by git), with each run's raw results next to it.
//
// /* why */ On a shared or virtual machine the speed drifts by tens of percent within minutes, so
// two builds measured one after the other compare the machine's moods as much as the code. Runs
// that alternate see the same drift; their medians are the comparison to quote
// (docs/performance.md).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = join(ROOT, 'bench', 'results', 'compare');

const argv = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : fallback;
};
const valued = new Set(['--against', '--runs', '--duration', '--option', '--layout']);
const positional = argv.filter((a, i) => !a.startsWith('--') && !valued.has(argv[i - 1]));
const BASE = positional[0];
if (!BASE) {
  console.error('usage: npm run bench:compare -- BASE [--against REV] [--runs N] [--duration S] [--layout percore|split|both] [--option Key=Value]');
  process.exit(2);
}
const AGAINST = opt('against', null);
const RUNS = Math.max(1, Number(opt('runs', 3)));
const passOn = [];
if (opt('duration', null)) passOn.push('--duration', opt('duration'));
if (opt('layout', null)) passOn.push('--layout', opt('layout'));
argv.forEach((a, i) => a === '--option' && argv[i + 1] && passOn.push('--option', argv[i + 1]));

const git = (...args) => spawnSync('git', ['-C', ROOT, ...args], { encoding: 'utf8' }).stdout.trim();
const resolve = (rev) => {
  const sha = git('rev-parse', '--verify', '--quiet', `${rev}^{commit}`);
  if (!sha) {
    console.error(`${rev}: not a commit of this repository`);
    process.exit(2);
  }
  return sha.slice(0, 7);
};
const builds = [
  { label: `base ${resolve(BASE)}`, key: 'base', args: ['--rev', BASE] },
  AGAINST
    ? { label: `candidate ${resolve(AGAINST)}`, key: 'candidate', args: ['--rev', AGAINST] }
    : { label: 'candidate: working tree', key: 'candidate', args: [] },
];

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
const results = { base: [], candidate: [] };
/* why the order turns (base, candidate; candidate, base; …): on the bench machine the second run
   of a pair measured worse whichever build it was, the direct runs (no gateway) included
   (docs/performance.md, finding 41); with a fixed order that falls on one build only. */
for (let i = 1; i <= RUNS; i++) {
  for (const b of i % 2 ? builds : [...builds].reverse()) {
    const dir = join(OUT, `${b.key}-${i}`);
    console.log(`[compare] run ${i}/${RUNS}: ${b.label}`);
    const r = spawnSync(process.execPath, [join(ROOT, 'bench', 'run.mjs'), '--runs', '1', '--out', dir, ...b.args, ...passOn], {
      cwd: ROOT,
      stdio: 'inherit',
    });
    if (r.status !== 0) {
      console.error(`[compare] ${b.label}: bench/run.mjs failed (exit ${r.status}); stopping`);
      process.exit(1);
    }
    results[b.key].push(JSON.parse(readFileSync(join(dir, 'latest.json'), 'utf8')));
  }
}

// ── medians ──
const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
// Each run measures every layout (bench/run.mjs); direct is measured once per run, for all of them.
// A result from before the layouts had one: split.
const cellIn = (lid) => (j, scenario, target) =>
  j.runs_raw.find((r) => r.scenario === scenario && r.target === target && (target === 'direct' || (r.layout ?? 'split') === lid));
const ttfbIn = (lid) => (j, target) =>
  j.ttfb_raw.find((t) => t.target === target && (target === 'direct' || (t.layout ?? 'split') === lid))?.ttfb_us.p50;
const layoutIds = [...new Set([...results.base, ...results.candidate].flatMap((j) => (j.layouts?.length ? j.layouts.map((l) => l.id) : ['split'])))];
const layoutTitle = (lid) => results.candidate.concat(results.base).flatMap((j) => j.layouts ?? []).find((l) => l.id === lid)?.title ?? lid;
const metricsOf = (lid) => {
  const cell = cellIn(lid);
  const ttfb = ttfbIn(lid);
  const p = layoutIds.length > 1 ? `${layoutTitle(lid)}: ` : '';
  return [
    [`${p}non-stream RPS, 32 connections (hot key)`, 0, '', (j) => cell(j, 'chat-c32', 'elygate')?.rps],
    [`${p}… as a share of the bare proxy in the same run`, 0, ' %', (j) => (100 * cell(j, 'chat-c32', 'elygate')?.rps) / cell(j, 'chat-c32', 'bare')?.rps],
    [`${p}PostgreSQL CPU per request, 32 connections`, 0, ' µs', (j) => cell(j, 'chat-c32', 'elygate')?.pg_cpu_us_per_req],
    [`${p}… as a multiple of the floor's`, 2, '×', (j) => cell(j, 'chat-c32', 'elygate')?.pg_cpu_us_per_req / cell(j, 'chat-c32', 'floor')?.pg_cpu_us_per_req],
    [`${p}gateway CPU per request, 32 connections`, 0, ' µs', (j) => cell(j, 'chat-c32', 'elygate')?.gw_cpu_us_per_req],
    [`${p}… as a multiple of the bare proxy's`, 2, '×', (j) => cell(j, 'chat-c32', 'elygate')?.gw_cpu_us_per_req / cell(j, 'chat-c32', 'bare')?.gw_cpu_us_per_req],
    [`${p}p50, 32 connections`, 1, ' ms', (j) => cell(j, 'chat-c32', 'elygate')?.p50_us / 1000],
    [`${p}stream RPS, 32 connections`, 0, '', (j) => cell(j, 'stream-c32', 'elygate')?.rps],
    [`${p}non-stream RPS, 1,000 keys`, 0, '', (j) => cell(j, 'chat-c32-spread', 'elygate')?.rps],
    [`${p}hot key vs 1,000 keys`, 0, ' %', (j) => (100 * cell(j, 'chat-c32', 'elygate')?.rps) / cell(j, 'chat-c32-spread', 'elygate')?.rps],
    [`${p}added p50, 1 connection, vs the bare proxy`, 2, ' ms', (j) => (cell(j, 'chat-c1', 'elygate')?.p50_us - cell(j, 'chat-c1', 'bare')?.p50_us) / 1000],
    [`${p}PostgreSQL CPU per request, 1 connection`, 0, ' µs', (j) => cell(j, 'chat-c1', 'elygate')?.pg_cpu_us_per_req],
    [`${p}stream TTFB, vs the bare proxy`, 2, ' ms', (j) => (ttfb(j, 'elygate') - ttfb(j, 'bare')) / 1000],
    [`${p}outcomes per relay_finish, 32 connections`, 1, '', (j) => cell(j, 'chat-c32', 'elygate')?.outcomes_per_finish],
    [`${p}exact cache hits, PostgreSQL CPU per request`, 0, ' µs', (j) => cell(j, 'chat-c32-cache', 'elygate')?.pg_cpu_us_per_req],
  ];
};
const metrics = [
  ...layoutIds.flatMap(metricsOf),
  ['relay_begin, backend CPU per call (micro)', 0, ' µs', (j) => j.micro?.relay_begin_us],
  ['relay_finish, backend CPU per call (micro)', 0, ' µs', (j) => j.micro?.relay_finish_call_us],
  ['relay_finish, backend CPU per outcome (micro)', 1, ' µs', (j) => j.micro?.relay_finish_outcome_us],
];
const fmt = (x, digits, unit) =>
  Number.isFinite(x) ? `${x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })}${unit}` : '–';
const range = (xs, digits) => {
  const s = xs.filter((x) => Number.isFinite(x));
  return s.length ? `${fmt(Math.min(...s), digits, '')}–${fmt(Math.max(...s), digits, '')}` : '–';
};
// Each pair ran back to back, so the ratio within a pair sees the same machine: the median of
// those ratios says the change with less of the drift between pairs than the two medians do.
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && a !== 0 ? b / a : NaN);
const pct = (r) => (Number.isFinite(r) ? `${r >= 1 ? '+' : '−'}${Math.abs(100 * (r - 1)).toFixed(0)} %` : '–');
const lines = [
  `\`npm run bench:compare -- ${argv.join(' ')}\` — ${RUNS} runs of each build, alternating (the order turns each pair), medians (and the range across runs); change = median of the candidate/base ratios within each pair (and their range)`,
  '',
  `| | ${builds[0].label} | ${builds[1].label} | change |`,
  '|---|---:|---:|---:|',
  ...metrics.map(([name, digits, unit, f]) => {
    const a = results.base.map(f);
    const b = results.candidate.map(f);
    const r = a.map((x, i) => ratio(x, b[i])).filter(Number.isFinite);
    const change = r.length ? `${pct(median(r))} (${pct(Math.min(...r))} … ${pct(Math.max(...r))})` : '–';
    return `| ${name} | ${fmt(median(a), digits, unit)} (${range(a, digits)}) | ${fmt(median(b), digits, unit)} (${range(b, digits)}) | ${change} |`;
  }),
  '',
];
writeFileSync(join(OUT, 'compare.md'), lines.join('\n'));
console.log('\n' + lines.join('\n'));
console.log(`[compare] written to ${join('bench', 'results', 'compare', 'compare.md')}`);
