// Hang detection by health probes (issue 3): a process can be alive to the kernel and dead to
// its clients (SIGSTOP, a deadlock, a disk that never answers). A probe — a TCP connect, a
// protocol exchange, an executable — runs every interval with a timeout; `misses` failures in
// a row declare the process down, one success after that declares it up again.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { runSpawned } from './spawned-command.js';
import { resetIfSelfConnected, selfConnectError } from '../net/self-connect.js';

/** Resolves when healthy; rejects (or never settles: the monitor times it out) when not. */
export type Probe = (signal: AbortSignal) => Promise<void>;

/** Healthy when a TCP connection is accepted. A stopped process still gets connections accepted
 * by its kernel backlog, so this catches a dead listener, not a hang: pair it with a protocol probe. */
export function tcpConnectProbe(host: string, port: number): Probe {
  return (signal) =>
    new Promise((resolve, reject) => {
      const s = net.connect({ host, port, signal });
      s.once('connect', () => {
        if (resetIfSelfConnected(s)) return reject(selfConnectError(host, port));
        s.destroy();
        resolve();
      });
      s.once('error', reject);
    });
}

/** Healthy when the server answers `request` with bytes that `isHealthy` accepts (a protocol probe). */
export function requestProbe(host: string, port: number, request: Buffer, isHealthy: (reply: Buffer) => boolean): Probe {
  return (signal) =>
    new Promise((resolve, reject) => {
      const s = net.connect({ host, port, signal }, () => {
        if (resetIfSelfConnected(s)) reject(selfConnectError(host, port));
        else s.write(request);
      });
      let reply = Buffer.alloc(0);
      s.on('data', (d) => {
        reply = Buffer.concat([reply, d]);
        if (isHealthy(reply)) {
          s.destroy();
          resolve();
        }
      });
      s.once('error', reject);
      s.once('end', () => reject(new Error('connection closed before a healthy reply')));
    });
}

/**
 * Healthy when the executable exits 0. Started without forking the agent (runSpawned: a fork
 * copies its page tables on the loop that sends the heartbeats, every interval); a timeout kills
 * its process group.
 */
export function execProbe(file: string, args: string[] = []): Probe {
  return (signal) => runSpawned(file, args, signal);
}

export interface HealthMonitorOptions {
  probe: Probe;
  intervalMs: number;
  timeoutMs: number;
  misses: number;
  /**
   * Begin as down: the first passing probe emits 'up', failures before it emit nothing. For a
   * process just started, which serves only once its probe says so.
   */
  startDown?: boolean;
}

export type HealthEvent = { kind: 'down'; at: number; misses: number; lastError: string } | { kind: 'up'; at: number };

export class HealthMonitor extends EventEmitter<{ event: [HealthEvent] }> {
  /** The last probe's error; undefined once a probe passed. */
  lastError: string | undefined;
  private failures = 0;
  private down = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private inFlight: AbortController | undefined;

  constructor(private readonly options: HealthMonitorOptions) {
    super();
    if (!(options.intervalMs > 0) || !(options.timeoutMs > 0) || !Number.isInteger(options.misses) || options.misses < 1) {
      throw new RangeError('HealthMonitor needs intervalMs > 0, timeoutMs > 0 and misses >= 1');
    }
    this.down = options.startDown ?? false;
  }

  start(): void {
    this.stopped = false;
    void this.round();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.inFlight?.abort();
  }

  /** One probe, bounded by the timeout; the next one starts an interval after this one began. */
  private async round(): Promise<void> {
    if (this.stopped) return;
    const began = Date.now();
    const ac = new AbortController();
    this.inFlight = ac;
    const timeout = setTimeout(() => ac.abort(new Error(`probe timed out after ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
    let error: string | undefined;
    try {
      await Promise.race([
        this.options.probe(ac.signal),
        new Promise((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true })),
      ]);
    } catch (err) {
      error = (err as Error).message;
    } finally {
      clearTimeout(timeout);
      ac.abort(); // releases whatever the probe still holds
    }
    if (this.stopped) return;
    const at = performance.timeOrigin + performance.now();
    this.lastError = error;
    if (error === undefined) {
      this.failures = 0;
      if (this.down) {
        this.down = false;
        this.emit('event', { kind: 'up', at });
      }
    } else if (++this.failures >= this.options.misses && !this.down) {
      this.down = true;
      this.emit('event', { kind: 'down', at, misses: this.failures, lastError: error });
    }
    this.timer = setTimeout(() => void this.round(), Math.max(0, this.options.intervalMs - (Date.now() - began)));
  }
}
