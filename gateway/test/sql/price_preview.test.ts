// Issue 17, pricing dry-run: admin.price_preview prices a period's ledger under a new price table
// with the one cost function, old beside new, and changes nothing.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import { attempt, closeDb, createGroup, createUser, unique, withTx } from '../support/db';

afterAll(closeDb);

async function ledgerRow(tx: TransactionSql, r: Record<string, unknown>) {
  await tx`insert into private.ledger ${tx({
    request_id: randomUUID(), created_at: '2031-06-10T12:00:00Z', usage_source: 'upstream', group_multiplier: 1, channel_multiplier: 1,
    cached_tokens: 0, cache_write_tokens: 0, ...r,
  } as never)}`;
}

describe('admin.price_preview', () => {
  it('prices the period under the new table, per user, model and group, and rolls the table back', async () => {
    await withTx(async (tx) => {
      const model = unique('m');
      const other = unique('m');
      const grp = await createGroup(tx);
      await tx`select admin.model_upsert(${tx.json({ name: model, input_price: 1_000_000, output_price: 2_000_000 })})`;
      await tx`select admin.model_upsert(${tx.json({ name: other, per_call_price: 1000 })})`;
      const a = await createUser(tx, { group: grp });
      const b = await createUser(tx);
      const card = { input_price: 1_000_000, output_price: 2_000_000 };
      // a: 1000 in + 500 out = 1000 + 1000 = 2000 µ$; with 200 cached and a 1.5 channel multiplier
      // (cached at the input price: no cached price) = 3000 µ$.
      await ledgerRow(tx, { user_id: a.id, model, group_name: grp, prompt_tokens: 1000, completion_tokens: 500, amount_micros: 2000, ...card });
      await ledgerRow(tx, { user_id: a.id, model, group_name: grp, prompt_tokens: 1000, completion_tokens: 500, cached_tokens: 200,
                            channel_multiplier: 1.5, amount_micros: 3000, ...card });
      await ledgerRow(tx, { user_id: b.id, model: other, prompt_tokens: 10, completion_tokens: 10, per_call_price: 1000, amount_micros: 1000 });
      // Outside the period: left out.
      await ledgerRow(tx, { user_id: b.id, model, created_at: '2031-06-12T00:00:00Z', prompt_tokens: 1, completion_tokens: 1, amount_micros: 3, ...card });
      const prices = { models: [{ name: model, input_price: 2_000_000, cached_input_price: 500_000 }], groups: [{ name: grp, price_multiplier: 2 }] };
      const rows = await tx`select * from admin.price_preview(${tx.json(prices)}, '2031-06-10', '2031-06-11')`;
      const pick = (dimension: string, f: (r: any) => boolean = () => true) =>
        rows.filter((r) => r.dimension === dimension && f(r)).map((r) => [Number(r.requests), Number(r.old_micros), Number(r.new_micros), Number(r.diff_micros)]);
      // Row 1 new: (1000 × 2 + 500 × 2) × group 2 = 6000. Row 2 new: (800 × 2 + 200 × 0.5 + 500 × 2) × 2 × 1.5 = 8100.
      // The new rates, through the one cost function:
      const [{ n1, n2 }] = await tx`select private.cost_micros(1000, 500, 0, 0, 2000000, 2000000, 500000, null, null, 2, 1) as n1,
                                           private.cost_micros(1000, 500, 200, 0, 2000000, 2000000, 500000, null, null, 2, 1.5) as n2`;
      expect([Number(n1), Number(n2)]).toEqual([6000, 8100]);
      expect(pick('model', (r) => r.model === model)).toEqual([[2, 5000, 14100, 9100]]);
      expect(pick('model', (r) => r.model === other)).toEqual([[1, 1000, 1000, 0]]); // untouched: its current price
      expect(pick('group', (r) => r.group_name === grp)).toEqual([[2, 5000, 14100, 9100]]);
      expect(pick('user', (r) => Number(r.user_id) === Number(b.id))).toEqual([[1, 1000, 1000, 0]]);
      expect(rows.find((r) => r.dimension === 'detail' && Number(r.user_id) === Number(a.id))).toMatchObject({ username: a.username, group_name: grp, model });
      // Nothing changed.
      const [m] = await tx`select input_price, cached_input_price from private.models where name = ${model}`;
      expect([Number(m.input_price), m.cached_input_price]).toEqual([1_000_000, null]);
      const [g] = await tx`select price_multiplier from private.groups where name = ${grp}`;
      expect(Number(g.price_multiplier)).toBe(1);
    });
  });

  it('refuses what prices_import refuses, an unknown group and an empty period', async () => {
    await withTx(async (tx) => {
      await expect(attempt(tx, (sp) => sp`select * from admin.price_preview(${sp.json({ models: [{ name: 'x', input_price: -1 }] })}, '2031-01-01', '2031-02-01')`))
        .rejects.toMatchObject({ code: 'BADIN', column_name: 'input_price' });
      await expect(attempt(tx, (sp) => sp`select * from admin.price_preview(${sp.json({ models: [], groups: [{ name: 'no-such-group', price_multiplier: 2 }] })}, '2031-01-01', '2031-02-01')`))
        .rejects.toMatchObject({ code: 'BADIN', column_name: 'groups', message: 'No group named "no-such-group".' });
      await expect(attempt(tx, (sp) => sp`select * from admin.price_preview(${sp.json({ models: [] })}, '2031-02-01', '2031-01-01')`))
        .rejects.toMatchObject({ code: 'BADIN', message: expect.stringContaining('p_since before p_until') });
    });
  });
});
