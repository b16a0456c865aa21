// The audit log (sql/67_audit.sql): every kind of admin mutation lands in admin.audit_log with
// who (the panel user of the transaction's session, else the database role), what (the function
// and the row), before and after; and elygate_admin can read it but never change it.
import { afterAll, describe, expect, it } from 'vitest';
import type { TransactionSql } from 'postgres';
import { attempt, closeDb, unique, withTx } from '../support/db';

afterAll(closeDb);

const HASH = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g';

/** An admin with a panel session; the transaction then carries it as the admin server's run() does. */
async function asPanelAdmin(tx: TransactionSql): Promise<string> {
  const name = unique('ops');
  const [{ u }] = await tx`select admin.user_create(${tx.json({ username: name, role: 'admin' })}) as u`;
  await tx`select admin.user_password_set(${u.id}, ${HASH}, false)`;
  const [{ r }] = await tx`select admin.login_finish(${name}, '10.9.9.9', true, 'test') as r`;
  await tx`select set_config('elygate.session', ${r.token}, true)`;
  return name;
}

async function entries(tx: TransactionSql, since: number, target?: string) {
  return tx`select actor, by_panel_user, action, target, before, after from admin.audit_log
             where id > ${since} and (${target ?? null}::text is null or target = ${target ?? null}) order by id`;
}
const lastId = async (tx: TransactionSql) => Number((await tx`select coalesce(max(id), 0) as m from admin.audit_log`)[0].m);

