// Long loops on the agent's event loop, which also sends this node's heartbeats: work done in
// slices of a few milliseconds, yielding between them, so a timer due meanwhile (the next
// heartbeat) runs late by at most one slice (issue 9: closing 10,000 connections in one go
// blocked the loop for ~200 ms and made the closing node look dead to its peers).

/** The longest a slice runs before it yields to the event loop, in ms. */
export const SLICE_MS = 2;

/** Resolves on the next turn of the event loop, after pending timers and I/O. */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * The time of one slice of a long loop: `if (slices.due) await slices.next();` between items
 * yields to the event loop once `sliceMs` have passed, and starts the next slice after it.
 */
export class Slices {
  private start = performance.now();

  constructor(private readonly sliceMs = SLICE_MS) {}

  get due(): boolean {
    return performance.now() - this.start >= this.sliceMs;
  }

  async next(): Promise<void> {
    await yieldToLoop();
    this.start = performance.now();
  }
}

/**
 * Calls `fn` on each item in order, yielding to the event loop whenever `sliceMs` have passed
 * since the last yield. `fn` may be async (awaited before the next item). Returns the results.
 */
export async function mapInSlices<T, R>(items: readonly T[], fn: (item: T, index: number) => R | Promise<R>, sliceMs = SLICE_MS): Promise<R[]> {
  const out: R[] = new Array(items.length);
  const slices = new Slices(sliceMs);
  for (let i = 0; i < items.length; i++) {
    if (slices.due) await slices.next();
    const r = fn(items[i]!, i);
    out[i] = r instanceof Promise ? await r : r;
  }
  return out;
}
