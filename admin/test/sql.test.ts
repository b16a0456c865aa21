// The panel's SQL: logins, throttling, the first-admin rules, sessions, TOTP, and above all that a
// regular user's session reaches nothing in schema admin and only their own rows in schema me.
import { afterAll, describe, expect, it } from 'vitest';
import { attempt, closeDb, createKey, createUser, db, withTx } from '../../gateway/test/support/db';
import type { TransactionSql } from 'postgres';

afterAll(closeDb);

// A syntactically valid argon2id PHC string; SQL never verifies passwords, it only stores them.
const HASH = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g';

async function loginAs(tx: TransactionSql, username: string, ip = '10.0.0.1', ok = true, forwarded = false) {
  const [{ r }] = await tx`select admin.login_finish(${username}, ${ip}::inet, ${ok}, 'test', ${forwarded}) as r`;
  return r as { status: string; token?: string; stage?: string; must_change?: boolean };
}

async function userWithPassword(tx: TransactionSql, fields: Record<string, unknown> = {}, mustChange = false) {
  const u = await createUser(tx, fields);
  await tx`select admin.user_password_set(${u.id}, ${HASH}, ${mustChange})`;
  return u;
}

/** Runs fn as the panel runs a regular user's page: session token set, role elygate_user. */
async function asUser<T>(tx: TransactionSql, token: string, fn: (sp: TransactionSql) => Promise<T>) {
  return attempt(tx, async (sp) => {
    await sp`select set_config('elygate.session', ${token}, true)`;
    await sp`select set_config('role', 'elygate_user', true)`;
    const out = await fn(sp);
    // Settings are per transaction, not per savepoint: switch back for the rest of the test.
    await sp`select set_config('role', 'none', true), set_config('elygate.session', '', true)`;
    return out;
  });
}

describe('a regular user\'s session', () => {
  it('gets 42501 for every admin view and every admin function', async () => {
    await withTx(async (tx) => {
      const u = await userWithPassword(tx);
      const { token } = await loginAs(tx, u.username);
      const views = await tx`select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'admin' and c.relkind in ('v', 'm', 'r')`;
      const fns = await tx`
        select p.oid::regprocedure::text as sig, p.proname, p.pronargs from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'admin'`;
      expect(views.length).toBeGreaterThan(15);
      expect(fns.length).toBeGreaterThan(20);
      for (const v of views) {
        await expect(asUser(tx, token!, (sp) => sp`select * from ${sp('admin')}.${sp(v.relname)} limit 1`), v.relname).rejects.toMatchObject({ code: '42501' });
      }
      for (const f of fns) {
        const args = Array.from({ length: f.pronargs }, () => 'null').join(', ');
        await expect(asUser(tx, token!, (sp) => sp.unsafe(`select admin.${f.proname}(${args})`)), f.sig).rejects.toMatchObject({ code: '42501' });
      }
    });
  });

  it('sees only its own rows in schema me, and cannot revoke another user\'s key', async () => {
    await withTx(async (tx) => {
      const alice = await userWithPassword(tx);
      const bob = await userWithPassword(tx);
      const aliceKey = await createKey(tx, { user_id: alice.id, name: 'a' });
      const bobKey = await createKey(tx, { user_id: bob.id, name: 'b' });
      const { token } = await loginAs(tx, alice.username);
      const rows = await asUser(tx, token!, (sp) => sp`select id from me.api_keys`);
      expect(rows.map((r) => Number(r.id))).toEqual([aliceKey.id]);
      // Budgets: those on her key, on her and on her group; never another user's.
      const [{ g }] = await tx`select group_name as g from admin.users where id = ${alice.id}`;
      const budget = async (args: Record<string, unknown>) =>
        Number((await tx`select (admin.budget_set(${tx.json({ period: 'day', amount_micros: 1000000, ...args } as never)}) ->> 'id') as id`)[0].id);
      const mine = [await budget({ key_id: aliceKey.id }), await budget({ user_id: alice.id, period: 'month' }), await budget({ group: g, period: 'week' })];
      await budget({ key_id: bobKey.id });
      await budget({ user_id: bob.id });
      const budgets = await asUser(tx, token!, (sp) => sp`select id, scope, key_prefix, remaining_micros from me.budgets order by id`);
      expect(budgets.map((b) => Number(b.id))).toEqual(mine);
      expect(budgets.map((b) => b.scope)).toEqual(['key', 'user', 'group']);
      expect(Number(budgets[0].remaining_micros)).toBe(1000000);
      const [profile] = await asUser(tx, token!, (sp) => sp`select username from me.profile`);
      expect(profile.username).toBe(alice.username);
      const [{ ok }] = await asUser(tx, token!, (sp) => sp`select me.key_revoke(${bobKey.id}) as ok`);
      expect(ok).toBe(false);
      const [{ k }] = await asUser(tx, token!, (sp) => sp`select me.key_create(${sp.json({ name: 'mine' })}) as k`);
      const [owner] = await tx`select user_id from admin.api_keys where id = ${k.id}`;
      expect(Number(owner.user_id)).toBe(alice.id);
      // Trying to create a key for someone else is an unknown field, not a silent override.
      await expect(asUser(tx, token!, (sp) => sp`select me.key_create(${sp.json({ user_id: bob.id })})`)).rejects.toMatchObject({ code: 'BADIN' });
    });
  });

  it('without a valid session, schema me shows nothing and refuses changes (NOSES)', async () => {
    await withTx(async (tx) => {
      const u = await userWithPassword(tx);
      await createKey(tx, { user_id: u.id });
      for (const token of ['', 'not-a-token']) {
        expect(await asUser(tx, token, (sp) => sp`select * from me.api_keys`)).toHaveLength(0);
        expect(await asUser(tx, token, (sp) => sp`select * from me.profile`)).toHaveLength(0);
        await expect(asUser(tx, token, (sp) => sp`select me.key_create('{}')`)).rejects.toMatchObject({ code: 'NOSES' });
      }
    });
  });

  it('owing a password change has no data access until it is changed', async () => {
    await withTx(async (tx) => {
      const u = await userWithPassword(tx, {}, true);
      const r = await loginAs(tx, u.username);
      expect(r).toMatchObject({ status: 'ok', must_change: true });
      expect(await asUser(tx, r.token!, (sp) => sp`select * from me.profile`)).toHaveLength(0);
      await tx`select admin.session_password_set(${r.token!}, ${HASH})`;
      expect(await asUser(tx, r.token!, (sp) => sp`select * from me.profile`)).toHaveLength(1);
    });
  });
});

