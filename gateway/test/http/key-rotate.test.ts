// admin.key_rotate through the official openai client: the new key works at once with the old
// key's limits and quota spent; the old one keeps working for its grace period, then gets a 401
// saying it was rotated. The end of a grace period is reached by moving the old key's grace end
// into the past (what the clock would do), never by waiting.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { attempt, closeDb, createChannel, createGroup, createKey, createUser, db, unique, withTx } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let upstream: MockUpstream;
let model: string;
let userId: number;

const client = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${gw.url}/v1`, maxRetries: 0 });
const ask = (apiKey: string) => client(apiKey).chat.completions.create({ model, messages: [{ role: 'user', content: 'still here' }] });

beforeAll(async () => {
  upstream = await startMockUpstream();
  const sql = db();
  const group = await createGroup(sql);
  model = unique('gpt-rot');
  userId = (await createUser(sql, { group })).id;
  await createChannel(sql, { base_url: upstream.url, models: [model], groups: [group] });
  gw = await startGateway();
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
  await closeDb();
});

describe('admin.key_rotate', () => {
  it('the old key works through its grace period, then answers 401 saying it was rotated', async () => {
    const sql = db();
    const old = await createKey(sql, { user_id: userId, name: 'ci', rpm_limit: 50, allowed_models: [model] });
    expect((await ask(old.key)).choices[0].message.content).toBe('echo: still here');
    const [{ r }] = await sql`select admin.key_rotate(${old.id}, interval '1 hour') as r`;
    expect(r).toMatchObject({ replaces: old.id, name: 'ci' });
    expect(r.key).toMatch(/^sk-/);
    // Same owner and limits; the quota spent so far moved with it.
    const [o, n] = await sql`select * from admin.api_keys where id in (${old.id}, ${r.id}) order by id`;
    expect({ user: n.user_id, rpm: n.rpm_limit, models: n.allowed_models, name: n.name }).toEqual({ user: o.user_id, rpm: 50, models: [model], name: 'ci' });
    // Both work during the grace period.
    expect((await ask(r.key)).choices[0].message.content).toBe('echo: still here');
    expect((await ask(old.key)).choices[0].message.content).toBe('echo: still here');
    // The grace period ends.
    await sql`update private.api_keys set expires_at = now() - interval '1 second' where id = ${old.id}`;
    const err = await ask(old.key).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(err.status).toBe(401);
    expect(err.error).toMatchObject({ code: 'invalid_api_key', message: expect.stringMatching(new RegExp(`^This API key \\(${old.key_prefix.replace(/[.]/g, '\\.')}\\) was rotated: .*grace period ended at .*Use the new key\\.$`)) });
    expect((await ask(r.key)).choices[0].message.content).toBe('echo: still here');
  });

  it('with no grace the old key is refused at once; an expired key that was never rotated still says expired', async () => {
    const sql = db();
    const old = await createKey(sql, { user_id: userId });
    const [{ r }] = await sql`select admin.key_rotate(${old.id}, interval '0') as r`;
    expect((await ask(old.key).catch((e) => e)).error.message).toMatch(/was rotated/);
    expect((await ask(r.key)).choices[0].message.content).toBe('echo: still here');
    const plain = await createKey(sql, { user_id: userId, expires_at: new Date(Date.now() - 60_000).toISOString() });
    expect((await ask(plain.key).catch((e) => e)).error.message).toMatch(/^This API key \(.*\) expired at /);
  });

  it('carries the quota spent, refuses what cannot be rotated, and is audited', async () => {
    await withTx(async (tx) => {
      const k = await createKey(tx, { user_id: userId, quota_micros: 1000000 });
      await tx`update private.key_counters set used_micros = 400000 where key_id = ${k.id}`;
      const [{ r }] = await tx`select admin.key_rotate(${k.id}, interval '10 minutes') as r`;
      const [c] = await tx`select used_micros, quota_micros from admin.api_keys where id = ${r.id}`;
      expect([Number(c.used_micros), Number(c.quota_micros)]).toEqual([400000, 1000000]);
      const [rot] = await tx`select * from admin.key_rotations where old_key_id = ${k.id}`;
      expect({ new: Number(rot.new_key_id), in_grace: rot.in_grace }).toEqual({ new: r.id, in_grace: true });
      await expect(attempt(tx, (sp) => sp`select admin.key_rotate(${k.id}, interval '1 hour')`)).rejects.toMatchObject({
        code: 'BADIN', column_name: 'key_id', message: expect.stringContaining(`already rotated (to key #${r.id})`),
      });
      await tx`select admin.key_revoke(${r.id})`;
      await expect(attempt(tx, (sp) => sp`select admin.key_rotate(${r.id}, interval '1 hour')`)).rejects.toMatchObject({ code: 'BADIN', message: expect.stringContaining('is revoked') });
      await expect(attempt(tx, (sp) => sp`select admin.key_rotate(${k.id}, interval '-1 hour')`)).rejects.toMatchObject({ code: 'BADIN', column_name: 'grace' });
      const audit = await tx`select target from admin.audit_log where action = 'admin.key_rotate' and target in (${'api_keys:' + k.id}, ${'api_keys:' + r.id}) order by id`;
      expect(audit.map((a) => a.target)).toEqual([`api_keys:${r.id}`, `api_keys:${k.id}`]);
    });
  });
});
