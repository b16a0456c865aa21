// AES-256-GCM composed in PL/pgSQL must agree byte for byte with node:crypto, and the gateway's
// decryption must open what admin.channel_create sealed.
import { afterAll, describe, expect, it } from 'vitest';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeDb, db, masterKey, unique, withTx } from '../support/db';

afterAll(closeDb);

describe('private.aes_gcm_encrypt', () => {
  it.each([0, 1, 15, 16, 17, 48, 51, 300])('matches node:crypto for %i-byte plaintexts', async (len) => {
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const plain = randomBytes(len);
    const [r] = await db()`select * from private.aes_gcm_encrypt(${key}, ${nonce}, ${plain})`;
    const c = createCipheriv('aes-256-gcm', key, nonce);
    const ct = Buffer.concat([c.update(plain), c.final()]);
    expect(Buffer.from(r.ciphertext).equals(ct)).toBe(true);
    expect(Buffer.from(r.tag).equals(c.getAuthTag())).toBe(true);
  });

  it('seals channel keys that the master key opens and nothing else does', async () => {
    await withTx(async (tx) => {
      const secret = `sk-live-${randomBytes(16).toString('hex')}`;
      const [{ c }] = await tx`select admin.channel_create(${tx.json({ name: unique('ch'), base_url: 'http://a', api_key: secret })}) as c`;
      const [k] = await tx`select key_id, nonce, ciphertext, tag from private.channel_keys where channel_id = ${c.id}`;
      const d = createDecipheriv('aes-256-gcm', Buffer.from(masterKey, 'hex'), k.nonce);
      d.setAuthTag(k.tag);
      expect(Buffer.concat([d.update(k.ciphertext), d.final()]).toString()).toBe(secret);
      const wrong = createDecipheriv('aes-256-gcm', randomBytes(32), k.nonce);
      wrong.setAuthTag(k.tag);
      wrong.update(k.ciphertext);
      expect(() => wrong.final()).toThrow();
      const [row] = await tx`select row_to_json(k)::text as j from private.channel_keys k where channel_id = ${c.id}`;
      expect(row.j).not.toContain(secret);
    });
  });
});
