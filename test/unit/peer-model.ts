// A model of how a Linux peer's TCP answers segments sent on behalf of a dead side (RFC 793,
// RFC 5961 as implemented: exact RST resets, in-window RST draws a challenge ACK, out-of-window
// segments draw a duplicate ACK, both rate-limited per socket; no socket -> RST). With
// `tsRecent` set the connection uses timestamps: a segment whose TSval is older fails PAWS
// (RFC 7323) and draws a rate-limited duplicate ACK echoing tsRecent; a RST skips the check.
// Its receive window (bytes; answers carry it as a raw field, shifted by `windowShift`) bounds the
// data it takes, as Linux does: data beyond it is dropped, into a zero window with an ACK at
// once, past a smaller one with a rate-limited duplicate ACK (Linux 6.17+ checks the segment's
// end); a bare FIN is taken into a zero window unless `bareFinInZeroWindow` is false (RFC 9293
// lets a receiver drop it). `trims`: a stack that takes the part that fits instead. `shrinks`:
// the application does not read, so data taken closes the window by as much.
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_URG, type SegmentSpec } from '../../src/native.js';
import type { PeerAnswer } from '../../src/net/close-engine.js';
import { seqAdd, seqDiff } from '../../src/net/seq.js';

export class PeerModel {
  open = true;
  wasReset = false;
  gotFin = false;
  urgent: number[] = [];
  data = Buffer.alloc(0);
  ignoredRsts = 0;
  pawsDropped = 0;
  /** Segments whose data or FIN the receive window kept out. */
  windowDrops = 0;
  windowShift = 0;
  bareFinInZeroWindow = true;
  trims = false;
  shrinks = false;
  /** The last TSval accepted from the dead side (RFC 7323 TS.Recent); undefined: no timestamps. */
  tsRecent: number | undefined;
  private lastAnswerAt = -Infinity;

  constructor(
    readonly address: string,
    readonly port: number,
    public rcvNxt: number,
    public sndNxt: number,
    public window = 65535,
    readonly rateLimitMs = 500,
    readonly silent = false,
  ) {}

  receive(s: SegmentSpec, now: number): PeerAnswer[] {
    if (this.silent) return [];
    const len = (s.payload?.length ?? 0) + (s.flags & TCP_FIN ? 1 : 0);
    if (!this.open) return s.flags & TCP_RST ? [] : [this.answer(s, { seq: s.ack, ack: 0, flags: TCP_RST })];
    const offset = seqDiff(this.rcvNxt, s.seq);
    // RCV.NXT itself is acceptable even in a zero window (for ACKs, URGs and RSTs).
    const inWindow = offset === 0 || (offset > 0 && offset < this.window);
    if (!(s.flags & TCP_RST) && this.tsRecent !== undefined && s.tsval !== undefined && seqDiff(this.tsRecent, s.tsval) < 0) {
      this.pawsDropped++;
      return this.limited(s, now);
    }
    if (s.flags & TCP_RST) {
      if (offset === 0) {
        this.open = false;
        this.wasReset = true;
        return [];
      }
      this.ignoredRsts++;
      return inWindow ? this.limited(s, now) : [];
    }
    if (!inWindow || offset !== 0) return this.limited(s, now);
    let payload = s.payload;
    let fin = (s.flags & TCP_FIN) !== 0;
    if (payload && payload.length > this.window) {
      if (!this.trims || this.window === 0) {
        this.windowDrops++;
        return this.window === 0 ? [this.ackNow(s)] : this.limited(s, now);
      }
      payload = payload.subarray(0, this.window);
      fin = false;
    } else if (fin && !payload?.length && this.window === 0 && !this.bareFinInZeroWindow) {
      this.windowDrops++;
      return [this.ackNow(s)];
    }
    if (payload && payload.length > 0) {
      if (this.shrinks) this.window -= payload.length;
      if (s.flags & TCP_URG) this.urgent.push(payload[(s.urgentPointer ?? 1) - 1]!);
      else this.data = Buffer.concat([this.data, payload]);
    }
    if (fin) this.gotFin = true;
    if (s.tsval !== undefined && this.tsRecent !== undefined) this.tsRecent = s.tsval;
    const taken = (payload?.length ?? 0) + (fin ? 1 : 0);
    if (len === 0) return [];
    this.rcvNxt = seqAdd(this.rcvNxt, taken);
    return [this.ackNow(s)];
  }

  /** An ACK of what it has, at once (not rate-limited: the answer to data, taken or not). */
  private ackNow(s: SegmentSpec): PeerAnswer {
    return this.answer(s, { seq: this.sndNxt, ack: this.rcvNxt, flags: TCP_ACK });
  }

  private limited(s: SegmentSpec, now: number): PeerAnswer[] {
    if (now - this.lastAnswerAt < this.rateLimitMs) return [];
    this.lastAnswerAt = now;
    return [this.answer(s, { seq: this.sndNxt, ack: this.rcvNxt, flags: TCP_ACK })];
  }

  private answer(s: SegmentSpec, f: { seq: number; ack: number; flags: number }): PeerAnswer {
    const ts = this.tsRecent !== undefined && !(f.flags & TCP_RST) ? { tsval: 777, tsecr: this.tsRecent } : {};
    return { src: s.dst, sport: s.dport, dst: s.src, dport: s.sport, ...f, ...ts, ...(f.flags & TCP_RST ? {} : { window: this.window >>> this.windowShift }) };
  }
}
