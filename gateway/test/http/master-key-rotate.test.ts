// Master-key rotation (`npm run rotate-master-key`, admin.master_key_rotate): every upstream key
// and webhook secret re-sealed in one transaction while gateways serve requests, none of which
// fails; the old key opens nothing afterwards; the embedded default keeps working after a restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync, spawn } from 'node:child_process';
import { createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeDb, createChannel, createGroup, createKey, createUser, databaseUrl, db, masterKey, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

const root = join(__dirname, '..', '..', '..');
const keyId = (hex: string) => createHash('sha256').update(Buffer.from(hex, 'hex')).digest().subarray(0, 8).toString('hex');
const newKey = randomBytes(32).toString('hex');

let upstream: MockUpstream;
let apiKey: string;
let models: string[];
const gateways: RunningGateway[] = [];
/** The key all secrets are sealed with when the file ends (rotated back to the suite's). */
let finalKey = masterKey;

/** Runs the command as an operator would, with this environment (no DATABASE_URL: the embedded default). */
function rotate(env: Record<string, string>, args: string[] = []) {
  return new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawn(process.execPath, [join(root, 'scripts', 'rotate-master-key.mjs'), ...args], {
      cwd: root,
      env: { PATH: process.env.PATH!, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (code) => resolve({ code, out }));
  });
}

/** Opens a sealed value as the gateway does (AES-256-GCM); throws when the key is not its key. */
function open(key: string, nonce: Buffer, ciphertext: Buffer, tag: Buffer): string {
  const d = createDecipheriv('aes-256-gcm', Buffer.from(key, 'hex'), nonce);
  d.setAuthTag(tag);
  return Buffer.concat([d.update(ciphertext), d.final()]).toString('utf8');
}

async function sealed() {
  return db()`
    select key_id, nonce, ciphertext, tag, 'channel' as kind from private.channel_keys
    union all
    select secret_key_id, secret_nonce, secret_ciphertext, secret_tag, 'webhook' from private.webhook_endpoints`;
}

const ask = (gw: RunningGateway, model: string) =>
  fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'still here' }] }),
  }).then(async (r) => ({ status: r.status, text: await r.text() }));

/** Requests on every model from `gw`, in 4 loops, until `until` settles; returns the failures. */
async function traffic(gw: RunningGateway, until: Promise<unknown>) {
  let done = false;
  until.finally(() => (done = true));
  const failures: string[] = [];
  let n = 0;
  await Promise.all(
    [0, 1, 2, 3].map(async (lane) => {
      while (!done) {
        const r = await ask(gw, models[(n++ + lane) % models.length]);
        if (r.status !== 200) failures.push(`${r.status} ${r.text.slice(0, 200)}`);
      }
    }),
  );
  await until;
  return { failures, n };
}

beforeAll(async () => {
  upstream = await startMockUpstream();
  const sql = db();
  const group = await createGroup(sql);
  const user = await createUser(sql, { group });
  apiKey = (await createKey(sql, { user_id: user.id })).key;
  models = [unique('rot-a'), unique('rot-b')];
  for (const model of models) await createChannel(sql, { base_url: upstream.url, models: [model], groups: [group], api_key: `sk-${model}-1\nsk-${model}-2` });
  await sql`select admin.webhook_create(${sql.json({ name: unique('hook'), url: 'https://example.com/hook', kinds: ['channel.disabled'] })})`;
});

afterAll(async () => {
  for (const gw of gateways) await gw.stop();
  // The rest of the suite seals and opens with its own key: rotate back to it.
  if (finalKey !== masterKey) {
    const r = await rotate({ DATABASE_URL: databaseUrl, ELYGATE_MASTER_KEY: finalKey }, ['--new', masterKey]);
    if (r.code !== 0) throw new Error(r.out);
  }
  await upstream?.close();
  await closeDb();
});

