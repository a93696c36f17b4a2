// One direction of a shadowed TCP connection: the bytes a capture saw, put back in stream order
// from the SYN, with what is still needed kept and the rest let go. Segments that arrive ahead
// of a hole wait (a few, bounded) for the retransmission that fills it: a mirror sees what the
// server saw, and the server too gets out-of-order segments when the network drops one.
// A hole the receiver has acknowledged never fills (no sender retransmits acknowledged bytes):
// the capture lost those frames (its ring overflowed). Such a hole is skipped where the owner
// can follow the stream past it (`onGap`: a framer inside a payload of known length), once the
// acknowledgement has been seen for REORDER_MS of capture time (a capture on several CPUs can hand
// a frame over a few µs after a later one), when the segments waiting beyond it reach the bound,
// or when the owner says so (skipAcknowledged: the receiver sent data that may answer the bytes).
// The sender's FIN takes the sequence number after its last byte: it is kept apart (finAt), so an
// acknowledgement of it is not read as a byte the capture lost.
// Offsets are stream offsets (bytes since the SYN, 0 = first data byte); they never wrap.
import { seqAdd, seqDiff } from '../seq.js';

/** Out-of-order segments kept per direction, waiting for a hole to fill. */
const MAX_PENDING_SEGMENTS = 64;
/** How long (capture time, ms) the receiver's acknowledgement of a hole is seen before the hole is skipped. */
export const REORDER_MS = 2;

export class StreamReassembly {
  /** Sequence number of stream offset 0 (ISN + 1). */
  readonly base: number;
  /** Offset of the next byte expected: every byte below it was seen, contiguous. */
  next = 0;
  /** Offset of retained[0]; bytes below it were let go. */
  private keptFrom = 0;
  private retained: Buffer[] = [];
  private retainedBytes = 0;
  private readonly pending = new Map<number, Buffer>();
  /** Why bytes this direction needs were lost (a truncated segment, the retention bound), or null. */
  broken: string | null = null;
  /** The highest offset the receiver acknowledged (with onGap only). */
  private ackedTo = 0;
  /** Capture time (ms since the epoch) the receiver was first seen holding bytes beyond `next`, or null. */
  private ackedAheadSinceMs: number | null = null;
  /** The offset of the sender's FIN (the sequence number after its last byte), once seen. */
  private finOffset: number | null = null;

  /**
   * @param isn the SYN's sequence number
   * @param maxRetainedBytes bound on the bytes kept (bytes); passing it breaks the stream
   * @param onData each newly contiguous chunk, in order, with its offset; late: it filled a hole
   *   or waited beyond one (its bytes may have been sent, and seen by the server, earlier than
   *   the segment being taken now)
   * @param onGap bytes [offset, offset + length) the receiver acknowledged that the capture never
   *   delivered, skipped (called in stream order, between onData chunks); without it a hole
   *   waits for a retransmission, and breaks the stream past MAX_PENDING_SEGMENTS
   */
  constructor(
    isn: number,
    private readonly maxRetainedBytes: number,
    private readonly onData: (chunk: Buffer, offset: number, late: boolean) => void,
    private readonly onGap?: (offset: number, length: number) => void,
  ) {
    this.base = seqAdd(isn, 1);
  }

  /**
   * The receiver's acknowledgement (a stream offset) seen at capture time `atMs`: with onGap, a
   * hole below it that has been acknowledged for REORDER_MS is skipped.
   */
  acknowledged(offset: number, atMs: number): void {
    if (!this.onGap) return;
    // An ACK of the FIN (finAt + 1) acknowledges no byte.
    this.ackedTo = Math.max(this.ackedTo, this.finOffset === null ? offset : Math.min(offset, this.finOffset));
    if (this.ackedTo <= this.next) return void (this.ackedAheadSinceMs = null);
    this.ackedAheadSinceMs ??= atMs;
    if (atMs - this.ackedAheadSinceMs >= REORDER_MS) this.skipAcknowledged();
  }

  /**
   * Skips every hole below the receiver's acknowledgement now (the stream's sender is silent, or
   * the segments beyond the hole reached the bound): [next, first segment waiting beyond it, or
   * the acknowledgement), then the waiting segments, until `next` reaches the acknowledgement.
   * Everything retained below the skip is let go (the receiver holds it).
   */
  skipAcknowledged(): void {
    while (this.onGap && !this.broken && this.ackedTo > this.next) {
      let to = this.ackedTo;
      for (const offset of this.pending.keys()) if (offset > this.next && offset < to) to = offset;
      const from = this.next;
      this.release(from);
      this.next = this.keptFrom = to;
      this.onGap(from, to - from);
      this.drainPending();
    }
    this.ackedAheadSinceMs = null;
  }

  /**
   * The sender's FIN after `offset` bytes (a segment's end): no byte follows it. An ACK of it
   * taken just before it (capture order) is brought back to `offset`. A FIN elsewhere than one
   * seen before, or bytes already seen past it, break the stream.
   */
  fin(offset: number): void {
    if (this.finOffset !== null && this.finOffset !== offset) return void (this.broken ??= `the sender's FIN came at offset ${offset}, after one at ${this.finOffset}`);
    if (this.next > offset || [...this.pending].some(([at, b]) => at + b.length > offset)) return void (this.broken ??= `the sender's FIN at offset ${offset} came before bytes it had sent`);
    this.finOffset = offset;
    if (this.ackedTo > offset) this.ackedTo = offset;
    if (this.ackedTo <= this.next) this.ackedAheadSinceMs = null;
  }

