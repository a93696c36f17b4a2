// The mirrored log's writer (issue 13's durable layer): round trips, segment rollover, group
// commit (counted fdatasyncs), the checkpoint policy's three criteria, no fd left open.
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LogWriter } from '../../src/log/log-writer.js';
import { readLog } from '../../src/log/log-reader.js';
import { HEADER_BYTES, FRAME_OVERHEAD } from '../../src/log/log-format.js';
import { faultyFileOps, segmentFiles } from './log-fault-ops.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'log-writer-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const rec = (i: number, size = 10) => Buffer.from(`r${i}:`.padEnd(size, String.fromCharCode(97 + (i % 26))));

describe('LogWriter', () => {
  it('appends, resolves each with its LSN once durable, and reads back after reopening', async () => {
    const w = await LogWriter.open({ dir });
    expect(w.nextLsn).toBe(0);
    const lsns = await Promise.all([0, 1, 2, 3, 4].map((i) => w.append(rec(i))));
    expect(lsns).toEqual([0, 1, 2, 3, 4]);
    expect(w.durableLsn).toBe(5);
    await w.append(Buffer.alloc(0)); // an empty record is a record
    await w.close();
    const r = await readLog(dir);
    expect(r.records.map(String)).toEqual([0, 1, 2, 3, 4].map((i) => String(rec(i))).concat(['']));
    expect(r.nextLsn).toBe(6);
    expect(r.tornTail).toBeNull();

    const w2 = await LogWriter.open({ dir });
    expect(w2.nextLsn).toBe(6);
    expect(await w2.append(rec(6))).toBe(6);
    await w2.close();
    expect((await readLog(dir)).records.length).toBe(7);
  });

  it('starts an empty directory at firstLsn', async () => {
    const w = await LogWriter.open({ dir: path.join(dir, 'sub'), firstLsn: 1000 });
    expect(await w.append(rec(0))).toBe(1000);
    await w.close();
    const r = await readLog(path.join(dir, 'sub'));
    expect([r.firstLsn, r.nextLsn]).toEqual([1000, 1001]);
    expect(segmentFiles(path.join(dir, 'sub'))).toEqual(['00000000000000001000.log']);
  });

  it('rolls over to a new segment before a record would pass segmentBytes; numbering runs on', async () => {
    const frame = FRAME_OVERHEAD + 100;
    const segmentBytes = HEADER_BYTES + 3 * frame; // three records per segment
    const w = await LogWriter.open({ dir, segmentBytes });
    await Promise.all(Array.from({ length: 10 }, (_, i) => w.append(rec(i, 100))));
    await w.close();
    const names = segmentFiles(dir).sort();
    expect(names).toEqual(['00000000000000000000.log', '00000000000000000003.log', '00000000000000000006.log', '00000000000000000009.log']);
    for (const n of names.slice(0, 3)) expect(statSync(path.join(dir, n)).size).toBe(segmentBytes);
    const r = await readLog(dir);
    expect(r.records.map(String)).toEqual(Array.from({ length: 10 }, (_, i) => String(rec(i, 100))));
    expect(r.segments.map((s) => [s.firstLsn, s.records])).toEqual([[0, 3], [3, 3], [6, 3], [9, 1]]);
    const w2 = await LogWriter.open({ dir, segmentBytes });
    await w2.append(rec(10, 100));
    await w2.append(rec(11, 100));
    await w2.append(rec(12, 100));
    await w2.close();
    expect(segmentFiles(dir).length).toBe(5);
    expect((await readLog(dir)).records.length).toBe(13);
  });

  it('refuses a record above maxRecordBytes without numbering it', async () => {
    const w = await LogWriter.open({ dir, maxRecordBytes: 64 });
    await expect(w.append(Buffer.alloc(65))).rejects.toMatchObject({ code: 'ELOGRECORDSIZE' });
    expect(await w.append(Buffer.alloc(64))).toBe(0);
    await w.close();
    await expect(w.append(rec(1))).rejects.toMatchObject({ code: 'ELOGCLOSED' });
  });

  it('group commit: appends arriving during a sync go together in the next batch', async () => {
    const ops = faultyFileOps();
    const w = await LogWriter.open({ dir, fileOps: ops });
    const before = ops.counts.datasyncs;
    // 10 appenders, 50 records each, each waiting for its ack before the next (as clients do).
    await Promise.all(
      Array.from({ length: 10 }, async (_, c) => {
        for (let i = 0; i < 50; i++) await w.append(rec(c * 1000 + i));
      }),
    );
    const syncs = ops.counts.datasyncs - before;
    await w.close();
    // 500 records; per-record syncing would take 500 (+1 for the segment's header). With 10
    // appenders each batch carries up to 10 records.
    expect(w.stats.records).toBe(500);
    expect(syncs).toBeLessThanOrEqual(120);
    expect(w.stats.batches).toBeLessThanOrEqual(120);
    expect((await readLog(dir)).records.length).toBe(500);
  });

  it('maxBatchRecords 1 syncs once per record (the baseline)', async () => {
    const w = await LogWriter.open({ dir, maxBatchRecords: 1 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => w.append(rec(i))));
    expect(w.stats.batches).toBe(20);
    await w.close();
  });

  describe("sync: 'checkpoint'", () => {
    it('holds records in RAM until the interval passes, then one batch', async () => {
      const w = await LogWriter.open({ dir, sync: 'checkpoint', checkpoint: { intervalMs: 80, records: 1000, bytes: 1 << 20 } });
      const t0 = performance.now();
      const acks = Array.from({ length: 5 }, (_, i) => w.append(rec(i)));
      await new Promise((r) => setTimeout(r, 20));
      expect(w.durableLsn).toBe(0);
      expect(w.stats.batches).toBe(0);
      await Promise.all(acks);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(75);
      expect(w.stats.batches).toBe(1);
      await w.close();
    });

    it('flushes at the record count', async () => {
      const w = await LogWriter.open({ dir, sync: 'checkpoint', checkpoint: { intervalMs: 60_000, records: 10, bytes: 1 << 20 } });
      const acks = Array.from({ length: 9 }, (_, i) => w.append(rec(i)));
      await new Promise((r) => setTimeout(r, 20));
      expect(w.stats.batches).toBe(0);
      acks.push(w.append(rec(9)));
      await Promise.all(acks);
      expect(w.stats.batches).toBe(1);
      expect(w.durableLsn).toBe(10);
      await w.close();
    });

    it('flushes at the byte count (the memory criterion)', async () => {
      const w = await LogWriter.open({ dir, sync: 'checkpoint', checkpoint: { intervalMs: 60_000, records: 1000, bytes: 4 * (FRAME_OVERHEAD + 1000) } });
      const acks = Array.from({ length: 3 }, (_, i) => w.append(rec(i, 1000)));
      await new Promise((r) => setTimeout(r, 20));
      expect(w.stats.batches).toBe(0);
      acks.push(w.append(rec(3, 1000)));
      await Promise.all(acks);
      expect(w.stats.batches).toBe(1);
      await w.close();
    });

    it('setSync(each-commit) flushes what waits, then every append is synced at once', async () => {
      const w = await LogWriter.open({ dir, sync: 'checkpoint', checkpoint: { intervalMs: 60_000 } });
      const acks = Array.from({ length: 3 }, (_, i) => w.append(rec(i)));
      await w.setSync('each-commit');
      expect(w.durableLsn).toBe(3);
      await Promise.all(acks);
      await w.append(rec(3));
      expect(w.durableLsn).toBe(4);
      await w.close();
    });

    it('close() flushes what waits', async () => {
      const w = await LogWriter.open({ dir, sync: 'checkpoint', checkpoint: { intervalMs: 60_000 } });
      const acks = Array.from({ length: 3 }, (_, i) => w.append(rec(i)));
      await w.close();
      expect(await Promise.all(acks)).toEqual([0, 1, 2]);
      expect((await readLog(dir)).records.length).toBe(3);
    });
  });

  it('close(): once however often called; appends from the call on are refused, those before it made durable', async () => {
    const w = await LogWriter.open({ dir, sync: 'checkpoint', checkpoint: { intervalMs: 60_000 } });
    const before = [0, 1, 2].map((i) => w.append(rec(i)));
    const c1 = w.close();
    const late = w.append(rec(3)).catch((e: unknown) => e);
    const c2 = w.close();
    await Promise.all([c1, c2]);
    expect(await Promise.all(before)).toEqual([0, 1, 2]);
    expect(await late).toMatchObject({ code: 'ELOGCLOSED' });
    expect((await readLog(dir)).records.length).toBe(3);
  });

  it('leaves no fd open: open, append, roll, close, reopen, fail, many times', async () => {
    const openFds = () => readdirSync('/proc/self/fd').length;
    const warm = await LogWriter.open({ dir: path.join(dir, 'warm') });
    await warm.append(rec(0));
    await warm.close();
    const before = openFds();
    for (let i = 0; i < 20; i++) {
      const d = path.join(dir, `l${i}`);
      const ops = faultyFileOps();
      const w = await LogWriter.open({ dir: d, segmentBytes: 200, fileOps: ops });
      await Promise.all(Array.from({ length: 10 }, (_, j) => w.append(rec(j, 50))));
      ops.plan.datasyncFails = 'EIO';
      await w.append(rec(99)).catch(() => {});
      await w.close();
      const w2 = await LogWriter.open({ dir: d, segmentBytes: 200 });
      await w2.append(rec(100));
      await w2.close();
      await readLog(d);
    }
    expect(openFds()).toBe(before);
  });
});

describe("LogWriter 'checkpoint' at a segment's end", () => {
  let d: string;
  beforeEach(() => {
    d = mkdtempSync(path.join(tmpdir(), 'log-writer-cp-'));
  });
  afterEach(() => rmSync(d, { recursive: true, force: true }));

  it('a due checkpoint cut by the segment bound flushes the rest at once, in the next segment', async () => {
    const frame = FRAME_OVERHEAD + 100;
    const w = await LogWriter.open({ dir: d, sync: 'checkpoint', segmentBytes: HEADER_BYTES + 4 * frame, checkpoint: { intervalMs: 60_000, records: 6 } });
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 6 }, (_, i) => w.append(rec(i, 100))));
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(w.stats.batches).toBe(2);
    expect(segmentFiles(d).sort()).toEqual(['00000000000000000000.log', '00000000000000000004.log']);
    await w.close();
  });
});
