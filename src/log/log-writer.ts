// The mirrored log's writer: records appended to segment files, made durable with fdatasync in
// batches (group commit: appends that arrive while a batch is being written and synced go
// together in the next one). Two policies (seed 004): `each-commit`, an append resolves once its
// record is durable, the batch written and synced as soon as the previous one is done
// (primary-only and backup-only states); `checkpoint`, records wait in RAM and are flushed when
// the oldest has waited `intervalMs`, `records` are waiting or `bytes` are waiting (the normal
// state, where the backup's copy is the durability). Only fs/promises: the event loop is never
// blocked. Errors: see `LogIoError` and `LogWriterError`.
import path from 'node:path';
import { FRAME_OVERHEAD, HEADER_BYTES, encodeFrame, encodeHeader, segmentName } from './log-format.js';
import { LogIoError, LogWriterError, errnoCode } from './log-errors.js';
import { LogDirLock } from './dir-lock.js';
import { nodeFileOps, type FileOps, type LogFile } from './file-ops.js';
import { scanLog, type LogScan } from './log-reader.js';

export type SyncPolicy = 'each-commit' | 'checkpoint';

/** When a `checkpoint` writer flushes: whichever comes first. */
export interface CheckpointCriteria {
  /** The oldest unflushed record has waited this long, ms. Default 100. */
  intervalMs: number;
  /** This many records wait. Default 1,000. */
  records: number;
  /** Their frames take this many bytes. Default 1 MiB. */
  bytes: number;
}

export interface LogWriterOptions {
  /** The log's directory (created when missing). */
  dir: string;
  /** Default 'each-commit'. */
  sync?: SyncPolicy;
  checkpoint?: Partial<CheckpointCriteria>;
  /** A segment is closed before a record would take it past this many bytes (header included). Default 64 MiB. */
  segmentBytes?: number;
  /** The largest payload, bytes. Default 16 MiB, at most segmentBytes - 40. */
  maxRecordBytes?: number;
  /** Records per batch at most (1: one fdatasync per record, the benchmark's baseline). Default unbounded. */
  maxBatchRecords?: number;
  /** LSN of the first record when the directory holds no log yet. Default 0. */
  firstLsn?: number;
  /** The file operations (tests inject faults here). Default node:fs/promises. */
  fileOps?: FileOps;
  /** What holds the log, written in its LOCK file for the message another opener gets (dir-lock.ts). Default 'a log writer'. */
  holder?: string;
  /**
   * Called with each record the recovery at open keeps, in LSN order (`payload` is a view: copy
   * what is kept), so a caller that needs every record (the mirror's checksum chain,
   * log-chain.ts) reads the log once, not twice. Records of a torn tail are not passed; on
   * damage open rejects after passing the records before it.
   */
  onRecoveredRecord?: (lsn: number, payload: Buffer) => void;
}

/** Counters since open, for tests and benchmarks. */
export interface LogWriterStats {
  batches: number;
  records: number;
  /** fdatasync calls on segments (batches, new segments' headers). */
  datasyncs: number;
  bytes: number;
  segmentsCreated: number;
}

interface Pending {
  lsn: number;
  frame: Buffer;
  resolve: (lsn: number) => void;
  reject: (err: Error) => void;
}

interface Segment {
  path: string;
  file: LogFile;
  firstLsn: number;
  /** Bytes written and durable: where the next batch goes. */
  size: number;
}

const DEFAULT_CHECKPOINT: CheckpointCriteria = { intervalMs: 100, records: 1000, bytes: 1024 * 1024 };

/** An I/O error with the step it happened in ('write' rolls back; 'sync' fails the writer). */
class StepError extends Error {
  constructor(
    readonly step: 'write' | 'sync',
    readonly syscall: string,
    readonly error: unknown,
  ) {
    super(String(error));
  }
}

export class LogWriter {
  /** What recovery found and did when the writer opened (a torn tail cut, say). */
  readonly recovery: LogScan;
  readonly stats: LogWriterStats = { batches: 0, records: 0, datasyncs: 0, bytes: 0, segmentsCreated: 0 };

