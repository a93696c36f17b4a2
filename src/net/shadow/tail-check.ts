// Whether a restored connection's copy was whole at its end (issue 12, the second source). A copy
// streamed by the primary's own agent can lack its tail: the segments the primary captured in
// its last milliseconds, never sent or still on the way when it died. What the client holds
// shows it, once the dead primary is silent (its segments can no longer change the client's
// numbers, and the backup's socket has sent nothing beyond the copy):
// - its ACK field is its RCV.NXT: beyond the copy's end of the server stream, the client holds
//   server bytes the backup never saw (a reply the primary sent in its last moments): nothing
//   sent from here could line up with them, and replaying the request would apply it twice;
// - its sequence number: a segment with data starting at or before the copy's RCV.NXT (a
//   retransmission), or a bare ACK exactly at it, shows that every byte the client has sent
//   and had acknowledged is in the copy. One starting beyond it says the client sent bytes the
//   copy lacks: still unacknowledged (they will be retransmitted, and the kernel takes them in
//   order) or acknowledged by the primary before it died (a hole nothing will fill).
// Pure: the segments and the clock are the caller's (tail-proof.ts drives it).
// Sources: RFC 9293 §3.4, §3.10.7.4 (a segment's SEQ and ACK fields, what a receiver accepts).
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../native.js';
import { seqAdd, seqDiff } from '../seq.js';

/** Where the backup's copy of a connection ends (sequence space), as restored. */
export interface CopyTail {
  /** The restored RCV.NXT: one past the last client byte in the copy. */
  rcvNxt: number;
  /** One past the last server byte in the copy (what the client may have acknowledged at most). */
  sndEnd: number;
}

/** A segment the client sent, as captured. */
export interface ClientSegment {
  seq: number;
  ack: number;
  flags: number;
  payloadLength: number;
}

/** The client's numbers the exact RST uses: its SND.NXT (seq) and RCV.NXT (ack). */
export interface ClientNumbers {
  seq: number;
  ack: number;
}

export type TailSide = { proven: true } | { proven: false; reason: string };

export class TailCheck {
  /** The server stream: decided once a client ACK is seen (or a reason it cannot be). */
  server: TailSide | null = null;
  /** The client stream: decided once a client segment shows it whole (or a reason it cannot be). */
  client: TailSide | null = null;
  /** The client's latest numbers, once it sent an ACK: what an exact RST needs. */
  numbers: ClientNumbers | undefined;
  /** How far beyond the copy the client's stream was last seen (bytes; 0 when not beyond). */
  private ahead = 0;

  constructor(readonly tail: CopyTail) {}

  /** Both sides decided. */
  get settled(): boolean {
    return this.server !== null && this.client !== null;
  }

  /** One segment the client sent after the dead server went silent. */
  clientSegment(s: ClientSegment): void {
    if (this.settled) return;
    if (s.flags & TCP_RST) {
      this.decide({ proven: false, reason: 'the client reset the connection' });
      return;
    }
    if (s.flags & TCP_SYN || !(s.flags & TCP_ACK)) return; // not of this connection's life
    const end = seqAdd(s.seq, s.payloadLength + (s.flags & TCP_FIN ? 1 : 0));
    this.numbers = { seq: end, ack: s.ack };
    if (this.server === null) {
      const beyond = seqDiff(this.tail.sndEnd, s.ack);
      this.server =
        beyond > 0
          ? { proven: false, reason: `the client acknowledged ${beyond} server bytes the copy lacks (sent by the primary after the last segment that reached this host)` }
          : { proven: true };
      if (!this.server.proven) {
        this.client = this.server;
        return;
      }
    }
    if (this.client !== null) return;
    const from = seqDiff(this.tail.rcvNxt, s.seq);
    if (s.payloadLength > 0 || s.flags & TCP_FIN ? from <= 0 : from === 0) {
      this.client = { proven: true };
      this.ahead = 0;
    } else if (from > 0) {
      this.ahead = from;
    }
  }

  /**
   * No segment settled it in time: an undecided server side is unprovable (the client never
   * answered); a client seen beyond the copy, and never retransmitting from within it, holds a
   * hole the primary acknowledged.
   */
  timeOut(waitedMs: number): void {
    if (this.settled) return;
    if (this.server === null) {
      this.decide({ proven: false, reason: `no segment of the client's in ${waitedMs} ms showed whether it holds server bytes the copy lacks` });
      return;
    }
    this.client = {
      proven: false,
      reason:
        this.ahead > 0
          ? `the client had sent ${this.ahead} bytes beyond the copy and did not retransmit them in ${waitedMs} ms (the primary acknowledged bytes that never reached this host)`
          : `no segment of the client's in ${waitedMs} ms showed its stream whole`,
    };
  }

  private decide(side: TailSide): void {
    this.server ??= side;
    this.client ??= side;
  }
}
