// gateway.relay_finish: settles a batch in one call, prices usage in integer micro-USD, and is
// idempotent by request id.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { closeDb, createChannel, createGroup, createKey, createUser, sha256, unique, withTx } from '../../support/db';

afterAll(closeDb);

describe('gateway.relay_finish', () => {
  it('settles outcomes, writes one ledger row per billable request, and ignores replays', async () => {
    await withTx(async (tx) => {
      const group = await createGroup(tx);
      await tx`update private.groups set price_multiplier = 1.5 where name = ${group}`;
      const model = unique('model');
      await tx`select admin.model_upsert(${tx.json({ name: model, input_price: 2500000, output_price: 10000000 })})`;
      const user = await createUser(tx, { group });
      const key = await createKey(tx, { user_id: user.id });
      const ch = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group] });
      await tx`select admin.wallet_credit(${tx.json({ user_id: user.id, amount_micros: 10_000_000 })})`;
      await tx`set local role elygate_gateway`;
      const tickets = [];
      for (let i = 0; i < 3; i++) {
        // created_at as text: a JS Date would drop the microseconds of the partition key.
        const [t] = await tx`select t.request_id, t.created_at::text as created_at from gateway.relay_begin(${randomUUID()}, ${sha256(key.key)}, ${model}, 'chat/completions', false, '127.0.0.1', 10, 100) t`;
        tickets.push(t);
      }
      const outcome = (t: any, status: string, usage: [number, number] | null) => ({
        id: t.request_id,
        created_at: t.created_at,
        status,
        http_status: status === 'ok' ? 200 : 500,
        channel_id: ch.id,
        upstream_model: model,
        prompt_tokens: usage?.[0] ?? null,
        completion_tokens: usage?.[1] ?? null,
        usage_source: usage ? 'upstream' : 'none',
        abort_policy: status === 'aborted' ? 'prompt+delivered' : null,
        attempts: [{ channel_id: ch.id, status: 200, ms: 5 }],
        ttfb_ms: 5,
        latency_ms: 6,
        error_code: status === 'ok' ? null : 'upstream_500',
        error_message: null,
      });
      const batch = [outcome(tickets[0], 'ok', [1000, 200]), outcome(tickets[1], 'aborted', [400, 3]), outcome(tickets[2], 'error', null)];
      const [{ n }] = await tx`select gateway.relay_finish(${tx.json(batch)}) as n`;
      expect(n).toBe(3);
      // A replay (e.g. from a spool after a lost acknowledgement) changes nothing.
      const [{ n: again }] = await tx`select gateway.relay_finish(${tx.json(batch)}) as n`;
      expect(again).toBe(0);

      await tx`reset role`;
      const ledger = await tx`select request_id, amount_micros::int, usage_source, abort_policy from private.ledger where user_id = ${user.id} order by amount_micros desc`;
      // (1000 * 2.5 + 200 * 10) * 1.5 = 6750 micro-USD; (400 * 2.5 + 3 * 10) * 1.5 = 1545.
      expect(ledger).toEqual([
        { request_id: tickets[0].request_id, amount_micros: 6750, usage_source: 'upstream', abort_policy: null },
        { request_id: tickets[1].request_id, amount_micros: 1545, usage_source: 'upstream', abort_policy: 'prompt+delivered' },
      ]);
      const rows = await tx`select id, status, cost_micros::int, total_tokens from private.requests where user_id = ${user.id} order by created_at`;
      expect(rows.map((r) => r.status).sort()).toEqual(['aborted', 'error', 'ok']);
      expect(rows.find((r) => r.status === 'error')!.cost_micros).toBe(0);
    });
  });

  it('is not callable by the admin role or by public', async () => {
    await withTx(
      async (tx) => {
        await expect(tx`select gateway.relay_finish('[]')`).rejects.toMatchObject({ code: '42501' });
      },
      { role: 'elygate_admin' },
    );
  });
});
