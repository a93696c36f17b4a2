// What the backup saw of the writes clients sent a primary, across all its shadowed connections,
// with the capture times that order them against a replication-stream probe (seed 003 [0079]-
// [0080]: each request gets the range of log locations it can have been applied in; the replay
// matcher, replay-match.ts, compares them with the stream the promoted replica received). Only
// the protocol plugin knows which requests are writes and what identifies one (RESP: the
// command's database and a digest of its arguments); this log only keeps and bounds them.
// Times are the capture's clock (ParsedSegment.timeMs, ms since the epoch).

/** One write request a shadowed client sent. */
export interface LoggedWrite {
  /** The connection (client address|port, as the plan's client endpoint: `${address}|${port}`). */
  connection: string;
  /** The command's name (for the log and the reasons). */
  command: string;
  /**
   * What identifies the write in the replication stream (the plugin's key: RESP's respWriteKey),
   * or null when it cannot be matched there (a command the stream carries rewritten, an inline
   * request, a database not known for sure).
   */
  key: string | null;
  /** Where the capture first saw it: ms since the epoch (the segment carrying its first byte). */
  sentMs: number;
  /**
   * false when its first byte's time is not known exactly (it was delivered after a hole filled:
   * the time is the filling segment's, possibly later than the request's own).
   */
  sentExact: boolean;
  /** When the capture saw the last byte of its reply (ms since the epoch); null: unanswered. */
  answeredMs: number | null;
  /** The reply was an error: the write did not run (and is not in the stream). */
  failed: boolean;
  /**
   * What it takes to run it again where it was lost (RESP: its database and words), when the
   * log kept it (a write too large, or past the log's byte bound, is not kept).
   */
  rerun?: { db: number; argv: Buffer[] };
}

export interface RequestLogOptions {
  /** Writes whose reply came longer ago than this are forgotten, ms (default 2000). */
  retainMs?: number;
  /** Writes kept at most (default 200,000); beyond it the oldest go and `since` moves forward. */
  maxEntries?: number;
  /** Bytes of `rerun` words kept at most (default 32 MiB); beyond it new writes are kept without. */
  maxRerunBytes?: number;
}

/** The writes of the last `retainMs`, in the order their first bytes were seen. */
export class RequestLog {
  private entries: LoggedWrite[] = [];
  private head = 0;
  private readonly retainMs: number;
  private readonly maxEntries: number;
  private readonly maxRerunBytes: number;
  private rerunBytes = 0;
  /**
   * Every write the log dropped (by age or count) was answered by this time (ms since the epoch,
   * the capture's): a probe sent after it has no dropped write straddling it. A write dropped by
   * count before its reply came counts its first byte's time (its reply may come later: a limit
   * past 200,000 writes kept). The log holds every other write of a connection the shadow
   * followed from its SYN.
   */
  since = Number.NEGATIVE_INFINITY;
  /**
   * The writes the log dropped that were (or, dropped by count before their reply, may yet be)
   * acknowledged, by the DROPPED_BUCKET_MS in which their reply came: what a promoted replica
   * that lags past `since` may lack without the log holding them (RequestLogSnapshot). Oldest
   * first; buckets older than DROPPED_HISTORY_MS fold into droppedBefore.
   */
  private dropped: Array<{ startMs: number; count: number }> = [];
  private droppedBefore = 0;

  constructor(options: RequestLogOptions = {}) {
    this.retainMs = options.retainMs ?? 2000;
    this.maxEntries = options.maxEntries ?? 200_000;
    this.maxRerunBytes = options.maxRerunBytes ?? 32 * 1024 * 1024;
  }

  /** Records a write when its request is complete; the caller sets answeredMs (and failed) on the returned entry. */
  record(entry: Omit<LoggedWrite, 'answeredMs' | 'failed'>): LoggedWrite {
    this.trim(entry.sentMs);
    const { rerun } = entry;
    const bytes = rerun ? rerunSize(rerun) : 0;
    const kept = rerun !== undefined && this.rerunBytes + bytes <= this.maxRerunBytes;
    if (kept) this.rerunBytes += bytes;
    const w = loggedWrite(entry, null, false, kept ? rerun : undefined);
    this.entries.push(w);
    return w;
  }

