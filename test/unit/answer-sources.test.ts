// Where a remote close hears the peers' answers: a tracker on a port mirror's interface does not
// capture the link the dead address is taken over on (closePeers then listens there too), and
// the two captures' batches reach the close engine as one source.
import { describe, expect, it } from 'vitest';
import { answerCapture, captureHears, mergedSource } from '../../src/net/answer-sources.js';
import type { SegmentSource } from '../../src/net/close-remote.js';
import { TCP_ACK, TCP_RST, type ParsedSegment } from '../../src/native.js';

/** A source the test pushes batches into; `listeners` shows who is subscribed. */
class PushedSource implements SegmentSource {
  readonly listeners = new Set<(s: ParsedSegment[]) => void>();
  onSegments(l: (s: ParsedSegment[]) => void) {
    this.listeners.add(l);
    return () => {
      this.listeners.delete(l);
    };
  }
  push(batch: ParsedSegment[]) {
    for (const l of [...this.listeners]) l(batch);
  }
}

const segment = (sport: number, flags: number): ParsedSegment => ({
  family: 4, src: '198.18.7.1', dst: '198.18.7.2', sport, dport: 7000, seq: 1, ack: 2, flags, window: 0, urgentPointer: 0, payloadLength: 0,
});

describe('captureHears', () => {
  it('a capture hears its own interface and, on any, every one; a mirror interface is not the address\'s link', () => {
    expect(captureHears('eth0', 'eth0')).toBe(true);
    expect(captureHears('any', 'eth0')).toBe(true);
    expect(captureHears('mir0', 'eth0')).toBe(false);
    expect(captureHears('eth0', 'eth1')).toBe(false);
    // Names are exact: no prefix match.
    expect(captureHears('eth0', 'eth0.100')).toBe(false);
  });
});

describe('answerCapture', () => {
  it('the caller\'s tracker when it captures the link; else its answer capture when that does; else one of the close\'s own', () => {
    expect(answerCapture('eth0', 'eth0', undefined)).toBe('tracker'); // capture and address on one link (no mirror)
    expect(answerCapture('eth0', 'any', 'eth0')).toBe('tracker'); // 'any' hears eth0 already: no second copy
    expect(answerCapture('eth0', 'mir0', 'eth0')).toBe('answers'); // a mirror, the answers' capture started ahead
    expect(answerCapture('eth0', 'mir0', undefined)).toBe('own'); // a mirror, nothing ahead: set up at the close
    expect(answerCapture('eth0', 'mir0', 'eth1')).toBe('own'); // an answer capture on another link does not serve
    expect(answerCapture('eth0', undefined, undefined)).toBe('own'); // no tracker at all (a flows snapshot)
    expect(answerCapture(undefined, 'mir0', 'eth0')).toBe('none'); // no link named: the tracker alone
  });
});

describe('mergedSource', () => {
  it('delivers each source\'s batches in arrival order to one listener, and unsubscribes from all', () => {
    const mirror = new PushedSource();
    const link = new PushedSource();
    const got: number[][] = [];
    const off = mergedSource(mirror, link).onSegments((b) => got.push(b.map((s) => s.sport)));
    expect(mirror.listeners.size).toBe(1);
    expect(link.listeners.size).toBe(1);
    mirror.push([segment(1, TCP_ACK)]);
    link.push([segment(2, TCP_RST), segment(3, TCP_ACK)]);
    mirror.push([segment(4, TCP_ACK)]);
    expect(got).toEqual([[1], [2, 3], [4]]);
    off();
    expect(mirror.listeners.size).toBe(0);
    expect(link.listeners.size).toBe(0);
    link.push([segment(5, TCP_RST)]);
    expect(got).toHaveLength(3);
  });

  it('each listener subscribes on its own: removing one leaves the other', () => {
    const a = new PushedSource();
    const b = new PushedSource();
    const merged = mergedSource(a, b);
    const first: number[] = [];
    const second: number[] = [];
    const offFirst = merged.onSegments((s) => first.push(...s.map((x) => x.sport)));
    merged.onSegments((s) => second.push(...s.map((x) => x.sport)));
    offFirst();
    b.push([segment(9, TCP_ACK)]);
    expect(first).toEqual([]);
    expect(second).toEqual([9]);
  });
});
