// gateway/src/keepalive.ts: comments only in the silences, only between events, and never after the end.
import { describe, expect, it } from 'vitest';
import { withKeepalive } from '../../src/keepalive';

const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function source(parts: [number, string][]) {
  return new ReadableStream<Uint8Array>({
    async start(c) {
      for (const [wait, text] of parts) {
        await sleep(wait);
        c.enqueue(enc.encode(text));
      }
      c.close();
    },
  });
}

async function collect(s: ReadableStream<Uint8Array>) {
  return new Response(s).text();
}

describe('withKeepalive', () => {
  it('sends comments during a silence between events, and passes the events through unchanged', async () => {
    const text = await collect(withKeepalive(source([[0, 'data: {"a":1}\n\n'], [260, 'data: {"b":2}\n\n'], [0, 'data: [DONE]\n\n']]), 50));
    const comments = text.match(/^: keepalive$/gm)?.length ?? 0;
    expect(comments).toBeGreaterThanOrEqual(3);
    expect(text.replace(/: keepalive\n\n/g, '')).toBe('data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n');
  });

  it('never splits an event: no comment while an event is half sent', async () => {
    const text = await collect(withKeepalive(source([[0, 'data: {"a":'], [200, '1}\n\n']]), 40));
    expect(text).toBe('data: {"a":1}\n\n');
  });

  it('sends nothing for a stream that never pauses, and stops after the end', async () => {
    const s = withKeepalive(source([[0, 'data: x\n\n'], [0, 'data: [DONE]\n\n']]), 30);
    expect(await collect(s)).toBe('data: x\n\ndata: [DONE]\n\n');
    await sleep(80); // a timer left armed would throw enqueueing into a closed stream
  });
});