describe('admin.audit_log', () => {
  it('records channel, key, user, wallet credit, option and price changes with who, what, before and after', async () => {
    await withTx(async (tx) => {
      const who = await asPanelAdmin(tx);
      const from = await lastId(tx);
      const m = unique('m');
      // Price
      await tx`select admin.model_upsert(${tx.json({ name: m, input_price: 100, output_price: 200 })})`;
      await tx`select admin.model_upsert(${tx.json({ name: m, input_price: 150 })})`;
      const price = await entries(tx, from, `models:${m}`);
      expect(price.map((e) => [e.action, e.before?.input_price ?? null, e.after.input_price])).toEqual([
        ['admin.model_upsert', null, 100],
        ['admin.model_upsert', 100, 150],
      ]);
      // Channel (its sealed key appears as a digest, never as the key)
      const [{ c }] = await tx`select admin.channel_create(${tx.json({ name: unique('ch'), base_url: 'https://api.example.com', api_key: 'sk-audit-secret', models: [m] })}) as c`;
      await tx`select admin.channel_update(${c.id}, ${tx.json({ priority: 7 })})`;
      const ch = await entries(tx, from, `channels:${c.id}`);
      expect(ch.map((e) => e.action)).toEqual(['admin.channel_create', 'admin.channel_update']);
      expect(ch[1].before.priority).not.toBe(7);
      expect(ch[1].after.priority).toBe(7);
      const all = JSON.stringify(await entries(tx, from));
      expect(all).not.toContain('sk-audit-secret');
      const keys = await tx`select after from admin.audit_log where id > ${from} and target_kind = 'channel_keys'`;
      expect(keys[0].after.ciphertext).toMatch(/^sha256:[0-9a-f]{12}$/);
      // User
      const [{ u }] = await tx`select admin.user_create(${tx.json({ username: unique('carol') })}) as u`;
      await tx`select admin.user_update(${u.id}, '{"status": "disabled"}')`;
      const us = await entries(tx, from, `users:${u.id}`);
      expect(us.map((e) => [e.action, e.before?.status ?? null, e.after.status])).toEqual([
        ['admin.user_create', null, 'active'],
        ['admin.user_update', 'active', 'disabled'],
      ]);
      await tx`select admin.user_update(${u.id}, '{"status": "active"}')`;
      // Key
      const [{ k }] = await tx`select admin.key_create(${tx.json({ user_id: u.id, name: 'ci', rpm_limit: 10 })}) as k`;
      await tx`select admin.key_update(${k.id}, '{"rpm_limit": 20}')`;
      await tx`select admin.key_revoke(${k.id})`;
      const ks = await entries(tx, from, `api_keys:${k.id}`);
      expect(ks.map((e) => [e.action, e.before?.rpm_limit ?? null, e.after.rpm_limit, e.after.status])).toEqual([
        ['admin.key_create', null, 10, 'active'],
        ['admin.key_update', 10, 20, 'active'],
        ['admin.key_revoke', 20, 20, 'revoked'],
      ]);
      expect(ks[0].after.key_hash).toMatch(/^sha256:/);
      // Wallet credit: the balance before and after
      await tx`select admin.wallet_credit(${tx.json({ user_id: u.id, amount_micros: 5000000, note: 'invoice 42' })})`;
      const [w] = await entries(tx, from, `wallets:${u.id}`);
      expect(w.action).toBe('admin.wallet_credit');
      expect(w.after).toMatchObject({ balance_micros: Number(w.before.balance_micros) + 5000000, amount_micros: 5000000, note: 'invoice 42' });
      // Option
      const [{ was }] = await tx`select value as was from private.options where key = 'LoginWindowMinutes'`;
      await tx`select admin.option_set('LoginWindowMinutes', '20')`;
      const [o] = await entries(tx, from, 'options:LoginWindowMinutes');
      expect([o.action, o.before.value, o.after.value]).toEqual(['admin.option_set', was, '20']);
      // Who: the panel user, for every one of them.
      const actors = await tx`select distinct actor, by_panel_user from admin.audit_log where id > ${from}`;
      expect(actors.map((a) => ({ ...a }))).toEqual([{ actor: who, by_panel_user: true }]);
    });
  });

  it('without a panel session, who is the database role; a statement typed in psql is action SQL', async () => {
    await withTx(async (tx) => {
      const from = await lastId(tx);
      const [{ role }] = await tx`select session_user::text as role`;
      await tx`select admin.option_set('LoginWindowMinutes', '21')`;
      await tx`update private.options set value = '22' where key = 'LoginWindowMinutes'`;
      const es = await entries(tx, from, 'options:LoginWindowMinutes');
      expect(es.map((e) => [e.actor, e.by_panel_user, e.action, e.after.value])).toEqual([
        [role, false, 'admin.option_set', '21'],
        [role, false, 'SQL', '22'],
      ]);
    });
  });

  it('a revoked session is logged with whose it was', async () => {
    await withTx(async (tx) => {
      const who = await asPanelAdmin(tx);
      const [s] = await tx`select session_id, is_current from admin.sessions where username = ${who}`;
      expect(s.is_current).toBe(true);
      const from = await lastId(tx);
      expect((await tx`select admin.session_revoke(${s.session_id}) as r`)[0].r).toBe(true);
      expect((await tx`select admin.session_revoke(${s.session_id}) as r`)[0].r).toBe(false);
      const [e] = await entries(tx, from);
      expect(e).toMatchObject({ action: 'admin.session_revoke', before: { username: who, ip: '10.9.9.9' }, after: null });
      expect(await tx`select 1 from admin.sessions where session_id = ${s.session_id}`).toHaveLength(0);
    });
  });

  it('elygate_admin reads it and can neither insert, update, delete nor truncate it', async () => {
    await withTx(
      async (tx) => {
        await tx`select admin.option_set('LoginWindowMinutes', '23')`;
        const [{ n }] = await tx`select count(*)::int as n from admin.audit_log`;
        expect(n).toBeGreaterThan(0);
        for (const stmt of [
          `insert into admin.audit_log (actor, action, target) values ('x', 'x', 'x')`,
          `update admin.audit_log set actor = 'someone else'`,
          `delete from admin.audit_log`,
          `insert into private.audit_log (actor, action, target) values ('x', 'x', 'x')`,
          `update private.audit_log set actor = 'someone else'`,
          `delete from private.audit_log`,
          `truncate private.audit_log`,
          `select private.audit('x', null, null)`,
        ]) {
          await expect(attempt(tx, (sp) => sp.unsafe(stmt)), stmt).rejects.toMatchObject({ code: '42501' });
        }
      },
      { role: 'elygate_admin' },
    );
  });
});
