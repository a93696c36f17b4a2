// Who owns an RST guard's nftables table. A guard is a rule that must live exactly as long as the
// process that installed it: a process killed with SIGKILL cannot remove it, so the table's name
// records its owner (its pid namespace, its pid, and the kernel's start time of that pid, which
// tells a reused pid from the original) and a later sweep removes every table whose owner is
// gone. Pure: the names, and the judgement given a way to read a process's start time; the I/O
// of the sweep is in rst-guard.ts.
import { readFile, readlink } from 'node:fs/promises';

/** Prefix of every guard table this project creates (nftables family inet). */
export const GUARD_TABLE_PREFIX = 'takeover_guard_';

/** A process as the kernel knows it: its pid namespace (inode), pid, start time in clock ticks after boot. */
export interface ProcessIdentity {
  pidNamespace: string;
  pid: number;
  startTicks: string;
}

/** `takeover_guard_<pidns>_<pid>_<startTicks>_<tag>`: tag (hex) tells one process's guards apart. */
export function guardTableName(owner: ProcessIdentity, tag: string): string {
  if (!/^[0-9a-f]{1,16}$/.test(tag)) throw new RangeError(`guard tag must be 1 to 16 hex digits: ${tag}`);
  return `${GUARD_TABLE_PREFIX}${owner.pidNamespace}_${owner.pid}_${owner.startTicks}_${tag}`;
}

const OWNED = new RegExp(`^${GUARD_TABLE_PREFIX}(\\d+)_(\\d+)_(\\d+)_[0-9a-f]+$`);
// What versions before owners were recorded named their tables: takeover_guard_<8 hex digits>.
const UNOWNED = new RegExp(`^${GUARD_TABLE_PREFIX}[0-9a-f]{8}$`);

/**
 * What a table name says about its owner: `undefined` for a table that is not a guard, `null`
 * for a guard whose owner was never recorded (an older version's), else the owner.
 */
export function guardTableOwner(table: string): ProcessIdentity | null | undefined {
  const m = OWNED.exec(table);
  if (m) return { pidNamespace: m[1]!, pid: Number(m[2]), startTicks: m[3]! };
  return UNOWNED.test(table) ? null : undefined;
}

export type GuardVerdict =
  /** Its owner lives: leave it. */
  | 'owned'
  /** Its owner is gone (or the pid names another process now), or was never recorded: remove it. */
  | 'stale'
  /** Owned by a process of another pid namespace, which this one cannot see: leave it. */
  | 'foreign'
  /** Not a guard table. */
  | 'other';

/**
 * Whether a guard table outlived its owner. An owner never recorded counts as gone: such a table
 * was left by an older version, whose processes removed their guard when done, so one found is a
 * leftover. `self` is the judging process (its pid namespace is the one it can see);
 * `startTicksOf(pid)` gives a live process's start time, undefined when no such process exists.
 */
export async function judgeGuardTable(
  table: string,
  self: ProcessIdentity,
  startTicksOf: (pid: number) => Promise<string | undefined>,
): Promise<GuardVerdict> {
  const owner = guardTableOwner(table);
  if (owner === undefined) return 'other';
  if (owner === null) return 'stale';
  if (owner.pidNamespace !== self.pidNamespace) return 'foreign';
  return (await startTicksOf(owner.pid)) === owner.startTicks ? 'owned' : 'stale';
}

/**
 * Field 22 of /proc/PID/stat (start time, clock ticks after boot), parsed after the command
 * name's closing parenthesis, since the name itself may contain spaces and parentheses.
 * Returns undefined when the text is not a stat line.
 */
export function startTicksFromStat(stat: string): string | undefined {
  const close = stat.lastIndexOf(')');
  if (close < 0) return undefined;
  // After ") " come field 3 (state) onwards: field 22 is the 20th of them.
  const fields = stat.slice(close + 2).split(' ');
  const ticks = fields[19];
  return ticks !== undefined && /^\d+$/.test(ticks) ? ticks : undefined;
}

/**
 * The start time of a live process of this pid namespace, or undefined when there is none.
 * Throws on any other failure to read it (EACCES under hidepid...): a caller that cannot tell
 * must not remove anything.
 */
export async function processStartTicks(pid: number): Promise<string | undefined> {
  try {
    return startTicksFromStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw err;
  }
}

let self: Promise<ProcessIdentity> | undefined;
/** This process's identity (read once). Throws when /proc cannot tell it. */
export function selfIdentity(): Promise<ProcessIdentity> {
  self ??= (async () => {
    const ns = /^pid:\[(\d+)\]$/.exec(await readlink('/proc/self/ns/pid'))?.[1];
    const startTicks = await processStartTicks(process.pid);
    if (ns === undefined || startTicks === undefined) throw new Error(`cannot read this process's pid namespace and start time from /proc`);
    return { pidNamespace: ns, pid: process.pid, startTicks };
  })();
  return self;
}
