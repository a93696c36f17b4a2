// One direction of a shadowed connection put back in order (stream-reassembly.ts): a hole waits
// for its retransmission; one the receiver acknowledged (the capture lost it) is skipped through
// onGap once REORDER_MS of capture time passed, at once when the segments waiting beyond it
// reach the bound, and never without onGap. The sender's FIN is kept apart from its bytes.
import { describe, expect, it } from 'vitest';
import { seqAdd } from '../../src/net/seq.js';
import { REORDER_MS, StreamReassembly } from '../../src/net/shadow/stream-reassembly.js';

const ISN = 0xffffff00; // the sequence space wraps inside the test
const at = (offset: number) => seqAdd(ISN, 1 + offset);

function stream(withGaps = true) {
  const events: string[] = [];
  const r = new StreamReassembly(
    ISN,
    1 << 20,
    (chunk, offset, late) => events.push(`data ${offset}+${chunk.length}${late ? ' late' : ''}`),
    withGaps ? (offset, length) => events.push(`gap ${offset}+${length}`) : undefined,
  );
  return { r, events };
}

describe('StreamReassembly', () => {
  it('a hole the receiver acknowledged is skipped once REORDER_MS passed; a late copy of it is ignored', () => {
    const { r, events } = stream();
    r.data(at(0), Buffer.alloc(100), 100);
    r.data(at(200), Buffer.alloc(100), 100);
    r.acknowledged(300, 1000);
    // Within REORDER_MS a frame handed over late can still fill it.
    r.acknowledged(300, 1000 + REORDER_MS - 0.5);
    expect(r.next).toBe(100);
    r.acknowledged(300, 1000 + REORDER_MS);
    expect(events).toEqual(['data 0+100', 'gap 100+100', 'data 200+100 late']);
    expect(r.next).toBe(300);
    expect(r.hasHole).toBe(false);
    r.data(at(100), Buffer.alloc(100), 100); // the lost frame, after all: already passed
    expect(r.next).toBe(300);
    r.data(at(300), Buffer.alloc(5), 5);
    expect(events.at(-1)).toBe('data 300+5');
    // What was skipped (and everything before it) is not retained; what came after it is.
    expect(r.bytes(200, 305)?.length).toBe(105);
    expect(r.bytes(150, 305)).toBeNull();
  });

  it('a retransmission within REORDER_MS fills the hole: nothing skipped', () => {
    const { r, events } = stream();
    r.data(at(0), Buffer.alloc(100), 100);
    r.data(at(200), Buffer.alloc(100), 100);
    r.acknowledged(300, 1000);
    r.data(at(100), Buffer.alloc(100), 100);
    r.acknowledged(300, 1010);
    expect(events).toEqual(['data 0+100', 'data 100+100 late', 'data 200+100 late']);
    expect(events.some((e) => e.startsWith('gap'))).toBe(false);
  });

  it('an acknowledged hole is skipped at once when the segments beyond it reach the bound; unacknowledged, the stream breaks', () => {
    for (const acked of [true, false]) {
      const { r, events } = stream();
      r.data(at(0), Buffer.alloc(10), 10);
      if (acked) r.acknowledged(20, 5000);
      for (let i = 0; i < 70; i++) r.data(at(20 + i * 10), Buffer.alloc(10), 10);
      if (acked) {
        expect(r.broken).toBeNull();
        expect(events.filter((e) => e.startsWith('gap'))).toEqual(['gap 10+10']);
        expect(r.next).toBe(20 + 70 * 10);
      } else expect(r.broken).toMatch(/more than 64 segments arrived ahead of a hole at offset 10/);
    }
  });

  it('skipAcknowledged() skips every acknowledged hole now, up to the acknowledgement, and not beyond', () => {
    const { r, events } = stream();
    r.data(at(0), Buffer.alloc(10), 10);
    r.data(at(20), Buffer.alloc(10), 10);
    r.data(at(50), Buffer.alloc(10), 10);
    r.acknowledged(40, 1);
    r.skipAcknowledged();
    expect(events).toEqual(['data 0+10', 'gap 10+10', 'data 20+10 late', 'gap 30+10']);
    expect(r.next).toBe(40);
    expect(r.hasHole).toBe(true); // the segment at 50 waits: 40..50 is not acknowledged
  });

  it('without onGap nothing is skipped: the hole waits', () => {
    const { r, events } = stream(false);
    r.data(at(0), Buffer.alloc(10), 10);
    r.data(at(20), Buffer.alloc(10), 10);
    r.acknowledged(30, 1);
    r.acknowledged(30, 100);
    r.skipAcknowledged();
    expect(events).toEqual(['data 0+10']);
    expect(r.next).toBe(10);
  });

  describe('the sender\'s FIN', () => {
    it('an ACK of it (one past its offset) acknowledges no byte, even taken before it and past REORDER_MS', () => {
      const { r, events } = stream();
      r.data(at(0), Buffer.alloc(100), 100);
      r.acknowledged(101, 1000); // the FIN's ACK, captured before the FIN
      r.fin(100);
      r.acknowledged(101, 1000 + 10 * REORDER_MS);
      expect(events).toEqual(['data 0+100']);
      expect(r.finished).toBe(true);
      expect(r.endSeq).toBe(at(101));
      expect(r.broken).toBeNull();
    });

    it('bytes missing before it: not finished, endSeq stops at the hole; bytes past it or a second FIN elsewhere break the stream', () => {
      const { r } = stream();
      r.data(at(0), Buffer.alloc(100), 100);
      r.fin(150); // 50 bytes before it were never captured
      expect(r.finished).toBe(false);
      expect(r.endSeq).toBe(at(100));
      r.data(at(100), Buffer.alloc(50), 50); // the retransmission fills it
      expect(r.finished).toBe(true);
      const past = stream();
      past.r.fin(0);
      past.r.data(at(0), Buffer.alloc(1), 1);
      expect(past.r.broken).toMatch(/past the sender's FIN at 0/);
      const twice = stream();
      twice.r.fin(10);
      twice.r.fin(10); // its retransmission: fine
      expect(twice.r.broken).toBeNull();
      twice.r.fin(20);
      expect(twice.r.broken).toMatch(/FIN came at offset 20, after one at 10/);
      const early = stream();
      early.r.data(at(0), Buffer.alloc(30), 30);
      early.r.fin(10);
      expect(early.r.broken).toMatch(/came before bytes it had sent/);
    });
  });
});
