// The mirrored log's errors: every one carries a `code` (as Node's system errors do), so callers
// branch on `err.code`, never on a message.

/**
 * A segment of the log is damaged somewhere a crash cannot explain: a bad header, a record whose
 * checksum fails with a valid record after it, a damaged record in a segment that is not the
 * last, a gap in the record numbers. Never skipped: the log refuses to open until an operator
 * decides. `segment` is the file's path, `offset` the byte offset of the damage in it.
 */
export class LogCorruptionError extends Error {
  override readonly name = 'LogCorruptionError';
  readonly code = 'ELOGCORRUPT';
  constructor(
    readonly segment: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`log segment ${segment}, offset ${offset}: ${reason}`);
  }
}

/** Codes of `LogWriterError`. */
export type LogWriterErrorCode =
  /** An earlier fdatasync (or the undo of a failed write) failed: the writer takes no more appends. */
  | 'ELOGFAILED'
  /** `close()` was called. */
  | 'ELOGCLOSED'
  /** The payload is larger than `maxRecordBytes`. Nothing was numbered. */
  | 'ELOGRECORDSIZE'
  /** An append queued behind a batch that failed: numbered after a record that will never be written. */
  | 'ELOGABORTED'
  /** At open: another writer holds the log's directory (dir-lock.ts); nothing was read or changed. */
  | 'ELOGLOCKED';

/** A writer's refusal of an append, or of its open (ELOGLOCKED); `cause` holds the I/O error behind it, where there is one. */
export class LogWriterError extends Error {
  override readonly name = 'LogWriterError';
  constructor(
    readonly code: LogWriterErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * An I/O error of a batch (ENOSPC, EIO, EDQUOT, ...) as each of the batch's appends sees it:
 * `code` is the system error's code, `syscall` the call that failed (`write` or `fdatasync`, or
 * `open` for a new segment), `firstLsn`..`lastLsn` the records of the batch. The commits are not
 * acknowledged. After a `write` failure the writer has cut the segment back and goes on; after
 * an `fdatasync` failure it refuses further appends (`ELOGFAILED`).
 */
export class LogIoError extends Error {
  override readonly name = 'LogIoError';
  constructor(
    readonly code: string,
    readonly syscall: string,
    readonly firstLsn: number,
    readonly lastLsn: number,
    options: { cause: unknown },
  ) {
    super(`log ${syscall} failed (${code}): records ${firstLsn}..${lastLsn} are not durable`, options);
  }
}

/** The `code` of an I/O error, or 'EIO' when it has none. */
export function errnoCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'EIO';
}
