// TailCheck (issue 12, the second source): what a client's segment after the primary's death
// shows of a copy's tail. Pure: segments in, verdicts out.
import { describe, expect, it } from 'vitest';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../../src/native.js';
import { seqAdd } from '../../src/net/seq.js';
import { TailCheck } from '../../src/net/shadow/tail-check.js';

// Near the wrap, so every comparison is done in sequence space.
const tail = { rcvNxt: 0xffff_fff0, sndEnd: 0xffff_fffa };
const ack = (seq: number, ackNo: number, payloadLength = 0, flags = TCP_ACK) => ({ seq, ack: ackNo, flags, payloadLength });

describe('TailCheck', () => {
  it('proves both streams from a bare ACK exactly at the copy\'s ends (the answer to the window probe)', () => {
    const c = new TailCheck(tail);
    c.clientSegment(ack(tail.rcvNxt, tail.sndEnd));
    expect(c.settled).toBe(true);
    expect(c.server).toEqual({ proven: true });
    expect(c.client).toEqual({ proven: true });
  });

  it('an ACK below the copy\'s server end is fine (the refill is still to come)', () => {
    const c = new TailCheck(tail);
    c.clientSegment(ack(tail.rcvNxt, seqAdd(tail.sndEnd, -100)));
    expect(c.settled).toBe(true);
    expect(c.client).toEqual({ proven: true });
  });

  it('refuses a client holding server bytes the copy lacks, with its numbers for the exact RST', () => {
    const c = new TailCheck(tail);
    c.clientSegment(ack(tail.rcvNxt, seqAdd(tail.sndEnd, 12)));
    expect(c.settled).toBe(true);
    expect(c.server).toMatchObject({ proven: false, reason: expect.stringMatching(/acknowledged 12 server bytes the copy lacks/) });
    expect(c.numbers).toEqual({ seq: tail.rcvNxt, ack: seqAdd(tail.sndEnd, 12) });
  });

  it('waits for a client ahead of the copy, and proves it when it retransmits from within', () => {
    const c = new TailCheck(tail);
    c.clientSegment(ack(seqAdd(tail.rcvNxt, 21), tail.sndEnd));
    expect(c.server).toEqual({ proven: true });
    expect(c.client).toBeNull();
    c.clientSegment(ack(tail.rcvNxt, tail.sndEnd, 21, TCP_ACK | TCP_PSH));
    expect(c.client).toEqual({ proven: true });
    // An old retransmission, wholly inside the copy, shows the same.
    const d = new TailCheck(tail);
    d.clientSegment(ack(seqAdd(tail.rcvNxt, -10), tail.sndEnd, 5));
    expect(d.client).toEqual({ proven: true });
  });

  it('resets a client ahead of the copy that never retransmits (the primary acknowledged a hole)', () => {
    const c = new TailCheck(tail);
    c.clientSegment(ack(seqAdd(tail.rcvNxt, 35), tail.sndEnd));
    c.timeOut(3000);
    expect(c.client).toMatchObject({ proven: false, reason: expect.stringMatching(/sent 35 bytes beyond the copy and did not retransmit them in 3000 ms/) });
    expect(c.numbers).toEqual({ seq: seqAdd(tail.rcvNxt, 35), ack: tail.sndEnd });
  });

  it('a silent client is unprovable; a RST from it ends the check; a SYN or a segment without ACK is not evidence', () => {
    const silent = new TailCheck(tail);
    silent.timeOut(3000);
    expect(silent.server).toMatchObject({ proven: false, reason: expect.stringMatching(/no segment of the client's in 3000 ms/) });
    expect(silent.numbers).toBeUndefined();
    const reset = new TailCheck(tail);
    reset.clientSegment(ack(tail.rcvNxt, tail.sndEnd, 0, TCP_RST));
    expect(reset.server).toMatchObject({ proven: false, reason: 'the client reset the connection' });
    const other = new TailCheck(tail);
    other.clientSegment(ack(tail.rcvNxt, tail.sndEnd, 0, TCP_SYN));
    other.clientSegment(ack(tail.rcvNxt, tail.sndEnd, 0, TCP_PSH));
    expect(other.server).toBeNull();
  });

  it('a FIN exactly at the copy\'s end proves the client stream; its numbers count the FIN', () => {
    const c = new TailCheck(tail);
    c.clientSegment(ack(tail.rcvNxt, tail.sndEnd, 0, TCP_ACK | TCP_FIN));
    expect(c.client).toEqual({ proven: true });
    expect(c.numbers).toEqual({ seq: seqAdd(tail.rcvNxt, 1), ack: tail.sndEnd });
  });

  it('decisions are final: later segments change nothing', () => {
    const c = new TailCheck(tail);
    c.clientSegment(ack(tail.rcvNxt, seqAdd(tail.sndEnd, 1)));
    c.clientSegment(ack(tail.rcvNxt, tail.sndEnd));
    c.timeOut(10);
    expect(c.server).toMatchObject({ proven: false });
  });
});
