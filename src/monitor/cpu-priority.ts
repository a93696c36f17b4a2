// The agent's CPU priority (agent/agent.ts sets it; the Supervisor and the callouts start their
// children at the agent's starting nice: atNice). One event loop sends this node's heartbeats
// and does the agent's other work; on a node busy with something else (an application
// accepting 10,000 connections at once, clients on the same host), a loop that waits for a CPU
// is as silent as a dead one: at nice 0 beside four busy processes on 2 cores the lab's agent
// went unheard for >300 ms, its peer declared it dead and took its address
// (test/lab/replication-10k.test.ts). So the agent runs at a lower nice value than the work
// around it (config `nice`, default -10), as corosync runs at real-time priority (SCHED_RR) and
// keepalived has vrrp_priority; and what it starts for others (instances, callouts) starts at
// the nice the agent was started with, so the application never inherits the agent's priority.
//
// Linux keeps a nice value per thread (setpriority(2) on a thread id changes that thread alone,
// and a new thread or child inherits the nice of the thread that creates it): every thread
// listed in /proc/PID/task is set, later threads (libuv's pool, workers), created by the main
// thread, inherit it, and a child is forked from a thread set to the child's nice for that moment.
import { readdirSync } from 'node:fs';
import os from 'node:os';

/** The agent's default nice value (config `nice`). */
export const DEFAULT_AGENT_NICE = -10;

/** setpriority(2) refused or failed for a thread: `code` (EACCES, EPERM...), `errno`, `syscall` as Node's own errors. */
export class PriorityError extends Error {
  override readonly name = 'PriorityError';
  constructor(
    message: string,
    readonly code: string,
    readonly errno: number,
    readonly syscall: string,
  ) {
    super(message);
  }
}

/** The nice value of thread or process `id` (0: the calling thread), -20..19. */
export function niceOf(id = 0): number {
  return os.getPriority(id);
}

/** The nice value of every thread of process `pid` now, by thread id; a thread that exited meanwhile is left out. */
export function threadNices(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    try {
      out.set(tid, os.getPriority(tid));
    } catch {
      // gone since the listing
    }
  }
  return out;
}

/**
 * Sets the nice value of every thread of process `pid` (setpriority(2), PRIO_PROCESS per thread
 * id). Returns how many threads were set. A thread that exits meanwhile is skipped; the process
 * gone altogether (ENOENT on /proc/PID/task) returns 0. Throws a PriorityError on anything else:
 * EACCES when lowering a nice value without CAP_SYS_NICE.
 */
export function setProcessNice(pid: number, nice: number): number {
  let tids: number[];
  try {
    tids = readdirSync(`/proc/${pid}/task`).map(Number);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  let set = 0;
  for (const tid of tids) {
    try {
      os.setPriority(tid, nice);
      set++;
    } catch (err) {
      const info = (err as { info?: { code: string; errno: number } }).info;
      if (info?.code === 'ESRCH') continue;
      throw new PriorityError(`cannot set thread ${tid}'s nice value to ${nice}: ${info?.code ?? (err as Error).message}`, info?.code ?? 'EUNKNOWN', info?.errno ?? 0, 'setpriority');
    }
  }
  return set;
}

/**
 * Sets this process's threads to `nice` (the agent's config `nice`). Throws a PriorityError
 * naming the config field when the kernel refuses (lowering it needs CAP_SYS_NICE).
 */
export function raiseAgentPriority(nice: number): void {
  const before = niceOf();
  try {
    setProcessNice(process.pid, nice);
  } catch (err) {
    if (!(err instanceof PriorityError)) throw err;
    const why = err.code === 'EACCES' || err.code === 'EPERM' ? ': a nice value below the current one needs CAP_SYS_NICE (run as root); or set `nice` to at least ' + before : '';
    throw new PriorityError(`nice: ${err.message}${why}`, err.code, err.errno, err.syscall);
  }
}

/**
 * Runs `start` (a synchronous spawn()) with the calling thread at `nice` and then puts the thread
 * back: a child inherits the nice of the thread that forks it, so the instances and callouts the
 * agent starts begin life at `nice` (the agent's nice from before raiseAgentPriority), with no
 * moment at the agent's and nothing to correct afterwards. `nice` undefined or the thread's own:
 * just `start()`. Going back down needs what raiseAgentPriority needed (CAP_SYS_NICE), which the
 * agent keeps; should it fail, the thread stays at `nice` and a process warning says so.
 */
export function atNice<T>(nice: number | undefined, start: () => T): T {
  const own = niceOf();
  if (nice === undefined || nice === own) return start();
  os.setPriority(0, nice); // 0: the calling thread (Linux)
  try {
    return start();
  } finally {
    try {
      os.setPriority(0, own);
    } catch (err) {
      process.emitWarning(`the agent's thread stays at nice ${nice}, not ${own}: ${(err as Error).message}`, 'PriorityWarning');
    }
  }
}
