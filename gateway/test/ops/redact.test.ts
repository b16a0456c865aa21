// gateway/src/redact.ts: keys are masked wherever they occur; everything else is left alone.
import { describe, expect, it } from 'vitest';
import { redactBytes, redactKeys } from '../../src/redact';

describe('redact', () => {
  const keys = ['sk-upstream-0123456789abcdef', 'sk-other-key-zzzz9999'];
  it('masks every occurrence of every key', () => {
    const msg = 'Incorrect API key provided: Bearer sk-upstream-0123456789abcdef (sk-upstream-0123456789abcdef), and sk-other-key-zzzz9999';
    const out = redactKeys(msg, keys);
    expect(out).not.toContain('sk-upstream-0123456789abcdef');
    expect(out).not.toContain('sk-other-key-zzzz9999');
    expect(out).toBe('Incorrect API key provided: Bearer …cdef (…cdef), and …9999');
  });
  it('leaves bodies without keys byte for byte identical (the same array)', () => {
    const body = new TextEncoder().encode('{"error":{"message":"rate limited"}}');
    expect(redactBytes(body, keys)).toBe(body);
    const withKey = new TextEncoder().encode('{"error":{"message":"bad key sk-upstream-0123456789abcdef"}}');
    expect(new TextDecoder().decode(redactBytes(withKey, keys))).toBe('{"error":{"message":"bad key …cdef"}}');
  });
  it('ignores keys too short to be keys (they would mask ordinary words)', () => {
    expect(redactKeys('a short key abc', ['abc'])).toBe('a short key abc');
  });
});
