// The SQL behind issue 21's admin defects: the channel test reaches exactly its channel, its
// internal users and keys stay out of the operator's lists and totals, and bad input is refused
// with a message that names the field (never a raw PostgreSQL error).
import { afterAll, describe, expect, it } from 'vitest';
import { attempt, closeDb, createChannel, createKey, createUser, unique, withTx } from '../support/db';

afterAll(closeDb);

describe('admin.channel_test_key', () => {
  it("routes the test key to the tested channel only, even when it is disabled", async () => {
    await withTx(async (tx) => {
      const model = unique('m');
      const a = await createChannel(tx, { base_url: 'https://a.example.com', models: [model], priority: 0 });
      const b = await createChannel(tx, { base_url: 'https://b.example.com', models: [model], priority: 10 });
      const [{ k }] = await tx`select admin.channel_test_key(${a.id}, ${model}) as k`;
      const [{ grp }] = await tx`select u.group_name as grp from private.api_keys k join private.users u on u.id = k.user_id where k.id = ${k.id}`;
      expect(grp).toBe(`channel-test.${a.id}`);
      const [plan] = await tx`select * from private.route_plan(${model}, ${grp})`;
      expect(plan.candidates.map((c: any) => c.channel_id)).toEqual([a.id]);
      // Disabled by hand: still the only candidate (the operator asked to try it).
      await tx`select admin.channel_update(${a.id}, '{"status": "manually_disabled"}')`;
      const [plan2] = await tx`select * from private.route_plan(${model}, ${grp})`;
      expect(plan2.candidates.map((c: any) => c.channel_id)).toEqual([a.id]);
      // Normal routing is unchanged: both serve the model for group default, b first.
      await tx`select admin.channel_update(${a.id}, '{"status": "enabled"}')`;
      const [normal] = await tx`select * from private.route_plan(${model}, 'default')`;
      expect(normal.candidates.map((c: any) => c.channel_id)).toEqual([b.id, a.id]);
    });
  });

  it('refuses a model the channel does not serve', async () => {
    await withTx(async (tx) => {
      const a = await createChannel(tx, { base_url: 'https://a.example.com', models: ['m-one'] });
      await expect(attempt(tx, (sp) => sp`select admin.channel_test_key(${a.id}, 'm-other')`)).rejects.toMatchObject({
        code: 'BADCH',
        column_name: 'model',
        message: expect.stringContaining('does not serve model "m-other"'),
      });
    });
  });

  it('hides test users, groups and keys from the lists and totals, and refuses to edit them', async () => {
    await withTx(async (tx) => {
      const model = unique('m');
      const a = await createChannel(tx, { base_url: 'https://a.example.com', models: [model] });
      const [{ k }] = await tx`select admin.channel_test_key(${a.id}, ${model}) as k`;
      const [{ uid }] = await tx`select user_id as uid from private.api_keys where id = ${k.id}`;
      await tx`insert into private.requests (id, created_at, key_id, user_id, endpoint, model, status)
               values (gen_random_uuid(), now(), ${k.id}, ${uid}, 'chat', ${model}, 'ok')`;
      expect(await tx`select 1 from admin.users where id = ${uid}`).toHaveLength(0);
      expect(await tx`select 1 from admin.api_keys where id = ${k.id}`).toHaveLength(0);
      expect(await tx`select 1 from admin.wallets where user_id = ${uid}`).toHaveLength(0);
      expect(await tx`select 1 from admin.groups where name = ${`channel-test.${a.id}`}`).toHaveLength(0);
      expect(await tx`select 1 from admin.usage_hourly where user_id = ${uid} or key_id = ${k.id}`).toHaveLength(0);
      await tx`insert into private.ledger (request_id, user_id, key_id, model, prompt_tokens, completion_tokens, amount_micros, usage_source)
               values (gen_random_uuid(), ${uid}, ${k.id}, ${model}, 1, 1, 1, 'upstream')`;
      expect(await tx`select 1 from admin.usage_by_user where user_id = ${uid}`).toHaveLength(0);
      expect(await tx`select 1 from admin.usage_by_key where key_id = ${k.id}`).toHaveLength(0);
      expect(await tx`select 1 from admin.internal_users where id = ${uid}`).toHaveLength(1);
      for (const call of [
        (sp: any) => sp`select admin.user_update(${uid}, '{"status": "disabled"}')`,
        (sp: any) => sp`select admin.wallet_credit(${sp.json({ user_id: uid, amount_micros: 1000000 })})`,
        (sp: any) => sp`select admin.wallet_update(${sp.json({ user_id: uid, credit_limit_micros: 0 })})`,
        (sp: any) => sp`select admin.user_password_set(${uid}, '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA', true)`,
      ]) {
        await expect(attempt(tx, call)).rejects.toMatchObject({ code: 'BADIN', message: expect.stringContaining('is internal') });
      }
      await expect(attempt(tx, (sp) => sp`select admin.user_create('{"username": "channel-test.999"}')`)).rejects.toMatchObject({
        code: 'BADIN',
        column_name: 'username',
      });
    });
  });
});

