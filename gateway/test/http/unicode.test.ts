// Text PostgreSQL cannot store: NUL and lone UTF-16 surrogates are valid JSON that upstreams accept
// and echo. A request carrying them is answered, and its outcome settles: the answer kept for the
// cache and every other string are made storable first, the log row says its text was altered, the
// ledger has its row, and nothing ends in the dead-letter folder (where it used to, its reservation
// then billed whole by the reaper).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let upstream: MockUpstream;
let model: string;
let key: string;
let userId: number;
const spool = mkdtempSync(join(tmpdir(), 'elygate-spool-'));
let cacheWas = 'false';

beforeAll(async () => {
  upstream = await startMockUpstream();
  const sql = db();
  cacheWas = (await sql`select value from private.options where key = 'SemanticCacheEnabled'`)[0].value;
  // The answer goes to the response cache too: the path where an echoed NUL used to break settlement.
  await sql`select admin.option_set('SemanticCacheEnabled', 'true')`;
  const group = await createGroup(sql);
  model = unique('unicode');
  await sql`select admin.model_upsert(${sql.json({ name: model, input_price: 1_000_000, output_price: 1_000_000 })})`;
  await createChannel(sql, { base_url: upstream.url, models: [model], groups: [group] });
  const user = await createUser(sql, { group });
  userId = user.id;
  await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 100_000_000 })})`;
  key = (await createKey(sql, { user_id: user.id, concurrency_limit: 50 })).key;
  gw = await startGateway({ ELYGATE_SPOOL_DIR: spool });
});

afterAll(async () => {
  await db()`select admin.option_set('SemanticCacheEnabled', ${cacheWas})`;
  await gw?.stop();
  await upstream?.close();
  await closeDb();
});

/** Random text mixing what PostgreSQL refuses with what it stores. */
function nasty(seed: number): string {
  const parts = ['\u0000', '\ud800', '\udfff', 'x\ud83d', '\ufffe', '\uffff', '😀', '𝄞', 'plain', 'é', '\u0001', '"\\'];
  let s = '';
  let n = seed;
  for (let i = 0; i < 12; i++) {
    n = (n * 1103515245 + 12345) % 2 ** 31;
    s += parts[n % parts.length] + ' ';
  }
  return s;
}

const post = (path: string, body: Record<string, unknown>) =>
  fetch(`${gw.url}/v1/${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('text PostgreSQL cannot store', () => {
  it('NUL and lone surrogates through chat and completions, streaming and not: answered, settled, billed, nothing dead', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 24; i++) {
      const content = nasty(i + 1);
      const stream = i % 2 === 1;
      const res =
        i % 3 === 2
          ? await post('completions', { model, prompt: content, stream })
          : await post('chat/completions', { model, stream, temperature: 0, messages: [{ role: 'user', content }] }); // (temperature 0: cacheable)
      expect(res.status).toBe(200);
      await res.text();
      ids.push(res.headers.get('x-request-id')!);
    }
    for (let i = 0; i < 300; i++) {
      const [{ n }] = await db()`select count(*)::int as n from private.requests where id = any(${ids}::uuid[])`;
      if (n === ids.length) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const rows = await db()`
      select r.id, r.status, r.text_altered, l.amount_micros::int as amount
        from private.requests r left join private.ledger l on l.request_id = r.id
       where r.id = any(${ids}::uuid[])`;
    expect(rows).toHaveLength(ids.length);
    for (const r of rows) expect(r).toMatchObject({ status: 'ok', amount: expect.any(Number) });
    expect(rows.filter((r) => r.text_altered).length).toBeGreaterThan(0);
    expect(readdirSync(join(spool, 'dead'))).toEqual([]);
    // Nothing held: every reservation came back with its settlement.
    const [{ reserved }] = await db()`select reserved_micros::int as reserved from private.wallets where user_id = ${userId}`;
    expect(reserved).toBe(0);
  });

  it('random Unicode through every endpoint, streaming and not: Σ ledger exactly what the upstream reported, nothing dead', async () => {
    // A seeded generator of text mixing what PostgreSQL refuses (NUL, lone surrogates) with
    // noncharacters, controls, combining marks, 4-byte characters and plain words.
    let n = 20261203;
    const rand = (k: number) => ((n = (n * 1103515245 + 12345) % 2 ** 31), n % k);
    const pools = [
      () => '\u0000', () => String.fromCharCode(0xd800 + rand(0x400)), () => String.fromCharCode(0xdc00 + rand(0x400)),
      () => ['\ufffe', '\uffff', '\ufdd0', '\ufdef', String.fromCodePoint(0x1fffe), String.fromCodePoint(0x10ffff)][rand(6)],
      () => String.fromCharCode(1 + rand(31)), () => 'e\u0301', () => String.fromCodePoint(0x1f600 + rand(80)),
      () => String.fromCodePoint(0x20000 + rand(0xa6d6)), () => ['word', 'tokens', 'plain', '"\\'][rand(4)],
    ];
    const text = () => Array.from({ length: 4 + rand(12) }, () => pools[rand(pools.length)]() + (rand(3) ? ' ' : '')).join('');
    const requests: { path: string; body: Record<string, unknown> }[] = [];
    for (let i = 0; i < 60; i++) {
      const stream = i % 2 === 1;
      const content = text();
      requests.push([
        { path: 'chat/completions', body: { model, stream, messages: [{ role: 'system', content: text() }, { role: 'user', content }] } },
        { path: 'completions', body: { model, stream, prompt: content } },
        { path: 'embeddings', body: { model, input: [content, text()] } },
        { path: 'responses', body: { model, stream, instructions: text(), input: content } },
        { path: 'messages', body: { model, stream, max_tokens: 50, system: text(), messages: [{ role: 'user', content }] } },
      ][i % 5]);
    }
    const sql = db();
    const [{ before }] = await sql`select balance_micros::bigint as before from private.wallets where user_id = ${userId}`;
    const ids: string[] = [];
    for (const r of requests) {
      const res = await post(r.path, r.body);
      const body = await res.text();
      expect(res.status, `${r.path}: ${body.slice(0, 200)}`).toBe(200);
      ids.push(res.headers.get('x-request-id')!);
    }
    for (let i = 0; i < 300; i++) {
      const [{ n: settled }] = await sql`select count(*)::int as n from private.requests where id = any(${ids}::uuid[])`;
      if (settled === ids.length) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const rows = await sql`
      select r.id::text, r.endpoint, r.status, l.amount_micros::bigint as amount
        from private.requests r left join private.ledger l on l.request_id = r.id
       where r.id = any(${ids}::uuid[])`;
    expect(rows).toHaveLength(ids.length);
    for (const r of rows) expect(r, r.endpoint).toMatchObject({ status: 'ok', amount: expect.any(String) });
    // At 1 micro-USD per token in and out, each request costs exactly the tokens the upstream
    // reported for it (the mock records what it reported, by the gateway's request id).
    const reported = new Map(upstream.calls.filter((c) => c.usage && c.requestId).map((c) => [c.requestId!, c.usage!]));
    const withUsage = rows.filter((r) => reported.has(r.id));
    expect(withUsage.length).toBe(rows.length);
    const expected = withUsage.reduce((s, r) => s + BigInt(reported.get(r.id)!.prompt_tokens + reported.get(r.id)!.completion_tokens), 0n);
    const billed = rows.reduce((s, r) => s + BigInt(r.amount), 0n);
    expect(billed).toBe(expected);
    expect(readdirSync(join(spool, 'dead'))).toEqual([]);
    const [{ after, reserved }] = await sql`select balance_micros::bigint as after, reserved_micros::bigint as reserved from private.wallets where user_id = ${userId}`;
    expect(BigInt(before) - BigInt(after)).toBe(billed);
    expect(Number(reserved)).toBe(0);
  });
});
