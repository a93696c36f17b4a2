// The RST guard's owner record: table names, what a name says, and which tables a sweep may
// remove (pure: the process table is a function given to the judge).
import { describe, expect, it } from 'vitest';
import { guardTableName, guardTableOwner, judgeGuardTable, processStartTicks, selfIdentity, startTicksFromStat } from '../../src/net/guard-owner.js';
import { guardRuleset } from '../../src/net/rst-guard.js';

const me = { pidNamespace: '4026531836', pid: 4242, startTicks: '987654' };

describe('guard table names', () => {
  it('record the owner and read back the same', () => {
    const name = guardTableName(me, '0a1b2c3d');
    expect(name).toBe('takeover_guard_4026531836_4242_987654_0a1b2c3d');
    expect(guardTableOwner(name)).toEqual(me);
  });

  it('tell an older version\'s guard (no owner) from a table that is not a guard', () => {
    expect(guardTableOwner('takeover_guard_9f8e7d6c')).toBeNull();
    expect(guardTableOwner('takeover_lab_dead')).toBeUndefined();
    expect(guardTableOwner('takeover_guard_12_x_3_ab')).toBeUndefined();
    expect(guardTableOwner('filter')).toBeUndefined();
  });

  it('refuse a tag that is not hex', () => {
    expect(() => guardTableName(me, 'zz')).toThrow(/hex/);
    expect(() => guardTableName(me, '')).toThrow(/hex/);
  });
});

describe('judgeGuardTable', () => {
  const processes = new Map([[4242, '987654'], [77, '5']]);
  const startTicksOf = async (pid: number) => processes.get(pid);
  const judge = (table: string) => judgeGuardTable(table, me, startTicksOf);

  it('keeps the guard of a live owner', async () => {
    expect(await judge(guardTableName(me, 'ab'))).toBe('owned');
    expect(await judge(guardTableName({ ...me, pid: 77, startTicks: '5' }, 'cd'))).toBe('owned');
  });

  it('removes the guard of an owner that is gone, or whose pid now names another process', async () => {
    expect(await judge(guardTableName({ ...me, pid: 31000 }, 'ab'))).toBe('stale');
    expect(await judge(guardTableName({ ...me, pid: 77, startTicks: '4' }, 'ab'))).toBe('stale'); // pid reused
  });

  it("removes an older version's guard, leaves another pid namespace's and other tables", async () => {
    expect(await judge('takeover_guard_9f8e7d6c')).toBe('stale');
    expect(await judge(guardTableName({ ...me, pidNamespace: '4026532000', pid: 31000 }, 'ab'))).toBe('foreign');
    expect(await judge('takeover_lab_dead')).toBe('other');
  });
});

describe('start time from /proc/PID/stat', () => {
  it('is field 22, counted after the command name, whatever the name holds', () => {
    const rest = ['S', ...Array.from({ length: 18 }, (_, i) => String(i + 4)), '123456789', '99'].join(' ');
    expect(startTicksFromStat(`17 (node) ${rest}`)).toBe('123456789');
    expect(startTicksFromStat(`17 (a) b (c d) ${rest}`)).toBe('123456789');
    expect(startTicksFromStat('garbage')).toBeUndefined();
    expect(startTicksFromStat('1 (x) S 2 3')).toBeUndefined();
  });

  it('reads this process and finds no process for a free pid', async () => {
    const self = await selfIdentity();
    expect(self.pid).toBe(process.pid);
    expect(self.startTicks).toMatch(/^\d+$/);
    expect(await processStartTicks(process.pid)).toBe(self.startTicks);
    expect(await processStartTicks(2 ** 22 + 1)).toBeUndefined(); // above any pid_max
  });
});

describe('guard ruleset', () => {
  it('drops only bare RSTs (an answer to an ACK-bearing segment), never a SYN\'s RST+ACK, and never our marked ones', () => {
    const rules = guardRuleset('takeover_guard_1_2_3_ab', ['198.18.1.2', 'fd7a:6b00::2']);
    expect(rules).toContain('meta mark != 31339 ip saddr 198.18.1.2 tcp flags & (rst | ack) == rst drop');
    expect(rules).toContain('meta mark != 31339 ip6 saddr fd7a:6b00::2 tcp flags & (rst | ack) == rst drop');
    expect(rules).toMatch(/^table inet takeover_guard_1_2_3_ab \{/);
  });
});