  /**
   * The writes kept, oldest first; later replies do not change a snapshot. An answered write is
   * final (its reply set answeredMs and failed once) and shared; only the unanswered ones, which
   * a reply may still change, are copied: a takeover takes this on the agent's loop, and copying
   * 200,000 entries took 80-320 ms.
   */
  snapshot(): RequestLogSnapshot {
    const writes = this.entries.slice(this.head);
    for (let i = 0; i < writes.length; i++) if (writes[i]!.answeredMs === null) writes[i] = loggedWrite(writes[i]!, null, false, writes[i]!.rerun);
    const dropped = this.dropped.slice();
    const before = this.droppedBefore;
    return {
      since: this.since,
      writes,
      droppedAcknowledgedSince: (ms) => {
        // Every bucket that may hold a reply at or after `ms`; the folded ones when `ms` is older than the first.
        let n = dropped.length === 0 || ms < dropped[0]!.startMs ? before : 0;
        for (const b of dropped) if (b.startMs + DROPPED_BUCKET_MS > ms) n += b.count;
        return n;
      },
    };
  }

  private trim(nowMs: number): void {
    // An unanswered write is kept however old: it is what a takeover must decide about.
    while (this.head < this.entries.length) {
      const w = this.entries[this.head]!;
      const over = this.entries.length - this.head >= this.maxEntries;
      if (!over && (w.answeredMs === null || nowMs - w.answeredMs <= this.retainMs)) break;
      // Its reply's time, not its request's: one sent before a probe and answered after it straddles that probe.
      this.since = Math.max(this.since, w.answeredMs ?? w.sentMs);
      if (!w.failed) this.countDropped(w.answeredMs ?? w.sentMs);
      if (w.rerun) this.rerunBytes -= rerunSize(w.rerun);
      this.head++;
    }
    if (this.head > 4096 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  private countDropped(ms: number): void {
    const startMs = Math.floor(ms / DROPPED_BUCKET_MS) * DROPPED_BUCKET_MS;
    const last = this.dropped.at(-1);
    if (last !== undefined && last.startMs >= startMs) last.count++;
    else this.dropped.push({ startMs, count: 1 });
    while (this.dropped[0]!.startMs < startMs - DROPPED_HISTORY_MS) this.droppedBefore += this.dropped.shift()!.count;
  }
}

/**
 * A LoggedWrite with its fields always in one order, `rerun` included: every entry then has one
 * hidden class, and the matcher's loops over 200,000 of them at a takeover stay monomorphic
 * (entries spread from the tracker's literals, with `rerun` added to some, and copies spread
 * from those, made several; the first decisions ran several times slower than on made-up logs).
 * Built field by field, no spread: the log makes one per write the capture sees.
 */
function loggedWrite(w: Pick<LoggedWrite, 'connection' | 'command' | 'key' | 'sentMs' | 'sentExact'>, answeredMs: number | null, failed: boolean, rerun: LoggedWrite['rerun']): LoggedWrite {
  return { connection: w.connection, command: w.command, key: w.key, sentMs: w.sentMs, sentExact: w.sentExact, answeredMs, failed, rerun };
}

/** What RequestLog.snapshot() returns. */
export interface RequestLogSnapshot {
  /** RequestLog.since when taken. */
  since: number;
  /** The writes kept, oldest first. */
  writes: LoggedWrite[];
  /**
   * How many writes the log had dropped that may have been acknowledged at or after `ms` (ms
   * since the epoch, the capture's clock): an upper bound (whole DROPPED_BUCKET_MS buckets; all
   * of them when `ms` is older than DROPPED_HISTORY_MS). Failed writes are not counted.
   */
  droppedAcknowledgedSince(ms: number): number;
}

/** The dropped writes are counted per this much of their replies' time, ms. */
const DROPPED_BUCKET_MS = 100;
/** And kept per bucket this long, ms (then only their total): at most 6,000 buckets. */
const DROPPED_HISTORY_MS = 10 * 60 * 1000;

const rerunSize = (r: { argv: Buffer[] }) => r.argv.reduce((n, a) => n + a.length, 0);
