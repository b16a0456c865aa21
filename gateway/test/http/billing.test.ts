// Billing end to end through the real gateway: usage receipts, 10,000 mixed requests that must
// reconcile to the micro-dollar, a gateway killed mid-stream, and a database restart under load.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { closeDb, createChannel, createGroup, createKey, createUser, db, masterKey, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startPrivateCluster } from '../support/cluster';

let upstream: MockUpstream;

beforeAll(async () => {
  upstream = await startMockUpstream();
});

afterAll(async () => {
  await upstream?.close();
  await closeDb();
});

/** A funded user and key in a fresh group, on a model with fractional prices and multipliers. */
async function tenant(sql = db(), balance = 1_000_000_000) {
  const group = await createGroup(sql);
  await sql`update private.groups set price_multiplier = 1.3 where name = ${group}`;
  const model = unique('billed');
  await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 150_000, output_price: 600_000, per_call_price: 3, cached_input_price: 75_000, cache_write_price: 187_500 })})`;
  const user = await createUser(sql, { group });
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: balance })})`;
  const key = (await createKey(sql, { user_id: user.id })).key;
  const channel = await createChannel(sql, { base_url: upstream.url, models: [model], groups: [group], cost_multiplier: 1.1 });
  return { model, user, key, channel, group };
}

const post = (gw: RunningGateway, key: string, body: unknown, signal?: AbortSignal) =>
  fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal,
  });

