// The operator's psql API: validation errors carry a SQLSTATE, the offending field and a remedy.
import { afterAll, describe, expect, it } from 'vitest';
import { attempt, closeDb, createUser, unique, withTx } from '../support/db';

afterAll(closeDb);

describe('admin.* functions', () => {
  it('creates a key whose plaintext is returned once and whose hash only is stored', async () => {
    await withTx(async (tx) => {
      const user = await createUser(tx);
      const [{ k }] = await tx`select admin.key_create(${tx.json({ username: user.username, name: 'ci' })}) as k`;
      expect(k.key).toMatch(/^sk-[A-Za-z0-9_-]{48}$/);
      expect(k.key_prefix).toBe(`${k.key.slice(0, 7)}...${k.key.slice(-4)}`);
      const [row] = await tx`select key_hash = sha256(${k.key}::bytea) as matches, key_prefix from private.api_keys where id = ${k.id}`;
      expect(row.matches).toBe(true);
      const dump = await tx`select row_to_json(k)::text as j from private.api_keys k where id = ${k.id}`;
      expect(dump[0].j).not.toContain(k.key);
    });
  });

  it('rejects unknown fields (BADIN) with the allowed list as a hint', async () => {
    await withTx(async (tx) => {
      await expect(attempt(tx, (sp) => sp`select admin.user_create('{"username":"x","grup":"default"}')`)).rejects.toMatchObject({
        code: 'BADIN',
        message: 'admin.user_create: unknown field(s) grup.',
        column_name: 'grup',
        hint: expect.stringContaining('Allowed fields'),
      });
    });
  });

  it('rejects a duplicate username and a key for nobody', async () => {
    await withTx(async (tx) => {
      const user = await createUser(tx);
      await expect(attempt(tx, (sp) => sp`select admin.user_create(${sp.json({ username: user.username })})`)).rejects.toMatchObject({
        code: 'BADIN',
        message: `A user named "${user.username}" already exists.`,
      });
      await expect(attempt(tx, (sp) => sp`select admin.key_create('{"username":"nobody-here"}')`)).rejects.toMatchObject({
        code: 'BADIN',
        column_name: 'user_id',
      });
      await expect(attempt(tx, (sp) => sp`select admin.key_create(${sp.json({ user_id: user.id, allowed_ips: ['not-an-ip'] })})`)).rejects.toMatchObject({
        code: 'BADIN',
        column_name: 'allowed_ips',
      });
    });
  });

  it('validates channels (BADCH)', async () => {
    await withTx(async (tx) => {
      await expect(attempt(tx, (sp) => sp`select admin.channel_create('{"name":"x","type":"bogus","base_url":"http://a"}')`)).rejects.toMatchObject({
        code: 'BADCH',
        column_name: 'type',
      });
      await expect(attempt(tx, (sp) => sp`select admin.channel_create('{"name":"x","base_url":"ftp://a"}')`)).rejects.toMatchObject({
        code: 'BADCH',
        column_name: 'base_url',
      });
      await expect(attempt(tx, (sp) => sp`select admin.channel_create('{"name":"x","base_url":"http://a","model_mapping":["a"]}')`)).rejects.toMatchObject({
        code: 'BADCH',
        column_name: 'model_mapping',
      });
      const name = unique('ch');
      await tx`select admin.channel_create(${tx.json({ name, base_url: 'http://a', api_key: 'sk-1\nsk-2', models: ['m'] })})`;
      const [c] = await tx`select key_count::int, models from admin.channels where name = ${name}`;
      expect(c).toEqual({ key_count: 2, models: ['m'] });
      await expect(attempt(tx, (sp) => sp`select admin.channel_create(${sp.json({ name, base_url: 'http://a' })})`)).rejects.toMatchObject({
        code: 'BADCH',
        message: `A channel named "${name}" already exists.`,
      });
      // Model names as they are matched: exact, so no blank, padded or repeated one.
      const [{ id }] = await tx`select id from admin.channels where name = ${name}`;
      for (const models of [[''], [' m'], ['x'.repeat(257)]]) {
        await expect(attempt(tx, (sp) => sp`select admin.channel_update(${id}, ${sp.json({ models })})`)).rejects.toMatchObject({
          code: 'BADCH',
          column_name: 'models',
          message: 'Every model name in "models" must be 1 to 256 characters without leading or trailing spaces.',
        });
      }
      await expect(attempt(tx, (sp) => sp`select admin.channel_update(${id}, ${sp.json({ models: ['a', 'b', 'a'] })})`)).rejects.toMatchObject({
        code: 'BADCH',
        message: '"models" lists a model more than once: "a".',
      });
      await tx`select admin.channel_update(${id}, ${tx.json({ models: ['gpt-4o', 'models/gemini 2.5 pro'] })})`;
      expect((await tx`select models from admin.channels where id = ${id}`)[0].models).toEqual(['gpt-4o', 'models/gemini 2.5 pro']);
    });
  });

  it('refuses to store an upstream key without a master key in the session (NOMKY)', async () => {
    await withTx(async (tx) => {
      await tx`select set_config('elygate.master_key', '', true)`;
      await expect(
        attempt(tx, (sp) => sp`select admin.channel_create('{"name":"nokey","base_url":"http://a","api_key":"sk-secret"}')`),
      ).rejects.toMatchObject({ code: 'NOMKY', hint: expect.stringContaining('set elygate.master_key') });
    });
  });

  it('validates options by type and range (BADOP) and stores good values', async () => {
    await withTx(async (tx) => {
      await expect(attempt(tx, (sp) => sp`select admin.option_set('NoSuchOption', '1')`)).rejects.toMatchObject({ code: 'BADOP', message: 'Unknown option "NoSuchOption".' });
      await expect(attempt(tx, (sp) => sp`select admin.option_set('MaxAttempts', 'three')`)).rejects.toMatchObject({
        code: 'BADOP',
        message: 'Option "MaxAttempts" must be a int, got "three".',
      });
      await expect(attempt(tx, (sp) => sp`select admin.option_set('MaxAttempts', '99')`)).rejects.toMatchObject({
        code: 'BADOP',
        message: 'Option "MaxAttempts" must be between 1 and 20, got 99.',
      });
      await expect(attempt(tx, (sp) => sp`select admin.option_set('RetryableStatusCodes', '[500,')`)).rejects.toMatchObject({ code: 'BADOP' });
      // The status-code lists are read as integer[] on the hot path (private.status_codes): a
      // string, a fraction or a non-status is refused when saved, not at the next settlement.
      for (const bad of ['["500"]', '[500.5]', '[42]', '{"a": 500}', '500']) {
        await expect(attempt(tx, (sp) => sp`select admin.option_set('BreakerFailureStatusCodes', ${bad})`)).rejects.toMatchObject({
          code: 'BADOP', message: expect.stringContaining('must be a JSON array of HTTP statuses') });
      }
      await tx`select admin.option_set('BreakerFailureStatusCodes', '[ 500,
 503 ]')`;
      await tx`select admin.option_set('MaxAttempts', '5')`;
      const [o] = await tx`select gateway.options_snapshot() -> 'MaxAttempts' as v`;
      expect(o.v).toBe(5);
      // What the hot path reads: the one row, equal to the registry after the change
      const [h] = await tx`select private.options_hot() ->> 'MaxAttempts' as v,
                                  private.status_codes(private.options_hot() ->> 'BreakerFailureStatusCodes') as codes`;
      expect(h).toEqual({ v: '5', codes: [500, 503] });
      await tx`select admin.option_set('BreakerFailureStatusCodes', '[]')`;
      const [e] = await tx`select private.status_codes(private.options_hot() ->> 'BreakerFailureStatusCodes') as codes`;
      expect(e.codes).toEqual([]);
    });
  });

  it('private.options_pick reads several options at once and names the unknown ones', async () => {
    await withTx(async (tx) => {
      await tx`select admin.option_set('MaxAttempts', '4')`;
      const [r] = await tx`select private.options_pick('MaxAttempts', 'DefaultMaxTokens') as v`;
      expect(Object.keys(r.v).sort()).toEqual(['DefaultMaxTokens', 'MaxAttempts']);
      expect(r.v.MaxAttempts).toBe('4');
      await expect(attempt(tx, (sp) => sp`select private.options_pick('MaxAttempts', 'NoSuchOption', 'NorThis')`)).rejects.toMatchObject({
        code: 'BADOP', message: 'Unknown option(s): NoSuchOption, NorThis.' });
    });
  });
});
