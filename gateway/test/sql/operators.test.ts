// Issue 21, "what operators expect and cannot do yet": the SQL behind the panel's new buttons.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import { attempt, closeDb, createChannel, createKey, createUser, sha256, unique, withTx } from '../support/db';

afterAll(closeDb);

describe('admin.model_price_clear', () => {
  it('takes a price away, which model_upsert with empty fields never could', async () => {
    await withTx(async (tx) => {
      const name = unique('m');
      await tx`select admin.model_upsert(${tx.json({ name, input_price: 100, output_price: 200, per_call_price: 5 })})`;
      // Only the per-call price: the token prices stay.
      await tx`select admin.model_price_clear(${name}, array['per_call_price'])`;
      let [m] = await tx`select * from admin.models where name = ${name}`;
      expect([m.input_price, m.output_price, m.per_call_price].map((v) => (v === null ? null : Number(v)))).toEqual([100, 200, null]);
      // All of them: the model is unpriced again.
      await tx`select admin.model_price_clear(${name})`;
      [m] = await tx`select * from admin.models where name = ${name}`;
      expect([m.input_price, m.output_price, m.cached_input_price, m.cache_write_price, m.per_call_price]).toEqual([null, null, null, null, null]);
    });
  });

  it('names the problem: an unknown model or price field', async () => {
    await withTx(async (tx) => {
      await expect(attempt(tx, (sp) => sp`select admin.model_price_clear('no-such-model')`)).rejects.toMatchObject({
        code: 'BADIN', column_name: 'name', message: expect.stringContaining('No model named "no-such-model"'),
      });
      const name = unique('m');
      await tx`select admin.model_upsert(${tx.json({ name, input_price: 1 })})`;
      await expect(attempt(tx, (sp) => sp`select admin.model_price_clear(${name}, array['input_prise'])`)).rejects.toMatchObject({
        code: 'BADIN', column_name: 'fields', message: expect.stringContaining('"input_prise"'),
      });
    });
  });

  it('is the admin role\'s to call', async () => {
    await withTx(async (tx) => {
      const name = unique('m');
      await tx`select admin.model_upsert(${tx.json({ name, input_price: 1 })})`;
      await tx`set local role elygate_admin`;
      const [{ r }] = await tx`select admin.model_price_clear(${name}) as r`;
      expect(r.input_price).toBeNull();
    });
  });
});

describe('archive', () => {
  async function fixture(tx: TransactionSql) {
    const model = unique('m');
    await tx`select admin.model_upsert(${tx.json({ name: model, input_price: 1, output_price: 1 })})`;
    const user = await createUser(tx);
    await tx`select admin.wallet_credit(${tx.json({ user_id: user.id, amount_micros: 1000000 })})`;
    const key = await createKey(tx, { user_id: user.id });
    const channel = await createChannel(tx, { base_url: 'https://a.example.com', models: [model] });
    return { model, user, key, channel };
  }
  const begin = (tx: TransactionSql, key: string, model: string) =>
    tx`select t.request_id, t.plan from gateway.relay_begin(${randomUUID()}, ${sha256(key)}, ${model}, 'chat/completions', false, '127.0.0.1', 10, 10) t`;

  it('an archived key is refused and keeps its history', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const [t] = await begin(tx, f.key.key, f.model);
      const [{ ok }] = await tx`select admin.key_archive(${f.key.id}) as ok`;
      expect(ok).toBe(true);
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model))).rejects.toMatchObject({
        code: 'KREVK', message: expect.stringContaining('has been archived'),
      });
      const [k] = await tx`select status from admin.api_keys where id = ${f.key.id}`;
      expect(k.status).toBe('archived');
      expect((await tx`select 1 from admin.requests where id = ${t.request_id} and key_id = ${f.key.id}`).length).toBe(1);
      // Once: archiving again says nothing changed.
      expect((await tx`select admin.key_archive(${f.key.id}) as ok`)[0].ok).toBeNull();
    });
  });

  it("an archived user's keys are refused, and they can no longer log in", async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`select private.session_open(${f.user.id}, '127.0.0.1', 'test')`;
      await tx`select admin.user_update(${f.user.id}, '{"status": "archived"}')`;
      // Their panel sessions end (and admin.login_finish admits active users only).
      expect((await tx`select 1 from private.sessions where user_id = ${f.user.id}`).length).toBe(0);
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model))).rejects.toMatchObject({
        code: 'UDSBL', message: expect.stringContaining('is archived'),
      });
      expect((await tx`select status from admin.users where id = ${f.user.id}`)[0].status).toBe('archived');
    });
  });

  it('an archived channel is never routed, not even by the panel\'s channel test', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const other = await createChannel(tx, { base_url: 'https://b.example.com', models: [f.model] });
      await tx`select admin.channel_update(${f.channel.id}, '{"status": "archived"}')`;
      const [plan] = await tx`select * from private.route_plan(${f.model}, 'default')`;
      expect(plan.candidates.map((c: any) => c.channel_id)).toEqual([other.id]);
      expect(JSON.stringify(plan.skipped ?? [])).not.toContain(`"channel_id": ${f.channel.id}`);
      const [pinned] = await tx`select * from private.route_plan(${f.model}, ${`channel-test.${f.channel.id}`})`;
      expect(pinned.candidates).toBeNull();
      // Nor tested: both ways of testing refuse it with a sentence.
      for (const call of [(sp: TransactionSql) => sp`select admin.channel_test(${f.channel.id})`,
                          (sp: TransactionSql) => sp`select admin.channel_test_key(${f.channel.id}, ${f.model})`]) {
        await expect(attempt(tx, call)).rejects.toMatchObject({ code: 'BADCH', message: expect.stringContaining('is archived') });
      }
      const [{ r }] = await tx`select admin.channel_update(${other.id}, '{"status": "archived"}') as r`;
      expect(r.status).toBe('archived');
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model))).rejects.toMatchObject({ code: 'NOMDL' });
    });
  });
});
