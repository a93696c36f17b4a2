// A clustered application's readiness probe (the object's `ready`): whether the process COMMAND
// started on the HOST answers yet. The cluster manager marks the application `up` only once it
// does, so that `up`, the UP event and the end of a failover mean a client is served, not merely
// that a process exists. This file only probes; what a probe's result means (wait, up, a failed
// start) is decided in app-decisions.ts.
import { EventEmitter } from 'node:events';
import { execProbe, HealthMonitor, tcpConnectProbe, type Probe } from '../monitor/health-probe.js';
import type { AppObject } from './app-object.js';

export type ReadySpec = NonNullable<AppObject['ready']>;

/** How long one try may take (ms): the longer of the interval and 1 s (a connect or a program needs that much on a loaded host). */
export function tryTimeoutMs(spec: ReadySpec): number {
  return Math.max(spec.intervalMs, 1000);
}

/** Where a tcp probe connects: the service address (on the HOST, where the application runs), or 127.0.0.1 without one. */
export function probeHost(app: Pick<AppObject, 'address'>): string {
  return app.address?.address ?? '127.0.0.1';
}

/** The probe in words, for notes and the history: `tcp 192.0.2.10:5432`, `command pg_isready -q`. */
export function describeProbe(app: Pick<AppObject, 'address' | 'ready'>): string {
  const r = app.ready;
  if (r === undefined) return 'no probe';
  if (r.tcp !== undefined) {
    const host = probeHost(app);
    return `tcp ${host.includes(':') ? `[${host}]` : host}:${r.tcp}`;
  }
  return `command ${r.command!.join(' ')}`;
}

/** The probe an application's `ready` describes. Throws when it has none. */
export function readinessProbe(app: Pick<AppObject, 'address' | 'ready'>): Probe {
  const r = app.ready;
  if (r === undefined) throw new Error('the application has no readiness probe');
  if (r.tcp !== undefined) return tcpConnectProbe(probeHost(app), r.tcp);
  return execProbe(r.command![0]!, r.command!.slice(1));
}

/**
 * Probes one process of an application until its probe passes once, then stops: `ready` is
 * emitted then (and `passedAt` set). `stop()` ends it earlier (the process exited, or is being
 * stopped). Times are ms since the epoch.
 */
export class ReadinessWatch extends EventEmitter<{ ready: [] }> {
  /** When the probe first passed (undefined: not yet). */
  passedAt: number | undefined;
  private readonly monitor: HealthMonitor;

  constructor(
    /** The process probed: a new process needs a new watch. */
    readonly pid: number,
    /** When that process started. */
    readonly since: number,
    /** The spec and address it was made for (a changed object needs a new watch). */
    readonly key: string,
    probe: Probe,
    spec: ReadySpec,
  ) {
    super();
    // startDown: failures before the first pass say nothing; the first pass is the event.
    this.monitor = new HealthMonitor({ probe, intervalMs: spec.intervalMs, timeoutMs: tryTimeoutMs(spec), misses: 1, startDown: true });
    this.monitor.on('event', (e) => {
      if (e.kind !== 'up') return;
      this.passedAt = e.at;
      this.monitor.stop(); // readiness, not liveness: once is enough
      this.emit('ready');
    });
    this.monitor.start();
  }

  /** Makes the watch for `pid` of `app` (which must have `ready`). */
  static of(app: Pick<AppObject, 'address' | 'ready'>, pid: number, since: number): ReadinessWatch {
    return new ReadinessWatch(pid, since, readinessKey(app), readinessProbe(app), app.ready!);
  }

  get passed(): boolean {
    return this.passedAt !== undefined;
  }

  /** The last try's error, while it has not passed. */
  get lastError(): string | undefined {
    return this.passed ? undefined : this.monitor.lastError;
  }

  stop(): void {
    this.monitor.stop();
  }
}

/** What a watch depends on in the object: the probe and where it points. */
export function readinessKey(app: Pick<AppObject, 'address' | 'ready'>): string {
  return JSON.stringify([app.ready, probeHost(app)]);
}