describe('logins', () => {
  it('throttles a username at the address that failed (LoginMaxFailures), even with the right password, and nowhere else', async () => {
    await withTx(async (tx) => {
      await tx`delete from private.login_attempts`;
      const u = await userWithPassword(tx);
      for (let i = 0; i < 5; i++) expect((await loginAs(tx, u.username, '10.1.1.1', false)).status).toBe('invalid');
      expect((await loginAs(tx, u.username, '10.1.1.1', true)).status).toBe('throttled');
      expect((await tx`select admin.login_begin(${u.username}, '10.1.1.1') as b`)[0].b.status).toBe('throttled');
      // The attacker's failures do not lock the real user out: from another address they get in.
      expect((await tx`select admin.login_begin(${u.username}, '10.1.1.3') as b`)[0].b.status).toBe('ok');
      expect((await loginAs(tx, u.username, '10.1.1.2', true)).status).toBe('ok');
      const [{ n }] = await tx`select count(*)::int as n from admin.login_attempts where username = ${u.username}`;
      expect(n).toBe(7); // every attempt is recorded, refused ones too
    });
  });

  it('a distributed attack trips the global ceiling (LoginMaxFailuresGlobal); one address hammering does not', async () => {
    await withTx(async (tx) => {
      await tx`delete from private.login_attempts`;
      await tx`select admin.option_set('LoginMaxFailuresGlobal', '10'), admin.option_set('LoginMaxFailuresPerIp', '3')`;
      const u = await userWithPassword(tx);
      // One address guessing 20 times: throttled after 3, and its throttled tries count nowhere else.
      for (let i = 0; i < 20; i++) await loginAs(tx, `guess${i}`, '10.5.0.1', false);
      expect((await loginAs(tx, u.username, '10.5.0.2', true)).status).toBe('ok');
      // Many addresses, each failing once on the user: 3 + 7 failures reach the ceiling of 10.
      for (let i = 0; i < 7; i++) expect((await loginAs(tx, u.username, `10.6.0.${i + 1}`, false)).status).toBe('invalid');
      expect((await loginAs(tx, u.username, '10.7.0.1', true)).status).toBe('throttled');
      expect((await tx`select admin.login_begin('someone-else', '10.7.0.2') as b`)[0].b.status).toBe('throttled');
    });
  });

  it('throttles an address across usernames (LoginMaxFailuresPerIp)', async () => {
    await withTx(async (tx) => {
      await tx`select admin.option_set('LoginMaxFailuresPerIp', '3')`;
      for (let i = 0; i < 3; i++) await loginAs(tx, `nobody${i}`, '10.2.2.2', false);
      const u = await userWithPassword(tx);
      expect((await loginAs(tx, u.username, '10.2.2.2', true)).status).toBe('throttled');
      expect((await loginAs(tx, u.username, '10.2.2.3', true)).status).toBe('ok');
    });
  });

  it('gives the login_begin hash of active users only', async () => {
    await withTx(async (tx) => {
      const u = await userWithPassword(tx);
      expect((await tx`select admin.login_begin(${u.username}, '10.3.3.3') as b`)[0].b).toEqual({ status: 'ok', password_hash: HASH });
      await tx`select admin.user_update(${u.id}, '{"status": "disabled"}')`;
      expect((await tx`select admin.login_begin(${u.username}, '10.3.3.3') as b`)[0].b).toEqual({ status: 'ok', password_hash: null });
      expect((await loginAs(tx, u.username)).status).toBe('invalid');
    });
  });

  it('the default admin/admin123 works from loopback only, once, and forces a change', async () => {
    await withTx(async (tx) => {
      await tx`delete from private.credentials`; // a fresh install, as far as this test sees
      await tx`delete from private.login_attempts`;
      await tx`update private.users set role = 'user' where role = 'admin'`;
      expect((await tx`select admin.bootstrap(${HASH}, true) as b`)[0].b).toBe(true);
      expect((await tx`select admin.bootstrap_status() as s`)[0].s).toEqual({ admins: 0, default_pending: true });
      expect((await loginAs(tx, 'admin', '203.0.113.9')).status).toBe('loopback_only');
      // Through a reverse proxy on this host the address is loopback, but the request was forwarded.
      expect((await loginAs(tx, 'admin', '127.0.0.1', true, true)).status).toBe('loopback_only');
      const first = await loginAs(tx, 'admin', '127.0.0.1');
      expect(first).toMatchObject({ status: 'ok', must_change: true });
      expect((await loginAs(tx, 'admin', '::1')).status).toBe('default_used');
      await tx`select admin.session_password_set(${first.token!}, ${HASH})`;
      expect((await tx`select admin.bootstrap_status() as s`)[0].s).toEqual({ admins: 1, default_pending: false });
      expect((await tx`select admin.bootstrap(${HASH}, true) as b`)[0].b).toBe(false);
      expect((await loginAs(tx, 'admin', '203.0.113.9')).status).toBe('ok');
    });
  });

  it('the default password stops working once any admin has a password of their own', async () => {
    await withTx(async (tx) => {
      await tx`delete from private.credentials`;
      await tx`delete from private.login_attempts`;
      await tx`update private.users set role = 'user' where role = 'admin'`;
      expect((await tx`select admin.bootstrap(${HASH}, true) as b`)[0].b).toBe(true);
      // Another admin gets a password (from psql, say) before anyone used admin/admin123.
      await userWithPassword(tx, { role: 'admin' });
      expect((await loginAs(tx, 'admin', '127.0.0.1')).status).toBe('default_retired');
    });
  });

  it('a setup token creates the first admin once, from anywhere', async () => {
    await withTx(async (tx) => {
      await tx`delete from private.credentials`;
      await tx`update private.users set role = 'user' where role = 'admin'`;
      await tx`select admin.bootstrap(${HASH}, true)`;
      const [{ t }] = await tx`select admin.setup_token_create() as t`;
      expect(t).toMatch(/^setup-/);
      expect((await tx`select admin.setup_token_use('setup-wrong', 'root', ${HASH}, '203.0.113.9') as r`)[0].r).toEqual({ status: 'invalid' });
      const [{ r }] = await tx`select admin.setup_token_use(${t}, 'root', ${HASH}, '203.0.113.9') as r`;
      expect(r).toMatchObject({ status: 'ok', stage: 'full', must_change: false });
      expect((await tx`select admin.setup_token_use(${t}, 'root2', ${HASH}, '203.0.113.9') as r`)[0].r).toEqual({ status: 'invalid' });
      // The default credential is gone, and no new setup token is issued once an admin exists.
      expect((await tx`select admin.bootstrap_status() as s`)[0].s).toEqual({ admins: 1, default_pending: false });
      expect((await tx`select admin.setup_token_create() as t`)[0].t).toBeNull();
    });
  });
});

