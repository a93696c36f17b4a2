// A process the agent starts itself, restarted when it exits (issue 3), until it has failed
// `maxFailures` times within `windowMs`: then NOT_RESTARTING, so clients stop retrying a
// service that will not come back (seed 001) instead of waiting on it forever.
//
// Each child runs in its own process group (a new session), so a stop reaches the workers it
// forked too (SIGTERM to the group, SIGKILL after the grace time), and a Ctrl-C meant for the
// agent does not reach it: the agent stops it itself. A process started by an earlier agent
// (found again through its record, see agent/instance-record.ts) is adopted: watched by pidfd
// and stopped the same way, though its exit code is not ours to read (it is not our child).
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import type { ProcessExitWatch } from './process-exit.js';
import { groupHasLiveMember } from './process-identity.js';
import { atNice } from './cpu-priority.js';

export interface RestartPolicy {
  /** Failures tolerated within the window; the next one ends the restarts. */
  maxFailures: number;
  windowMs: number;
  /** Pause before each restart. */
  backoffMs: number;
}

/** How long a stopped process has between SIGTERM and SIGKILL (ms), unless its owner says. */
export const STOP_GRACE_MS = 2000;

export interface SupervisorOptions {
  command: string;
  args?: string[];
  env?: Record<string, string>;
  restart: RestartPolicy;
  /**
   * The child's stderr, asked for at each launch (awaited: the launch waits, e.g. for the last
   * run's output to be read): an open fd (the Supervisor closes its own copy once the child has
   * it) or 'ignore' (the default). stdin and stdout are /dev/null. A hook that throws fails the
   * launch, which counts as a failure.
   */
  stderr?: () => number | 'ignore' | Promise<number | 'ignore'>;
  /** The nice value the child starts at (cpu-priority.ts atNice); default: the agent's (inherited). */
  nice?: number;
}

/** How a process ended. code/signal are null when unknown (an adopted process is not our child). */
export interface ProcessExit {
  pid: number;
  code: number | null;
  signal: string | null;
  /** ms since the epoch */
  at: number;
  /** Why it could not be started at all (spawn's ENOENT, EACCES). */
  error?: string;
}

export type SupervisorEvent =
  | { kind: 'started'; pid: number; attempt: number; at: number; adopted: boolean }
  | ({ kind: 'exited'; planned: boolean } & ProcessExit)
  | { kind: 'not-restarting'; failures: number; at: number };

interface Running {
  pid: number;
  exited: Promise<ProcessExit>;
  /** Signals the process group when the process leads one, else the process. */
  signal(sig: NodeJS.Signals): void;
}

const now = () => performance.timeOrigin + performance.now();
/** How often a stop looks whether the group's other processes are gone after the leader. */
const GROUP_POLL_MS = 20;

