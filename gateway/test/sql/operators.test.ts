// Issue 21, "what operators expect and cannot do yet": the SQL behind the panel's new buttons.
import { afterAll, describe, expect, it } from 'vitest';
import { attempt, closeDb, unique, withTx } from '../support/db';

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
