// Watches one instance (a server process) on this node and says when it goes down, comes back or
// will not come back. Three ways to find the process (config: pid, pidFile, command) and one
// way to see it hang (health probes): an exit is seen the instant it happens (pidfd, or for a
// child of ours its exit status); a hang after `misses` failed probes. A process found through a
// pid file is looked for again after it died (something else, e.g. systemd, may restart it); one
// started by command is restarted by the Supervisor under its policy, and past it is
// NOT_RESTARTING, until an operator starts it again (`service start`, `instance cleanup`).
//
// With a health probe, an instance is up once its first probe passes (a process that has just
// started is not serving yet); without one, once it runs. A command instance runs in its own
// process group, its stderr goes to a file of the state directory (its last lines are kept with
// its exit) and its identity to a record there, so that an agent that restarts adopts it.
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { HealthMonitor, execProbe, tcpConnectProbe, type Probe } from '../monitor/health-probe.js';
import { ProcessExitWatch } from '../monitor/process-exit.js';
import { StderrFile } from '../monitor/stderr-file.js';
import { Supervisor, signal, terminate, type ProcessExit, type SupervisorEvent } from '../monitor/supervisor.js';
import { DEFAULT_STOP_GRACE_MS, type HealthConfig, type InstanceConfig } from './config.js';
import { describeExit } from './exit-description.js';
import { openRecorded, readRecord, recordPath, removeRecord, writeRecord } from './instance-record.js';

export type InstanceState = 'starting' | 'up' | 'down' | 'hung' | 'not-restarting' | 'stopped';

/** How the instance's process last ended. */
export interface LastExit extends ProcessExit {
  /** Stopped by the agent (a planned stop, a cleanup, the agent's own stop), not a failure. */
  planned: boolean;
  /** The last lines of its stderr (a command instance's; [] for one watched by pid). */
  stderr: string[];
}

export type InstanceEvent =
  | { kind: 'up'; pid: number; at: number }
  | { kind: 'down'; cause: 'failure' | 'hang'; pid: number; at: number; detail: string; exitCode?: number; signal?: string }
  | { kind: 'not-restarting'; failures: number; at: number }
  // For the log (not published): each process started or adopted, each exit, each record refused.
  | { kind: 'started'; pid: number; at: number; adopted: boolean }
  | { kind: 'exited'; exit: LastExit }
  | { kind: 'not-adopted'; pid?: number; reason: string };

export interface InstanceMonitorOptions {
  /** A command instance's record and stderr file go here (the agent creates it); required for one. */
  stateDir?: string;
  /** The nice value a command instance runs at (the agent's own is lower: cpu-priority.ts); default: the agent's. */
  childNice?: number;
}

/** What `status` shows of an instance. */
export interface InstanceInfo {
  name: string;
  state: InstanceState;
  /** When it entered this state, ms since the epoch. */
  since: number;
  /** The running process (none when nothing runs). */
  pid?: number;
  /** Started by an earlier agent and adopted by this one. */
  adopted?: boolean;
  /** A command instance's failures within its restart window. */
  failures?: number;
  lastExit?: LastExit;
  /** The health probe's last error, while it is starting or hung. */
  probeError?: string;
}

const now = () => performance.timeOrigin + performance.now();
const PIDFILE_RETRY_MS = 500;
/** How often a running command instance's stderr file is checked against its size bound. */
const STDERR_TRIM_MS = 10_000;

