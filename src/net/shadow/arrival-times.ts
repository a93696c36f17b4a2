// When the capture saw a stream's bytes, from the first one not yet answered on (issue 12): what a
// replay check needs to order an unanswered request against what else the dead server did
// after it arrived (PostgreSQL: WAL it sent its replica, wal-arrivals.ts). One entry per chunk
// the reassembly handed over; entries wholly before the answered offset are dropped as it
// advances, so a connection holds only its unanswered requests' chunks.
import type { ChunkTime } from './exchange-tracker.js';

export class ArrivalTimes {
  /** Stream offset just past each chunk (increasing), and when it was captured. */
  private ends: number[] = [];
  private times: ChunkTime[] = [];
  private head = 0;

  /** A chunk ending at stream offset `end` (exclusive) was captured `at`; `answered`: the answered offset now. */
  add(end: number, at: ChunkTime, answered: number): void {
    this.drop(answered);
    this.ends.push(end);
    this.times.push(at);
  }

  /** When the chunk holding the byte at `offset` was captured, or undefined when none is kept (no byte there yet). */
  at(offset: number): ChunkTime | undefined {
    this.drop(offset);
    return this.head < this.ends.length ? this.times[this.head] : undefined;
  }

  /** Drops the chunks that end at or before `offset`. */
  private drop(offset: number): void {
    while (this.head < this.ends.length && this.ends[this.head]! <= offset) this.head++;
    if (this.head > 1024 && this.head * 2 > this.ends.length) {
      this.ends = this.ends.slice(this.head);
      this.times = this.times.slice(this.head);
      this.head = 0;
    }
  }
}
