// Issue 17, alerts and webhooks, the SQL half: events are written in the transaction of the change
// that caused them, fan out to subscribed endpoints, and deliveries retry with backoff and die
// after WebhookMaxAttempts, all at an injected "now" (no waiting).
import { afterAll, describe, expect, it } from 'vitest';
import type { TransactionSql } from 'postgres';
import { attempt, closeDb, createChannel, createKey, createUser, unique, withTx } from '../support/db';

afterAll(closeDb);

async function endpoint(tx: TransactionSql, kinds: string[] = [], url = 'https://hooks.example.com/elygate') {
  const [{ w }] = await tx`select admin.webhook_create(${tx.json({ name: unique('hook'), url, kinds })}) as w`;
  return w as { id: number; secret: string; secret_prefix: string };
}

const deliveries = (tx: TransactionSql, endpointId: number) =>
  tx`select d.id::int, d.kind, d.status, d.attempts, d.payload from admin.webhook_deliveries d where d.endpoint_id = ${endpointId} order by d.id`;

describe('events', () => {
  it('the breaker taking a channel out raises channel.disabled, in the same transaction; re-enabling raises channel.enabled', async () => {
    await withTx(async (tx) => {
      const hook = await endpoint(tx, ['channel.disabled', 'channel.enabled']);
      const other = await endpoint(tx, ['wallet.low']);
      const ch = await createChannel(tx, { base_url: 'https://api.example.com', models: ['m'] });
      // A change that rolls back leaves no event behind.
      await expect(attempt(tx, async (sp) => {
        await sp`update private.channels set status = 'auto_disabled', status_reason = 'test' where id = ${ch.id}`;
        expect((await deliveries(sp, hook.id)).length).toBe(1);
        await sp`select 1 / 0`;
      })).rejects.toMatchObject({ code: '22012' });
      expect(await deliveries(tx, hook.id)).toEqual([]);
      await tx`update private.channels set status = 'auto_disabled', status_reason = 'circuit breaker: 12 of 12 failed' where id = ${ch.id}`;
      await tx`update private.channels set status = 'enabled', status_reason = 'probe ok' where id = ${ch.id}`;
      // An operator's manual switch is not the breaker's: no event.
      await tx`update private.channels set status = 'manually_disabled' where id = ${ch.id}`;
      const d = await deliveries(tx, hook.id);
      expect(d.map((x) => [x.kind, x.status, x.attempts])).toEqual([['channel.disabled', 'pending', 0], ['channel.enabled', 'pending', 0]]);
      expect(d[0].payload).toMatchObject({ channel_id: Number(ch.id), reason: 'circuit breaker: 12 of 12 failed' });
      expect(await deliveries(tx, other.id)).toEqual([]); // not subscribed
    });
  });

  it('revoking a key raises key.revoked; a failing job raises job.failed', async () => {
    await withTx(async (tx) => {
      const hook = await endpoint(tx);
      const u = await createUser(tx);
      const k = await createKey(tx, { user_id: u.id, name: 'ci' });
      await tx`select admin.key_revoke(${k.id})`;
      await tx`select admin.key_archive(${k.id})`; // already out of use: no second event
      const k2 = await createKey(tx, { user_id: u.id, name: 'old' });
      await tx`select admin.key_archive(${k2.id})`;
      await tx`update private.jobs set command = 'private.no_such_function($now)' where name = 'elygate.rollup'`;
      await tx`select private.job_run('elygate.rollup')`;
      const d = await deliveries(tx, hook.id);
      expect(d.map((x) => x.kind)).toEqual(['key.revoked', 'key.revoked', 'job.failed']);
      expect(d[0].payload).toMatchObject({ key_id: Number(k.id), key_prefix: k.key_prefix, name: 'ci', status: 'revoked' });
      expect(d[1].payload).toMatchObject({ key_id: Number(k2.id), status: 'archived' });
      expect(d[2].payload).toMatchObject({ job: 'elygate.rollup', error: expect.stringContaining('does not exist') });
    });
  });

  it('a job overdue raises job.overdue once, and again only after it succeeded in between', async () => {
    await withTx(async (tx) => {
      const hook = await endpoint(tx, ['job.overdue']);
      await tx`delete from private.job_alerts`;
      await tx`delete from private.job_runs`;
      const t0 = new Date('2031-03-01T00:00:00Z');
      const at = (min: number) => new Date(t0.getTime() + min * 60000);
      await tx`select private.jobs_overdue_check(${t0})`; // first sighting: not overdue yet
      expect(await deliveries(tx, hook.id)).toEqual([]);
      // elygate.reaper runs every minute: overdue after 2 minutes + 1 minute without a success.
      await tx`select private.jobs_overdue_check(${at(4)})`;
      await tx`select private.jobs_overdue_check(${at(5)})`;
      const reaper = async () => (await deliveries(tx, hook.id)).filter((x) => x.payload.job === 'elygate.reaper').length;
      expect(await reaper()).toBe(1);
      await tx`insert into private.job_runs (job, runner, started_at, status) values ('elygate.reaper', 'manual', ${at(6)}, 'succeeded')`;
      await tx`select private.jobs_overdue_check(${at(6)})`; // re-armed
      expect(await reaper()).toBe(1);
      await tx`select private.jobs_overdue_check(${at(20)})`;
      expect(await reaper()).toBe(2);
    });
  });

  it('a wallet below its threshold raises wallet.low once per crossing', async () => {
    await withTx(async (tx) => {
      const hook = await endpoint(tx, ['wallet.low']);
      await tx`select admin.option_set('WalletLowBalanceMicros', '1000000')`;
      const rich = await createUser(tx);
      const poor = await createUser(tx);
      await tx`update private.wallets set balance_micros = 5000000 where user_id = ${rich.id}`;
      await tx`update private.wallets set balance_micros = 200000 where user_id = ${poor.id}`;
      const mine = async () => (await deliveries(tx, hook.id)).filter((x) => [rich.id, poor.id].map(Number).includes(x.payload.user_id));
      await tx`select private.alerts_check()`;
      await tx`select private.alerts_check()`;
      expect((await mine()).map((x) => [x.payload.user_id, x.payload.balance_micros, x.payload.threshold_micros]))
        .toEqual([[Number(poor.id), 200000, 1000000]]);
      // Topped up, then down again: a second crossing, a second event.
      await tx`update private.wallets set balance_micros = 3000000 where user_id = ${poor.id}`;
      await tx`select private.alerts_check()`;
      await tx`update private.wallets set balance_micros = 10 where user_id = ${poor.id}`;
      await tx`select private.alerts_check()`;
      // A user's own threshold overrides the option.
      await tx`select admin.wallet_alert_set(${rich.id}, 6000000)`;
      await tx`select private.alerts_check()`;
      expect((await mine()).map((x) => x.payload.user_id)).toEqual([Number(poor.id), Number(poor.id), Number(rich.id)]);
    });
  });
});