export class Supervisor extends EventEmitter<{ event: [SupervisorEvent] }> {
  private running: Running | undefined;
  private failureTimes: number[] = [];
  private attempt = 0;
  private stopping = false;
  /** The failure count that ended the restarts (NOT_RESTARTING). */
  private gaveUpAt: number | undefined;
  /** A launch is waiting for its stderr hook. */
  private launching = false;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: SupervisorOptions) {
    super();
    const r = options.restart;
    if (!Number.isInteger(r.maxFailures) || r.maxFailures < 0 || !(r.windowMs > 0) || !(r.backoffMs >= 0)) {
      throw new RangeError('restart policy needs maxFailures >= 0, windowMs > 0, backoffMs >= 0');
    }
  }

  /** The running process (undefined between an exit and its restart, and after a stop). */
  get pid(): number | undefined {
    return this.running?.pid;
  }

  /**
   * Failures counted in the restart window as of now; once NOT_RESTARTING, the count that ended
   * the restarts (until a start or a reset).
   */
  get failures(): number {
    if (this.gaveUpAt !== undefined) return this.gaveUpAt;
    const at = now();
    return this.failureTimes.filter((t) => at - t < this.options.restart.windowMs).length;
  }

  /** Forgets the failures counted so far (an operator's cleanup of a running instance). */
  resetFailures(): void {
    this.failureTimes = [];
    this.gaveUpAt = undefined;
  }

  /** Starts the command afresh: the failure count starts from zero (an operator's start or cleanup). */
  start(): void {
    if (this.running || this.launching) throw new Error(`already running (pid ${this.running?.pid ?? 'starting'})`);
    clearTimeout(this.restartTimer);
    this.stopping = false;
    this.resetFailures();
    void this.launch();
  }

  /**
   * Takes over a process an earlier agent started (its pidfd already open in `watch`, and checked
   * to be that process): watched and restarted as if started here. `group`: it leads its own
   * process group (it was started by a Supervisor), so a stop signals the group.
   */
  adopt(watch: ProcessExitWatch, group: boolean): void {
    if (this.running || this.launching) throw new Error(`already running (pid ${this.running?.pid ?? 'starting'})`);
    clearTimeout(this.restartTimer);
    this.stopping = false;
    this.attempt++;
    const pid = watch.pid;
    const exited = watch.exited.then((at): ProcessExit => {
      watch.close();
      return { pid, code: null, signal: null, at };
    });
    this.running = { pid, exited, signal: (sig) => signal(pid, sig, group) };
    this.emit('event', { kind: 'started', pid, attempt: this.attempt, at: now(), adopted: true });
    void exited.then((e) => this.onExit(e));
  }

  /**
   * Stops restarting and stops the process (see `terminate`). Resolves with the leader's exit,
   * or undefined when nothing ran.
   */
  async stop(graceMs = STOP_GRACE_MS): Promise<ProcessExit | undefined> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const r = this.running;
    if (!r) return undefined;
    return terminate(r.pid, r.exited, r.signal, graceMs);
  }

  /**
   * Ends the running process as a failure, not a stop (it did not become ready in time): SIGTERM
   * to its group, SIGKILL after graceMs (see `terminate`). Its exit is counted by the restart
   * policy like any other: a restart after backoffMs, or NOT_RESTARTING. Resolves once the
   * process is gone (nothing to do when none runs).
   */
  async kill(graceMs = STOP_GRACE_MS): Promise<void> {
    const r = this.running;
    if (!r) return;
    await terminate(r.pid, r.exited, r.signal, graceMs);
  }

  private async launch(): Promise<void> {
    this.attempt++;
    let stderr: number | 'ignore';
    this.launching = true;
    try {
      // Through a promise even when the hook throws at once: events never come from inside start().
      stderr = (await (async () => this.options.stderr?.())()) ?? 'ignore';
    } catch (err) {
      if (!this.stopping) this.onExit({ pid: -1, code: null, signal: null, at: now(), error: `stderr: ${(err as Error).message}` });
      return;
    } finally {
      this.launching = false;
    }
    if (this.stopping) {
      if (typeof stderr === 'number') closeQuietly(stderr);
      return;
    }
    const child = atNice(this.options.nice, () =>
      spawn(this.options.command, this.options.args ?? [], {
        stdio: ['ignore', 'ignore', stderr],
        env: { ...process.env, ...this.options.env },
        detached: true, // its own session and process group (see the top of the file)
      }),
    );
    if (typeof stderr === 'number') closeQuietly(stderr);
    let resolveExit!: (e: ProcessExit) => void;
    const exited = new Promise<ProcessExit>((r) => (resolveExit = r));
    let gone = false;
    const onGone = (code: number | null, signalName: string | null, error?: string) => {
      if (gone) return;
      gone = true;
      resolveExit({ pid: child.pid ?? -1, code, signal: signalName, at: now(), ...(error ? { error } : {}) });
    };
    // A command that cannot be started at all (ENOENT, EACCES) may never emit 'exit'.
    child.once('error', (err) => {
      if (child.pid === undefined) onGone(null, null, err.message);
    });
    child.once('exit', (code, sig) => onGone(code, sig));
    this.running = {
      pid: child.pid ?? -1,
      exited,
      signal: (sig) => {
        if (!gone && child.pid !== undefined) signal(child.pid, sig, true);
      },
    };
    child.once('spawn', () => this.emit('event', { kind: 'started', pid: child.pid!, attempt: this.attempt, at: now(), adopted: false }));
    void exited.then((e) => this.onExit(e));
  }

  private onExit(e: ProcessExit): void {
    this.running = undefined;
    this.emit('event', { kind: 'exited', planned: this.stopping, ...e });
    if (this.stopping) return;
    this.failureTimes = [...this.failureTimes.filter((t) => e.at - t < this.options.restart.windowMs), e.at];
    if (this.failureTimes.length > this.options.restart.maxFailures) {
      this.gaveUpAt = this.failureTimes.length;
      this.emit('event', { kind: 'not-restarting', failures: this.failureTimes.length, at: e.at });
      return;
    }
    this.restartTimer = setTimeout(() => void this.launch(), this.options.restart.backoffMs);
  }
}

/**
 * Stops a process: SIGTERM to its group (or to it, `signalIt` decides), SIGKILL after graceMs;
 * once the leader is gone, whatever of its group outlived it (workers that got the same SIGTERM)
 * gets the rest of the grace time, then SIGKILL. Resolves with what `exited` resolves with.
 */
export async function terminate<T>(pid: number, exited: Promise<T>, signalIt: (sig: NodeJS.Signals) => void, graceMs: number): Promise<T> {
  const deadline = now() + graceMs;
  signalIt('SIGTERM');
  const kill = setTimeout(() => signalIt('SIGKILL'), graceMs);
  const exit = await exited;
  clearTimeout(kill);
  // A group outlives its leader while a member lives (and its id is not reused meanwhile), so
  // it is safe to signal until then.
  while (await groupHasLiveMember(pid)) {
    if (now() >= deadline) {
      signal(pid, 'SIGKILL', true);
      break;
    }
    await new Promise((res) => setTimeout(res, GROUP_POLL_MS));
  }
  return exit;
}

/** kill(2) of the group `pid` leads (or of the process alone); a process already gone is no error. */
export function signal(pid: number, sig: NodeJS.Signals, group: boolean): void {
  if (!(pid > 0)) return; // never kill(-1) or kill(0): that is every process, or our own group
  try {
    process.kill(group ? -pid : pid, sig);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ESRCH') throw err;
    // The group is gone (or the process never led one): the process itself, if still there.
    if (group) signal(pid, sig, false);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
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
