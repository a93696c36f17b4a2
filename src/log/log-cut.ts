// Cutting a log back to an LSN: what a returning primary does before it mirrors its successor
// (seed 004 step 465; mirror-history.ts says why only unacknowledged records are cut). The cut
// records are first copied, as a log of their own, into a directory the caller names, so that
// nothing leaves the disk without a trace an operator can read (`readLog` opens it). Then the
// segments after the one holding the LSN are removed, last first, and that one is truncated:
// a crash at any step leaves a valid log that is merely longer (the cut is repeated on the next
// connection), never a hole.
//
// It holds the directory's lock (dir-lock.ts) meanwhile: close the log's writer first.
import path from 'node:path';
import { HEADER_BYTES, FRAME_OVERHEAD } from './log-format.js';
import { scanLog } from './log-reader.js';
import { LogWriter } from './log-writer.js';
import { LogDirLock } from './dir-lock.js';
import { nodeFileOps, type FileOps } from './file-ops.js';

/** What cutLogBack() did. */
export interface LogCut {
  /** The log's next LSN now (the LSN asked for). */
  nextLsn: number;
  /** Records removed (those at and after `nextLsn` before the cut). */
  cutRecords: number;
  /** Where the removed records were copied (a log starting at `nextLsn`), or null when none were cut. */
  keptIn: string | null;
  /** Segment files removed whole, and the segment truncated (null when the cut fell on a segment boundary of a removed one). */
  removedSegments: string[];
  truncated: { segment: string; toBytes: number } | null;
}

/**
 * Cuts the log in `dir` back so that its next LSN is `lsn`: records from `lsn` on are copied
 * into a new log at `keepDir` (created; it must not hold a log) and then removed, durably. A log
 * already ending at `lsn` is left as it is. Rejects with RangeError when `lsn` is below the log's
 * first LSN or past its end, LogWriterError ELOGLOCKED when a writer has the log open,
 * LogCorruptionError (ELOGCORRUPT) when the log is damaged (nothing is cut), or a system error of a file operation (then the log is still valid: see above).
 */
export async function cutLogBack(dir: string, lsn: number, keepDir: string, fileOps: FileOps = nodeFileOps): Promise<LogCut> {
  if (!Number.isSafeInteger(lsn) || lsn < 0) throw new RangeError(`${lsn} is not an LSN`);
  const lock = await LogDirLock.acquire(dir, `a cut back to LSN ${lsn}`);
  try {
    return await cut(dir, lsn, keepDir, fileOps);
  } finally {
    await lock.release();
  }
}

async function cut(dir: string, lsn: number, keepDir: string, fileOps: FileOps): Promise<LogCut> {
  const scan = await scanLog(dir, { fileOps });
  if (lsn < scan.firstLsn || lsn > scan.nextLsn) throw new RangeError(`cannot cut the log in ${dir} back to LSN ${lsn}: it holds LSNs ${scan.firstLsn} to ${scan.nextLsn - 1}`);
  const cutRecords = scan.nextLsn - lsn;
  if (cutRecords === 0) return { nextLsn: lsn, cutRecords: 0, keptIn: null, removedSegments: [], truncated: null };

  // 1. The copy, durable before anything is removed.
  const keep = await LogWriter.open({ dir: keepDir, firstLsn: lsn, sync: 'checkpoint', fileOps });
  try {
    if (keep.nextLsn !== lsn) throw new RangeError(`${keepDir} already holds a log (next LSN ${keep.nextLsn}): choose a new directory`);
    const copies: Promise<number>[] = [];
    await scanLog(dir, { fromLsn: lsn, fileOps, onRecord: (_l, p) => copies.push(keep.append(Buffer.from(p))) });
    await keep.flush();
    await Promise.all(copies);
  } finally {
    await keep.close();
  }

  // 2. The segment holding `lsn` (the last one starting at or below it) and the offset of its record.
  const segments = scan.segments;
  let holder = 0;
  while (holder + 1 < segments.length && segments[holder + 1]!.firstLsn <= lsn) holder++;
  const seg = segments[holder]!;
  let offset = HEADER_BYTES;
  await scanLog(dir, { fromLsn: seg.firstLsn, toLsn: lsn, fileOps, onRecord: (_l, p) => (offset += FRAME_OVERHEAD + p.length) });

  // 3. Later segments removed, the last first; then the holder truncated.
  const removedSegments: string[] = [];
  for (let i = segments.length - 1; i > holder; i--) {
    await fileOps.unlink(segments[i]!.path);
    removedSegments.unshift(segments[i]!.path);
  }
  if (removedSegments.length > 0) await fileOps.syncDir(dir);
  let truncated: LogCut['truncated'] = null;
  if (offset < seg.bytes) {
    const f = await fileOps.open(seg.path, 'existing');
    try {
      await f.truncate(offset);
      await f.datasync();
    } finally {
      await f.close();
    }
    truncated = { segment: seg.path, toBytes: offset };
  }
  return { nextLsn: lsn, cutRecords, keptIn: path.resolve(keepDir), removedSegments, truncated };
}
