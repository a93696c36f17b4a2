// A planned stop lets the clients leave before the instance goes (seed 000's planned change,
// Oracle's drain): after GOING_DOWN, the connections on the instance's ports are counted
// (sock_diag, on a libuv worker) until none is left or the drain time is up.
import { CONNECTED_STATES, listTcpSocketsAsync } from '../net/sockdiag.js';

export interface DrainResult {
  /** The ports counted (the instance's `ports`); none: nothing could be counted, nothing waited for. */
  ports: number[];
  /** Connections still there when the drain ended. */
  left: number;
  /** How long it waited, ms. */
  waitedMs: number;
  /** Ended by the time bound, with connections left. */
  timedOut: boolean;
  /** Ended by the caller's signal. */
  aborted?: boolean;
}

export interface DrainOptions {
  /** The bound, ms (0: count once, do not wait). */
  timeoutMs: number;
  /** Time between counts, ms; default 100. */
  intervalMs?: number;
  /** Counts the connections on the ports (default: established or half-closed by the peer, in this namespace). */
  count?: (ports: readonly number[]) => Promise<number>;
  /** Ends the wait early (the agent is stopping): resolves with what is left, `aborted`. */
  signal?: AbortSignal;
}

/** Connections whose clients may still be using them: established, or half-closed by the client. */
export async function countConnections(ports: readonly number[]): Promise<number> {
  return (await listTcpSocketsAsync({ states: CONNECTED_STATES, localPorts: ports })).length;
}

/** Waits until no connection is left on `ports`, up to timeoutMs. */
export async function drain(ports: readonly number[], options: DrainOptions): Promise<DrainResult> {
  const started = performance.now();
  const result = (left: number, timedOut: boolean): DrainResult => ({ ports: [...ports], left, waitedMs: Math.round(performance.now() - started), timedOut });
  if (ports.length === 0) return result(0, false);
  const count = options.count ?? countConnections;
  const interval = options.intervalMs ?? 100;
  const signal = options.signal;
  for (;;) {
    const left = await count(ports);
    if (left === 0) return result(0, false);
    if (signal?.aborted) return { ...result(left, false), aborted: true };
    const remaining = options.timeoutMs - (performance.now() - started);
    if (remaining <= 0) return result(left, true);
    await new Promise<void>((r) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        r();
      };
      const timer = setTimeout(done, Math.min(interval, remaining));
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
