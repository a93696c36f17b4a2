// The returning primary (seed 004 steps 460-465): after a takeover the new primary dials the old
// one's mirror address; the old primary comes back as a MirrorBackup on its own log, is told to
// cut what it wrote past the fork point (records the new primary never received, so never
// acknowledged by the mirror), keeps them aside, catches up, and the normal state resumes with
// the roles swapped. Also: what is refused (a log differing before the fork, resync turned off),
// a returning primary that lost records (its page cache) catching up without a cut, the history
// file, and cutLogBack() itself over several segments.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { MirrorBackup } from '../../src/log/mirror-backup.js';
import { LogWriter } from '../../src/log/log-writer.js';
import { readLog } from '../../src/log/log-reader.js';
import { cutLogBack } from '../../src/log/log-cut.js';
import { HISTORY_FILE, readForkPoints, recordForkPoint, forgetForkPointsAfter, resyncPoint, type ForkPoint } from '../../src/log/mirror-history.js';
import { takeOver } from '../../src/log/takeover.js';
import { KEY, perTestScratch, until } from './mirror-helpers.js';
import { freePort } from '../free-port.js';

const scratch = perTestScratch('log-mirror-resync-');
const { open } = scratch;
const FAST = { ackTimeoutMs: 400, reconnect: { minMs: 10, maxMs: 100 } };

const rec = (node: string, i: number) => Buffer.from(`${node}:${i}:`.padEnd(20 + (i % 30), 'x'));

async function backupAt(dir: string, node: string, port = 0, extra: Partial<Parameters<typeof MirrorBackup.listen>[0]> = {}) {
  const b = await MirrorBackup.listen({ dir, host: '127.0.0.1', port, key: KEY, node, log: 'orders', checkpoint: { intervalMs: 20 }, ...extra });
  open.push(b);
  return b;
}

async function appendAll(log: MirroredLog, node: string, from: number, n: number): Promise<number[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => log.append(rec(node, from + i))));
}

/** Writes `n` records straight into a closed log: what a primary had written when it died, unreplicated. */
async function strayTail(dir: string, node: string, n: number): Promise<void> {
  const w = await LogWriter.open({ dir });
  for (let i = 0; i < n; i++) await w.append(rec(`${node}-stray`, i));
  await w.close();
}

async function sameLogs(aDir: string, bDir: string): Promise<number> {
  const [a, b] = await Promise.all([readLog(aDir), readLog(bDir)]);
  expect(b.firstLsn).toBe(a.firstLsn);
  expect(b.records.length).toBe(a.records.length);
  expect(b.records.every((r, i) => r.equals(a.records[i]!))).toBe(true);
  return a.records.length;
}

/** A primary on `dir` mirroring to a backup listening on `port`, waited into the normal state. */
async function primaryNormal(dir: string, node: string, port: number): Promise<MirroredLog> {
  const p = await MirroredLog.open({ dir, backup: { host: '127.0.0.1', port }, key: KEY, node, log: 'orders', ...FAST });
  open.push(p);
  await until(() => p.state === 'normal', 5000, `${node} normal`);
  return p;
}

/**
 * A pair in root/a (primary) and root/b (backup) that mirrored `records` records, then the
 * primary closed and the backup saw it go: the start of every returning-primary case.
 */
async function primaryGone(root: string, records: number) {
  const aDir = path.join(root, 'a');
  const bDir = path.join(root, 'b');
  const aPort = await freePort();
  const b = await backupAt(bDir, 'node-b');
  const a = await primaryNormal(aDir, 'node-a', b.port);
  await appendAll(a, 'a', 0, records);
  await a.close();
  await until(() => !b.attached, 2000, 'b detached');
  return { aDir, bDir, aPort, b };
}