describe('deliveries', () => {
  it('retry with exponential backoff at the injected now, die after WebhookMaxAttempts, and can be resent', async () => {
    await withTx(async (tx) => {
      await tx`select admin.option_set('WebhookMaxAttempts', '3')`;
      await tx`select admin.option_set('WebhookBackoffBaseMs', '1000')`;
      await tx`update private.webhook_deliveries set status = 'dead' where status in ('pending', 'retrying')`; // others' leftovers
      const hook = await endpoint(tx, ['webhook.test']); // (the claim's overdue check raises job.overdue at +1 h)
      const [{ id: eventId }] = await tx`select admin.webhook_test(${hook.id}) as id`;
      const [{ now }] = await tx`select date_trunc('milliseconds', now()) + interval '1 millisecond' as now`; // JS dates are ms
      const t = (ms: number) => new Date(now.getTime() + ms);
      const claim = async (ms: number) => tx`select * from gateway.webhook_claim(10, ${t(ms)})`;
      const fail = (c: Record<string, unknown>, ms: number) =>
        tx`select gateway.webhook_finish(${tx.json([{ id: c.id, attempt: c.attempt, ok: false, http_status: 500, error: 'HTTP 500' }] as never)}, ${t(ms)})`;
      let [c] = await claim(0);
      expect(c).toMatchObject({ attempt: 1, kind: 'webhook.test', allow_private: false });
      expect(JSON.parse(c.body)).toMatchObject({ id: Number(eventId), kind: 'webhook.test', data: { endpoint_id: Number(hook.id) } });
      expect(c.secret.key_id).toMatch(/^[0-9a-f]{16}$/);
      expect(await claim(0)).toEqual([]); // leased
      await fail(c, 0);
      // Still being tried: not resendable (it could be in flight, and would go out twice).
      await expect(attempt(tx, (sp) => sp`select admin.webhook_resend(${c.id})`)).rejects.toThrow(/still being tried \(1 attempts so far\)/);
      // backoff: 1 s, less a random part of up to WebhookBackoffJitterPercent (20 %)
      expect(await claim(799)).toEqual([]);
      const [{ due }] = await tx`select next_attempt_at as due from private.webhook_deliveries where id = ${c.id}`;
      expect(due.getTime() - now.getTime()).toBeGreaterThanOrEqual(800);
      expect(due.getTime() - now.getTime()).toBeLessThanOrEqual(1000);
      [c] = await claim(1000);
      expect(c.attempt).toBe(2);
      await fail(c, 1000);
      expect(await claim(2599)).toEqual([]); // doubled: 2 s, less up to 20 %
      [c] = await claim(3000);
      expect(c.attempt).toBe(3);
      await fail(c, 3000);
      let [d] = await deliveries(tx, hook.id);
      expect(d).toMatchObject({ status: 'dead', attempts: 3 });
      expect(await claim(3_600_000)).toEqual([]);
      await tx`select admin.webhook_resend(${d.id})`;
      [c] = await claim(3_600_000);
      expect(c.attempt).toBe(1);
      await tx`select gateway.webhook_finish(${tx.json([{ id: c.id, attempt: 1, ok: true, http_status: 204 }] as never)}, ${t(3_600_000)})`;
      [d] = await deliveries(tx, hook.id);
      expect(d).toMatchObject({ status: 'delivered', attempts: 1 });
    });
  });

  it('a gateway that dies mid-attempt leaves the delivery to be claimed again after its lease', async () => {
    await withTx(async (tx) => {
      await tx`update private.webhook_deliveries set status = 'dead' where status in ('pending', 'retrying')`;
      const hook = await endpoint(tx);
      await tx`select admin.webhook_test(${hook.id})`;
      const [{ now }] = await tx`select date_trunc('milliseconds', now()) + interval '1 millisecond' as now`; // JS dates are ms
      const [first] = await tx`select * from gateway.webhook_claim(10, ${now})`;
      // WebhookTimeoutMs (10 s) + 30 s later, another gateway takes it over; the first one's late
      // report is ignored.
      const [second] = await tx`select * from gateway.webhook_claim(10, ${new Date(now.getTime() + 40000)})`;
      expect([first.id, first.attempt, second.id, second.attempt]).toEqual([first.id, 1, first.id, 2]);
      const [{ n }] = await tx`select gateway.webhook_finish(${tx.json([{ id: first.id, attempt: 1, ok: true, http_status: 200 }] as never)}) as n`;
      expect(n).toBe(0);
    });
  });
});

