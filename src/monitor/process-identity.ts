// Who a pid is: a pid is reused once its process is gone, so a pid alone names no process across
// time. The pid, the boot and the process's start time (clock ticks after boot, from
// /proc/PID/stat) together do: the kernel does not hand one pid to two processes within a tick.
import { readdir, readFile } from 'node:fs/promises';

export interface ProcessIdentity {
  pid: number;
  /** Field 22 of /proc/PID/stat: clock ticks after boot, as decimal text (it can pass 2^53 in theory). */
  startTime: string;
  /** The process group (field 5). */
  pgid: number;
  /** /proc/sys/kernel/random/boot_id: start times count from this boot. */
  bootId: string;
}

/** The identity of a live process, or undefined when there is no such process (or it is a zombie). */
export async function processIdentity(pid: number): Promise<ProcessIdentity | undefined> {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`pid must be a positive integer: ${pid}`);
  const [stat, bootId] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined), currentBootId()]);
  if (stat === undefined) return undefined;
  const s = parseProcStat(stat);
  if (s.state === 'Z' || s.state === 'X') return undefined; // gone but not yet reaped
  return { pid, startTime: s.startTime, pgid: s.pgid, bootId };
}

/** This boot's id. */
export async function currentBootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
}

/** The argv of a live process, from /proc/PID/cmdline (empty for a kernel thread or a zombie). */
export async function processCommandLine(pid: number): Promise<string[] | undefined> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  if (raw === undefined) return undefined;
  const args = raw.split('\0');
  if (args.at(-1) === '') args.pop();
  return args;
}

/**
 * State, parent, process group and start time from the text of /proc/PID/stat. The command name
 * (field 2) is in parentheses and may itself hold spaces and ')': the fields are counted after the last ')'.
 */
export function parseProcStat(text: string): { state: string; ppid: number; pgid: number; startTime: string } {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error('/proc/PID/stat: no command name');
  const f = text.slice(close + 1).trim().split(/\s+/); // f[0] is field 3 (state)
  const state = f[0];
  const ppid = Number(f[4 - 3]);
  const pgid = Number(f[5 - 3]);
  const startTime = f[22 - 3];
  if (state === undefined || !Number.isInteger(ppid) || !Number.isInteger(pgid) || startTime === undefined || !/^\d+$/.test(startTime)) throw new Error('/proc/PID/stat: too few fields');
  return { state, ppid, pgid, startTime };
}

/**
 * Whether a process group still has a live member (zombies, dead but not yet reaped, do not
 * count: where PID 1 is slow to reap orphans, a group of zombies lives on). The common case, no
 * such group at all, costs one kill(2); a group that exists costs a scan of /proc.
 */
export async function groupHasLiveMember(pgid: number): Promise<boolean> {
  if (!Number.isInteger(pgid) || pgid <= 0) return false;
  try {
    process.kill(-pgid, 0);
  } catch {
    return false;
  }
  const names = await readdir('/proc').catch(() => [] as string[]);
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue;
    try {
      const s = parseProcStat(stat);
      if (s.pgid === pgid && s.state !== 'Z' && s.state !== 'X') return true;
    } catch {
      // not a process entry we can read
    }
  }
  return false;
}
