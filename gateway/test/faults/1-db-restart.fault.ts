// Fault scenario 1: the database stops for 10 seconds (3 in the short run) under steady load, then
// starts again. Every answer the clients got is billed exactly once (nothing lost from the spool,
// nothing settled twice), no answer was served without an admission row, and the refusals during
// the outage are 503s.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { closeDb, masterKey, unique } from '../support/db';
import { startGateway } from '../support/gateway';
import { startPrivateCluster, type PrivateCluster } from '../support/cluster';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { figure, post, recordSecret, saveLogs, short } from './support';

let upstream: MockUpstream;
let cluster: PrivateCluster;
beforeAll(async () => {
  upstream = await startMockUpstream();
  cluster = await startPrivateCluster();
});
afterAll(async () => {
  cluster?.destroy();
  await upstream?.close();
  await closeDb();
});

describe('1. database restart under steady load', () => {
  it(`stop ${short ? 3 : 10} s, start: 0 lost usage rows, 0 duplicate ledger rows, 0 answers without admission`, async () => {
    const outageMs = short ? 3000 : 10_000;
    const sql = postgres(cluster.url, { max: 2, onnotice: () => {}, connection: { 'elygate.master_key': masterKey } as Record<string, string> });
    const group = unique('g');
    const model = unique('m');
    await sql`select admin.option_set('AllowPrivateUpstreams', 'true')`.catch(() => {}); // once the connect-time guard is wired
    await sql`select admin.group_upsert(${sql.json({ name: group })})`;
    await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1_000_000, output_price: 1_000_000 })})`;
    const [{ u }] = await sql`select admin.user_create(${sql.json({ username: unique('u'), group })}) as u`;
    await sql`select admin.wallet_credit(${sql.json({ user_id: u.id, amount_micros: 10_000_000_000 })})`;
    const [{ k }] = await sql`select admin.key_create(${sql.json({ user_id: u.id })}) as k`;
    recordSecret('client', k.key);
    await sql`select admin.channel_create(${sql.json({ name: unique('c'), base_url: upstream.url, api_key: 'sk-upstream-restart-scenario', models: [model], groups: [group] })})`;
    recordSecret('upstream', 'sk-upstream-restart-scenario');
    await sql.end();

    const gw = await startGateway({ DATABASE_URL: cluster.url, ELYGATE_DB_CONNECT_TIMEOUT_S: '1' });
    const answered: string[] = [];
    const statuses: Record<number, number> = {};
    let stop = false;
    let i = 0;
    const loop = async () => {
      while (!stop) {
        const stream = i++ % 3 === 0;
        try {
          const res = await post(gw.url, k.key, { model, stream, messages: [{ role: 'user', content: 'steady load' }] });
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
          const text = await res.text();
          // A stream counts as answered only when it was delivered whole.
          if (res.status === 200 && (!stream || /data: \[DONE\]/.test(text))) answered.push(res.headers.get('x-request-id')!);
          if (res.status !== 200) await new Promise((r) => setTimeout(r, 50));
        } catch {
          statuses[0] = (statuses[0] ?? 0) + 1;
        }
      }
    };
    const loops = Array.from({ length: 8 }, loop);
    await new Promise((r) => setTimeout(r, 1500));
    const t0 = Date.now();
    cluster.stop();
    await new Promise((r) => setTimeout(r, outageMs));
    cluster.start();
    const down = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 3000));
    stop = true;
    await Promise.all(loops);
    // Outcomes spooled during the outage replay with back-off (up to 5 s between tries): give the
    // replay up to 20 s to bring the ledger level with what was answered, then stop the gateway.
    const check = postgres(cluster.url, { max: 1, onnotice: () => {} });
    const billedNow = async () => (await check`select count(*)::int as n from private.ledger where request_id = any(${answered}::uuid[])`)[0].n as number;
    const tReplay = Date.now();
    while ((await billedNow()) < answered.length && Date.now() - tReplay < 20_000) await new Promise((r) => setTimeout(r, 200));
    const replayMs = Date.now() - tReplay;
    await gw.stop();
    saveLogs('db-restart', gw.output());

    try {
      const [{ billed }] = await check`select count(*)::int as billed from private.ledger where request_id = any(${answered}::uuid[])`;
      const [{ dupes }] = await check`select count(*)::int as dupes from (select request_id from private.ledger group by 1 having count(*) > 1) d`;
      const [{ unadmitted }] = await check`
        select count(*)::int as unadmitted from unnest(${answered}::uuid[]) a(id)
         where not exists (select 1 from private.requests r where r.id = a.id)`;
      const [{ pending }] = await check`select count(*)::int as pending from private.admissions`;
      figure('database restart', {
        outage_ms: down,
        statuses,
        answered: answered.length,
        billed,
        lost_usage_rows: answered.length - billed,
        duplicate_ledger_rows: dupes,
        served_without_admission: unadmitted,
        '503s': statuses[503] ?? 0,
        replay_wait_ms: replayMs,
        still_pending: pending,
      });
      expect(statuses[503] ?? 0).toBeGreaterThan(0);
      expect(answered.length).toBeGreaterThan(50);
      expect(billed).toBe(answered.length);
      expect(dupes).toBe(0);
      expect(unadmitted).toBe(0);
    } finally {
      await check.end();
    }
  }, 120_000);
});
