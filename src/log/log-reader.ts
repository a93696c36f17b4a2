// Reading and recovering the mirrored log: the segments in order, every header and record
// checked. A torn tail (what a crash leaves after the last durable record) is told apart from
// damage, reported, and cut when repairing; damage is an error naming the segment and offset,
// never a skipped record. The rule (docs/MIRRORED-LOG.md, "Recovery"):
//   - a bad record in any segment but the last is damage;
//   - in the last segment, the first bad record (short, or failing its CRC) starts a torn tail
//     when no valid record starts anywhere after it: everything after the last durable record
//     is the unacknowledged rest of a batch the crash cut. A valid record after it means durable
//     data follows the bad one: damage (this also catches a corrupted length field, which would
//     otherwise look like a short record running past the end);
//   - a last segment whose header is short or all zeros was being created: torn, removed.
import path from 'node:path';
import { Slices } from '../event-loop.js';
import { checkFrame, decodeHeader, FRAME_OVERHEAD, HEADER_BYTES, parseSegmentName, recordCrc } from './log-format.js';
import { LogCorruptionError } from './log-errors.js';
import { nodeFileOps, type FileOps } from './file-ops.js';

/** How much CRC work (bytes) the search for a valid record after a bad one may do by default. */
export const DEFAULT_RESYNC_BUDGET_BYTES = 64 * 1024 * 1024;

export interface ScanOptions {
  /** Cut a torn tail (ftruncate + fdatasync) or remove a torn last segment. Default false: only report. */
  repair?: boolean;
  fileOps?: FileOps;
  /** Each record in order. `payload` is a view into the segment's buffer (keep it or copy it). */
  onRecord?: (lsn: number, payload: Buffer) => void;
  /** The next LSN of a log without segments. Default 0. */
  emptyFirstLsn?: number;
  /** Bound of the search for a valid record after a bad one in the last segment, bytes of CRC work. */
  resyncBudgetBytes?: number;
  /**
   * Read from this LSN on (the mirror's catch-up, the last record of a log): segments wholly
   * before the one holding it are neither read nor checked (absent from `segments`); `onRecord`
   * sees records from it on. Not with `repair` (recovery checks everything). Default: the start.
   */
  fromLsn?: number;
  /**
   * Stop before this LSN: `onRecord` sees records below it, no byte after its record is parsed
   * and no later segment read (a reader of a log being written stops at its `durableLsn` and so
   * never meets the batch being written). `nextLsn` is then min(the log's next LSN, toLsn) and a
   * torn tail past it is not looked for. Not with `repair`. Default: the end.
   */
  toLsn?: number;
}

export interface SegmentInfo {
  path: string;
  firstLsn: number;
  /** Valid records in it (after a cut, those left). */
  records: number;
  /** Bytes of header and valid records: where the next record goes. */
  bytes: number;
}

/** The torn tail found in the last segment. Offsets and sizes in bytes. */
export interface TornTail {
  segment: string;
  /** Where the first bad record starts (HEADER_BYTES or more), or 0 for a torn header. */
  offset: number;
  /** Bytes after `offset` (cut when repairing). */
  bytes: number;
  reason: string;
  /** The segment was removed (a torn header: it held no record). */
  segmentRemoved: boolean;
  /** `repair` was asked and done. */
  cut: boolean;
}

export interface LogScan {
  dir: string;
  /**
   * The segments read, in LSN order (a removed torn one not included; with `fromLsn`, not those
   * skipped; with `toLsn`, the last one's `records`/`bytes` count what was read of it).
   */
  segments: SegmentInfo[];
  /** The first record's LSN (the next LSN when there is no record); with `fromLsn`, the log's first (from the names of the skipped segments). */
  firstLsn: number;
  /** The LSN the next record appended gets (with `toLsn`: at most `toLsn`). */
  nextLsn: number;
  tornTail: TornTail | null;
}

/**
 * Reads every segment of the log in `dir` in order, checking headers, record CRCs and LSN
 * continuity. Resolves with what it found; with `repair`, a torn tail has been cut (durably).
 * Rejects with `LogCorruptionError` (code ELOGCORRUPT, the segment and offset) on damage, and
 * with the system error of a failed read or repair. Yields to the event loop every ~2 ms.
 */
