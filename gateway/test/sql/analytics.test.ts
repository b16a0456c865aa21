// Issue 17, the analytics contract: elygate_analytics reads every analytics_v1 view and nothing
// else (no private or admin relation, no admin, gateway, private or me function), enumerated from
// the catalog; and the usage views, read from the rollup and the log after its cut, add up.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { attempt, closeDb, createUser, db, withTx } from '../support/db';

afterAll(closeDb);

describe('analytics_v1 and elygate_analytics', () => {
  it('the role can read every analytics_v1 view', async () => {
    const views = await db()`select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                              where n.nspname = 'analytics_v1' and c.relkind in ('v', 'm', 'r') order by 1`;
    expect(views.map((v) => v.relname)).toEqual(expect.arrayContaining(
      ['channel_health', 'channels', 'groups', 'keys', 'latency_hourly', 'ledger', 'models', 'requests', 'usage_daily', 'usage_hourly', 'users']));
    await withTx(async (tx) => {
      for (const { relname } of views) await tx.unsafe(`select * from analytics_v1.${relname} limit 1`);
    }, { role: 'elygate_analytics' });
    // Every view is documented.
    const [{ n }] = await db()`select count(*)::int as n from pg_class c join pg_namespace s on s.oid = c.relnamespace
                               where s.nspname = 'analytics_v1' and obj_description(c.oid, 'pg_class') is null`;
    expect(n).toBe(0);
  });

  it('cannot read any private, admin or me relation, nor execute any private, gateway, admin or me function', async () => {
    const relations = await db()`select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                  where n.nspname in ('private', 'admin', 'me', 'gateway') and c.relkind in ('r', 'v', 'm', 'p')`;
    expect(relations.length).toBeGreaterThan(50);
    await withTx(async (tx) => {
      for (const { nspname, relname } of relations) {
        await expect(attempt(tx, (sp) => sp.unsafe(`select 1 from ${nspname}.${relname} limit 1`)), `${nspname}.${relname}`)
          .rejects.toMatchObject({ code: '42501' });
      }
      await expect(attempt(tx, (sp) => sp`select admin.job_run('elygate.rollup')`)).rejects.toMatchObject({ code: '42501' });
      await expect(attempt(tx, (sp) => sp`select gateway.maintenance_run()`)).rejects.toMatchObject({ code: '42501' });
    }, { role: 'elygate_analytics' });
    const callable = await db()`select p.oid::regprocedure::text as f from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                                 where n.nspname in ('private', 'admin', 'me', 'gateway')
                                   and has_function_privilege('elygate_analytics', p.oid, 'execute')
                                   and has_schema_privilege('elygate_analytics', n.oid, 'usage')`;
    expect(callable).toEqual([]);
    const schemas = await db()`select n.nspname from pg_namespace n where n.nspname in ('private', 'admin', 'me', 'gateway')
                                 and has_schema_privilege('elygate_analytics', n.oid, 'usage')`;
    expect(schemas).toEqual([]);
    const [{ writable }] = await db()`select count(*)::int as writable from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                       where n.nspname = 'analytics_v1'
                                         and has_table_privilege('elygate_analytics', c.oid, 'insert, update, delete, truncate')`;
    expect(writable).toBe(0);
  });

  it('usage_hourly adds the rollup (before its cut) and the log (after it) up to the raw requests', async () => {
    await withTx(async (tx) => {
      // Files running beside this one share the database: an admission one of them holds open would
      // hold the rollup's cut back, and a gateway's maintenance rollup would have rolled up the
      // current hour already (the next rollup then rebuilds only from there) or hold the rollup's
      // lock (this one would skip). None of that while this transaction lasts.
      await tx`select pg_advisory_xact_lock(hashtext('private.usage_rollup'))`;
      await tx`lock table private.admissions in exclusive mode`;
      await tx`delete from private.admissions`;
      await tx`delete from private.usage_hourly`;
      const u = await createUser(tx);
      const [{ now }] = await tx`select now() as now`;
      const hours = [3, 2, 0];
      for (const h of hours) {
        for (let i = 0; i < 2; i++) {
          await tx`insert into private.requests (id, created_at, user_id, key_id, endpoint, model, status, latency_ms, cost_micros, prompt_tokens, completion_tokens, cache)
                   values (${randomUUID()}, ${now}::timestamptz - make_interval(hours => ${h}) - interval '1 minute', ${u.id}, null, 'chat/completions', 'm-ana', ${i ? 'error' : 'ok'}, 100, 7, 10, 2, 'miss')`;
        }
      }
      await tx`select private.usage_rollup(${now})`;
      // One more after the rollup ran: only the log has it.
      await tx`insert into private.requests (id, created_at, user_id, endpoint, model, status, latency_ms, cost_micros, prompt_tokens, completion_tokens)
               values (${randomUUID()}, ${now}, ${u.id}, 'chat/completions', 'm-ana', 'ok', 50, 5, 1, 1)`;
      // The hours before the cut come from the rollup: their log rows could be gone (retention)
      // and still count.
      await tx`delete from private.requests where user_id = ${u.id} and created_at < ${now}::timestamptz - interval '150 minutes'`;
      const [h] = await tx`select sum(requests)::int as requests, sum(errors)::int as errors, sum(cost_micros)::int as cost,
                                  sum(prompt_tokens)::int as prompt, sum(cache_miss)::int as miss
                             from analytics_v1.usage_hourly where user_id = ${u.id}`;
      expect(h).toEqual({ requests: 7, errors: 3, cost: 47, prompt: 61, miss: 6 });
      const [d] = await tx`select sum(requests)::int as requests from analytics_v1.usage_daily where user_id = ${u.id}`;
      expect(d.requests).toBe(7);
    });
  });
});
