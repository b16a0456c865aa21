// SSE keepalives: while an upstream is silent (a model thinking for 30 s before its next token),
// proxies, load balancers and client libraries with idle timeouts would hang up on the client. An
// SSE comment line (": keepalive") every intervalMs of silence keeps the connection warm; clients
// ignore comments by the SSE spec. A comment is only sent between events, never inside one, so the
// stream's bytes stay a valid event stream.
//
// relay/stream.ts hook (streamResponse, where the client's Response is built):
//   return new Response(withKeepalive(body), { status: 200, headers });
const COMMENT = new TextEncoder().encode(': keepalive\n\n');

export function withKeepalive(source: ReadableStream<Uint8Array>, intervalMs = 15000): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let timer: ReturnType<typeof setTimeout> | null = null;
  let atBoundary = true; // nothing sent yet, or the last bytes ended an event ("\n\n")
  let closed = false;
  let ctl!: ReadableStreamDefaultController<Uint8Array>;

  const arm = () => {
    if (timer) clearTimeout(timer);
    if (closed) return;
    timer = setTimeout(() => {
      if (closed) return;
      if (atBoundary) {
        try {
          ctl.enqueue(COMMENT);
        } catch {
          return; // the client is gone
        }
      }
      arm();
    }, intervalMs);
  };
  const stop = () => {
    closed = true;
    if (timer) clearTimeout(timer);
  };
  const endsEvent = (b: Uint8Array) => b.length >= 2 && b[b.length - 1] === 10 && (b[b.length - 2] === 10 || (b[b.length - 2] === 13 && b[b.length - 3] === 10));

  return new ReadableStream<Uint8Array>({
    start(c) {
      ctl = c;
      arm();
    },
    async pull(c) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          stop();
          c.close();
          return;
        }
        if (value.length > 0) atBoundary = endsEvent(value);
        c.enqueue(value);
        arm();
      } catch (err) {
        stop();
        c.error(err);
      }
    },
    cancel(reason) {
      stop();
      return reader.cancel(reason);
    },
  });
}
