// When a PostgreSQL standby received WAL from its primary (issue 12: "where B cannot know whether
// P applied a write, it checks the replication stream or position"). A request the dead primary
// never answered may have been committed there anyway; a replay on the promoted standby would
// then apply it twice if the commit reached the standby, and exactly once if it did not. The
// commit can only have reached the standby in WAL the primary sent after the request arrived.
// So this host's capture of its own replication connection (the walsender's side, captured
// where the standby receives it) keeps the time of the last segment that carried anything but
// a keepalive: a request the capture saw arrive at the primary after that, and before any
// capture loss, was not in any WAL the standby holds, and its replay applies it exactly once.
// Otherwise nothing here can tell, and its connection is reset. Both times are this host's clock
// (the mirror's copy of the request, and the WAL's arrival here, which follows its sending).
//
// Keepalives (CopyData 'k': walEnd, sendTime, replyRequested; RFC-less: PostgreSQL's protocol
// docs, "Streaming Replication Protocol") carry no WAL: 22 bytes, recognised whole in one
// segment; anything else (XLogData 'w', a keepalive sharing a segment, a retransmission) counts
// as WAL, which can only reset more, never replay wrongly.
import type { ParsedSegment } from '../../native.js';
import { canonicalAddress, type Endpoint } from '../endpoint.js';
import type { ChunkTime } from './exchange-tracker.js';

/**
 * The replication connection must have been seen (either way) this recently when a takeover
 * decides (ms): a standby reports to its primary every wal_receiver_status_interval (10 s by
 * default), so a capture that saw nothing for longer watches the wrong address or port, and
 * would call every replay safe.
 */
export const WAL_SEEN_WITHIN_MS = 30_000;

/** A primary keepalive message, whole: 'd', length 21, 'k', walEnd (8), sendTime (8), replyRequested (1). */
const KEEPALIVE_BYTES = 22;

/** Whether a segment's payload is exactly one primary keepalive message (payload: at least its first 6 bytes). */
export function isKeepalive(payload: Uint8Array, payloadLength: number): boolean {
  return payloadLength === KEEPALIVE_BYTES && payload.length >= 6 && payload[0] === 0x64 && payload[1] === 0 && payload[2] === 0 && payload[3] === 0 && payload[4] === 21 && payload[5] === 0x6b;
}

/**
 * The watch of the replication connection turned unseen (nothing of it for WAL_SEEN_WITHIN_MS:
 * every unanswered request is unproven from then on, not replayed as it was) or seen again. Times in ms since
 * the epoch; `lastSeenMs` null: never seen since the capture started at `startedMs` (null: a
 * segment came before the capture reported itself started).
 */
export type WalWatchEvent =
  | { type: 'wal-unseen'; primary: Endpoint; lastSeenMs: number | null; startedMs: number | null }
  | { type: 'wal-seen'; primary: Endpoint; unseenForMs: number };

export class WalArrivals {
  private readonly address: string;
  /** Since when watchChange() last reported the connection unseen (ms); undefined: it reported none, or it was seen since. */
  private unseenSinceMs: number | undefined;
  /** Capture time (ms since the epoch) of the last segment from the primary that may carry WAL. */
  lastWalMs = -Infinity;
  /** When a segment of the replication connection (either way) was last captured (ms); -Infinity: never. */
  lastSeenMs = -Infinity;
  /** When the capture last reported frames lost (ms); -Infinity: never. */
  lastLossMs = -Infinity;
  /** When the capture started (ms): a request seen before it cannot be ordered. Infinity until started(). */
  startedMs = Infinity;

  constructor(
    /** The primary's end of the replication connection, as this standby connects to it. */
    readonly primary: Endpoint,
  ) {
    this.address = canonicalAddress(primary.address);
  }

  /** The capture runs from `atMs` on (its ring is set up). */
  started(atMs: number): void {
    if (this.startedMs === Infinity) this.startedMs = atMs;
  }

