// Watches one instance (a server process) on this node and says when it goes down, comes back or
// will not come back. Three ways to find the process (config: pid, pidFile, command) and one
// way to see it hang (health probes): an exit is seen through a pidfd the instant it happens; a
// hang after `misses` failed probes. A process found through a pid file is looked for again
// after it died (something else, e.g. systemd, may restart it); one started by command is
// restarted by the Supervisor under its policy, and past it is NOT_RESTARTING.
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { HealthMonitor, execProbe, tcpConnectProbe, type Probe } from '../monitor/health-probe.js';
import { ProcessExitWatch } from '../monitor/process-exit.js';
import { Supervisor } from '../monitor/supervisor.js';
import type { HealthConfig, InstanceConfig } from './config.js';

export type InstanceState = 'starting' | 'up' | 'down' | 'hung' | 'not-restarting' | 'stopped';

export type InstanceEvent =
  | { kind: 'up'; pid: number; at: number }
  | { kind: 'down'; cause: 'failure' | 'hang'; pid: number; at: number; detail: string }
  | { kind: 'not-restarting'; failures: number; at: number };

const now = () => performance.timeOrigin + performance.now();
const PIDFILE_RETRY_MS = 500;

export class InstanceMonitor extends EventEmitter<{ event: [InstanceEvent] }> {
  state: InstanceState = 'starting';
  pid: number | undefined;
  private watch: ProcessExitWatch | undefined;
  private health: HealthMonitor | undefined;
  private supervisor: Supervisor | undefined;
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(readonly config: InstanceConfig) {
    super();
  }

  async start(): Promise<void> {
    const c = this.config;
    if (c.command) {
      const restart = c.restart ?? { maxFailures: 0, windowMs: 1, backoffMs: 0 };
      this.supervisor = new Supervisor({ command: c.command[0]!, args: c.command.slice(1), restart });
      this.supervisor.on('event', (e) => {
        if (e.kind === 'started') this.watchPid(e.pid);
        else if (e.kind === 'not-restarting') this.transition('not-restarting', { kind: 'not-restarting', failures: e.failures, at: e.at });
        // 'exited' is seen by the pidfd watch, at the same instant and for every way of starting.
      });
      this.supervisor.start();
      return;
    }
    if (c.pid !== undefined) {
      this.watchPid(c.pid); // throws ESRCH at start if the pid does not exist: a config error
      return;
    }
    const pid = await this.readPidFile();
    if (pid === undefined) throw new Error(`instance ${c.name}: no live process in ${c.pidFile}`);
    this.watchPid(pid);
  }

  /** Stops watching; a process started by command is stopped too (SIGTERM, then SIGKILL). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    this.health?.stop();
    this.watch?.close();
    await this.supervisor?.stop();
    this.state = 'stopped';
  }

  private watchPid(pid: number): void {
    this.watch?.close();
    const watch = new ProcessExitWatch(pid);
    this.watch = watch;
    this.pid = pid;
    this.transition('up', { kind: 'up', pid, at: now() });
    void watch.exited.then((at) => {
      if (this.stopped || this.watch !== watch) return;
      this.health?.stop();
      this.health = undefined;
      this.transition('down', { kind: 'down', cause: 'failure', pid, at, detail: 'process exited' });
      if (this.config.pidFile) this.lookAgain();
    });
    if (this.config.health) this.startHealth(pid, this.config.health);
  }

  private startHealth(pid: number, h: HealthConfig): void {
    this.health?.stop();
    const health = new HealthMonitor({ probe: probeOf(h), intervalMs: h.intervalMs, timeoutMs: h.timeoutMs, misses: h.misses });
    this.health = health;
    health.on('event', (e) => {
      if (this.stopped || this.health !== health) return;
      if (e.kind === 'down' && this.state === 'up') this.transition('hung', { kind: 'down', cause: 'hang', pid, at: e.at, detail: `${e.misses} probes failed: ${e.lastError}` });
      else if (e.kind === 'up' && this.state === 'hung') this.transition('up', { kind: 'up', pid, at: e.at });
    });
    health.start();
  }

  private lookAgain(): void {
    this.retry = setTimeout(async () => {
      if (this.stopped) return;
      const pid = await this.readPidFile();
      if (this.stopped) return;
      if (pid !== undefined && pid !== this.pid) {
        try {
          this.watchPid(pid);
          return;
        } catch {
          // died again before we could watch it
        }
      }
      this.lookAgain();
    }, PIDFILE_RETRY_MS);
  }

  private async readPidFile(): Promise<number | undefined> {
    const text = await readFile(this.config.pidFile!, 'utf8').catch(() => '');
    const pid = Number(text.split('\n', 1)[0]!.trim());
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    try {
      process.kill(pid, 0);
      return pid;
    } catch {
      return undefined; // a stale pid file
    }
  }

  private transition(state: InstanceState, event: InstanceEvent): void {
    if (this.state === state) return;
    this.state = state;
    this.emit('event', event);
  }
}

/** The probe a health config describes. */
export function probeOf(h: HealthConfig): Probe {
  const p = h.probe;
  if (p.kind === 'tcp') return tcpConnectProbe(p.host, p.port);
  if (p.kind === 'exec') return execProbe(p.command[0]!, p.command.slice(1));
  return postgresProbe(p.connectionString);
}

/** `SELECT 1` through node-postgres (an optional peer dependency: loaded only when used). */
function postgresProbe(connectionString: string): Probe {
  return async (signal) => {
    const pg = await import('pg').catch(() => {
      throw new Error('the postgres probe needs the `pg` package (npm install pg)');
    });
    const client = new pg.default.Client({ connectionString });
    const onAbort = () => {
      // A hung server never answers: drop the socket so nothing is left behind.
      (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
    } finally {
      signal.removeEventListener('abort', onAbort);
      void client.end().catch(() => {});
    }
  };
}
