// The record a command instance leaves in the agent's state directory, and how the next agent
// checks it: a recorded pid is adopted only while it still names the process recorded (same
// boot, same start time), so a pid reused by another process is never taken for the instance.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openRecorded, readRecord, recordPath, removeRecord, writeRecord, type InstanceRecord } from '../../src/agent/instance-record.js';
import { currentBootId, groupHasLiveMember, parseProcStat, processCommandLine, processIdentity } from '../../src/monitor/process-identity.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-record-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function sleeper() {
  const child = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
  await new Promise((r) => child.once('spawn', r));
  return child;
}

describe('process identity', () => {
  it('parses /proc/PID/stat past a command name holding spaces and parentheses', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3)); // field n holds "n"
    fields[0] = 'S';
    expect(parseProcStat(`42 (a) b (c)) ${fields.join(' ')}\n`)).toEqual({ state: 'S', ppid: 4, pgid: 5, startTime: '22' });
    expect(() => parseProcStat('42 (x) S 1 2')).toThrow(/too few fields/);
  });

  it('reads a live process, nothing for one that is gone; a group without live members is no group', async () => {
    const child = await sleeper();
    const id = await processIdentity(child.pid!);
    expect(id).toEqual({ pid: child.pid, startTime: expect.stringMatching(/^\d+$/), pgid: child.pid, bootId: await currentBootId() });
    expect(await processCommandLine(child.pid!)).toEqual(['sleep', '600']);
    expect(await groupHasLiveMember(child.pid!)).toBe(true);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(await processIdentity(child.pid!)).toBeUndefined();
    expect(await groupHasLiveMember(child.pid!)).toBe(false);
    await expect(processIdentity(0)).rejects.toThrow(RangeError);
  });
});

describe('instance records', () => {
  it('a record is written atomically (mode 0600), read back, and opened while it names the recorded process', async () => {
    const child = await sleeper();
    try {
      const file = recordPath(dir, 'web1');
      expect(await writeRecord(file, child.pid!, ['sleep', '600'], Date.UTC(2026, 10, 29))).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const record = (await readRecord(file))!;
      expect(record).toEqual({
        pid: child.pid, startTime: expect.any(String), bootId: await currentBootId(), pgid: child.pid, command: ['sleep', '600'], startedAt: '2026-11-29T00:00:00.000Z',
        agent: { pid: process.pid, startTime: (await processIdentity(process.pid))!.startTime },
      });
      const found = await openRecorded(record);
      expect('watch' in found && found.group).toBe(true);
      if ('watch' in found) found.watch.close();
      await removeRecord(file);
      expect(await readRecord(file)).toBeUndefined();
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a pid that names another process now (another start time, another boot) or none is not adopted', async () => {
    const child = await sleeper();
    try {
      const file = recordPath(dir, 'web1');
      await writeRecord(file, child.pid!, ['sleep', '600'], Date.now());
      const record = (await readRecord(file))!;
      const reused: InstanceRecord = { ...record, startTime: String(BigInt(record.startTime) - 1n) };
      expect(await openRecorded(reused)).toEqual({ reason: `pid ${child.pid} is another process now (another start time)` });
      expect(await openRecorded({ ...record, bootId: 'another-boot' })).toEqual({ reason: 'recorded before a reboot' });
      expect(await openRecorded({ ...record, pid: 0x3ffffe })).toEqual({ reason: 'pid 4194302 is gone' });
      // Written by another agent that still runs (the test's parent plays it): not ours to take.
      const parent = (await processIdentity(process.ppid))!;
      expect(await openRecorded({ ...record, agent: { pid: process.ppid, startTime: parent.startTime } })).toEqual({ reason: `the agent that started it (pid ${process.ppid}) still runs: two agents share this state directory?` });
      const found = await openRecorded({ ...record, agent: { pid: process.ppid, startTime: '1' } }); // that agent is gone: adopted
      expect('watch' in found).toBe(true);
      if ('watch' in found) found.watch.close();
      expect(child.exitCode).toBeNull(); // a refused record leaves the process alone
    } finally {
      child.kill('SIGKILL');
    }
    expect(await writeRecord(recordPath(dir, 'gone'), 0x3ffffe, ['x'], Date.now())).toBe(false);
  });

  it('a file that is not a record is named', async () => {
    const file = recordPath(dir, 'bad');
    writeFileSync(file, 'not json');
    await expect(readRecord(file)).rejects.toThrow(`${file}: not an instance record (not JSON)`);
    writeFileSync(file, JSON.stringify({ pid: 'one' }));
    await expect(readRecord(file)).rejects.toThrow(`${file}: not an instance record (a field is missing or wrong)`);
    expect(readFileSync(file, 'utf8')).toContain('one'); // left for the operator to look at
  });
});
