// A queue the database hands out in claims (channel probes, webhook deliveries): claim a batch,
// run its items at once, report their results, and go on while there may be more. One round at a
// time per process; a wake-up (NOTIFY, a timer) during a round folds into one more round instead of
// a second concurrent one. The database's claim decides who does what, so gateways never overlap.

export interface Drain<T, R> {
  /** The next batch (empty: nothing due). */
  claim: () => Promise<T[]>;
  run: (item: T) => Promise<R>;
  /** Reports a batch's results (results[i] is items[i]'s). */
  finish: (items: T[], results: R[]) => Promise<void>;
  /** Stop going on to the next batch (a gateway shutting down). */
  stopped?: () => boolean;
  /** Logged when a round fails; the next wake-up tries again. */
  what: string;
}

/** A function that drains the queue once, as described above. */
export function drainer<T, R>(d: Drain<T, R>): () => Promise<void> {
  let running = false;
  let again = false;
  return async function drain(): Promise<void> {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        const items = await d.claim();
        if (items.length === 0) break;
        await d.finish(items, await Promise.all(items.map(d.run)));
        again = !d.stopped?.(); // there may be more due than one claim takes
      } while (again);
    } catch (err) {
      console.error(JSON.stringify({ level: 'warn', msg: `${d.what} failed; will retry on the next wake-up`, error: String((err as Error)?.message ?? err) }));
    } finally {
      running = false;
    }
  };
}
