// Opening upstream keys sealed by private.channel_keys_seal (AES-256-GCM, 96-bit nonce, no AAD),
// and hashing client keys: the database only ever sees sha256(key).
import { createDecipheriv, createHash } from 'node:crypto';

export interface SealedKey {
  ordinal: number;
  key_id: string;
  nonce: string; // base64
  ciphertext: string; // base64
  tag: string; // base64
}

export function parseMasterKey(hex: string): Buffer {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new Error('ELYGATE_MASTER_KEY must be 64 hex digits (32 bytes); generate one with `openssl rand -hex 32`.');
  }
  return Buffer.from(hex, 'hex');
}

/** The non-secret fingerprint private.master_key_id() stores with every sealed key. */
export function masterKeyId(master: Buffer): string {
  return createHash('sha256').update(master).digest().subarray(0, 8).toString('hex');
}

/** The master keys a gateway opens sealed values with, by their fingerprint (the row's key_id):
 *  ELYGATE_MASTER_KEY and, while a master-key rotation is under way, ELYGATE_MASTER_KEY_PREVIOUS
 *  (comma-separated; docs/operations.md, "Rotating the master key"). */
export type Keyring = Map<string, Buffer>;

export function keyring(current: string, previous = ''): Keyring {
  const ring: Keyring = new Map();
  for (const hex of [current, ...previous.split(',')].map((h) => h.trim()).filter(Boolean)) {
    if (hex !== current && !/^[0-9a-fA-F]{64}$/.test(hex)) {
      throw new Error('ELYGATE_MASTER_KEY_PREVIOUS must be master keys of 64 hex digits, separated by commas.');
    }
    const key = parseMasterKey(hex);
    ring.set(masterKeyId(key), key);
  }
  return ring;
}

export function openSealedKey(ring: Keyring, sealed: SealedKey, channelName: string): string {
  const master = ring.get(sealed.key_id);
  if (!master) {
    throw new Error(
      `channel "${channelName}" key #${sealed.ordinal} was sealed with master key ${sealed.key_id}, ` +
        `but this gateway runs with master key ${[...ring.keys()].join(', ') || '(none)'}: set ELYGATE_MASTER_KEY to the key used when the channel was saved ` +
        `(during a master-key rotation, the old one in ELYGATE_MASTER_KEY_PREVIOUS).`,
    );
  }
  const decipher = createDecipheriv('aes-256-gcm', master, Buffer.from(sealed.nonce, 'base64'));
  decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(sealed.ciphertext, 'base64')), decipher.final()]).toString('utf8');
}

/** Bun's one-shot hash (one per request): node:crypto's createHash builds a stream object per call. */
export function sha256(text: string): Buffer {
  return Bun.CryptoHasher.hash('sha256', text) as Buffer;
}