describe('validation with messages that name the field', () => {
  const rejects = (tx: any, q: (sp: any) => Promise<unknown>, column: string, message: RegExp) =>
    expect(attempt(tx, q)).rejects.toMatchObject({ column_name: column, message: expect.stringMatching(message) });

  it('keys: limits out of range, a huge label, an unknown model, a bad date', async () => {
    await withTx(async (tx) => {
      const user = await createUser(tx);
      const mk = (extra: object) => (sp: any) => sp`select admin.key_create(${sp.json({ user_id: user.id, ...extra })})`;
      await rejects(tx, mk({ rpm_limit: 99999999999 }), 'rpm_limit', /"rpm_limit" must be a whole number from 1 to 2147483647/);
      await rejects(tx, mk({ tpm_limit: 1.5 }), 'tpm_limit', /whole number/);
      await rejects(tx, mk({ name: 'x'.repeat(5000) }), 'name', /at most 100 characters/);
      await rejects(tx, mk({ allowed_models: ['no-such-model-anywhere'] }), 'allowed_models', /Unknown model\(s\).*no-such-model-anywhere/);
      await rejects(tx, mk({ expires_at: 'soon' }), 'expires_at', /must be a date and time/);
      const key = await createKey(tx, { user_id: user.id });
      await rejects(tx, (sp) => sp`select admin.key_update(${key.id}, '{"concurrency_limit": 0}')`, 'concurrency_limit', /from 1 to/);
    });
  });

  it('users and groups: a bad username, group name or multiplier', async () => {
    await withTx(async (tx) => {
      await rejects(tx, (sp) => sp`select admin.user_create('{"username": "has space"}')`, 'username', /1 to 64 characters/);
      await rejects(tx, (sp) => sp`select admin.group_upsert('{"name": "bad group"}')`, 'name', /1 to 64 characters/);
      await rejects(tx, (sp) => sp`select admin.group_upsert('{"name": "g1", "price_multiplier": 1e10}')`, 'price_multiplier', /number from/);
    });
  });

  it('channels: a base URL with a space or a fragment, an unknown group, a huge multiplier', async () => {
    await withTx(async (tx) => {
      const mk = (extra: object) => (sp: any) => sp`select admin.channel_create(${sp.json({ name: unique('ch'), base_url: 'https://x.example.com', models: ['m'], ...extra })})`;
      await rejects(tx, mk({ base_url: 'https://x.example.com/v1 beta' }), 'base_url', /spaces.*fragment/);
      await rejects(tx, mk({ base_url: 'https://x.example.com/#frag' }), 'base_url', /fragment/);
      await rejects(tx, mk({ groups: ['no-such-group'] }), 'groups', /Unknown group\(s\).*no-such-group/);
      await rejects(tx, mk({ cost_multiplier: 1e9 }), 'cost_multiplier', /number from/);
      await expect(attempt(tx, mk({ weight: -1 }))).rejects.toMatchObject({ code: 'BADCH', column_name: 'weight' });
      await rejects(tx, mk({ priority: 1e12 }), 'priority', /whole number/);
    });
  });

  it('wallets: a negative top-up is refused; a debit is its own call and needs a note', async () => {
    await withTx(async (tx) => {
      const user = await createUser(tx);
      await tx`select admin.wallet_credit(${tx.json({ user_id: user.id, amount_micros: 5_000_000 })})`;
      await rejects(tx, (sp) => sp`select admin.wallet_credit(${sp.json({ user_id: user.id, amount_micros: -1_000_000 })})`, 'amount_micros', /must be positive/);
      await rejects(tx, (sp) => sp`select admin.wallet_debit(${sp.json({ user_id: user.id, amount_micros: 1_000_000 })})`, 'note', /needs a note/);
      const [{ r }] = await tx`select admin.wallet_debit(${tx.json({ user_id: user.id, amount_micros: 1_000_000, note: 'refund paid by bank' })}) as r`;
      expect(Number(r.balance_micros)).toBe(4_000_000);
      const [c] = await tx`select amount_micros, source, note from admin.wallet_credits where user_id = ${user.id} order by id desc limit 1`;
      expect(c).toMatchObject({ source: 'adjustment', note: 'refund paid by bank' });
      expect(Number(c.amount_micros)).toBe(-1_000_000);
    });
  });

  it('settings: SemanticCacheScope and SemanticCacheEmbeddingChannel take known values only', async () => {
    await withTx(async (tx) => {
      await rejects(tx, (sp) => sp`select admin.option_set('SemanticCacheScope', 'bogus')`, 'value', /"user" or "group"/);
      await rejects(tx, (sp) => sp`select admin.option_set('SemanticCacheEmbeddingChannel', 'no-such-channel')`, 'value', /no channel "no-such-channel"/);
      const ch = await createChannel(tx, { base_url: 'https://e.example.com', models: ['emb'] });
      await tx`select admin.option_set('SemanticCacheScope', 'group')`;
      await tx`select admin.option_set('SemanticCacheEmbeddingChannel', ${ch.name})`;
      await tx`select admin.option_set('SemanticCacheEmbeddingChannel', '')`;
    });
  });

  it('prices: an import that is not a price table, a price out of range', async () => {
    await withTx(async (tx) => {
      for (const table of ['[]', '"text"', '{}']) {
        await rejects(tx, (sp) => sp`select admin.prices_import(${table}::jsonb)`, 'models', /Expected \{"format"/);
      }
      await rejects(tx, (sp) => sp`select admin.model_upsert('{"name": "m", "input_price": 1e20}')`, 'input_price', /"input_price" must be a whole number from 0/);
    });
  });

  it('the private-address refusal points panel users to Settings', async () => {
    await withTx(async (tx) => {
      await tx`select admin.option_set('AllowPrivateUpstreams', 'false')`;
      await expect(attempt(tx, (sp) => sp`select admin.channel_create(${sp.json({ name: unique('ch'), base_url: 'http://10.0.0.5', models: ['m'] })})`)).rejects.toMatchObject({
        code: 'BADCH',
        hint: expect.stringContaining('Settings'),
      });
    });
  });
});