export async function scanLog(dir: string, options: ScanOptions = {}): Promise<LogScan> {
  const ops = options.fileOps ?? nodeFileOps;
  const fromLsn = options.fromLsn ?? 0;
  const toLsn = options.toLsn ?? Infinity;
  for (const [name, v] of [['fromLsn', options.fromLsn], ['toLsn', options.toLsn]] as const) {
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 0)) throw new RangeError(`${name} ${v} is not an LSN`);
  }
  if (options.repair && (options.fromLsn !== undefined || options.toLsn !== undefined)) throw new RangeError('repair reads the whole log: no fromLsn/toLsn');
  const names = (await ops.readdir(dir))
    .map((name) => ({ name, lsn: parseSegmentName(name) }))
    .filter((s): s is { name: string; lsn: number } => s.lsn !== null)
    .sort((a, b) => a.lsn - b.lsn);
  // The segment holding fromLsn is the last one named at or below it; those before are skipped.
  let start = 0;
  while (start + 1 < names.length && names[start + 1]!.lsn <= fromLsn) start++;
  const segments: SegmentInfo[] = [];
  let nextLsn = names[start]?.lsn ?? options.emptyFirstLsn ?? 0;
  let tornTail: TornTail | null = null;
  let stopped = false;
  const slices = new Slices();

  for (let i = start; i < names.length && !stopped; i++) {
    const { name, lsn: nameLsn } = names[i]!;
    const file = path.join(dir, name);
    const last = i === names.length - 1;
    const buf = await ops.readFile(file);
    const header = decodeHeader(buf);
    if (!header.ok) {
      if (!(last && header.torn)) throw new LogCorruptionError(file, 0, header.reason);
      if (i > start && nameLsn !== nextLsn) throw new LogCorruptionError(file, 0, `named for LSN ${nameLsn}, but the previous segment ends at ${nextLsn}`);
      tornTail = { segment: file, offset: 0, bytes: buf.length, reason: `${header.reason}: the segment was being created`, segmentRemoved: true, cut: false };
      if (options.repair) {
        await ops.unlink(file);
        await ops.syncDir(dir);
        tornTail.cut = true;
      }
      nextLsn = nameLsn;
      break;
    }
    if (header.firstLsn !== nameLsn) throw new LogCorruptionError(file, 16, `header's first LSN ${header.firstLsn} differs from the file name's ${nameLsn}`);
    if (i > start && header.firstLsn !== nextLsn) throw new LogCorruptionError(file, 16, `first LSN ${header.firstLsn}, but the previous segment ends at ${nextLsn} (a segment is missing or left over)`);

    let offset = HEADER_BYTES;
    let lsn = header.firstLsn;
    while (offset < buf.length) {
      if (lsn >= toLsn) {
        stopped = true;
        break;
      }
      if (slices.due) await slices.next();
      const frame = checkFrame(buf, offset);
      if (frame.kind === 'record') {
        if (lsn >= fromLsn) options.onRecord?.(lsn, frame.payload);
        lsn++;
        offset = frame.end;
        continue;
      }
      const what = frame.kind === 'incomplete' ? `short record: ${frame.reason}` : `record ${lsn} fails its CRC`;
      if (!last) throw new LogCorruptionError(file, offset, `${what}, in a segment that is not the last`);
      const after = await findValidFrame(buf, offset + 1, options.resyncBudgetBytes ?? DEFAULT_RESYNC_BUDGET_BYTES, slices);
      if (after === 'undecided') throw new LogCorruptionError(file, offset, `${what}; cannot tell a torn tail from damage within the search budget`);
      if (after !== null) throw new LogCorruptionError(file, offset, `${what}, and a valid record follows at offset ${after}: damage, not a torn tail`);
      tornTail = { segment: file, offset, bytes: buf.length - offset, reason: what, segmentRemoved: false, cut: false };
      if (options.repair) {
        const f = await ops.open(file, 'existing');
        try {
          await f.truncate(offset);
          await f.datasync();
        } finally {
          await f.close();
        }
        tornTail.cut = true;
      }
      break;
    }
    segments.push({ path: file, firstLsn: header.firstLsn, records: lsn - header.firstLsn, bytes: Math.min(offset, buf.length) });
    nextLsn = lsn;
    if (lsn >= toLsn) stopped = true;
  }
  const firstLsn = start > 0 ? names[0]!.lsn : (segments[0]?.firstLsn ?? nextLsn);
  return { dir, segments, firstLsn, nextLsn: Math.min(nextLsn, toLsn), tornTail };
}

/**
 * The offset of the first whole, CRC-valid record starting at or after `from`, null when there is
 * none, 'undecided' when the CRC work would pass `budget` bytes.
 */
async function findValidFrame(buf: Buffer, from: number, budget: number, slices: Slices): Promise<number | null | 'undecided'> {
  let work = 0;
  for (let p = from; p + FRAME_OVERHEAD <= buf.length; p++) {
    if ((p & 0xfff) === 0 && slices.due) await slices.next();
    const len = buf.readUInt32LE(p);
    const end = p + FRAME_OVERHEAD + len;
    if (end > buf.length) continue;
    work += 4 + len;
    if (work > budget) return 'undecided';
    if (recordCrc(buf.subarray(p, p + 4), buf.subarray(p + FRAME_OVERHEAD, end)) === buf.readUInt32LE(p + 4)) return p;
  }
  return null;
}

/** A whole log read into memory (tests, tools): the records (copies) and the scan. Read-only. */
export async function readLog(dir: string, options: Omit<ScanOptions, 'onRecord' | 'repair'> = {}): Promise<LogScan & { records: Buffer[] }> {
  const records: Buffer[] = [];
  const scan = await scanLog(dir, { ...options, onRecord: (_lsn, payload) => records.push(Buffer.from(payload)) });
  return { ...scan, records };
}
