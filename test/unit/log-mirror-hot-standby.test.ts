// A hot standby (MirrorBackup's `apply`): the application's state kept current on the backup as
// records arrive, so a takeover replays nothing (or only what apply had not seen); the log at
// listen and after a resync handed to it again after a reset; an apply that throws fails the
// backup, and the primary carries on alone.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { MirrorBackup } from '../../src/log/mirror-backup.js';
import { LogWriter } from '../../src/log/log-writer.js';
import { takeOver } from '../../src/log/takeover.js';
import { KEY, perTestScratch, until } from './mirror-helpers.js';
import { freePort } from '../free-port.js';

const scratch = perTestScratch('log-hot-standby-');
const { open } = scratch;
const FAST = { ackTimeoutMs: 400, reconnect: { minMs: 10, maxMs: 100 } };

/** An application that remembers what it was given, and how often it was reset. */
function recorder() {
  const app = { seen: [] as Array<[number, string]>, resets: 0 };
  return { app, apply: { reset: () => ((app.seen = []), app.resets++), record: (lsn: number, p: Buffer) => void app.seen.push([lsn, p.toString()]) } };
}

describe('hot standby (MirrorBackup apply)', () => {
  it('apply sees the log at listen, then every record taken, in order; a takeover replays nothing', async () => {
    const bDir = path.join(scratch.root, 'b');
    const w = await LogWriter.open({ dir: bDir });
    for (let i = 0; i < 5; i++) await w.append(Buffer.from(`old ${i}`));
    await w.close();
    const pDir = path.join(scratch.root, 'p');
    const w2 = await LogWriter.open({ dir: pDir });
    for (let i = 0; i < 5; i++) await w2.append(Buffer.from(`old ${i}`));
    await w2.close();
    const { app, apply } = recorder();
    const b = await MirrorBackup.listen({ dir: bDir, host: '127.0.0.1', port: 0, key: KEY, node: 'b', log: 'orders', apply });
    open.push(b);
    expect(app.resets).toBe(1);
    expect(app.seen.map(([l]) => l)).toEqual([0, 1, 2, 3, 4]);
    const p = await MirroredLog.open({ dir: pDir, backup: { host: '127.0.0.1', port: b.port }, key: KEY, node: 'a', log: 'orders', ...FAST });
    open.push(p);
    await until(() => p.state === 'normal', 5000, 'normal');
    await Promise.all(Array.from({ length: 200 }, (_, i) => p.append(Buffer.from(`new ${i}`))));
    // Acknowledged means held, and held means applied.
    expect(b.appliedLsn).toBe(205);
    expect(app.seen).toEqual([...Array.from({ length: 5 }, (_, i) => [i, `old ${i}`]), ...Array.from({ length: 200 }, (_, i) => [5 + i, `new ${i}`])]);
    await p.close();
    await until(() => !b.attached, 2000, 'detached');
    const replayed: number[] = [];
    const t = await takeOver(b, { key: KEY, node: 'b', log: 'orders', replay: (lsn) => replayed.push(lsn) });
    open.push(t.log);
    expect(t.records).toBe(0);
    expect(replayed).toEqual([]);
    expect(t.promoted.nextLsn).toBe(205);
  });

  it('after a resync cut the log, apply is reset and handed the log again', async () => {
    const aDir = path.join(scratch.root, 'a');
    const bDir = path.join(scratch.root, 'b');
    const aPort = await freePort();
    const b = await MirrorBackup.listen({ dir: bDir, host: '127.0.0.1', port: 0, key: KEY, node: 'b', log: 'orders' });
    open.push(b);
    const a = await MirroredLog.open({ dir: aDir, backup: { host: '127.0.0.1', port: b.port }, key: KEY, node: 'a', log: 'orders', ...FAST });
    await until(() => a.state === 'normal', 5000, 'normal');
    await Promise.all(Array.from({ length: 20 }, (_, i) => a.append(Buffer.from(`a ${i}`))));
    await a.close();
    const w = await LogWriter.open({ dir: aDir });
    for (let i = 0; i < 3; i++) await w.append(Buffer.from(`stray ${i}`));
    await w.close();
    await until(() => !b.attached, 2000, 'detached');
    const t = await takeOver(b, { key: KEY, node: 'b', log: 'orders', replay: () => {}, backup: { host: '127.0.0.1', port: aPort }, ...FAST });
    open.push(t.log);
    await t.log.append(Buffer.from('b 0'));
    const { app, apply } = recorder();
    const a2 = await MirrorBackup.listen({ dir: aDir, host: '127.0.0.1', port: aPort, key: KEY, node: 'a', log: 'orders', apply });
    open.push(a2);
    await until(() => t.log.state === 'normal', 5000, 'normal with a back');
    // At listen (23 records, the strays included), then after the cut (20), then b's record taken.
    expect(app.resets).toBe(2);
    expect(app.seen.map(([, s]) => s)).toEqual([...Array.from({ length: 20 }, (_, i) => `a ${i}`), 'b 0']);
    expect(a2.appliedLsn).toBe(21);
  });

  it('an apply that throws fails the backup; the primary goes on alone, every append acknowledged', async () => {
    let n = 0;
    const b = await MirrorBackup.listen({
      dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'b', log: 'orders',
      apply: { reset: () => {}, record: () => { if (++n === 50) throw new Error('the application refused record 49'); } },
    });
    open.push(b);
    const failed = new Promise<Error>((r) => b.once('failed', r));
    const p = await MirroredLog.open({ dir: path.join(scratch.root, 'p'), backup: { host: '127.0.0.1', port: b.port }, key: KEY, node: 'a', log: 'orders', ...FAST });
    open.push(p);
    await until(() => p.state === 'normal', 5000, 'normal');
    const lsns = await Promise.all(Array.from({ length: 100 }, (_, i) => p.append(Buffer.from(`r ${i}`))));
    expect(lsns).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect((await failed).message).toMatch(/apply of record 49 threw: the application refused record 49/);
    expect(b.failed?.code).toBe('EMIRRORFAILED');
    await until(() => p.state === 'primary-only', 3000, 'primary-only');
  });
});