  /** Captured segments (any direction, any connection: the primary's to this host are kept). */
  take(segments: readonly ParsedSegment[]): void {
    for (const s of segments) {
      // A segment without a capture time cannot be ordered: as if it came last.
      const at = s.timeMs ?? Infinity;
      const fromPrimary = s.sport === this.primary.port && canonicalAddress(s.src) === this.address;
      if (fromPrimary || (s.dport === this.primary.port && canonicalAddress(s.dst) === this.address)) this.lastSeenMs = Math.max(this.lastSeenMs, at);
      if (!fromPrimary || s.payloadLength === 0) continue;
      if (s.payload && isKeepalive(s.payload, s.payloadLength)) continue;
      if (at > this.lastWalMs) this.lastWalMs = at;
    }
  }

  /**
   * For status (times in ms since the epoch, null: not yet). `unseen`: nothing of the connection
   * for more than WAL_SEEN_WITHIN_MS since it was last seen, or since the capture started.
   */
  watch(nowMs: number): { startedMs: number | null; lastSeenMs: number | null; lastWalMs: number | null; unseen: boolean } {
    const known = (ms: number) => (Number.isFinite(ms) ? ms : null);
    const since = Number.isFinite(this.lastSeenMs) ? this.lastSeenMs : this.startedMs;
    return { startedMs: known(this.startedMs), lastSeenMs: known(this.lastSeenMs), lastWalMs: known(this.lastWalMs), unseen: Number.isFinite(since) && nowMs - since > WAL_SEEN_WITHIN_MS };
  }

  /**
   * What changed since the last call, for the log: the connection turned unseen (see watch), or
   * was seen again after being reported unseen; undefined when nothing did. Call it periodically.
   */
  watchChange(nowMs: number): WalWatchEvent | undefined {
    const w = this.watch(nowMs);
    if (w.unseen && this.unseenSinceMs === undefined) {
      this.unseenSinceMs = (w.lastSeenMs ?? w.startedMs)!; // unseen needs one of them
      return { type: 'wal-unseen', primary: this.primary, lastSeenMs: w.lastSeenMs, startedMs: w.startedMs };
    }
    if (!w.unseen && this.unseenSinceMs !== undefined) {
      const unseenForMs = Math.max(0, (w.lastSeenMs ?? nowMs) - this.unseenSinceMs);
      this.unseenSinceMs = undefined;
      return { type: 'wal-seen', primary: this.primary, unseenForMs };
    }
    return undefined;
  }

  /** The capture reported lost frames (noticed at `atMs`): WAL may have come unseen until then. */
  lost(atMs: number): void {
    if (atMs > this.lastLossMs) this.lastLossMs = atMs;
  }

  /**
   * null when a request first seen at `since` cannot be in any WAL this standby received (all of
   * it arrived before the request did, and no capture loss came after it, and the connection was
   * seen within WAL_SEEN_WITHIN_MS of `nowMs`); otherwise why it may be, or why this cannot tell.
   */
  verdict(since: ChunkTime | undefined, nowMs: number): string | null {
    if (nowMs - this.lastSeenMs > WAL_SEEN_WITHIN_MS) {
      return `the standby's replication connection to ${this.primary.address}:${this.primary.port} was ${this.lastSeenMs === -Infinity ? 'never seen' : `last seen ${Math.round(nowMs - this.lastSeenMs)} ms ago`} (walCheck.primary must be the address and port the standby connects to): nothing here tells whether the primary committed the request`;
    }
    if (!since) return 'when its unanswered request arrived is not known';
    if (since.late) return 'its unanswered request was held behind a capture hole: when it arrived at the primary is not known';
    if (since.ms < this.startedMs) return this.startedMs === Infinity ? 'the capture of the replication connection has not started' : 'its unanswered request arrived before the capture of the replication connection started';
    if (this.lastLossMs >= since.ms) return `the capture of the replication connection lost frames after its unanswered request arrived (${formatMs(this.lastLossMs - since.ms)} ms after)`;
    if (this.lastWalMs >= since.ms) return `the primary sent WAL to the standby ${formatMs(this.lastWalMs - since.ms)} ms after its unanswered request arrived: the request's commit may be in it, and a replay could apply it twice`;
    return null;
  }
}

function formatMs(ms: number): string {
  return ms.toFixed(1);
}
