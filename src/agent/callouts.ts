// Callouts (seed 000): every executable in a directory runs for each event, with the event as
// arguments (its FAN line, split) and in the environment (TAKEOVER_EVENT as JSON, one
// TAKEOVER_<FIELD> per field). They run in parallel up to a limit, each bounded by a timeout
// and never holding up the agent: run() only queues. Past `maxQueued` waiting runs the oldest are
// dropped and counted, so a hung callout cannot grow memory without bound.
//
// A run is the callout's whole process group, not just the callout: each starts in a group of
// its own, and the run lasts until that group is empty or the timeout kills all of it (SIGKILL),
// whether or not the callout itself has exited. A callout that leaves a background child behind
// (`sleep 30 & exit 0`) therefore holds its parallel slot, and the agent's stop, until the child
// ends or the timeout ends it: nothing a callout starts outlives its timeout.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { constants } from 'node:fs';
import { access, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { atNice } from '../monitor/cpu-priority.js';
import { printFan } from '../events/fan-line.js';
import type { ServiceEvent } from '../events/service-event.js';

export interface CalloutOptions {
  dir: string;
  /** The bound of a run, ms: its whole process group is killed then (SIGKILL). */
  timeoutMs: number;
  /** Runs (process groups) at once. */
  maxParallel: number;
  maxQueued?: number; // default 1000
  /** The nice value callouts start at (monitor/cpu-priority.ts atNice); default: the agent's (inherited). */
  childNice?: number;
}

export interface CalloutResult {
  file: string;
  event: ServiceEvent;
  code: number | null;
  signal: string | null;
  /** The timeout ended the run: its process group was killed with SIGKILL. */
  timedOut: boolean;
  /**
   * The callout itself had exited (`code`/`signal` are its own) but processes it started were
   * still running in its group at the timeout, and were killed with it.
   */
  orphansKilled: boolean;
  /** Spawn failure (ENOENT, EACCES...) */
  error?: string;
  /**
   * From the start to the end of the run, ms: the group empty (a member that has exited counts
   * until its parent, init for an orphan, reaps it), or the timeout's SIGKILL sent.
   */
  elapsedMs: number;
}

/**
 * How often a group the callout left behind is checked for being empty, ms. Also bounds how long
 * an emptied group's id goes unwatched: the kernel may give that id again to a new process only
 * once the group is empty, and only after the pid counter wraps, so 25 ms is far too short for
 * the timeout's kill to reach anyone else.
 */
const GROUP_POLL_MS = 25;

/** Whether any process (a zombie included) is still in the process group. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

export class CalloutRunner extends EventEmitter<{ result: [CalloutResult]; dropped: [{ file: string; event: ServiceEvent }] }> {
  private readonly queue: Array<{ file: string; event: ServiceEvent }> = [];
  private running = 0;
  private idleWaiters: Array<() => void> = [];
  dropped = 0;

  constructor(private readonly options: CalloutOptions) {
    super();
  }

  /** The executables in the directory, in name order (read at each event: add or remove at will). */
  async executables(): Promise<string[]> {
    const names = (await readdir(this.options.dir)).sort();
    const out: string[] = [];
    for (const n of names) {
      if (n.startsWith('.')) continue;
      const file = path.join(this.options.dir, n);
      const s = await stat(file).catch(() => undefined);
      if (!s?.isFile()) continue;
      if (await access(file, constants.X_OK).then(() => true, () => false)) out.push(file);
    }
    return out;
  }

  /** Queues one run of every callout for the event; resolves once they are queued. */
  async run(event: ServiceEvent): Promise<void> {
    let files: string[];
    try {
      files = await this.executables();
    } catch (err) {
      this.emit('result', { file: this.options.dir, event, code: null, signal: null, timedOut: false, orphansKilled: false, error: (err as Error).message, elapsedMs: 0 });
      return;
    }
    const limit = this.options.maxQueued ?? 1000;
    for (const file of files) {
      this.queue.push({ file, event });
      while (this.queue.length > limit) {
        const old = this.queue.shift()!;
        this.dropped++;
        this.emit('dropped', old);
      }
    }
    this.pump();
  }

  /** Resolves when nothing is queued and no run's process group is left (for shutdown and tests). */
  idle(): Promise<void> {
    if (this.running === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private pump(): void {
    while (this.running < this.options.maxParallel && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      void this.exec(job.file, job.event).then((result) => {
        this.running--;
        this.emit('result', result);
        this.pump();
        if (this.running === 0 && this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  private exec(file: string, event: ServiceEvent): Promise<CalloutResult> {
    const started = performance.now();
    const env: Record<string, string> = { ...process.env, TAKEOVER_EVENT: JSON.stringify(event) } as Record<string, string>;
    for (const [k, v] of Object.entries(event)) env[`TAKEOVER_${k.toUpperCase()}`] = String(v);
    return new Promise((resolve) => {
      // detached: the callout leads a new process group (and session), which its children, the
      // background ones included, inherit; its pid is the group's id.
      const child = atNice(this.options.childNice, () => spawn(file, printFan(event).split(' '), { env, stdio: 'ignore', detached: true }));
      const group = child.pid;
      let timedOut = false;
      let exit: { code: number | null; signal: string | null } | undefined;
      let exitedFirst = false; // the callout exited before the timeout
      let error: string | undefined;
      let poll: NodeJS.Timeout | undefined;
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearInterval(poll);
        resolve({
          file,
          event,
          code: exit?.code ?? null,
          signal: exit?.signal ?? null,
          timedOut,
          orphansKilled: timedOut && exitedFirst,
          ...(error ? { error } : {}),
          elapsedMs: Math.round(performance.now() - started),
        });
      };
      // Once the callout has exited, the run lasts while its group has members: it ends when the
      // group is empty, or at the timeout, which kills them. While it has any, the group's id
      // cannot be given to another process, so the kill reaches only the callout's own.
      const watchGroup = (): void => {
        const check = (): void => {
          if (group === undefined || !groupAlive(group)) finish();
        };
        check();
        if (!done) poll = setInterval(check, GROUP_POLL_MS);
      };
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          if (group === undefined) throw new Error('not started');
          process.kill(-group, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
        if (exit) finish(); // only what the callout left behind was running
      }, this.options.timeoutMs);
      child.once('error', (err) => (error = err.message));
      child.once('close', (code, signal) => {
        exit = { code, signal };
        exitedFirst = !timedOut;
        if (timedOut) finish(); // the kill went to the whole group
        else watchGroup();
      });
    });
  }
}