  /** The offset of the sender's FIN (the sequence number after its last byte), or null before one was seen. */
  get finAt(): number | null {
    return this.finOffset;
  }

  /** Whether every byte up to the sender's FIN was seen (none is waiting beyond a hole). */
  get finished(): boolean {
    return this.finOffset !== null && this.next === this.finOffset;
  }

  /** The sequence number that follows all the sender sent as far as it was seen: its FIN counted once in order. */
  get endSeq(): number {
    return seqAdd(this.seqAt(this.next), this.finished ? 1 : 0);
  }

  /** The stream offset of a sequence number near the stream's front (within ±2 GiB). */
  offsetOf(seq: number): number {
    return this.next + seqDiff(this.seqAt(this.next), seq);
  }

  /** The sequence number of a stream offset. */
  seqAt(offset: number): number {
    return seqAdd(this.base, offset % 0x1_0000_0000);
  }

  /**
   * A segment's payload (kept by reference where retained: the caller must not reuse the buffer).
   * declaredLength: the TCP payload's length (the capture may cut it).
   */
  data(seq: number, payload: Buffer, declaredLength: number): void {
    if (this.broken || declaredLength === 0) return;
    if (payload.length < declaredLength) {
      this.broken = `the capture truncated a segment at offset ${this.offsetOf(seq)}`;
      return;
    }
    let offset = this.offsetOf(seq);
    if (this.finOffset !== null && offset + declaredLength > this.finOffset) {
      this.broken = `bytes came at offset ${offset}, past the sender's FIN at ${this.finOffset}`;
      return;
    }
    let bytes = payload;
    if (offset < this.next) {
      bytes = bytes.subarray(Math.min(bytes.length, this.next - offset));
      offset = this.next;
    }
    if (bytes.length === 0) return; // a retransmission of bytes already here
    if (offset > this.next) {
      if (this.pending.size >= MAX_PENDING_SEGMENTS && !this.pending.has(offset)) {
        // The receiver holds the hole: it will not fill, skip it now (and place this segment after).
        if (this.onGap && this.ackedTo > this.next) {
          this.skipAcknowledged();
          return this.data(seq, payload, declaredLength);
        }
        this.broken = `more than ${MAX_PENDING_SEGMENTS} segments arrived ahead of a hole at offset ${this.next}`;
        return;
      }
      const held = this.pending.get(offset);
      if (!held || held.length < bytes.length) this.pending.set(offset, Buffer.from(bytes));
      return;
    }
    this.append(bytes, this.pending.size > 0);
    this.drainPending();
  }

  /** Lets go of the bytes below offset (they are no longer needed). */
  release(offset: number): void {
    while (this.retained.length > 0 && this.keptFrom + this.retained[0]!.length <= offset) {
      const first = this.retained.shift()!;
      this.keptFrom += first.length;
      this.retainedBytes -= first.length;
    }
    if (this.retained.length > 0 && offset > this.keptFrom) {
      const cut = offset - this.keptFrom;
      this.retained[0] = this.retained[0]!.subarray(cut);
      this.keptFrom += cut;
      this.retainedBytes -= cut;
    }
    if (this.retained.length === 0) this.keptFrom = Math.max(this.keptFrom, Math.min(offset, this.next));
  }

  /** The retained bytes [from, to), or null when some of them were let go or never seen. */
  bytes(from: number, to: number): Buffer | null {
    if (from < this.keptFrom || to > this.next || from > to) return null;
    const all = this.retained.length === 1 ? this.retained[0]! : Buffer.concat(this.retained);
    this.retained = all.length > 0 ? [all] : [];
    return Buffer.from(all.subarray(from - this.keptFrom, to - this.keptFrom));
  }

  /** Whether any segment is waiting beyond a hole. */
  get hasHole(): boolean {
    return this.pending.size > 0;
  }

  private append(bytes: Buffer, late: boolean): void {
    const at = this.next;
    this.next += bytes.length;
    // Kept as given, not copied: a capture's payload is the segment's own buffer.
    this.retained.push(bytes);
    this.retainedBytes += bytes.length;
    if (this.retainedBytes > this.maxRetainedBytes) {
      this.broken = `more than ${this.maxRetainedBytes} bytes needed were retained`;
      this.retained = [];
      this.retainedBytes = 0;
      this.keptFrom = this.next;
    }
    this.onData(bytes, at, late);
  }

  private drainPending(): void {
    for (let moved = true; moved && this.pending.size > 0 && !this.broken; ) {
      moved = false;
      for (const [offset, bytes] of this.pending) {
        if (offset > this.next) continue;
        this.pending.delete(offset);
        const fresh = bytes.subarray(Math.min(bytes.length, this.next - offset));
        if (fresh.length > 0) this.append(fresh, true);
        moved = true;
      }
    }
  }
}
