// The reader's LSN range (what the mirror's catch-up reads from the primary's disk): fromLsn skips
// whole segments before the one holding it, toLsn stops parsing before a record, and neither may
// be combined with repair.
import { appendFileSync, mkdtempSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { segmentFiles } from './log-fault-ops.js';
import { LogWriter } from '../../src/log/log-writer.js';
import { readLog, scanLog } from '../../src/log/log-reader.js';
import { FRAME_OVERHEAD, HEADER_BYTES } from '../../src/log/log-format.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'log-range-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const rec = (i: number) => Buffer.from(`rec-${String(i).padStart(4, '0')}`); // 8 bytes
const PER_SEGMENT = 4;

async function writeLog(count: number, firstLsn = 0): Promise<void> {
  const w = await LogWriter.open({ dir, firstLsn, segmentBytes: HEADER_BYTES + PER_SEGMENT * (FRAME_OVERHEAD + 8) });
  for (let i = 0; i < count; i++) await w.append(rec(firstLsn + i));
  await w.close();
}

describe('scanLog fromLsn / toLsn', () => {
  it('every range of a multi-segment log gives exactly its records', async () => {
    await writeLog(14, 100); // segments at 100, 104, 108, 112
    expect(segmentFiles(dir).length).toBe(4);
    for (let from = 98; from <= 116; from++) {
      for (const to of [undefined, from, from + 1, from + 5, 120]) {
        const seen: number[] = [];
        const scan = await scanLog(dir, { fromLsn: from, ...(to !== undefined ? { toLsn: to } : {}), onRecord: (lsn, p) => {
          expect(String(p)).toBe(String(rec(lsn)));
          seen.push(lsn);
        } });
        const hi = Math.min(114, to ?? Infinity);
        const want = [];
        for (let l = Math.max(from, 100); l < hi; l++) want.push(l);
        expect(seen).toEqual(want);
        expect(scan.firstLsn).toBe(100);
        expect(scan.nextLsn).toBe(Math.min(114, to ?? Infinity));
      }
    }
  });

  it('skips (does not read) segments wholly before fromLsn, so damage there is not seen', async () => {
    await writeLog(10); // segments 0, 4, 8
    writeFileSync(path.join(dir, '00000000000000000000.log'), 'garbage');
    const r = await readLog(dir, { fromLsn: 5 });
    expect(r.records.map(String)).toEqual([5, 6, 7, 8, 9].map((i) => String(rec(i))));
    expect(r.segments.map((s) => s.firstLsn)).toEqual([4, 8]);
    await expect(readLog(dir)).rejects.toMatchObject({ code: 'ELOGCORRUPT' });
  });

  it('toLsn stops before a torn tail past it (a reader of a log being written)', async () => {
    await writeLog(3);
    const file = path.join(dir, segmentFiles(dir)[0]!);
    appendFileSync(file, Buffer.from([9, 0, 0, 0, 1, 2])); // half a record's head
    const upTo = await scanLog(dir, { toLsn: 3 });
    expect(upTo.tornTail).toBeNull();
    expect(upTo.nextLsn).toBe(3);
    expect((await scanLog(dir)).tornTail).not.toBeNull();
  });

  it('refuses a range with repair, and values that are not LSNs', async () => {
    await writeLog(1);
    await expect(scanLog(dir, { repair: true, fromLsn: 0 })).rejects.toThrow(RangeError);
    await expect(scanLog(dir, { fromLsn: -1 })).rejects.toThrow(RangeError);
    await expect(scanLog(dir, { toLsn: 1.5 })).rejects.toThrow(RangeError);
  });
});
