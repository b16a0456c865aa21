// private.partitions_maintain with an injected clock: partitions ahead exist, old ones are dropped,
// rows that landed in the default partition move into their day.
import { afterAll, describe, expect, it } from 'vitest';
import { closeDb, withTx } from '../support/db';

afterAll(closeDb);

const parts = async (tx: any) =>
  (
    await tx`select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
              where i.inhparent = 'private.requests'::regclass and c.relname ~ '^requests_[0-9]{8}$' order by 1`
  ).map((r: any) => r.relname as string);

describe('private.partitions_maintain', () => {
  it('walks 40 days: creates ahead, drops past retention, empties the default partition', async () => {
    await withTx(async (tx) => {
      await tx`select admin.option_set('LogRetentionDays', '7')`;
      await tx`select admin.option_set('PartitionDaysAhead', '3')`;
      const start = new Date('2031-03-01T12:00:00Z');
      // A row that arrived before its partition existed sits in the default partition.
      await tx`insert into private.requests (id, created_at, endpoint, model, status) values (gen_random_uuid(), '2031-03-05T10:00:00Z', 'chat/completions', 'm', 'ok')`;
      for (let d = 0; d < 40; d++) {
        const now = new Date(start.getTime() + d * 86400000);
        await tx`select private.partitions_maintain(${now.toISOString()})`;
        if (d === 5) {
          const [{ n }] = await tx`select count(*)::int as n from private.requests_20310305`;
          expect(n).toBe(1);
        }
      }
      const names = await parts(tx);
      const end = new Date(start.getTime() + 39 * 86400000);
      const day = (offset: number) => new Date(end.getTime() + offset * 86400000).toISOString().slice(0, 10).replace(/-/g, '');
      for (let a = 0; a <= 3; a++) expect(names).toContain(`requests_${day(a)}`);
      expect(names.filter((n: string) => n >= 'requests_20310301' && n < `requests_${day(-7)}`)).toEqual([]);
      const [{ n }] = await tx`select count(*)::int as n from private.requests_default`;
      expect(n).toBe(0);
    });
  });

  it('is idempotent', async () => {
    await withTx(async (tx) => {
      const a = await tx`select private.partitions_maintain('2031-06-01T00:00:00Z') as r`;
      const b = await tx`select private.partitions_maintain('2031-06-01T00:00:00Z') as r`;
      expect(a[0].r.created.length).toBeGreaterThan(0);
      expect(b[0].r).toEqual({ created: [], dropped: [] });
    });
  });
});