export class InstanceMonitor extends EventEmitter<{ event: [InstanceEvent] }> {
  state: InstanceState = 'starting';
  since = now();
  pid: number | undefined;
  adopted = false;
  lastExit: LastExit | undefined;
  private watch: ProcessExitWatch | undefined;
  private health: HealthMonitor | undefined;
  private supervisor: Supervisor | undefined;
  private readonly stderr: StderrFile | undefined;
  private readonly record: string | undefined;
  /** Record writes and removals, in order (a quick exit must not leave a record behind). */
  private recordOps: Promise<void> = Promise.resolve();
  /** The last exit's stderr tail being read (a restart waits for it before emptying the file). */
  private tailRead: Promise<void> = Promise.resolve();
  private trimTimer: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    readonly config: InstanceConfig,
    private readonly options: InstanceMonitorOptions = {},
  ) {
    super();
    if (config.command) {
      if (!options.stateDir) throw new Error(`instance ${config.name}: a command instance needs a state directory`);
      this.stderr = new StderrFile(path.join(options.stateDir, `${config.name}.stderr`));
      this.record = recordPath(options.stateDir, config.name);
    }
  }

  /** Whether the agent runs this instance's process (and so can stop and start it). */
  get runsCommand(): boolean {
    return this.config.command !== undefined;
  }

  /** SIGTERM to SIGKILL when the agent stops the process (config `stopGraceMs`). */
  get graceMs(): number {
    return this.config.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
  }

  /** Failures within the restart window (command instances). */
  get failures(): number | undefined {
    return this.supervisor?.failures;
  }

  async start(): Promise<void> {
    const c = this.config;
    this.stopped = false;
    if (c.command) return this.startCommand(true);
    if (c.pid !== undefined) {
      this.watchPid(c.pid); // throws ESRCH at start if the pid does not exist: a config error
      return;
    }
    const pid = await this.readPidFile();
    if (pid === undefined) throw new Error(`instance ${c.name}: no live process in ${c.pidFile}`);
    this.watchPid(pid);
  }

  /**
   * Stops watching; a process the agent runs is stopped too (SIGTERM to its process group,
   * SIGKILL after graceMs). Resolves with its exit (undefined when nothing of ours ran).
   */
  async stop(graceMs = this.graceMs): Promise<LastExit | undefined> {
    this.stopped = true;
    clearTimeout(this.retry);
    this.stopHealth();
    this.watch?.close();
    this.watch = undefined;
    const exit = await this.supervisor?.stop(graceMs);
    await this.tailRead;
    await this.recordOps;
    this.setState('stopped');
    return exit ? this.lastExit : undefined;
  }

  /**
   * Starts a command instance afresh (after a stop, NOT_RESTARTING, or a hang): its failure count
   * starts from zero; a process still running (a hung one) is stopped first.
   */
  async restart(graceMs = this.graceMs): Promise<void> {
    if (!this.config.command) throw new Error(`instance ${this.config.name} is not started by the agent (no command)`);
    if (this.supervisor?.pid !== undefined) await this.stop(graceMs);
    this.stopped = false;
    await this.startCommand(false);
  }

  /**
   * Ends a command instance's running process as a failure (a start that never became ready):
   * SIGTERM to its group, SIGKILL after graceMs; the restart policy counts it and restarts it, or
   * says NOT_RESTARTING. Throws for an instance the agent does not run.
   */
  async kill(graceMs = this.graceMs): Promise<void> {
    if (!this.supervisor) throw new Error(`instance ${this.config.name} is not started by the agent (no command)`);
    await this.supervisor.kill(graceMs);
  }

  /** Forgets the failures counted in the restart window (a cleanup of a running instance). */
  resetFailures(): void {
    this.supervisor?.resetFailures();
  }

  info(): InstanceInfo {
    return {
      name: this.config.name,
      state: this.state,
      since: this.since,
      ...(this.pid !== undefined ? { pid: this.pid } : {}),
      ...(this.adopted && this.pid !== undefined ? { adopted: true } : {}),
      ...(this.supervisor ? { failures: this.supervisor.failures } : {}),
      ...(this.lastExit ? { lastExit: this.lastExit } : {}),
      ...((this.state === 'starting' || this.state === 'hung') && this.health?.lastError ? { probeError: this.health.lastError } : {}),
    };
  }

  // ---- command instances ----

  private async startCommand(adoptRecorded: boolean): Promise<void> {
    const c = this.config;
    const command = c.command!;
    if (!this.supervisor) {
      const restart = c.restart ?? { maxFailures: 0, windowMs: 1, backoffMs: 0 };
      this.supervisor = new Supervisor({
        command: command[0]!,
        args: command.slice(1),
        restart,
        ...(this.options.childNice !== undefined ? { nice: this.options.childNice } : {}),
        // A restart empties the file: the last run's tail is read first.
        stderr: async () => {
          await this.tailRead;
          return this.stderr!.openForChild();
        },
      });
      this.supervisor.on('event', (e) => this.onSupervisor(e));
    }
    this.setState('starting');
    if (adoptRecorded && (await this.adoptRecorded(command))) return;
    this.supervisor.start();
  }

  /** Adopts the process an earlier agent recorded, if it still runs; true when adopted. */
  private async adoptRecorded(command: string[]): Promise<boolean> {
    const record = await readRecord(this.record!).catch((err: Error) => {
      this.emit('event', { kind: 'not-adopted', reason: err.message });
      return undefined;
    });
    if (!record) return false;
    const found = await openRecorded(record);
    if ('reason' in found) {
      this.emit('event', { kind: 'not-adopted', pid: record.pid, reason: found.reason });
      await removeRecord(this.record!);
      return false;
    }
    if (JSON.stringify(record.command) !== JSON.stringify(command)) {
      // Ours, but the configuration now says another command: the old copy goes, the new one starts.
      this.emit('event', { kind: 'not-adopted', pid: record.pid, reason: `started as ${JSON.stringify(record.command)}, the configuration now says ${JSON.stringify(command)}: stopping it` });
      await terminate(record.pid, found.watch.exited, (sig) => signal(record.pid, sig, found.group), this.graceMs);
      found.watch.close();
      await removeRecord(this.record!);
      return false;
    }
    this.supervisor!.adopt(found.watch, found.group);
    return true;
  }

  private onSupervisor(e: SupervisorEvent): void {
    if (e.kind === 'started') {
      this.pid = e.pid;
      this.adopted = e.adopted;
      this.setState('starting');
      if (!e.adopted) this.recordOp(async () => void (await writeRecord(this.record!, e.pid, this.config.command!, e.at)));
      clearInterval(this.trimTimer);
      this.trimTimer = setInterval(() => void this.stderr!.trim(), STDERR_TRIM_MS).unref();
      this.emit('event', { kind: 'started', pid: e.pid, at: e.at, adopted: e.adopted });
      this.running(e.pid);
    } else if (e.kind === 'exited') {
      clearInterval(this.trimTimer);
      this.recordOp(() => removeRecord(this.record!));
      const { kind: _, planned, ...exit } = e;
      if (!planned) this.gone(exit);
      else this.pid = undefined;
      // The tail after the DOWN: reading it must not delay the event.
      this.tailRead = this.stderr!.tail().then(
        (stderr) => this.exited({ ...exit, planned, stderr }),
        () => this.exited({ ...exit, planned, stderr: [] }),
      );
    } else {
      this.setState('not-restarting', { kind: 'not-restarting', failures: e.failures, at: e.at });
    }
  }

  private recordOp(op: () => Promise<void>): void {
    this.recordOps = this.recordOps.then(op).catch(() => {}); // a record is an optimisation: never fatal
  }

  // ---- every way ----

  private watchPid(pid: number): void {
    this.watch?.close();
    const watch = new ProcessExitWatch(pid);
    this.watch = watch;
    this.pid = pid;
    this.adopted = false;
    this.setState('starting');
    this.running(pid);
    void watch.exited.then((at) => {
      if (this.stopped || this.watch !== watch) return;
      watch.close();
      this.watch = undefined;
      const exit = { pid, code: null, signal: null, at };
      this.gone(exit);
      this.exited({ ...exit, planned: false, stderr: [] });
      if (this.config.pidFile) this.lookAgain();
    });
  }

  /** A process runs: up now, or (with a health probe) once its first probe passes. */
  private running(pid: number): void {
    if (!this.config.health) {
      this.setState('up', { kind: 'up', pid, at: now() });
      return;
    }
    this.stopHealth();
    const h: HealthConfig = this.config.health;
    const health = new HealthMonitor({ probe: probeOf(h), intervalMs: h.intervalMs, timeoutMs: h.timeoutMs, misses: h.misses, startDown: true });
    this.health = health;
    health.on('event', (e) => {
      if (this.stopped || this.health !== health) return;
      if (e.kind === 'down' && this.state === 'up') this.setState('hung', { kind: 'down', cause: 'hang', pid, at: e.at, detail: `${e.misses} probes failed: ${e.lastError}` });
      else if (e.kind === 'up' && (this.state === 'hung' || this.state === 'starting')) this.setState('up', { kind: 'up', pid, at: e.at });
    });
    health.start();
  }

  /** The process is gone, unplanned: DOWN when it was up (or hung); a start that never came up is no DOWN. */
  private gone(exit: ProcessExit): void {
    this.stopHealth();
    this.pid = undefined;
    const wasServing = this.state === 'up' || this.state === 'hung';
    if (!wasServing) {
      this.setState('down');
      return;
    }
    this.setState('down', {
      kind: 'down',
      cause: 'failure',
      pid: exit.pid,
      at: exit.at,
      detail: describeExit(exit),
      ...(exit.code !== null ? { exitCode: exit.code } : {}),
      ...(exit.signal !== null ? { signal: exit.signal } : {}),
    });
  }

  private exited(exit: LastExit): void {
    this.lastExit = exit;
    this.emit('event', { kind: 'exited', exit });
  }

  private stopHealth(): void {
    this.health?.stop();
    this.health = undefined;
  }

  private lookAgain(): void {
    this.retry = setTimeout(async () => {
      if (this.stopped) return;
      const pid = await this.readPidFile();
      if (this.stopped) return;
      if (pid !== undefined && pid !== this.lastExit?.pid) {
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

  /** Enters `state` (the time with it); emits `event` when the state changed. */
  private setState(state: InstanceState, event?: InstanceEvent): void {
    if (this.state === state) return;
    this.state = state;
    this.since = now();
    if (event) this.emit('event', event);
  }
}

/** The probe a health config describes. */
export function probeOf(h: HealthConfig): Probe {
  const p = h.probe;
  if (p.kind === 'tcp') return tcpConnectProbe(p.host, p.port);
  if (p.kind === 'exec') return execProbe(p.command[0]!, p.command.slice(1));
  return postgresProbe(p.connectionString);
}

/** `SELECT 1` through node-postgres (loaded only when used: it takes ~70 ms). */
function postgresProbe(connectionString: string): Probe {
  return async (signal) => {
    const pg = await import('pg');
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