describe('sessions', () => {
  it('session_get resolves a token; logout and a password change end sessions', async () => {
    await withTx(async (tx) => {
      const u = await userWithPassword(tx);
      const a = await loginAs(tx, u.username);
      const b = await loginAs(tx, u.username);
      const [{ s }] = await tx`select admin.session_get(${a.token!}) as s`;
      expect(s).toMatchObject({ username: u.username, role: 'user', stage: 'full', must_change: false });
      expect((await tx`select admin.session_get('nope') as s`)[0].s).toBeNull();
      await tx`select admin.session_password_set(${a.token!}, ${HASH})`;
      expect((await tx`select admin.session_get(${b.token!}) as s`)[0].s).toBeNull();
      expect((await tx`select admin.session_end(${a.token!}) as e`)[0].e).toBe(true);
      expect((await tx`select admin.session_get(${a.token!}) as s`)[0].s).toBeNull();
    });
  });

  it('stores only the sha256 of session tokens', async () => {
    await withTx(async (tx) => {
      const u = await userWithPassword(tx);
      const { token } = await loginAs(tx, u.username);
      const [{ n }] = await tx`select count(*)::int as n from private.sessions where token_hash = public.digest(${token!}, 'sha256')`;
      expect(n).toBe(1);
      const cols = await tx`select column_name from information_schema.columns where table_schema = 'admin' and table_name = 'sessions'`;
      expect(cols.map((c) => c.column_name)).not.toContain('token_hash');
    });
  });
});

