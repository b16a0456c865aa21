import postgres from 'postgres';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
const [url, key, n] = process.argv.slice(2);
const s = postgres(url, { max: 1, onnotice: () => {} });
const [{ pid }] = await s`select pg_backend_pid() as pid`;
await s`set synchronous_commit = off`;
const cpu = () => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1000;
const hash = createHash('sha256').update(key).digest();
const q = readFileSync('bench/floor/admit.sql', 'utf8');
const call = () => s.unsafe(q, [randomUUID(), hash, 'bench-model', 'chat/completions', '127.0.0.1', 20, 100, 84, { candidates: [] }, 'default'], { prepare: true });
for (let i = 0; i < 200; i++) await call();
const res = [];
for (let r = 0; r < 5; r++) { const c0 = cpu(); for (let i = 0; i < Number(n); i++) await call(); res.push(Math.round((cpu() - c0) / Number(n))); }
console.log('floor admit µs/call', res.join(' '));
await s`delete from private.admissions`; await s`update private.wallets set reserved_micros = 0`;
await s.end();