async function settledAll(gw: RunningGateway) {
  for (let i = 0; i < 500; i++) {
    if ((await gw.metric('elygate_settle_queue_depth')) === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('usage receipts', () => {
  let gw: RunningGateway;
  let t: Awaited<ReturnType<typeof tenant>>;
  beforeAll(async () => {
    t = await tenant();
    gw = await startGateway();
  });
  afterAll(() => gw?.stop());

  it('a non-stream answer carries its cost, equal to its ledger row', async () => {
    const res = await post(gw, t.key, { model: t.model, messages: [{ role: 'user', content: 'one two three four' }] });
    expect(res.status).toBe(200);
    const id = res.headers.get('x-request-id')!;
    expect(res.headers.get('x-elygate-request-id')).toBe(id);
    expect(res.headers.get('x-elygate-usage-source')).toBe('upstream');
    const cost = Number(res.headers.get('x-elygate-cost-micros'));
    await res.json();
    await settledAll(gw);
    const [l] = await db()`select amount_micros::int from admin.ledger where request_id = ${id}`;
    // (4 * 0.15 + 5 * 0.6 + 3) * 1.3 * 1.1 = 6.6 * 1.43 = 9.438 → 9
    expect(l.amount_micros).toBe(9);
    expect(cost).toBe(9);
  });

  it('a stream has its receipt in the log, by request id', async () => {
    const res = await post(gw, t.key, { model: t.model, stream: true, messages: [{ role: 'user', content: 'a b' }] });
    const id = res.headers.get('x-request-id')!;
    await res.text();
    await settledAll(gw);
    const [r] = await db()`select usage_source, cost_micros::int, prompt_tokens, completion_tokens from admin.receipts where request_id = ${id}`;
    expect(r).toEqual({ usage_source: 'upstream', cost_micros: expect.any(Number), prompt_tokens: 2, completion_tokens: 3 });
  });

  it('an upstream without usage is billed from a real tokenizer, flagged estimated', async () => {
    upstream.reportUsage = false;
    try {
      const res = await post(gw, t.key, { model: t.model, messages: [{ role: 'user', content: 'count these words please' }] });
      expect(res.headers.get('x-elygate-usage-source')).toBe('estimated');
      const id = res.headers.get('x-request-id')!;
      const cost = Number(res.headers.get('x-elygate-cost-micros'));
      await res.json();
      await settledAll(gw);
      const [l] = await db()`select usage_source, amount_micros::int, prompt_tokens, completion_tokens from admin.ledger where request_id = ${id}`;
      expect(l.usage_source).toBe('estimated');
      expect(l.completion_tokens).toBeGreaterThan(0);
      expect(l.amount_micros).toBe(cost);
    } finally {
      upstream.reportUsage = true;
    }
  });

  it('429 insufficient_quota when the wallet cannot cover the reservation', async () => {
    const poor = await tenant(db(), 10);
    const res = await post(gw, poor.key, { model: poor.model, max_tokens: 1000, messages: [{ role: 'user', content: 'x' }] });
    expect(res.status).toBe(429);
    expect((await res.json()).error).toMatchObject({ type: 'insufficient_quota', code: 'insufficient_quota' });
  });

  it('429 rate_limit_exceeded with Retry-After when the key is over its RPM', async () => {
    const sql = db();
    const limited = await createKey(sql, { user_id: t.user.id, rpm_limit: 2 });
    for (let i = 0; i < 2; i++) expect((await post(gw, limited.key, { model: t.model, messages: [{ role: 'user', content: 'x' }] })).status).toBe(200);
    const res = await post(gw, limited.key, { model: t.model, messages: [{ role: 'user', content: 'x' }] });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await res.json()).error.code).toBe('rate_limit_exceeded');
  });
});

describe('10,000 mixed requests reconcile to the micro-dollar', () => {
  it('Σ ledger = Σ cost of the usage the upstream reported; one ledger row per billed request', async () => {
    const t = await tenant();
    const gw = await startGateway();
    const [{ before }] = await db()`select balance_micros::bigint as before from private.wallets where user_id = ${t.user.id}`;
    // 'cached': the upstream reports some of the prompt read from its prompt cache (billed at the
    // cached price), plain and streamed.
    const kinds = ['plain', 'cached', 'plain', 'stream', 'cached-stream', 'stream', 'abort', 'break', 'fail', 'plain'] as const;
    const counts: Record<string, number> = {};
    const total = 10_000;
    let next = 0;
    const t0 = Date.now();
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        const kind = kinds[i % kinds.length];
        counts[kind] = (counts[kind] ?? 0) + 1;
        const words = 'w '.repeat(1 + (i % 17)).trim();
        const content = kind === 'break' ? `${words} mock:break:3` : kind === 'fail' ? `${words} mock:status:500` : kind === 'abort' ? `${words} mock:slow:20`
          : kind.startsWith('cached') ? `${words} mock:cached:${i % 3}:${i % 4}` : words;
        const stream = kind !== 'plain' && kind !== 'fail' && kind !== 'cached';
        const ac = new AbortController();
        try {
          const res = await post(gw, t.key, { model: t.model, stream, messages: [{ role: 'user', content }] }, ac.signal);
          if (kind === 'abort') {
            const reader = res.body!.getReader();
            await reader.read();
            ac.abort();
            await reader.cancel().catch(() => {});
          } else {
            await res.arrayBuffer();
          }
        } catch {
          // the aborted ones
        }
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    const seconds = (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 300));
    await settledAll(gw);
    await gw.stop();

    const sql = db();
    const [{ pending }] = await sql`select count(*)::int as pending from private.admissions where user_id = ${t.user.id}`;
    const [{ dupes }] = await sql`select count(*)::int as dupes from (select request_id from private.ledger where user_id = ${t.user.id} group by 1 having count(*) > 1) d`;
    const bySource = await sql`select usage_source, count(*)::int as n, sum(amount_micros)::bigint as amount from private.ledger where user_id = ${t.user.id} group by 1 order by 1`;
    // What the upstream reported, priced by the SQL formula, per request.
    const reported = upstream.calls
      .filter((c) => c.usage && c.requestId)
      .map((c) => ({ id: c.requestId!, p: c.usage!.prompt_tokens, c: c.usage!.completion_tokens, k: c.usage!.prompt_tokens_details?.cached_tokens ?? 0,
                     w: c.usage!.cache_creation_input_tokens ?? 0 }));
    // Prompts read from and written to the provider's cache are among them, each priced apart.
    expect(reported.filter((r) => r.k > 0).length).toBeGreaterThan(1000);
    expect(reported.filter((r) => r.w > 0).length).toBeGreaterThan(1000);
    const [{ expected, rows }] = await sql`
      select sum(private.cost_micros(r.p, r.c, r.k, r.w, 150000, 600000, 75000, 187500, 3, 1.3, 1.1))::bigint as expected, count(*)::int as rows
        from jsonb_to_recordset(${sql.json(reported)}) as r(id uuid, p int, c int, k int, w int)
        join private.ledger l on l.request_id = r.id and l.usage_source = 'upstream' and l.user_id = ${t.user.id}`;
    const [{ ledgerUpstream }] = await sql`select sum(amount_micros)::bigint as "ledgerUpstream" from private.ledger where user_id = ${t.user.id} and usage_source = 'upstream'`;
    const [{ after, reserved }] = await sql`select balance_micros::bigint as after, reserved_micros::bigint as reserved from private.wallets where user_id = ${t.user.id}`;
    const [{ spent }] = await sql`select sum(amount_micros)::bigint as spent from private.ledger where user_id = ${t.user.id}`;
    const [{ failBilled }] = await sql`
      select count(*)::int as "failBilled" from private.requests r join private.ledger l on l.request_id = r.id
       where r.user_id = ${t.user.id} and r.error_code like 'upstream_%' and r.completion_tokens is null`;
    console.log(
      `10,000 mixed requests in ${seconds.toFixed(1)} s (${Math.round(total / seconds)} req/s): ${JSON.stringify(counts)}; ` +
        `ledger by source ${JSON.stringify(bySource)}; upstream rows ${rows}, Σ ledger ${ledgerUpstream} = Σ reported cost ${expected}; ` +
        `duplicates ${dupes}; still pending ${pending}`,
    );
    expect(pending).toBe(0);
    expect(dupes).toBe(0);
    expect(BigInt(ledgerUpstream)).toBe(BigInt(expected));
    expect(rows).toBe(bySource.find((s) => s.usage_source === 'upstream')!.n);
    expect(failBilled).toBe(0);
    expect(BigInt(before) - BigInt(after)).toBe(BigInt(spent));
    expect(Number(reserved)).toBe(0);
    // Aborted and broken streams were billed for prompt + delivered, from the tokenizer.
    const [{ aborted }] = await sql`select count(*)::int as aborted from private.ledger where user_id = ${t.user.id} and abort_policy = 'prompt+delivered' and usage_source = 'estimated'`;
    expect(aborted).toBeGreaterThan(0);
  }, 240_000);
});