describe('TOTP', () => {
  it('matches the RFC 6238 test vector and base32', async () => {
    const [r] = await db()`select private.totp_code('12345678901234567890'::bytea, 1) as c1,
                                  private.totp_code('12345678901234567890'::bytea, 37037036) as c2,
                                  private.base32('foobar'::bytea) as b32`;
    expect(r).toEqual({ c1: '287082', c2: '081804', b32: 'MZXW6YTBOI' });
  });

  it('a TOTP user logs in in two steps; wrong codes and replays fail', async () => {
    await withTx(async (tx) => {
      const u = await userWithPassword(tx);
      const first = await loginAs(tx, u.username);
      await tx`select admin.session_totp_setup(${first.token!})`;
      const code = async (offset = 0) =>
        (await tx`select private.totp_code(c.totp_secret, floor(extract(epoch from now()) / 30)::bigint + ${offset}) as c from private.credentials c where user_id = ${u.id}`)[0].c;
      await expect(attempt(tx, (sp) => sp`select admin.session_totp_enable(${first.token!}, '000000')`)).rejects.toMatchObject({ code: 'TOTPX' });
      await tx`select admin.session_totp_enable(${first.token!}, ${await code(-1)})`;
      const second = await loginAs(tx, u.username);
      expect(second.stage).toBe('totp');
      expect(await asUser(tx, second.token!, (sp) => sp`select * from me.profile`)).toHaveLength(0);
      expect((await tx`select admin.session_totp_verify(${second.token!}, '000000', '10.0.0.1') as r`)[0].r).toEqual({ status: 'invalid' });
      expect((await tx`select admin.session_totp_verify(${second.token!}, ${await code(-1)}, '10.0.0.1') as r`)[0].r).toEqual({ status: 'invalid' }); // replay
      expect((await tx`select admin.session_totp_verify(${second.token!}, ${await code(0)}, '10.0.0.1') as r`)[0].r).toMatchObject({ status: 'ok' });
      expect(await asUser(tx, second.token!, (sp) => sp`select * from me.profile`)).toHaveLength(1);
    });
  });
});

describe('views for the panel', () => {
  it('the admin role can read every view the panel adds (functions inside views run with its rights)', async () => {
    await withTx(
      async (tx) => {
        const views = ['sessions', 'login_attempts', 'panel_users', 'usage_hourly', 'latency_hourly', 'partitions', 'jobs', 'cron_status'].map((relname) => ({ relname }));
        for (const v of views) await tx.savepoint((sp) => sp`select * from ${sp('admin')}.${sp(v.relname)} limit 1`).catch((e) => expect.fail(`${v.relname}: ${e.message}`));
      },
      { role: 'elygate_admin' },
    );
  });

  it('jobs and cron_status work whether or not pg_cron is in this database', async () => {
    const [s] = await db()`select * from admin.cron_status`;
    expect(typeof s.installed).toBe('boolean');
    // Every registered job, run by pg_cron where it is installed in this database, else by the gateways.
    const jobs = await db()`select name, runner, overdue from admin.jobs order by name`;
    const [{ n }] = await db()`select count(*)::int as n from private.jobs`;
    expect(jobs).toHaveLength(n);
    expect(jobs.map((j) => j.name)).toContain('elygate.rollup');
    if (!s.installed) expect(new Set(jobs.map((j) => j.runner))).toEqual(new Set(['gateway']));
    const parts = await db()`select * from admin.partitions`;
    expect(parts.map((p) => p.name)).toContain('requests_default');
  });

  it('schema me executes nothing for public; elygate_user can use it', async () => {
    const rows = await db()`
      select p.oid::regprocedure::text as fn from pg_proc p join pg_namespace n on n.oid = p.pronamespace
       where n.nspname = 'me' and has_function_privilege('public', p.oid, 'execute')`;
    expect(rows).toEqual([]);
    await withTx(async (tx) => expect(await tx`select * from me.profile`).toEqual([]), { role: 'elygate_user' });
  });
});
