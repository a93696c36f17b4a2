// Disk full and fsync errors in the mirrored log's writer: the failed batch's appends get the
// error (not acknowledged), the log stays readable up to the last durable record, ENOSPC leaves
// the writer usable, an fdatasync error stops it (fsyncgate). Injected through the file-ops seam,
// and a real ENOSPC on a tiny tmpfs.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LogWriter } from '../../src/log/log-writer.js';
import { readLog } from '../../src/log/log-reader.js';
import { LogIoError, LogWriterError } from '../../src/log/log-errors.js';
import { HEADER_BYTES, FRAME_OVERHEAD, segmentName } from '../../src/log/log-format.js';
import { faultyFileOps, segmentFiles } from './log-fault-ops.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'log-faults-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const rec = (i: number) => Buffer.from(`record ${i}`.padEnd(100, '.'));
const settle = <T>(ps: Promise<T>[]) => Promise.allSettled(ps);

describe('injected faults', () => {
  it('ENOSPC in the middle of a batch: its appends and those queued behind fail, the partial write is cut, the writer goes on', async () => {
    const ops = faultyFileOps();
    const w = await LogWriter.open({ dir, fileOps: ops });
    for (let i = 0; i < 3; i++) await w.append(rec(i));
    const seg = path.join(dir, segmentName(0));
    const durableSize = statSync(seg).size;
    // The next batch gets 150 bytes onto the disk, then ENOSPC: a record and a half.
    ops.plan.writeFails = { afterBytes: 150, code: 'ENOSPC' };
    const first = w.append(rec(3)); // batch A, alone (starts at once)
    const queued = [4, 5, 6].map((i) => w.append(rec(i))); // queued behind it
    const results = await settle([first, ...queued]);
    const errors = results.map((r) => (r.status === 'rejected' ? (r.reason as { code: string }) : null));
    expect(errors[0]).toBeInstanceOf(LogIoError);
    expect(errors[0]).toMatchObject({ code: 'ENOSPC', syscall: 'write', firstLsn: 3 });
    // Batch A was rec 3 alone; 4..6 were queued behind a failed batch.
    for (const e of errors.slice(1)) expect(e).toMatchObject({ code: expect.stringMatching(/^(ENOSPC|ELOGABORTED)$/) });
    expect(statSync(seg).size).toBe(durableSize);
    expect((await readLog(dir)).records.length).toBe(3);
    // Space is back: numbering resumes at the first failed LSN, the log is whole.
    expect(w.nextLsn).toBe(3);
    expect(w.failed).toBeNull();
    expect(await w.append(rec(30))).toBe(3);
    await w.close();
    const r = await readLog(dir);
    expect(r.tornTail).toBeNull();
    expect(r.records.map(String)).toEqual([rec(0), rec(1), rec(2), rec(30)].map(String));
  });

  it('every append of the failed batch gets the error', async () => {
    const ops = faultyFileOps();
    const w = await LogWriter.open({ dir, fileOps: ops, sync: 'checkpoint', checkpoint: { intervalMs: 60_000, records: 5 } });
    await Promise.all([0, 1, 2, 3, 4].map((i) => w.append(rec(i))));
    ops.plan.writeFails = { afterBytes: 0, code: 'ENOSPC' };
    const batch = await settle([5, 6, 7, 8, 9].map((i) => w.append(rec(i))));
    for (const r of batch) expect(r).toMatchObject({ status: 'rejected', reason: { code: 'ENOSPC', firstLsn: 5, lastLsn: 9 } });
    await w.close();
    expect((await readLog(dir)).nextLsn).toBe(5);
  });

  it('an fdatasync error: the batch fails, later appends get ELOGFAILED, the log reads up to its last durable record', async () => {
    const ops = faultyFileOps();
    const w = await LogWriter.open({ dir, fileOps: ops });
    for (let i = 0; i < 4; i++) await w.append(rec(i));
    ops.plan.datasyncFails = 'EIO';
    const a = w.append(rec(4));
    const b = w.append(rec(5)); // queued behind the failing batch
    await expect(a).rejects.toMatchObject({ code: 'EIO', syscall: 'fdatasync', firstLsn: 4 });
    await expect(b).rejects.toMatchObject({ code: expect.stringMatching(/^(EIO|ELOGABORTED)$/) });
    const later = await w.append(rec(6)).catch((e: unknown) => e);
    expect(later).toBeInstanceOf(LogWriterError);
    expect(later).toMatchObject({ code: 'ELOGFAILED', cause: { code: 'EIO' } });
    expect((later as Error).message).toContain('fdatasync failed (EIO)');
    await expect(w.flush()).rejects.toMatchObject({ code: 'ELOGFAILED' });
    expect(w.durableLsn).toBe(4);
    await w.close();
    // The record of the failed batch may or may not be on disk (its outcome is unknown, as for
    // any commit whose ack was lost); the durable ones are, and recovery opens the log.
    const r = await readLog(dir);
    expect(r.records.slice(0, 4).map(String)).toEqual([0, 1, 2, 3].map((i) => String(rec(i))));
    const w2 = await LogWriter.open({ dir });
    expect(w2.nextLsn).toBeGreaterThanOrEqual(4);
    await w2.close();
  });

  it('a failed cut after a failed write stops the writer (the file state is unknown)', async () => {
    const ops = faultyFileOps();
    const w = await LogWriter.open({ dir, fileOps: ops });
    await w.append(rec(0));
    ops.plan.writeFails = { afterBytes: 50, code: 'ENOSPC' };
    ops.plan.truncateFails = 'EIO';
    await expect(w.append(rec(1))).rejects.toMatchObject({ code: 'EIO', syscall: 'ftruncate' });
    await expect(w.append(rec(2))).rejects.toMatchObject({ code: 'ELOGFAILED' });
    ops.plan.truncateFails = null;
    await w.close();
    // The half record is a torn tail for recovery.
    const w2 = await LogWriter.open({ dir });
    expect(w2.recovery.tornTail).toMatchObject({ offset: HEADER_BYTES + FRAME_OVERHEAD + 100, cut: true });
    expect(w2.nextLsn).toBe(1);
    await w2.close();
  });

  it('ENOSPC creating a new segment: the appends fail, no half-made segment is left, the writer goes on', async () => {
    const segmentBytes = HEADER_BYTES + 2 * (FRAME_OVERHEAD + 100);
    const ops = faultyFileOps();
    const w = await LogWriter.open({ dir, fileOps: ops, segmentBytes });
    await w.append(rec(0));
    await w.append(rec(1));
    ops.plan.writeFails = { afterBytes: 10, code: 'ENOSPC' }; // the new segment's header
    await expect(w.append(rec(2))).rejects.toMatchObject({ code: 'ENOSPC', firstLsn: 2 });
    expect(segmentFiles(dir)).toEqual([segmentName(0)]);
    expect(await w.append(rec(2))).toBe(2);
    await w.close();
    expect((await readLog(dir)).records.length).toBe(3);
  });
});

