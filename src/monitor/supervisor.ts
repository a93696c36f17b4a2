// A process the agent starts itself, restarted when it exits (issue 3), until it has failed
// `maxFailures` times within `windowMs`: then NOT_RESTARTING, so clients stop retrying a
// service that will not come back (seed 001) instead of waiting on it forever.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';

export interface RestartPolicy {
  /** Failures tolerated within the window; the next one ends the restarts. */
  maxFailures: number;
  windowMs: number;
  /** Pause before each restart. */
  backoffMs: number;
}

/** How long a stopped process has between SIGTERM and SIGKILL (ms). */
export const STOP_GRACE_MS = 2000;

export interface SupervisorOptions {
  command: string;
  args?: string[];
  env?: Record<string, string>;
  restart: RestartPolicy;
}

export type SupervisorEvent =
  | { kind: 'started'; pid: number; attempt: number; at: number }
  | { kind: 'exited'; pid: number; code: number | null; signal: string | null; at: number }
  | { kind: 'not-restarting'; failures: number; at: number };

export class Supervisor extends EventEmitter<{ event: [SupervisorEvent] }> {
  private child: ChildProcess | undefined;
  private failures: number[] = [];
  private attempt = 0;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: SupervisorOptions) {
    super();
    const r = options.restart;
    if (!Number.isInteger(r.maxFailures) || r.maxFailures < 0 || !(r.windowMs > 0) || !(r.backoffMs >= 0)) {
      throw new RangeError('restart policy needs maxFailures >= 0, windowMs > 0, backoffMs >= 0');
    }
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(): void {
    this.stopping = false;
    this.launch();
  }

  /**
   * Stops restarting and stops the process with its process group, as systemd stops a unit:
   * SIGTERM to the group, then SIGKILL to whatever of the group is left once the process has
   * exited or `graceMs` (default STOP_GRACE_MS) has passed, whichever comes first. So a wrapper's
   * children (`sh -c 'server & ...'`) never outlive the stop. Resolves when the process is gone.
   */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    // A process that exited earlier is not signalled: its pid may belong to another process now.
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    const pgid = child.pid;
    const exited = new Promise((r) => child.once('exit', r));
    signalGroup(pgid, 'SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    // Right after the exit the group id cannot have been reused if members are left: they hold it.
    signalGroup(pgid, 'SIGKILL');
    await exited;
  }

  private launch(): void {
    this.attempt++;
    // detached: its own process group (and session), so that the stop reaches its children, and a
    // Ctrl-C meant for the agent reaches the agent alone, which then stops it as planned.
    const child = spawn(this.options.command, this.options.args ?? [], {
      detached: true,
      stdio: 'ignore',
      env: { ...process.env, ...this.options.env },
    });
    this.child = child;
    const now = () => performance.timeOrigin + performance.now();
    child.once('spawn', () => this.emit('event', { kind: 'started', pid: child.pid!, attempt: this.attempt, at: now() }));
    let gone = false;
    const onGone = (code: number | null, signal: string | null) => {
      if (gone) return;
      gone = true;
      const at = now();
      this.emit('event', { kind: 'exited', pid: child.pid ?? -1, code, signal, at });
      if (this.stopping) return;
      this.failures = [...this.failures.filter((t) => at - t < this.options.restart.windowMs), at];
      if (this.failures.length > this.options.restart.maxFailures) {
        this.emit('event', { kind: 'not-restarting', failures: this.failures.length, at });
        return;
      }
      this.restartTimer = setTimeout(() => this.launch(), this.options.restart.backoffMs);
    };
    // A command that cannot be started at all (ENOENT, EACCES) may never emit 'exit'.
    child.once('error', () => {
      if (child.pid === undefined) onGone(null, null);
    });
    child.once('exit', onGone);
  }
}

/** kill(-pgid): the whole group; a group already gone (ESRCH) is not an error. */
function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
