// The backup's takeover (seed 004 FIG. 13): replication stopped and the old primary refused,
// the log flushed and replayed to the application, the node a primary in the backup-only state
// (each commit durable here before its ack); idempotent; refused after close.
import path from 'node:path';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { MirrorBackup } from '../../src/log/mirror-backup.js';
import { readLog } from '../../src/log/log-reader.js';
import { takeOver, takeOverFenced } from '../../src/log/takeover.js';
import { KEY, perTestScratch, record, until } from './mirror-helpers.js';

const scratch = perTestScratch('reliable-takeover-');
const { open } = scratch;

describe('backup takeover', () => {
  it('stops replication, refuses the old primary, replays every record, then acknowledges each commit once durable here', async () => {
    const b = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders', checkpoint: { intervalMs: 10_000, records: 1_000_000 } });
    open.push(b);
    const p = await MirroredLog.open({ dir: path.join(scratch.root, 'p'), backup: { host: '127.0.0.1', port: b.port }, key: KEY, node: 'node-a', log: 'orders', ackTimeoutMs: 300, reconnect: { minMs: 10, maxMs: 40 } });
    open.push(p);
    await until(() => p.state === 'normal', 5000, 'normal');
    await Promise.all(Array.from({ length: 500 }, (_, i) => p.append(record(i, 40))));
    expect(p.stats.ackedByBackup).toBe(500);
    // The backup holds them in memory only (its checkpoint is far off): the takeover must flush.
    expect(b.durableLsn).toBeLessThan(500);
    const rejected: string[] = [];
    b.on('rejected', ({ reason, error }) => rejected.push(`${reason}: ${error.code}`));

    // The primary is attached and talking (keepalives every 100 ms): refused, nothing changed.
    await expect(takeOver(b, { key: KEY, node: 'node-b', log: 'orders', replay: () => {} })).rejects.toMatchObject({ code: 'EMIRRORREFUSED', message: expect.stringMatching(/node-a is attached and was heard \d+ ms ago/) });
    expect(b.promoted).toBe(false);
    expect(b.attached).toBe(true);
    await p.append(record(500, 40));
    expect(p.state).toBe('normal');

    // Forced (the caller knows better, e.g. fenced it): taken over.
    const replayed: Buffer[] = [];
    const t = await takeOver(b, { key: KEY, node: 'node-b', log: 'orders', force: true, replay: (lsn, payload) => replayed.push(Buffer.from(payload)) });
    open.push(t.log);
    expect(t.records).toBe(501);
    expect(replayed.every((r, i) => r.equals(record(i, 40)))).toBe(true);
    expect(t.promoted.nextLsn).toBe(501);
    expect(t.promoted.previousPrimary).toEqual({ node: 'node-a', incarnation: p.incarnation });
    expect(t.log.state).toBe('backup-only');
    expect(t.log.syncPolicy).toBe('each-commit');
    expect(b.promoted).toBe(true);
    // The old primary lost its link and redials: refused every time, never attached again.
    await until(() => b.stats.refusedAfterTakeover >= 2, 3000, 'the old primary refused');
    expect(rejected.every((r) => r === 'promoted: EMIRRORREFUSED')).toBe(true);
    expect(p.state).toBe('primary-only');
    expect(b.stats.attached).toBe(1);

    // Backup-only: each commit is durable here when acknowledged (steps 435-455 as 320-360).
    const lsns = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      const lsn = await t.log.append(record(1000 + i, 40));
      expect(t.log.durableLsn).toBeGreaterThan(lsn);
      return lsn;
    }));
    expect(lsns[0]).toBe(501);
    expect(t.log.stats.ackedLocally).toBe(50);
    expect(t.log.stats.connects).toBe(0);
    // A second promote is the first's result; takeOver twice would open the log twice, so the
    // caller is told by `promoted`.
    expect(await b.promote()).toBe(t.promoted);
    await t.log.close();
    const after = await readLog(path.join(scratch.root, 'b'));
    expect(after.records.length).toBe(551);
  }, 20_000);

  it('refuses after close, and a primary-only log needs a backup address (a backup-only one may have one: the returning primary)', async () => {
    const b = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b' });
    await b.close();
    await expect(b.promote()).rejects.toMatchObject({ code: 'EMIRRORCLOSED' });
    await expect(MirroredLog.open({ dir: path.join(scratch.root, 'x'), key: KEY, node: 'n' })).rejects.toThrow(RangeError);
  });

  it('bad takeover options are refused before anything changes: the backup is not promoted, no fork point is written, its primary stays attached', async () => {
    const b = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders' });
    open.push(b);
    const p = await MirroredLog.open({ dir: path.join(scratch.root, 'p'), backup: { host: '127.0.0.1', port: b.port }, key: KEY, node: 'node-a', log: 'orders', ackTimeoutMs: 300 });
    open.push(p);
    await until(() => p.state === 'normal', 5000, 'normal');
    await p.append(record(0));
    const good = { key: KEY, node: 'node-b', log: 'orders', force: true, replay: () => {} };
    const bad: Array<[string, Record<string, unknown>, RegExp]> = [
      ['a short key', { key: Buffer.alloc(3) }, /at least 16 bytes/],
      ['a key that is text', { key: 'x'.repeat(32) }, /must be a Buffer/],
      ['a bad backup address', { backup: { host: '127.0.0.1', port: 0 } }, /backup\.port/],
      ['no replay', { replay: undefined }, /replay must be a function/],
      ['another log name', { log: 'other' }, /this backup mirrors "orders"/],
    ];
    for (const [what, change, message] of bad) {
      await expect(takeOver(b, { ...good, ...change } as unknown as Parameters<typeof takeOver>[1]), what).rejects.toThrow(message);
      await expect(takeOverFenced(b, { ...good, ...change, beforeTakeover: () => Promise.reject(new Error('the hook must not run')) } as unknown as Parameters<typeof takeOverFenced>[1]), what).rejects.toThrow(message);
    }
    expect(b.promoted).toBe(false);
    expect(b.attached).toBe(true);
    expect(existsSync(path.join(scratch.root, 'b', 'mirror-history.json'))).toBe(false);
    expect(await p.append(record(1))).toBe(1);
    expect(p.state).toBe('normal');
  });

  it('a replay that throws aborts the takeover and closes the log it opened', async () => {
    const b = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b' });
    open.push(b);
    const p = await MirroredLog.open({ dir: path.join(scratch.root, 'p'), backup: { host: '127.0.0.1', port: b.port }, key: KEY, node: 'node-a', ackTimeoutMs: 300 });
    open.push(p);
    await until(() => p.state === 'normal', 5000, 'normal');
    await p.append(record(0));
    await expect(takeOver(b, { key: KEY, node: 'node-b', force: true, replay: () => { throw new Error('app refused'); } })).rejects.toThrow('app refused');
    // The directory is free again: the log can be opened (nothing else holds it).
    const again = await MirroredLog.open({ dir: b.dir, key: KEY, node: 'node-b', state: 'backup-only' });
    expect(again.nextLsn).toBe(1);
    await again.close();
  }, 20_000);
});
