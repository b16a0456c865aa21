// postgres.js over Bun's native TCP socket (Bun.connect) instead of the node:net compatibility
// layer. Why: every query's bytes went through node:net's stream machinery (writeOrBuffer,
// readableAddChunk, an event per chunk), which the gateway's CPU profile showed on every
// relay_begin; without it a relay_begin-shaped query took about 10% less client CPU (medians of a
// micro-benchmark on the 2-core bench machine, at 1,000 and at 20,000 queries/s). postgres.js
// supports this through its `socket` option: an EventEmitter with write/end/destroy and the events
// data, drain, error and close — what this class provides, with node:net's semantics (writes
// before the connection opens are queued; a failed connect emits error, then close(true); write
// returns false until the kernel took everything, then 'drain').
//
// Plain TCP to one host only: TLS, Unix sockets and multi-host URLs keep postgres.js's own
// node:net path (db.ts decides).
import { EventEmitter } from 'node:events';
import type { Socket } from 'bun';

type Pending = { bytes: Uint8Array; done?: () => void };

export class PgSocket extends EventEmitter {
  readyState: 'opening' | 'open' | 'closed' = 'opening';
  private sock: Socket | null = null;
  private pending: Pending[] = [];
  private endWhenFlushed = false;
  /** A write returned false: 'drain' is owed once the queue empties (and only then, as node:net). */
  private needDrain = false;
  private keepAlive: [boolean, number] | null = null;
  private hadError = false;

  constructor(
    readonly host: string,
    readonly port: number,
  ) {
    super();
    const self = this;
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          if (self.readyState === 'closed') return void s.terminate(); // destroyed while connecting
          self.sock = s;
          self.readyState = 'open';
          s.setNoDelay(true);
          if (self.keepAlive) s.setKeepAlive(...self.keepAlive);
          self.flush();
        },
        data(_s, data) {
          self.emit('data', data);
        },
        drain() {
          if (!self.flush() || !self.needDrain) return;
          self.needDrain = false;
          self.emit('drain');
        },
        end(s) {
          s.end(); // the server closed its side: close ours too (node:net's allowHalfOpen: false)
        },
        error(_s, err) {
          self.fail(err);
        },
        close(_s, err) {
          if (err) self.fail(err);
          self.closed();
        },
        connectError(_s, err) {
          self.fail(connectError(err, host, port));
          self.closed();
        },
      },
    }).catch((err) => {
      // Normally connectError has reported it already (then this does nothing).
      self.fail(connectError(err, host, port));
      self.closed();
    });
  }

  write(bytes: Uint8Array, done?: () => void): boolean {
    if (this.readyState === 'closed') return false;
    this.pending.push({ bytes, done });
    if (!this.sock || this.flush()) return true;
    this.needDrain = true;
    return false;
  }

  end(bytes?: Uint8Array): void {
    if (bytes) this.write(bytes);
    if (this.readyState === 'closed') return;
    this.endWhenFlushed = true;
    if (this.sock && this.pending.length === 0) this.sock.end();
  }

  destroy(): void {
    const s = this.sock;
    this.closed();
    s?.terminate();
  }

  setKeepAlive(enable: boolean, initialDelay: number): void {
    this.keepAlive = [enable, initialDelay];
    this.sock?.setKeepAlive(enable, initialDelay);
  }

  // Flow control for COPY streams, which the gateway does not use.
  pause(): void {
    this.sock?.pause();
  }

  resume(): void {
    this.sock?.resume();
  }

  /** Writes what is queued; true when nothing is left (the kernel took it all). */
  private flush(): boolean {
    const s = this.sock!;
    while (this.pending.length > 0) {
      const p = this.pending[0];
      const n = s.write(p.bytes);
      if (n < p.bytes.byteLength) {
        if (n > 0) p.bytes = p.bytes.subarray(n);
        return false; // the rest goes on drain
      }
      this.pending.shift();
      if (p.done) queueMicrotask(p.done);
    }
    if (this.endWhenFlushed) {
      this.endWhenFlushed = false;
      s.end();
    }
    return true;
  }

  private fail(err: Error): void {
    if (this.readyState === 'closed') return;
    this.hadError = true;
    this.emit('error', err);
  }

  private closed(): void {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    this.sock = null;
    this.pending = [];
    this.emit('close', this.hadError);
  }
}

/** A failed connect as node:net reports it: "connect ECONNREFUSED host:port", "getaddrinfo ENOTFOUND host". */
function connectError(err: Error & { code?: string; errno?: number }, host: string, port: number): Error {
  const code = err.code ?? 'ECONNREFUSED';
  if (code === 'ENOTFOUND') return Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code, errno: err.errno, syscall: 'getaddrinfo', hostname: host });
  return Object.assign(new Error(`connect ${code} ${host}:${port}`), { code, errno: err.errno, syscall: 'connect', address: host, port });
}
