// Money is shown one way (issue 21): usd() in src/lib/format.ts, and no page divides by 1e6 itself.
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { usd } from '../src/lib/format';

const src = join(__dirname, '..', 'src');
const files = (dir: string): string[] =>
  readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));

describe('money formatting', () => {
  it('keeps two decimals and shows micro-USD when an amount has them', () => {
    expect(usd(5_000_000)).toBe('$5.00');
    expect(usd(150_000)).toBe('$0.15');
    expect(usd(4_999_876)).toBe('$4.999876'); // not a misleading $5.00
    expect(usd(1_234_567_890)).toBe('$1,234.56789');
    expect(usd(-1_500_000)).toBe('-$1.50');
    expect(usd(0)).toBe('$0.00');
    expect(usd(null)).toBe('$0.00');
  });

  it('is the only place that turns micro-USD into dollars', () => {
    const offenders = files(src)
      .filter((f) => /\.(ts|svelte)$/.test(f) && !f.endsWith(join('lib', 'format.ts')))
      .filter((f) => /\/\s*1e6\b|toFixed\(2\)/.test(readFileSync(f, 'utf8').replace(/\*\s*1e6/g, '')));
    expect(offenders.map((f) => f.slice(src.length + 1))).toEqual([]);
  });
});