describe('npm run rotate-master-key', () => {
  it('staged: gateways that accept both keys serve every request while every secret is re-sealed', async () => {
    // Every gateway runs with the new key and the old one accepted; it has opened channel a only.
    const gw = await startGateway({ ELYGATE_MASTER_KEY: newKey, ELYGATE_MASTER_KEY_PREVIOUS: masterKey });
    gateways.push(gw);
    expect((await ask(gw, models[0])).status).toBe(200);
    const run = rotate({ DATABASE_URL: databaseUrl, ELYGATE_MASTER_KEY: newKey, ELYGATE_MASTER_KEY_PREVIOUS: masterKey });
    const { failures, n } = await traffic(gw, run);
    const r = await run;
    expect(r.code, r.out).toBe(0);
    finalKey = newKey;
    expect(r.out).toMatch(/Re-sealed \d+ upstream key\(s\) and \d+ webhook secret\(s\)/);
    expect(r.out).toContain('remove\nELYGATE_MASTER_KEY_PREVIOUS');
    expect(failures).toEqual([]);
    expect(n).toBeGreaterThan(4);

    // The old key opens nothing; the new one opens everything, unchanged.
    const rows = await sealed();
    expect(rows.length).toBeGreaterThanOrEqual(5);
    for (const row of rows) {
      expect(row.key_id).toBe(keyId(newKey));
      expect(() => open(masterKey, row.nonce, row.ciphertext, row.tag)).toThrow();
      expect(open(newKey, row.nonce, row.ciphertext, row.tag).length).toBeGreaterThan(0);
    }
    const [k] = await db()`select ciphertext, nonce, tag from private.channel_keys order by id desc limit 1`;
    await expect(db()`select private.aes_gcm_decrypt(${Buffer.from(masterKey, 'hex')}, ${k.nonce}, ${k.ciphertext}, ${k.tag})`).rejects.toMatchObject({ code: 'NOMKY' });
    expect(open(newKey, k.nonce, k.ciphertext, k.tag)).toBe(`sk-${models[1]}-2`);

    // A gateway started with the new key alone serves both channels.
    const fresh = await startGateway({ ELYGATE_MASTER_KEY: newKey });
    gateways.push(fresh);
    for (const model of models) expect((await ask(fresh, model)).status).toBe(200);
    // The audit log has it, without a key in it.
    const [a] = await db()`select action, after from admin.audit_log where target = ${'master_key:' + keyId(newKey)}`;
    expect(a.action).toBe('admin.master_key_rotate');
    expect(JSON.stringify(a)).not.toContain(newKey);
  });

  it('refuses, changing nothing, when a secret is sealed with a key it was not given', async () => {
    const r = await rotate({ DATABASE_URL: databaseUrl, ELYGATE_MASTER_KEY: masterKey }, ['--new', randomBytes(32).toString('hex')]);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`Nothing was re-sealed: Some secrets are sealed with master key ${keyId(newKey)}`);
    expect(new Set((await sealed()).map((s) => s.key_id))).toEqual(new Set([keyId(newKey)]));
  });

  it('direct, embedded default: a gateway that is running keeps serving; the saved key works after a restart', async () => {
    // An embedded default's state.json, pointing at this database, with the key in use now.
    const dir = mkdtempSync(join(tmpdir(), 'elygate-state-'));
    const url = new URL(databaseUrl);
    writeFileSync(join(dir, 'state.json'), JSON.stringify({ url: databaseUrl, password: decodeURIComponent(url.password) || 'x', masterKey: newKey }));
    const running = gateways[1]; // started with newKey alone, has opened both channels
    const run = rotate({ ELYGATE_DATA_DIR: dir });
    const { failures } = await traffic(running, run);
    const r = await run;
    expect(r.code, r.out).toBe(0);
    const st = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
    finalKey = st.masterKey;
    expect(failures).toEqual([]);
    expect(st.masterKey).toMatch(/^[0-9a-f]{64}$/);
    expect(st.masterKey).not.toBe(newKey);
    expect(st.previousMasterKey).toBe(newKey);
    expect(r.out).toContain('restart\n`npm start`');
    expect(new Set((await sealed()).map((s) => s.key_id))).toEqual(new Set([keyId(st.masterKey)]));

    // "Restart": the gateway gets its keys from state.json the way npm start passes them.
    const pg = await import(join(root, 'scripts', 'pg.mjs'));
    const env = pg.masterKeyEnv(st, {});
    expect(env).toEqual({ ELYGATE_MASTER_KEY: st.masterKey, ELYGATE_MASTER_KEY_PREVIOUS: newKey });
    const restarted = await startGateway(env);
    gateways.push(restarted);
    for (const model of models) expect((await ask(restarted, model)).status).toBe(200);
    // psql sessions of the embedded default seal with the new key too.
    const psql = spawnSync(process.execPath, ['-e', `import('${join(root, 'scripts', 'pg.mjs')}').then(m => console.log(m.readState().masterKey))`], {
      env: { PATH: process.env.PATH!, ELYGATE_DATA_DIR: dir },
      encoding: 'utf8',
    });
    expect(psql.stdout.trim()).toBe(st.masterKey);
  });
});
