import postgres from 'postgres';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
const [url, key, n] = process.argv.slice(2);
const s = postgres(url, { max: 1, onnotice: () => {} });
const [{ pid }] = await s`select pg_backend_pid() as pid`;
const cpu = () => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1000;
const hash = createHash('sha256').update(key).digest();
const begin = () => s`select * from gateway.relay_begin(${randomUUID()}, ${hash}, 'bench-model', 'chat/completions', false, '127.0.0.1', 20, 64)`.then((r) => r[0]);
const outcome = (t) => { const ch = Number(t.plan?.[0]?.channel_id ?? 0); return { id: t.request_id, created_at: t.created_at, status: 'ok', http_status: 200, channel_id: ch, upstream_model: 'bench-model', prompt_tokens: 20, completion_tokens: 30, usage_source: 'upstream', attempts: [{ channel_id: ch, status: 200, ms: 1 }], ttfb_ms: 1, latency_ms: 2, error_code: null, error_message: null, embedding_tokens: null, ticket: { user_id: t.user_id, key_id: t.key_id, group_name: t.group_name, model: 'bench-model', endpoint: 'chat/completions', cache: null } }; };
const finish = (b) => s`select gateway.relay_finish(${s.json(b)}) as n`;
for (let i = 0; i < 50; i++) await finish([outcome(await begin())]);
const res = [];
for (let r = 0; r < 4; r++) {
  const os = []; for (let i = 0; i < Number(n); i++) os.push(outcome(await begin()));
  const c0 = cpu(); for (const o of os) await finish([o]); res.push(Math.round((cpu() - c0) / Number(n)));
}
console.log('finish(1) µs/call', res.join(' '));
await s.end();