describe('returning primary resync (seed 004 step 465)', () => {
  it('the old primary comes back as a backup: its unreplicated tail is cut and kept aside, it catches up, normal resumes with the roles swapped', async () => {
    const aDir = path.join(scratch.root, 'a');
    const bDir = path.join(scratch.root, 'b');
    const aMirrorPort = await freePort();
    const b = await backupAt(bDir, 'node-b');
    const a = await primaryNormal(aDir, 'node-a', b.port);
    await appendAll(a, 'a', 0, 100);
    // A dies: what its disk held past the backup's copy (written, sent or not, never ACKed).
    await a.close();
    await strayTail(aDir, 'a', 7);
    await until(() => !b.attached, 2000, 'b detached');

    const t = await takeOver(b, { key: KEY, node: 'node-b', log: 'orders', replay: () => {}, backup: { host: '127.0.0.1', port: aMirrorPort }, ...FAST });
    open.push(t.log);
    expect(t.promoted.nextLsn).toBe(100);
    const forks = await readForkPoints(bDir);
    expect(forks).toMatchObject([{ lsn: 100, node: 'node-b', previousPrimary: 'node-a' }]);
    expect(t.log.state).toBe('backup-only');
    await appendAll(t.log, 'b', 0, 50); // acknowledged on B's disk alone
    expect(t.log.stats.ackedLocally).toBe(50);

    // A returns, as B's backup, at the address B dials.
    const a2 = await backupAt(aDir, 'node-a', aMirrorPort);
    const resynced: Array<{ cutRecords: number; keptIn: string | null }> = [];
    a2.on('resynced', (r) => resynced.push(r.cut));
    const states: string[] = [];
    t.log.on('state', (s) => states.push(s));
    await until(() => t.log.state === 'normal', 5000, 'normal with A as the backup');
    expect(resynced).toHaveLength(1);
    expect(resynced[0]!.cutRecords).toBe(7);
    expect(t.log.stats.refused.resync).toBe(1);
    expect(a2.stats.resyncs).toBe(1);
    expect(states).toEqual(['catching-up', 'normal']);
    // What was cut is kept, readable, at the LSNs it had.
    const kept = await readLog(resynced[0]!.keptIn!);
    expect(kept.firstLsn).toBe(100);
    expect(kept.records.map((r) => r.toString())).toEqual(Array.from({ length: 7 }, (_, i) => rec('a-stray', i).toString()));
    // New commits are acknowledged by the backup again.
    await appendAll(t.log, 'b', 50, 30);
    expect(t.log.stats.ackedByBackup).toBeGreaterThanOrEqual(30);
    await t.log.close();
    await a2.close();
    expect(await sameLogs(aDir, bDir)).toBe(180);
  });

  it('roles swap four times, each dead primary leaving a different stray tail: the logs end equal, every acknowledged record once', async () => {
    const dirs = { a: path.join(scratch.root, 'a'), b: path.join(scratch.root, 'b') };
    const ports = { a: await freePort(), b: await freePort() };
    let backupNode: 'a' | 'b' = 'b';
    let backup = await backupAt(dirs.b, 'node-b', ports.b);
    let primary = await primaryNormal(dirs.a, 'node-a', ports.b);
    const acked: string[] = [];
    let counter = 0;
    const load = async (log: MirroredLog, node: string, n: number) => {
      for (let i = 0; i < n; i++) {
        const r = rec(node, counter++);
        await log.append(r);
        acked.push(r.toString());
      }
    };
    await load(primary, 'a', 40);
    for (let round = 0; round < 4; round++) {
      const dead: 'a' | 'b' = backupNode === 'b' ? 'a' : 'b';
      await primary.close();
      await strayTail(dirs[dead], dead, 3 + round);
      await until(() => !backup.attached, 2000, 'backup detached');
      const t = await takeOver(backup, { key: KEY, node: `node-${backupNode}`, log: 'orders', replay: () => {}, backup: { host: '127.0.0.1', port: ports[dead] }, ...FAST });
      open.push(t.log);
      await load(t.log, backupNode, 10);
      await backup.close();
      backup = await backupAt(dirs[dead], `node-${dead}`, ports[dead]);
      await until(() => t.log.state === 'normal', 5000, `round ${round}: normal`);
      expect(backup.stats.recordsCut).toBe(3 + round);
      await load(t.log, backupNode, 25);
      primary = t.log;
      backupNode = dead;
    }
    await primary.close();
    await backup.close();
    const n = await sameLogs(dirs.a, dirs.b);
    const { records } = await readLog(dirs.a);
    expect(records.map((r) => r.toString())).toEqual(acked);
    expect(n).toBe(acked.length);
  });

  it('a returning primary whose stray tail ends with the same record as the new primary (a resent order applied in another order) is still cut: the logs end equal', async () => {
    // What reliable-chaos met once: the old primary wrote records the backup never received
    // (here 3), died; the clients resent those orders to the new primary, which applied them
    // in another order, so the same number of records ends at the same LSN with the same last
    // record (the same client, message, acknowledgement, request and reply), while the records
    // before it differ. A check of the last record alone takes the old primary for caught up.
    const { aDir, bDir, aPort, b } = await primaryGone(scratch.root, 30);
    const same = Buffer.from('the resent order, the same reply at the same LSN');
    const w = await LogWriter.open({ dir: aDir });
    for (const r of [rec('a-stray', 0), rec('a-stray', 1), same]) await w.append(r);
    await w.close();

    const t = await takeOver(b, { key: KEY, node: 'node-b', log: 'orders', replay: () => {}, backup: { host: '127.0.0.1', port: aPort }, ...FAST });
    open.push(t.log);
    expect(t.promoted.nextLsn).toBe(30);
    for (const r of [rec('b', 0), rec('b', 1), same]) await t.log.append(r);
    await appendAll(t.log, 'b', 10, 5);

    const a2 = await backupAt(aDir, 'node-a', aPort);
    const cuts: number[] = [];
    a2.on('resynced', (r) => cuts.push(r.cut.cutRecords));
    await until(() => t.log.state === 'normal', 5000, 'normal with A as the backup');
    expect(cuts).toEqual([3]);
    expect(t.log.stats.refused.resync).toBe(1);
    await t.log.close();
    await a2.close();
    expect(await sameLogs(aDir, bDir)).toBe(38);
  });

  it('a returning primary that lost records (its page cache) holds less than the fork point: plain catch-up, nothing cut', async () => {
    const { aDir, bDir, aPort, b } = await primaryGone(scratch.root, 60);
    // A's log loses its last 20 records, as if they never reached its disk.
    await cutLogBack(aDir, 40, path.join(scratch.root, 'lost'));
    const t = await takeOver(b, { key: KEY, node: 'node-b', log: 'orders', replay: () => {}, backup: { host: '127.0.0.1', port: aPort }, ...FAST });
    open.push(t.log);
    await appendAll(t.log, 'b', 0, 5);
    const a2 = await backupAt(aDir, 'node-a', aPort);
    await until(() => t.log.state === 'normal', 5000, 'normal');
    expect(a2.stats.resyncs).toBe(0);
    expect(t.log.stats.refused.resync).toBe(0);
    await t.log.close();
    await a2.close();
    expect(await sameLogs(aDir, bDir)).toBe(65);
  });

  it('refused, nothing cut: a log that differs before the fork point, and a backup with resync turned off', async () => {
    for (const how of ['differs', 'off'] as const) {
      const { aDir, bDir, aPort, b } = await primaryGone(path.join(scratch.root, how), 30);
      if (how === 'differs') {
        // A's records from 20 on are other ones than B's (a log from another history).
        await cutLogBack(aDir, 20, path.join(scratch.root, how, 'gone'));
        await strayTail(aDir, 'other', 15);
      } else await strayTail(aDir, 'a', 4);
      const before = await readLog(aDir);
      const t = await takeOver(b, { key: KEY, node: 'node-b', log: 'orders', replay: () => {}, backup: { host: '127.0.0.1', port: aPort }, ...FAST });
      open.push(t.log);
      const a2 = await backupAt(aDir, 'node-a', aPort, how === 'off' ? { resync: false } : {});
      const refused: string[] = [];
      a2.on('refused', (r) => refused.push(`${r.refusal}:${r.error.code}`));
      await until(() => refused.length >= 2, 5000, 'refusals');
      expect(refused[0]).toBe('resync:EMIRRORDIVERGED');
      expect(t.log.state).toBe('backup-only');
      expect(a2.stats.resyncs).toBe(0);
      await t.log.close();
      await a2.close();
      const after = await readLog(aDir);
      expect(after.records.length).toBe(before.records.length);
      expect(after.records.every((r, i) => r.equals(before.records[i]!))).toBe(true);
    }
  });

  it('the fork history: recorded durably, later points dropped on a cut, a damaged file refused at open (EMIRRORHISTORY)', async () => {
    const dir = path.join(scratch.root, 'h');
    const w = await LogWriter.open({ dir });
    await w.append(Buffer.from('x'));
    await w.close();
    expect(await readForkPoints(dir)).toEqual([]);
    const f = (lsn: number): ForkPoint => ({ lsn, prevCrc: lsn * 7, node: 'n', previousPrimary: null, at: '2026-11-30T00:00:00.000Z' });
    await recordForkPoint(dir, f(10));
    await recordForkPoint(dir, f(30));
    await recordForkPoint(dir, f(50));
    expect((await readForkPoints(dir)).map((x) => x.lsn)).toEqual([10, 30, 50]);
    await recordForkPoint(dir, f(30)); // a takeover at 30 again: what was past it is gone
    expect((await readForkPoints(dir)).map((x) => x.lsn)).toEqual([10, 30]);
    await forgetForkPointsAfter(dir, 20);
    expect((await readForkPoints(dir)).map((x) => x.lsn)).toEqual([10]);
    // The latest fork strictly below what the backup holds, within both logs.
    const forks = [f(10), f(30), f(50)];
    expect(resyncPoint(forks, { firstLsn: 0, heldLsn: 60 }, 80)?.lsn).toBe(50);
    expect(resyncPoint(forks, { firstLsn: 0, heldLsn: 50 }, 80)?.lsn).toBe(30);
    expect(resyncPoint(forks, { firstLsn: 0, heldLsn: 60 }, 40)?.lsn).toBe(30);
    expect(resyncPoint(forks, { firstLsn: 35, heldLsn: 60 }, 40)).toBeNull();
    expect(resyncPoint(forks, { firstLsn: 0, heldLsn: 10 }, 80)).toBeNull();
    for (const bad of ['{', '{"version":1,"forks":[{"lsn":-1}]}', '{"version":1,"forks":[{"lsn":5,"prevCrc":0,"node":"n","previousPrimary":null,"at":"x"},{"lsn":4,"prevCrc":0,"node":"n","previousPrimary":null,"at":"x"}]}', '{"version":2,"forks":[]}']) {
      await writeFile(path.join(dir, HISTORY_FILE), bad);
      await expect(readForkPoints(dir)).rejects.toMatchObject({ code: 'EMIRRORHISTORY' });
      await expect(MirroredLog.open({ dir, key: KEY, node: 'n', state: 'backup-only' })).rejects.toMatchObject({ code: 'EMIRRORHISTORY' });
    }
  });

  it('cutLogBack over several segments: inside one, on a boundary, at the end; the cut records kept; bad LSNs refused', async () => {
    const dir = path.join(scratch.root, 'c');
    const w = await LogWriter.open({ dir, segmentBytes: 4096 });
    const all = Array.from({ length: 300 }, (_, i) => rec('c', i));
    for (const r of all) await w.append(r);
    await w.close();
    const segs = (await readLog(dir)).segments;
    expect(segs.length).toBeGreaterThan(3);
    await expect(cutLogBack(dir, 301, path.join(scratch.root, 'k0'))).rejects.toThrow(RangeError);
    expect((await cutLogBack(dir, 300, path.join(scratch.root, 'k0'))).cutRecords).toBe(0);
    // Inside a segment.
    const inside = segs[2]!.firstLsn + 3;
    const c1 = await cutLogBack(dir, inside, path.join(scratch.root, 'k1'));
    expect(c1.cutRecords).toBe(300 - inside);
    expect(c1.removedSegments.length).toBe(segs.length - 3);
    let r = await readLog(dir);
    expect(r.nextLsn).toBe(inside);
    expect(r.records.every((x, i) => x.equals(all[i]!))).toBe(true);
    const k1 = await readLog(path.join(scratch.root, 'k1'));
    expect(k1.firstLsn).toBe(inside);
    expect(k1.records.every((x, i) => x.equals(all[inside + i]!))).toBe(true);
    await expect(cutLogBack(dir, 10, path.join(scratch.root, 'k1'))).rejects.toThrow(/already holds a log/);
    // On a segment boundary: that segment keeps its header only; the log appends from there.
    const boundary = segs[1]!.firstLsn;
    await cutLogBack(dir, boundary, path.join(scratch.root, 'k2'));
    r = await readLog(dir);
    expect(r.nextLsn).toBe(boundary);
    const w2 = await LogWriter.open({ dir, segmentBytes: 4096 });
    expect(w2.nextLsn).toBe(boundary);
    await w2.append(Buffer.from('after the cut'));
    await w2.close();
    r = await readLog(dir);
    expect(r.records.at(-1)!.toString()).toBe('after the cut');
    expect(r.nextLsn).toBe(boundary + 1);
  });
});