describe('endpoints', () => {
  it('private addresses are refused unless AllowPrivateWebhooks; kinds are checked; the secret is sealed and shown once', async () => {
    await withTx(async (tx) => {
      await expect(attempt(tx, (sp) => endpoint(sp, [], 'http://127.0.0.1:9/hook'))).rejects.toMatchObject({
        code: 'BADIN', column_name: 'url', message: expect.stringContaining('private'),
      });
      await expect(attempt(tx, (sp) => endpoint(sp, ['wallet.lowww']))).rejects.toMatchObject({
        code: 'BADIN', column_name: 'kinds', message: expect.stringContaining('Unknown event kind "wallet.lowww"'),
      });
      await tx`select admin.option_set('AllowPrivateWebhooks', 'true')`;
      const hook = await endpoint(tx, [], 'http://127.0.0.1:9/hook');
      expect(hook.secret).toMatch(/^whsec_[0-9a-f]{48}$/);
      expect(hook.secret.startsWith(hook.secret_prefix)).toBe(true);
      const [row] = await tx`select * from admin.webhook_endpoints where id = ${hook.id}`;
      expect(JSON.stringify(row)).not.toContain(hook.secret);
      const [raw] = await tx`select secret_ciphertext from private.webhook_endpoints where id = ${hook.id}`;
      expect(raw.secret_ciphertext.toString('utf8')).not.toContain(hook.secret.slice(6));
    });
  });

  it('are the admin role\'s to manage, and not the gateway\'s', async () => {
    await withTx(async (tx) => {
      const hook = await endpoint(tx);
      await tx`select admin.webhook_update(${hook.id}, ${tx.json({ enabled: false })})`;
      await tx`select count(*) from admin.webhook_deliveries`;
    }, { role: 'elygate_admin' });
    await withTx(async (tx) => {
      await expect(attempt(tx, (sp) => sp`select admin.webhook_test(1)`)).rejects.toMatchObject({ code: '42501' });
    }, { role: 'elygate_gateway' });
  });
});
