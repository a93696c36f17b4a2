// Recovery of the mirrored log: a crash cut at every byte of the last records gives back exactly
// the whole records; damage anywhere else is an error naming the segment and offset; random
// bytes and truncations never crash or hang the reader.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { segmentFiles } from './log-fault-ops.js';
import { LogWriter } from '../../src/log/log-writer.js';
import { readLog, scanLog } from '../../src/log/log-reader.js';
import { LogCorruptionError } from '../../src/log/log-errors.js';
import { decodeHeader, encodeFrame, encodeHeader, FRAME_OVERHEAD, HEADER_BYTES, segmentName } from '../../src/log/log-format.js';

let root: string;
beforeAll(() => {
  root = mkdtempSync(path.join(tmpdir(), 'log-recovery-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
const fresh = () => {
  const d = path.join(root, `d${n++}`);
  mkdirSync(d);
  return d;
};
/** 40 bytes each, so a segment of HEADER_BYTES + 3 * (FRAME_OVERHEAD + 40) holds three. */
const payload = (i: number) => Buffer.from(`record ${i} `.repeat(1 + (i % 4)).padEnd(40, '.').slice(0, 40));

/** A log of `count` records in `dir` (one segment unless segmentBytes is small). */
async function writeLog(dir: string, count: number, segmentBytes?: number): Promise<void> {
  const w = await LogWriter.open({ dir, ...(segmentBytes ? { segmentBytes } : {}) });
  for (let i = 0; i < count; i++) await w.append(payload(i));
  await w.close();
}

const flip = (b: Buffer, at: number, mask: number) => b.writeUInt8(b.readUInt8(at) ^ mask, at);

/** Offsets where each record of a single-segment log starts, and the end. */
function recordOffsets(file: Buffer): number[] {
  const out = [HEADER_BYTES];
  let o = HEADER_BYTES;
  while (o < file.length) {
    o += FRAME_OVERHEAD + file.readUInt32LE(o);
    out.push(o);
  }
  return out;
}

describe('format', () => {
  it('header round trip; the record CRC covers the length (a changed length is caught)', () => {
    expect(decodeHeader(encodeHeader(12345))).toEqual({ ok: true, firstLsn: 12345 });
    const h = encodeHeader(7);
    h[20] = 1;
    expect(decodeHeader(h)).toMatchObject({ ok: false, torn: false, reason: 'header checksum mismatch' });
    expect(decodeHeader(Buffer.alloc(32))).toMatchObject({ ok: false, torn: true });
    expect(decodeHeader(h.subarray(0, 10))).toMatchObject({ ok: false, torn: true });
    const f = encodeFrame(Buffer.from('abcdef'));
    // 'abcdef' with its length 6 is valid; the same bytes claimed with length 5 (a torn length,
    // a shorter record that happens to fit) must fail the CRC.
    const g = Buffer.from(f.subarray(0, f.length - 1));
    g.writeUInt32LE(5, 0);
    const file = Buffer.concat([encodeHeader(0), g]);
    const dir = fresh();
    writeFileSync(path.join(dir, segmentName(0)), file);
    return expect(readLog(dir)).resolves.toMatchObject({ records: [], tornTail: { offset: 32 } });
  });
});

describe('crash simulation', () => {
  it('a cut at every byte of the last three records: exactly the whole records come back, the writer goes on', async () => {
    const src = fresh();
    await writeLog(src, 12);
    const seg = path.join(src, segmentName(0));
    const whole = readFileSync(seg);
    const offsets = recordOffsets(whole);
    expect(offsets.length).toBe(13);
    const from = offsets[9]!;
    for (let cut = from; cut < whole.length; cut++) {
      const dir = fresh();
      writeFileSync(path.join(dir, segmentName(0)), whole.subarray(0, cut));
      const complete = offsets.filter((o) => o <= cut).length - 1;
      const r = await readLog(dir);
      expect(r.records.map(String)).toEqual(Array.from({ length: complete }, (_, i) => String(payload(i))));
      expect(r.nextLsn).toBe(complete);
      expect(r.tornTail === null).toBe(cut === offsets[complete]);
      rmSync(dir, { recursive: true });
    }
    // The writer recovers (cuts the tail) and appends where the last whole record ended: at
    // each record boundary and at cuts inside each record's head and payload.
    for (const cut of [...offsets.slice(9), ...offsets.slice(9, 12).flatMap((o) => [o + 1, o + 4, o + 7, o + 8, o + 20])]) {
      const dir = fresh();
      writeFileSync(path.join(dir, segmentName(0)), whole.subarray(0, cut));
      const complete = offsets.filter((o) => o <= cut).length - 1;
      const w = await LogWriter.open({ dir });
      expect(w.recovery.tornTail?.cut ?? true).toBe(true);
      expect(await w.append(Buffer.from('after'))).toBe(complete);
      await w.close();
      const again = await readLog(dir);
      expect(again.tornTail).toBeNull();
      expect(again.records.length).toBe(complete + 1);
      expect(String(again.records.at(-1))).toBe('after');
      rmSync(dir, { recursive: true });
    }
  });

  it('a CRC mismatch in the very last record, or zeros where the last batch should be, is a torn tail', async () => {
    const src = fresh();
    await writeLog(src, 5);
    const seg = path.join(src, segmentName(0));
    const whole = readFileSync(seg);
    const offsets = recordOffsets(whole);
    const flipped = Buffer.from(whole);
    flip(flipped, whole.length - 1, 0x40);
    const d1 = fresh();
    writeFileSync(path.join(d1, segmentName(0)), flipped);
    const r1 = await readLog(d1);
    expect(r1.records.length).toBe(4);
    expect(r1.tornTail).toMatchObject({ offset: offsets[4], reason: 'record 4 fails its CRC', cut: false });
    // Unwritten blocks of a batch read back as zeros (the file's size made it, the data not).
    const zeroed = Buffer.from(whole);
    zeroed.fill(0, offsets[3]);
    const d2 = fresh();
    writeFileSync(path.join(d2, segmentName(0)), zeroed);
    const r2 = await scanLog(d2, { repair: true });
    expect(r2.nextLsn).toBe(3);
    expect(r2.tornTail).toMatchObject({ offset: offsets[3], cut: true });
    expect(statSync(path.join(d2, segmentName(0))).size).toBe(offsets[3]);
  });

  it('a last segment whose header never made it is removed; the one before goes on', async () => {
    const dir = fresh();
    await writeLog(dir, 6, HEADER_BYTES + 3 * (FRAME_OVERHEAD + 40));
    const names = segmentFiles(dir).sort();
    const extra = path.join(dir, segmentName(6));
    for (const content of [Buffer.alloc(0), Buffer.alloc(32), encodeHeader(6).subarray(0, 20)]) {
      writeFileSync(extra, content);
      const r = await scanLog(dir, { repair: true });
      expect(r.tornTail).toMatchObject({ segmentRemoved: true, cut: true });
      expect(r.nextLsn).toBe(6);
      expect(segmentFiles(dir).sort()).toEqual(names);
    }
  });
});

describe('damage is an error naming the segment and the offset', () => {
  it('a flipped payload byte in a middle record of the last segment', async () => {
    const dir = fresh();
    await writeLog(dir, 10);
    const seg = path.join(dir, segmentName(0));
    const buf = readFileSync(seg);
    const offsets = recordOffsets(buf);
    flip(buf, offsets[4]! + FRAME_OVERHEAD + 2, 1);
    writeFileSync(seg, buf);
    const err = await readLog(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LogCorruptionError);
    expect(err).toMatchObject({ code: 'ELOGCORRUPT', segment: seg, offset: offsets[4] });
    expect(String((err as Error).message)).toContain(`offset ${offsets[4]}: record 4 fails its CRC, and a valid record follows at offset ${offsets[5]}`);
    // Recovery refuses too, and changes nothing.
    await expect(LogWriter.open({ dir })).rejects.toMatchObject({ code: 'ELOGCORRUPT', offset: offsets[4] });
    expect(readFileSync(seg).length).toBe(buf.length);
  });

  it('a corrupted length field that runs past the end is damage, not a torn tail, when records follow', async () => {
    const dir = fresh();
    await writeLog(dir, 10);
    const seg = path.join(dir, segmentName(0));
    const buf = readFileSync(seg);
    const offsets = recordOffsets(buf);
    buf.writeUInt32LE(0x00ffffff, offsets[2]!);
    writeFileSync(seg, buf);
    await expect(scanLog(dir, { repair: true })).rejects.toMatchObject({ code: 'ELOGCORRUPT', segment: seg, offset: offsets[2] });
    expect(readFileSync(seg).length).toBe(buf.length);
  });

  it('any bad record in a segment that is not the last, even its last record', async () => {
    const dir = fresh();
    await writeLog(dir, 9, HEADER_BYTES + 3 * (FRAME_OVERHEAD + 40));
    const names = segmentFiles(dir).sort();
    expect(names.length).toBe(3);
    const seg = path.join(dir, names[1]!);
    const buf = readFileSync(seg);
    flip(buf, buf.length - 1, 0x80);
    writeFileSync(seg, buf);
    const offsets = recordOffsets(buf);
    await expect(scanLog(dir, { repair: true })).rejects.toMatchObject({ code: 'ELOGCORRUPT', segment: seg, offset: offsets[2] });
    truncateSync(seg, buf.length - 3);
    await expect(readLog(dir)).rejects.toMatchObject({ code: 'ELOGCORRUPT', segment: seg, offset: offsets[2] });
  });

  it('a damaged header, a missing segment, a name that does not match its header', async () => {
    const dir = fresh();
    await writeLog(dir, 9, HEADER_BYTES + 3 * (FRAME_OVERHEAD + 40));
    const names = segmentFiles(dir).sort().map((f) => path.join(dir, f));
    const saved = readFileSync(names[2]!);
    const h = Buffer.from(saved);
    h[3] = 0x21;
    writeFileSync(names[2]!, h);
    await expect(readLog(dir)).rejects.toMatchObject({ code: 'ELOGCORRUPT', segment: names[2], offset: 0 });
    writeFileSync(names[2]!, saved);
    const middle = readFileSync(names[1]!);
    rmSync(names[1]!);
    await expect(readLog(dir)).rejects.toMatchObject({ code: 'ELOGCORRUPT', segment: names[2], offset: 16, reason: expect.stringContaining('previous segment ends at 3') });
    writeFileSync(names[1]!, middle);
    copyFileSync(names[2]!, path.join(dir, segmentName(7)));
    rmSync(names[2]!);
    await expect(readLog(dir)).rejects.toMatchObject({ code: 'ELOGCORRUPT', offset: 16, reason: expect.stringContaining("differs from the file name's 7") });
  });
});

describe('fuzz: random bytes and truncations into the reader', () => {
  it('every input ends in records or a LogCorruptionError, quickly', async () => {
    let seed = 0x13c0ffee;
    const rnd = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const int = (k: number) => Math.floor(rnd() * k);
    const base = fresh();
    await writeLog(base, 20, HEADER_BYTES + 6 * (FRAME_OVERHEAD + 40));
    const files = segmentFiles(base).sort();
    const originals = files.map((f) => readFileSync(path.join(base, f)));
    const dir = fresh();
    let ok = 0;
    let corrupt = 0;
    let slowest = 0;
    for (let iter = 0; iter < 600; iter++) {
      for (const f of readdirSync(dir)) rmSync(path.join(dir, f));
      const bufs = originals.map((b) => Buffer.from(b));
      const target = int(bufs.length);
      let b = bufs[target]!;
      switch (int(5)) {
        case 0: // flip bits
          for (let k = 1 + int(4); k > 0; k--) if (b.length > 0) flip(b, int(b.length), 1 << int(8));
          break;
        case 1: // truncate
          b = b.subarray(0, int(b.length + 1));
          break;
        case 2: // random bytes over a stretch
          for (let p = int(b.length), k = int(64); k > 0 && p < b.length; k--, p++) b[p] = int(256);
          break;
        case 3: // garbage appended
          b = Buffer.concat([b, Buffer.from(Array.from({ length: int(200) }, () => int(256)))]);
          break;
        default: // a valid header followed by random bytes
          b = Buffer.concat([b.subarray(0, HEADER_BYTES), Buffer.from(Array.from({ length: int(500) }, () => int(256)))]);
      }
      bufs[target] = b;
      files.forEach((f, i) => writeFileSync(path.join(dir, f), bufs[i]!));
      const t0 = performance.now();
      try {
        const r = await readLog(dir);
        ok++;
        expect(r.nextLsn - r.firstLsn).toBe(r.records.length);
        // Whatever comes back is a prefix of what was written.
        r.records.forEach((rec, i) => expect(String(rec)).toBe(String(payload(i))));
      } catch (err) {
        if (!(err instanceof LogCorruptionError)) throw err;
        expect(err.offset).toBeGreaterThanOrEqual(0);
        corrupt++;
      }
      slowest = Math.max(slowest, performance.now() - t0);
    }
    expect(ok).toBeGreaterThan(50);
    expect(corrupt).toBeGreaterThan(50);
    expect(slowest).toBeLessThan(1000);
  });
});
