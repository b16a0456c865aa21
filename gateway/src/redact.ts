// Upstream keys must never leave the gateway: not to the client, not into the request log. Some
// providers quote the key they were sent in their error message ("Incorrect API key provided:
// sk-…"); those answers are passed on and recorded, so the channel's keys are masked in them first.
//
// relay/attempts.ts hook (where an upstream error body is read, before it is recorded or passed on):
//   const errBody = redactBytes(new Uint8Array(await res.arrayBuffer().catch(() => new ArrayBuffer(0))), channel.keys);
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A key as it may be shown: its last four characters. */
export const maskKey = (key: string) => `…${key.slice(-4)}`;

/** text with every occurrence of each key (8+ characters) replaced by its mask. */
export function redactKeys(text: string, keys: readonly string[]): string {
  let out = text;
  for (const k of keys) {
    if (k && k.length >= 8 && out.includes(k)) out = out.split(k).join(maskKey(k));
  }
  return out;
}

/** The same for a body: unchanged bytes (the same array) when no key occurs in it. */
export function redactBytes<T extends Uint8Array>(bytes: T, keys: readonly string[]): T | Uint8Array<ArrayBuffer> {
  if (bytes.byteLength === 0 || keys.length === 0) return bytes;
  const text = dec.decode(bytes);
  const red = redactKeys(text, keys);
  return red === text ? bytes : enc.encode(red);
}