  private readonly ops: FileOps;
  private readonly dir: string;
  private policy: SyncPolicy;
  private readonly criteria: CheckpointCriteria;
  private readonly segmentBytes: number;
  private readonly maxRecordBytes: number;
  private readonly maxBatchRecords: number;
  private segment: Segment | null;
  private queue: Pending[] = [];
  private queuedBytes = 0;
  private oldestQueuedAt = 0;
  private next: number;
  private durable: number;
  private running = false;
  private timer: NodeJS.Timeout | null = null;
  private flushWaiters: { upTo: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  private failure: LogWriterError | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;
  /** Records below this LSN were due for a batch when one started (a checkpoint cut short goes on). */
  private dueUpTo = 0;
  private idle: (() => void) | null = null;

  private constructor(
    options: LogWriterOptions,
    recovery: LogScan,
    segment: Segment | null,
    private readonly lock: LogDirLock,
  ) {
    this.recovery = recovery;
    this.ops = options.fileOps ?? nodeFileOps;
    this.dir = options.dir;
    this.policy = options.sync ?? 'each-commit';
    this.criteria = { ...DEFAULT_CHECKPOINT, ...options.checkpoint };
    this.segmentBytes = options.segmentBytes ?? 64 * 1024 * 1024;
    this.maxRecordBytes = options.maxRecordBytes ?? Math.min(16 * 1024 * 1024, this.segmentBytes - HEADER_BYTES - FRAME_OVERHEAD);
    this.maxBatchRecords = options.maxBatchRecords ?? Infinity;
    this.segment = segment;
    this.next = recovery.nextLsn;
    this.durable = recovery.nextLsn;
  }

  /**
   * Opens the log in `options.dir` for appending: recovers it first (`scanLog` with repair: a torn
   * tail is cut), then appends after its last record. Holds the directory's lock (dir-lock.ts)
   * until `close()`. Rejects with LogWriterError ELOGLOCKED when another writer holds it,
   * `LogCorruptionError` (ELOGCORRUPT) on damage, `RangeError` on bad options, or the system
   * error of a failed read.
   */
  static async open(options: LogWriterOptions): Promise<LogWriter> {
    const segmentBytes = options.segmentBytes ?? 64 * 1024 * 1024;
    if (!Number.isInteger(segmentBytes) || segmentBytes < HEADER_BYTES + FRAME_OVERHEAD + 1) throw new RangeError(`segmentBytes ${segmentBytes} is too small`);
    if (options.maxRecordBytes !== undefined && !(options.maxRecordBytes >= 0 && options.maxRecordBytes <= segmentBytes - HEADER_BYTES - FRAME_OVERHEAD)) {
      throw new RangeError(`maxRecordBytes ${options.maxRecordBytes} must be in 0..segmentBytes - ${HEADER_BYTES + FRAME_OVERHEAD}`);
    }
    const ops = options.fileOps ?? nodeFileOps;
    await ops.mkdir(options.dir);
    const lock = await LogDirLock.acquire(options.dir, options.holder ?? 'a log writer');
    try {
      const recovery = await scanLog(options.dir, { repair: true, fileOps: ops, emptyFirstLsn: options.firstLsn ?? 0, ...(options.onRecoveredRecord ? { onRecord: options.onRecoveredRecord } : {}) });
      const last = recovery.segments.at(-1);
      let segment: Segment | null = null;
      if (last) segment = { path: last.path, file: await ops.open(last.path, 'existing'), firstLsn: last.firstLsn, size: last.bytes };
      return new LogWriter(options, recovery, segment, lock);
    } catch (err) {
      await lock.release().catch(() => {});
      throw err;
    }
  }

  /** The LSN the next `append` gets (appends are numbered in call order, at the call). */
  get nextLsn(): number {
    return this.next;
  }

  /** Every record below this LSN is durable. */
  get durableLsn(): number {
    return this.durable;
  }

  get syncPolicy(): SyncPolicy {
    return this.policy;
  }

  /** Why the writer refuses appends (after an fdatasync error), or null. */
  get failed(): LogWriterError | null {
    return this.failure;
  }

  /**
   * Appends one record (the payload is copied). Its LSN is `nextLsn` at the call. Resolves with
   * the LSN once the record is durable: at once after its batch's fdatasync (`each-commit`), at
   * the next checkpoint (`checkpoint`). Rejects with `LogIoError` (the system error's `code`:
   * ENOSPC, EIO, ...) when its batch fails, `LogWriterError` ELOGABORTED when it was queued behind
   * a failed batch (numbering resumes at the first failed LSN), ELOGFAILED after an fdatasync
   * error, ELOGCLOSED after `close()`, ELOGRECORDSIZE above `maxRecordBytes` (not numbered).
   */
  append(payload: Uint8Array): Promise<number> {
    const refusal = this.refusal();
    if (refusal) return Promise.reject(refusal);
    if (payload.length > this.maxRecordBytes) {
      return Promise.reject(new LogWriterError('ELOGRECORDSIZE', `record of ${payload.length} bytes, the most is ${this.maxRecordBytes}`));
    }
    const frame = encodeFrame(payload);
    const lsn = this.next++;
    return new Promise<number>((resolve, reject) => {
      if (this.queue.length === 0) this.oldestQueuedAt = performance.now();
      this.queue.push({ lsn, frame, resolve, reject });
      this.queuedBytes += frame.length;
      this.kick();
    });
  }

  /**
   * Resolves once every record appended before the call is durable (a checkpoint now, whatever
   * the policy). Rejects with the error of the batch that failed.
   */
  flush(): Promise<void> {
    const refusal = this.failure;
    if (refusal) return Promise.reject(refusal);
    const upTo = this.next;
    if (this.durable >= upTo) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.flushWaiters.push({ upTo, resolve, reject });
      this.kick();
    });
  }

  /**
   * Changes the policy. To `each-commit` (the backup is gone: every record on disk before its
   * ack), what waits in RAM is flushed now; resolves once it is durable.
   */
  async setSync(policy: SyncPolicy): Promise<void> {
    this.policy = policy;
    if (policy === 'each-commit') await this.flush();
    else this.kick();
  }

  /**
   * Flushes what waits (unless the writer failed), then closes the segment file. Appends from
   * the call on are refused (ELOGCLOSED). Rejects with the flush's error (the file is closed anyway).
   */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    let flushError: unknown = null;
    if (!this.failure) await this.flush().catch((err: unknown) => (flushError = err));
    this.closed = true;
    this.clearTimer();
    if (this.running) await new Promise<void>((r) => (this.idle = r));
    for (const p of this.queue.splice(0)) p.reject(new LogWriterError('ELOGCLOSED', 'the log writer is closed'));
    const seg = this.segment;
    this.segment = null;
    try {
      if (seg) await seg.file.close();
    } finally {
      await this.lock.release();
    }
    if (flushError) throw flushError;
  }

  private refusal(): LogWriterError | null {
    if (this.closed || this.closing) return new LogWriterError('ELOGCLOSED', 'the log writer is closed');
    if (this.failure) return new LogWriterError('ELOGFAILED', this.failure.message, { cause: this.failure.cause });
    return null;
  }

  /** Starts a batch when one is due (and none runs); else arms the checkpoint timer. */
  private kick(): void {
    if (this.running || this.failure || this.closed) return;
    if (this.queue.length === 0) {
      this.clearTimer();
      this.settleFlushWaiters();
      return;
    }
    const due =
      this.policy === 'each-commit' ||
      this.flushWaiters.length > 0 ||
      this.queue[0]!.lsn < this.dueUpTo ||
      this.queue.length >= this.criteria.records ||
      this.queuedBytes >= this.criteria.bytes ||
      performance.now() - this.oldestQueuedAt >= this.criteria.intervalMs;
    if (due) {
      // Everything queued now is due, also what a segment's end leaves for the next batch.
      this.dueUpTo = this.next;
      this.clearTimer();
      this.running = true;
      void this.runBatch().finally(() => {
        this.running = false;
        const idle = this.idle;
        this.idle = null;
        idle?.();
        this.kick();
      });
      return;
    }
    if (!this.timer) {
      const wait = Math.max(0, this.oldestQueuedAt + this.criteria.intervalMs - performance.now());
      this.timer = setTimeout(() => {
        this.timer = null;
        this.kick();
      }, wait);
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private settleFlushWaiters(): void {
    this.flushWaiters = this.flushWaiters.filter((w) => {
      if (w.upTo > this.durable) return true;
      w.resolve();
      return false;
    });
  }

  /** One batch: the records that fit in the current segment (a new one first if none fit), one write, one fdatasync. */
  private async runBatch(): Promise<void> {
    const first = this.queue[0]!;
    try {
      if (!this.segment || (this.segment.size > HEADER_BYTES && this.segment.size + first.frame.length > this.segmentBytes)) {
        await this.roll(first.lsn);
      }
    } catch (err) {
      this.batchFailed([], err as StepError);
      return;
    }
    const seg = this.segment!;
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < this.maxBatchRecords) {
      const len = this.queue[n]!.frame.length;
      if (n > 0 && seg.size + bytes + len > this.segmentBytes) break;
      bytes += len;
      n++;
    }
    const batch = this.queue.splice(0, n);
    this.queuedBytes -= bytes;
    const data = batch.length === 1 ? batch[0]!.frame : Buffer.concat(batch.map((p) => p.frame), bytes);
    try {
      await this.writeAll(seg.file, data, seg.size);
    } catch (err) {
      // Nothing of the batch is acknowledged; cut what reached the file so the next batch does
      // not follow a partial record. A failed cut leaves the file's state unknown: fail.
      try {
        await seg.file.truncate(seg.size);
      } catch (cutErr) {
        this.batchFailed(batch, new StepError('sync', 'ftruncate', cutErr));
        return;
      }
      this.batchFailed(batch, new StepError('write', 'write', err));
      return;
    }
    try {
      await seg.file.datasync();
      this.stats.datasyncs++;
    } catch (err) {
      this.batchFailed(batch, new StepError('sync', 'fdatasync', err));
      return;
    }
    seg.size += bytes;
    this.durable = batch[batch.length - 1]!.lsn + 1;
    this.stats.batches++;
    this.stats.records += batch.length;
    this.stats.bytes += bytes;
    for (const p of batch) p.resolve(p.lsn);
    this.settleFlushWaiters();
  }

  private async writeAll(file: LogFile, data: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const n = await file.write(data.subarray(done), position + done);
      if (n <= 0) throw Object.assign(new Error('write wrote nothing'), { code: 'EIO' });
      done += n;
    }
  }

  /**
   * A new segment starting at `firstLsn`: created, its header written and synced, the directory
   * synced; then the previous segment (durable: every batch ended with its fdatasync) is closed.
   */
  private async roll(firstLsn: number): Promise<void> {
    const file = path.join(this.dir, segmentName(firstLsn));
    let handle: LogFile;
    try {
      handle = await this.ops.open(file, 'create');
    } catch (err) {
      throw new StepError('write', 'open', err);
    }
    let step: StepError | null = null;
    try {
      await this.writeAll(handle, encodeHeader(firstLsn), 0);
    } catch (err) {
      step = new StepError('write', 'write', err);
    }
    if (!step) {
      try {
        await handle.datasync();
        this.stats.datasyncs++;
        await this.ops.syncDir(this.dir);
      } catch (err) {
        step = new StepError('sync', 'fsync', err);
      }
    }
    if (step) {
      await handle.close().catch(() => {});
      // The file holds no record: removing it is safe, and a left one would be a torn header
      // that recovery removes anyway.
      if (step.step === 'write') await this.ops.unlink(file).catch(() => {});
      throw step;
    }
    const previous = this.segment;
    this.segment = { path: file, file: handle, firstLsn, size: HEADER_BYTES };
    this.stats.segmentsCreated++;
    if (previous) await previous.file.close().catch(() => {});
  }

  /**
   * The batch's appends get the I/O error; those queued behind it are aborted (they were
   * numbered after records that will not be written) and numbering resumes at the first failed
   * LSN. A 'sync' step's failure (fdatasync, or a cut that did not happen) fails the writer.
   */
  private batchFailed(batch: Pending[], failure: StepError): void {
    const all = [...batch, ...this.queue.splice(0)];
    this.queuedBytes = 0;
    const firstLsn = all[0]?.lsn ?? this.next;
    const lastLsn = all.at(-1)?.lsn ?? this.next - 1;
    const io = new LogIoError(errnoCode(failure.error), failure.syscall, firstLsn, lastLsn, { cause: failure.error });
    if (failure.step === 'sync') {
      this.failure = new LogWriterError('ELOGFAILED', `the log writer stopped: ${failure.syscall} failed (${io.code}); the page cache's state is unknown, reopen the log to recover up to its last durable record`, { cause: failure.error });
    }
    // A new segment that could not be made fails every queued record with the I/O error.
    const inBatch = new Set(batch);
    for (const p of all) {
      if (inBatch.has(p) || batch.length === 0) p.reject(io);
      else p.reject(new LogWriterError('ELOGABORTED', `record ${p.lsn} was queued behind records ${io.firstLsn}.. whose batch failed (${io.code})`, { cause: io }));
    }
    this.next = this.durable;
    this.dueUpTo = this.durable;
    for (const w of this.flushWaiters.splice(0)) w.reject(io);
  }
}
