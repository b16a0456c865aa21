// gateway.relay_begin, called as the gateway role: every refusal's SQLSTATE and message, the
// route plan's order, and the weighted random choice inside a priority tier.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import { attempt, closeDb, createChannel, createGroup, createKey, createUser, sha256, unique, withTx } from '../../support/db';

afterAll(closeDb);

async function begin(tx: TransactionSql, key: string | null, model: string, ip: string | null = '127.0.0.1') {
  const [t] = await tx`
    select * from gateway.relay_begin(${randomUUID()}, ${key === null ? null : sha256(key)}, ${model},
                                      'chat/completions', false, ${ip}, 10, 100)`;
  return t;
}

/** A user in a fresh group with one key and one channel serving `model`. */
async function fixture(tx: TransactionSql, keyFields: Record<string, unknown> = {}) {
  const group = await createGroup(tx);
  const model = unique('model');
  const user = await createUser(tx, { group });
  const key = await createKey(tx, { user_id: user.id, ...keyFields });
  const channel = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [group] });
  return { group, model, user, key, channel };
}

const asGateway = <T>(fn: (tx: TransactionSql) => Promise<T>) => withTx(fn);

describe('gateway.relay_begin', () => {
  it('admits a valid key and returns a ticket with the plan, recording the admission', async () => {
    await asGateway(async (tx) => {
      const f = await fixture(tx);
      await tx`set local role elygate_gateway`;
      const t = await begin(tx, f.key.key, f.model);
      expect(t.plan).toEqual([{ channel_id: Number(f.channel.id), version: expect.any(Number), model: f.model, key_index: 0, key_ordinal: 1, multiplier: "1.000000" }]);
      expect(Number(t.user_id)).toBe(Number(f.user.id));
      await tx`reset role`;
      const [row] = await tx`select model, endpoint, reserved_micros::int from private.admissions where id = ${t.request_id}`;
      expect(row).toEqual({ model: f.model, endpoint: 'chat/completions', reserved_micros: Number(t.reserved_micros) });
      // The request log only holds finished requests; admin.requests shows this one as pending.
      expect(await tx`select 1 from private.requests where id = ${t.request_id}`).toHaveLength(0);
      const [shown] = await tx`select status, model from admin.requests where id = ${t.request_id}`;
      expect(shown).toEqual({ status: 'pending', model: f.model });
    });
  });

  it('refuses a missing key (NOKEY)', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, null, f.model))).rejects.toMatchObject({
        code: 'NOKEY',
        message: expect.stringContaining("didn't provide an API key"),
      });
    });
  });

  it('refuses an unknown key (NOKEY)', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, 'sk-not-a-real-key', f.model))).rejects.toMatchObject({
        code: 'NOKEY',
        message: 'Incorrect API key provided.',
      });
    });
  });

  it('refuses a revoked key (KREVK)', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`select admin.key_revoke(${f.key.id})`;
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model))).rejects.toMatchObject({
        code: 'KREVK',
        message: expect.stringContaining('has been revoked'),
      });
    });
  });

  it('refuses an expired key (KEXPD)', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx, { expires_at: '2020-01-01T00:00:00Z' });
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model))).rejects.toMatchObject({
        code: 'KEXPD',
        message: expect.stringContaining('expired at 2020-01-01T00:00:00Z'),
      });
    });
  });

  it('refuses a key whose owner is disabled (UDSBL)', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`update private.users set status = 'disabled' where id = ${f.user.id}`;
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model))).rejects.toMatchObject({ code: 'UDSBL' });
    });
  });

  it('enforces the IP/CIDR allowlist (IPDNY)', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx, { allowed_ips: ['10.1.0.0/16', '192.168.7.7'] });
      await tx`set local role elygate_gateway`;
      expect((await begin(tx, f.key.key, f.model, '10.1.2.3')).request_id).toBeTruthy();
      expect((await begin(tx, f.key.key, f.model, '192.168.7.7')).request_id).toBeTruthy();
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model, '10.2.0.1'))).rejects.toMatchObject({
        code: 'IPDNY',
        message: 'This API key may not be used from 10.2.0.1.',
      });
    });
  });

  it('enforces the model allowlist (MDENY) before looking for channels', async () => {
    await withTx(async (tx) => {
      await tx`select admin.model_upsert('{"name": "some-other-model"}')`; // a key may allow known models only
      const f = await fixture(tx, { allowed_models: ['some-other-model'] });
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model))).rejects.toMatchObject({
        code: 'MDENY',
        column_name: 'model',
        message: `This API key is not allowed to use the model \`${f.model}\`.`,
      });
    });
  });

  it('answers NOMDL for a model no channel of the group serves', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, 'no-such-model'))).rejects.toMatchObject({
        code: 'NOMDL',
        message: 'The model `no-such-model` does not exist or you do not have access to it.',
      });
    });
  });

  it('does not route to channels of another group', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const other = await createGroup(tx);
      const model = unique('model');
      await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [model], groups: [other] });
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, model))).rejects.toMatchObject({ code: 'NOMDL' });
    });
  });

  it('answers NOCHN when every channel for the model is disabled, and records why in the plan', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      await tx`select admin.channel_update(${f.channel.id}, '{"status":"manually_disabled","status_reason":"maintenance"}')`;
      await tx`set local role elygate_gateway`;
      await expect(attempt(tx, (sp) => begin(sp, f.key.key, f.model))).rejects.toMatchObject({
        code: 'NOCHN',
        message: expect.stringContaining('No channel is available'),
      });
    });
  });

  it('maps the model through model_mapping and orders the plan by priority tier', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      const high = await createChannel(tx, {
        base_url: 'http://127.0.0.1:9',
        models: [f.model],
        groups: [f.group],
        priority: 10,
        model_mapping: { [f.model]: 'upstream-name' },
      });
      const disabled = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], priority: 20, status: 'manually_disabled' });
      await tx`set local role elygate_gateway`;
      const t = await begin(tx, f.key.key, f.model);
      expect(t.plan.map((p: any) => [p.channel_id, p.model])).toEqual([
        [Number(high.id), 'upstream-name'],
        [Number(f.channel.id), f.model],
      ]);
      await tx`reset role`;
      const [row] = await tx`select route_plan from private.admissions where id = ${t.request_id}`;
      expect(row.route_plan.skipped).toEqual([{ channel_id: Number(disabled.id), reason: 'manually_disabled' }]);
    });
  });

  it('honours weights inside a tier within ±5% over 10,000 picks', async () => {
    await withTx(async (tx) => {
      const f = await fixture(tx);
      // Two channels weighted 10:20. (A third, lighter one would make a 5% relative band on its
      // small share a coin toss at 10,000 samples; at 1/3 vs 2/3 the band is 3.5 standard errors.)
      await tx`update private.channels set weight = 10 where id = ${f.channel.id}`;
      const b = await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], weight: 20 });
      // A lower tier never comes first while the upper tier has a channel.
      await createChannel(tx, { base_url: 'http://127.0.0.1:9', models: [f.model], groups: [f.group], weight: 100, priority: -1 });
      // 10,000 picks by the function relay_begin takes its plan from, counting who came first.
      // (The call must depend on i, or PostgreSQL evaluates the lateral function once.)
      const rows = await tx`
        select (t.candidates -> 0 ->> 'channel_id')::bigint as first, count(*)::int as n
          from generate_series(1, 10000) i,
               lateral private.route_plan(${f.model} || left(i::text, 0), ${f.group}) t
         group by 1`;
      const share = new Map(rows.map((r) => [Number(r.first), r.n / 10000]));
      const expected = new Map([
        [Number(f.channel.id), 1 / 3],
        [Number(b.id), 2 / 3],
      ]);
      expect(share.size).toBe(2);
      for (const [id, want] of expected) {
        const got = share.get(id) ?? 0;
        console.log(`channel weight share: expected ${want.toFixed(2)}, got ${got.toFixed(4)}`);
        expect(Math.abs(got - want) / want).toBeLessThan(0.05);
      }
    });
  });
});