describe('a real ENOSPC', () => {
  it('on a 256 KiB tmpfs: the full batch fails, the log reads whole, freeing space lets it go on', async () => {
    const mnt = path.join(dir, 'mnt');
    execFileSync('mkdir', ['-p', mnt]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
    try {
      const logDir = path.join(mnt, 'log');
      const filler = path.join(mnt, 'filler');
      writeFileSync(filler, Buffer.alloc(64 * 1024));
      const w = await LogWriter.open({ dir: logDir });
      const payload = Buffer.alloc(3000, 7);
      let acked = 0;
      let failure: unknown = null;
      for (let i = 0; i < 1000 && !failure; i++) {
        // Four appenders at once, so batches hold several records.
        const rs = await settle([0, 1, 2, 3].map(() => w.append(payload)));
        for (const r of rs) {
          if (r.status === 'fulfilled') acked++;
          else failure ??= r.reason;
        }
      }
      expect(failure).toMatchObject({ code: 'ENOSPC', syscall: 'write' });
      expect(acked).toBeGreaterThan(40);
      const r = await readLog(logDir);
      expect(r.tornTail).toBeNull();
      expect(r.records.length).toBe(acked);
      expect(w.nextLsn).toBe(acked);
      rmSync(filler);
      expect(await w.append(payload)).toBe(acked);
      await w.close();
      expect((await readLog(logDir)).records.length).toBe(acked + 1);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});
