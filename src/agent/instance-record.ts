// The record an agent keeps of each instance it starts by command, in its state directory
// (`stateDir/INSTANCE.json`): the pid, the process's start time and boot (its identity, see
// monitor/process-identity.ts) and the command. An agent that died (SIGKILL, a crash) leaves its
// instances running; the next one reads the record and adopts the process instead of starting
// a second copy of the service into "port in use". A pid that now names another process (reused
// after a reboot or a wrap) has another start time or boot, and is not adopted.
import { rename, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ProcessExitWatch } from '../monitor/process-exit.js';
import { processIdentity } from '../monitor/process-identity.js';

export interface InstanceRecord {
  pid: number;
  /** Clock ticks after boot (/proc/PID/stat field 22), decimal. */
  startTime: string;
  bootId: string;
  /** The process group it leads (a Supervisor's child leads its own). */
  pgid: number;
  /** The configured command it was started with. */
  command: string[];
  /** ISO 8601, UTC. */
  startedAt: string;
  /** The agent that wrote it (pid and start time): a record of a live agent is not another's to adopt. */
  agent: { pid: number; startTime: string };
}

export function recordPath(stateDir: string, instance: string): string {
  return path.join(stateDir, `${instance}.json`);
}

/**
 * Writes the record of a process just started (atomically: a reader never sees half of it).
 * Returns false when the process is already gone (nothing to record).
 */
export async function writeRecord(file: string, pid: number, command: string[], startedAt: number): Promise<boolean> {
  const [id, self] = await Promise.all([processIdentity(pid), processIdentity(process.pid)]);
  if (!id || !self) return false;
  const record: InstanceRecord = { pid, startTime: id.startTime, bootId: id.bootId, pgid: id.pgid, command, startedAt: new Date(startedAt).toISOString(), agent: { pid: process.pid, startTime: self.startTime } };
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(record)}\n`, { mode: 0o600 });
  await rename(tmp, file);
  return true;
}

export async function removeRecord(file: string): Promise<void> {
  await rm(file, { force: true });
}

/** The record in `file`; undefined when there is none; throws naming the file when it is not a record. */
export async function readRecord(file: string): Promise<InstanceRecord | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let o: Partial<InstanceRecord>;
  try {
    o = JSON.parse(text) as Partial<InstanceRecord>;
  } catch {
    throw new Error(`${file}: not an instance record (not JSON)`);
  }
  const ok =
    Number.isInteger(o.pid) && o.pid! > 0 && typeof o.startTime === 'string' && /^\d+$/.test(o.startTime) && typeof o.bootId === 'string' &&
    Number.isInteger(o.pgid) && Array.isArray(o.command) && o.command.every((a) => typeof a === 'string') && typeof o.startedAt === 'string' &&
    typeof o.agent === 'object' && o.agent !== null && Number.isInteger(o.agent.pid) && typeof o.agent.startTime === 'string';
  if (!ok) throw new Error(`${file}: not an instance record (a field is missing or wrong)`);
  return o as InstanceRecord;
}

export type Recorded = { watch: ProcessExitWatch; group: boolean } | { reason: string };

/**
 * The recorded process, if it is still the one recorded: its pidfd first, then its identity, so
 * the pidfd cannot name a process that took the pid after the check. The caller owns the watch.
 */
export async function openRecorded(r: InstanceRecord): Promise<Recorded> {
  if (r.agent.pid !== process.pid && r.agent.pid > 0) {
    const writer = await processIdentity(r.agent.pid);
    if (writer && writer.bootId === r.bootId && writer.startTime === r.agent.startTime) {
      return { reason: `the agent that started it (pid ${r.agent.pid}) still runs: two agents share this state directory?` };
    }
  }
  let watch: ProcessExitWatch;
  try {
    watch = new ProcessExitWatch(r.pid);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return { reason: `pid ${r.pid} is gone` };
    throw err;
  }
  const id = await processIdentity(r.pid);
  const why = !id ? `pid ${r.pid} is gone` : id.bootId !== r.bootId ? 'recorded before a reboot' : id.startTime !== r.startTime ? `pid ${r.pid} is another process now (another start time)` : undefined;
  if (why) {
    watch.close();
    return { reason: why };
  }
  return { watch, group: id!.pgid === r.pid };
}
