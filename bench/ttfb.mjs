// Time to first byte of streamed answers: N requests, one at a time over one kept-alive
// connection, timing from the request's write to the first body byte (the first SSE event) and to
// the end of the stream. Prints one JSON line. Used by bench/run.mjs (pinned to the load core).
//
//   node bench/ttfb.mjs <base-url> <path> <body-file> <key|-> <count> <warmup>
import http from 'node:http';
import { readFileSync } from 'node:fs';

const [base, path, bodyFile, key, countArg, warmupArg] = process.argv.slice(2);
const body = readFileSync(bodyFile);
const count = Number(countArg ?? 200);
const warmup = Number(warmupArg ?? 20);
const url = new URL(path, base);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const headers = { 'content-type': 'application/json', 'content-length': body.length };
if (key && key !== '-') headers.authorization = `Bearer ${key}`;

function once() {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    let first = null;
    const req = http.request(url, { method: 'POST', agent, headers }, (res) => {
      res.on('data', () => {
        if (first === null) first = process.hrtime.bigint();
      });
      res.on('end', () => {
        const end = process.hrtime.bigint();
        resolve({ status: res.statusCode, ttfb: Number((first ?? end) - t0) / 1000, total: Number(end - t0) / 1000 });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

let errors = 0;
const ttfb = [];
const total = [];
for (let i = 0; i < warmup + count; i++) {
  let r;
  try {
    r = await once();
  } catch {
    errors++;
    continue;
  }
  if (i < warmup) continue;
  if (r.status !== 200) errors++;
  ttfb.push(r.ttfb);
  total.push(r.total);
}
agent.destroy();
console.log(
  'BENCH_JSON ' +
    JSON.stringify({
      count: ttfb.length,
      errors,
      ttfb_us: { p50: pct(ttfb, 50), p90: pct(ttfb, 90), p99: pct(ttfb, 99) },
      total_us: { p50: pct(total, 50), p99: pct(total, 99) },
    }),
);