describe('faults', () => {
  it('SIGKILL with streams in flight: after the reaper no reservation is open, and delivered answers are billed', async () => {
    const t = await tenant();
    const gw = await startGateway();
    const done = await post(gw, t.key, { model: t.model, messages: [{ role: 'user', content: 'finished before the kill' }] });
    const doneId = done.headers.get('x-request-id')!;
    await done.json();
    await settledAll(gw);
    const streams = await Promise.all(
      Array.from({ length: 8 }, () => post(gw, t.key, { model: t.model, stream: true, messages: [{ role: 'user', content: 'long answer mock:slow:300' }] })),
    );
    for (const s of streams) await s.body!.getReader().read();
    gw.proc.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    const sql = db();
    const [{ open }] = await sql`select count(*)::int as open from private.admissions where user_id = ${t.user.id}`;
    expect(open).toBe(8);
    await sql`select private.reservations_reap(now() + interval '61 minutes')`;
    const [{ still }] = await sql`select count(*)::int as still from private.admissions where user_id = ${t.user.id}`;
    const [w] = await sql`select reserved_micros::int as reserved from private.wallets where user_id = ${t.user.id}`;
    const [{ billed }] = await sql`select count(*)::int as billed from private.ledger where request_id = ${doneId}`;
    const [{ expired }] = await sql`select count(*)::int as expired from private.ledger where user_id = ${t.user.id} and usage_source = 'expired'`;
    console.log(`SIGKILL: 8 streams open at the kill → reaped ${expired}, still open ${still}, reserved ${w.reserved}`);
    expect(still).toBe(0);
    expect(w.reserved).toBe(0);
    expect(billed).toBe(1);
    expect(expired).toBe(8);
  });

  it('database restart during load: no settled usage lost, no duplicate ledger row, no unadmitted answer', async () => {
    const cluster = await startPrivateCluster();
    const sql = postgres(cluster.url, { max: 2, onnotice: () => {}, connection: { 'elygate.master_key': masterKey } as Record<string, string> });
    try {
      await sql`select admin.option_set('AllowUnpricedModels', 'false')`;
      await sql`select admin.option_set('AllowPrivateUpstreams', 'true')`; // the mock is on 127.0.0.1
      const group = unique('g');
      await sql`select admin.group_upsert(${sql.json({ name: group })})`;
      const model = unique('m');
      await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1_000_000, output_price: 1_000_000 })})`;
      const [{ u }] = await sql`select admin.user_create(${sql.json({ username: unique('u'), group })}) as u`;
      await sql`select admin.wallet_credit(${sql.json({ user_id: u.id, amount_micros: 1_000_000_000 })})`;
      const [{ k }] = await sql`select admin.key_create(${sql.json({ user_id: u.id })}) as k`;
      await sql`select admin.channel_create(${sql.json({ name: unique('c'), base_url: upstream.url, api_key: 'sk-upstream', models: [model], groups: [group] })})`;
      await sql.end();

      const gw = await startGateway({ DATABASE_URL: cluster.url, ELYGATE_DB_CONNECT_TIMEOUT_S: '1' });
      const answered: string[] = [];
      const statuses: Record<number, number> = {};
      let stop = false;
      const loop = async () => {
        while (!stop) {
          try {
            const res = await post(gw, k.key, { model, messages: [{ role: 'user', content: 'steady load' }] });
            statuses[res.status] = (statuses[res.status] ?? 0) + 1;
            if (res.status === 200) answered.push(res.headers.get('x-request-id')!);
            await res.arrayBuffer();
            if (res.status !== 200) await new Promise((r) => setTimeout(r, 50));
          } catch {
            statuses[0] = (statuses[0] ?? 0) + 1;
          }
        }
      };
      const loops = Array.from({ length: 8 }, loop);
      /** Waits, while the load runs on, until ok() holds. */
      const until = async (ok: () => boolean, what: string) => {
        for (const deadline = Date.now() + 30_000; !ok(); await new Promise((r) => setTimeout(r, 20))) {
          if (Date.now() > deadline) throw new Error(`${what} did not happen within 30 s: ${JSON.stringify(statuses)} (status: count)`);
        }
      };
      // Answers flowing; then the database goes away until clients have felt it (503), and comes
      // back until answers flow again.
      await until(() => answered.length >= 40, 'answers under load before the restart');
      cluster.stop();
      await until(() => (statuses[503] ?? 0) > 0, 'a 503 while the database was down');
      cluster.start();
      const beforeRestart = answered.length;
      await until(() => answered.length >= beforeRestart + 40, 'answers under load after the restart');
      stop = true;
      await Promise.all(loops);
      // Let the spool replay.
      for (let i = 0; i < 200 && (await gw.metric('elygate_spool_batches')) > 0; i++) await new Promise((r) => setTimeout(r, 50));
      await settledAll(gw);
      await gw.stop();

      const check = postgres(cluster.url, { max: 1, onnotice: () => {} });
      const [{ billed }] = await check`select count(*)::int as billed from private.ledger where request_id = any(${answered}::uuid[])`;
      const [{ dupes }] = await check`select count(*)::int as dupes from (select request_id from private.ledger group by 1 having count(*) > 1) d`;
      const [{ unadmitted }] = await check`
        select count(*)::int as unadmitted from unnest(${answered}::uuid[]) a(id)
         where not exists (select 1 from private.requests r where r.id = a.id)`;
      await check.end();
      console.log(`DB restart under load: ${JSON.stringify(statuses)} (status: count); answered ${answered.length}, billed ${billed}, lost ${answered.length - billed}, duplicates ${dupes}, served without admission ${unadmitted}`);
      expect(statuses[503] ?? 0).toBeGreaterThan(0);
      expect(billed).toBe(answered.length);
      expect(dupes).toBe(0);
      expect(unadmitted).toBe(0);
    } finally {
      cluster.destroy();
    }
  }, 60_000);
});

describe('admission batching', () => {
  it('requests arriving while every admission call is busy go in one batch; each keeps its own answer', async () => {
    const sql = db();
    const t = await tenant(sql);
    const poor = await tenant(sql, 1); // 1 micro-USD covers no reservation: 429 insufficient_quota
    await sql`select admin.option_set('AdmissionConcurrency', '1')`;
    const gw = await startGateway();
    try {
      const body = (model: string) => ({ model, messages: [{ role: 'user', content: 'batch me' }], max_tokens: 5 });
      const sends = [
        ...Array.from({ length: 24 }, () => ({ kind: 'ok', p: post(gw, t.key, body(t.model)) })),
        ...Array.from({ length: 4 }, () => ({ kind: 'nokey', p: post(gw, 'sk-not-a-real-key', body(t.model)) })),
        ...Array.from({ length: 4 }, () => ({ kind: 'poor', p: post(gw, poor.key, body(poor.model)) })),
      ];
      const results = await Promise.all(sends.map(async (s) => {
        const res = await s.p;
        const json: any = await res.json();
        return { kind: s.kind, status: res.status, code: json.error?.code ?? null, id: res.headers.get('x-request-id') };
      }));
      expect(results.filter((r) => r.kind === 'ok').map((r) => r.status)).toEqual(Array(24).fill(200));
      expect(results.filter((r) => r.kind === 'nokey').map((r) => [r.status, r.code])).toEqual(Array(4).fill([401, 'invalid_api_key']));
      expect(results.filter((r) => r.kind === 'poor').map((r) => [r.status, r.code])).toEqual(Array(4).fill([429, 'insufficient_quota']));
      expect(await gw.metric('elygate_admission_calls_total{kind="batch"}')).toBeGreaterThan(0);
      expect(await gw.metric('elygate_admissions_total')).toBe(32);
      await settledAll(gw);
      const ids = results.filter((r) => r.kind === 'ok').map((r) => r.id);
      const [{ billed }] = await sql`select count(*)::int as billed from private.ledger where request_id = any(${ids}::uuid[])`;
      expect(billed).toBe(24);
      const [{ open }] = await sql`select count(*)::int as open from private.admissions where user_id = ${t.user.id}`;
      expect(open).toBe(0);
    } finally {
      await gw.stop();
      await sql`select admin.option_set('AdmissionConcurrency', '4')`;
    }
  });
});

describe('concurrency_limit and settlement', () => {
  it('a client that waits for each answer is never refused at concurrency_limit = 1, however late settlement runs', async () => {
    const sql = db();
    const t = await tenant(sql);
    const key = (await createKey(sql, { user_id: t.user.id, concurrency_limit: 1 })).key;
    // Settlement a long 400 ms after each answer: the slot is still counted when the next request comes.
    await sql`select admin.option_set('SettleIntervalMs', '400')`;
    const gw = await startGateway();
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) {
        const res = await post(gw, key, { model: t.model, messages: [{ role: 'user', content: `one at a time ${i}` }], max_tokens: 5 });
        await res.arrayBuffer();
        statuses.push(res.status);
      }
      expect(statuses).toEqual(Array(8).fill(200));
      // Two at once are still one too many (slow streams: the first is surely in flight).
      const both = await Promise.all([0, 1].map(async () => {
        const res = await post(gw, key, { model: t.model, messages: [{ role: 'user', content: 'together mock:slow:100' }], max_tokens: 5, stream: true });
        await res.arrayBuffer();
        return res.status;
      }));
      expect(both.sort()).toEqual([200, 429]);
    } finally {
      await gw.stop();
      await sql`select admin.option_set('SettleIntervalMs', '20')`;
    }
  });
});

describe('a price change while a request is in flight', () => {
  it('bills the card the request was admitted with: the receipt header equals the ledger', async () => {
    // An upstream that answers only when told to, so the prices change while the request waits on it.
    let arrived!: () => void;
    const arrival = new Promise<void>((r) => (arrived = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const slow = createServer(async (req, res) => {
      let body = '';
      for await (const chunk of req) body += chunk;
      arrived();
      await released;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
        id: 'chatcmpl-slow', object: 'chat.completion', created: 1700000000, model: JSON.parse(body).model,
        choices: [{ index: 0, message: { role: 'assistant', content: 'late answer' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 1000, completion_tokens: 200, total_tokens: 1200 },
      }));
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const sql = db();
    const t = await tenant(sql);
    const channel = await createChannel(sql, { base_url: `http://127.0.0.1:${(slow.address() as AddressInfo).port}`, models: [t.model], groups: [t.group] });
    await sql`select admin.channel_update(${t.channel.id}, '{"status": "manually_disabled"}')`;
    const gw = await startGateway();
    try {
      const pending = post(gw, t.key, { model: t.model, messages: [{ role: 'user', content: 'take your time' }], max_tokens: 300 });
      await arrival;
      // Everything the card holds changes: prices ×10, the group's and the channel's multipliers.
      await sql`select admin.model_upsert(${sql.json({ name: t.model, input_price: 1_500_000, output_price: 6_000_000, per_call_price: 30 })})`;
      await sql`update private.groups set price_multiplier = 2 where name = ${t.group}`;
      await sql`select admin.channel_update(${channel.id}, '{"cost_multiplier": 3}')`;
      release();
      const res = await pending;
      expect(res.status).toBe(200);
      const id = res.headers.get('x-request-id')!;
      const cost = Number(res.headers.get('x-elygate-cost-micros'));
      await res.json();
      await settledAll(gw);
      const [l] = await db()`select amount_micros::int from private.ledger where request_id = ${id}`;
      // At admission: (1000 * 0.15 + 200 * 0.6 + 3) * 1.3 = 354.9 → 355 (the new channel's multiplier was 1).
      // At the new prices it would be (1000 * 1.5 + 200 * 6 + 30) * 2 * 3 = 16,380.
      expect(l.amount_micros).toBe(355);
      expect(cost).toBe(l.amount_micros);
    } finally {
      await gw.stop();
      await new Promise((r) => slow.close(r));
    }
  });
});
