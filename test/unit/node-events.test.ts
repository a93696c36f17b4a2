// Node events as subscribers see them: numbered so that every change of a node's state passes
// their de-duplication once and in order, across partitions that heal with the same incarnation
// and deaths after them, and so that the same change published by two agents arrives once.
// The real FailureDetector is driven with heartbeats on a simulated clock.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { NodeEventPublisher } from '../../src/agent/node-events.js';
import { IncarnationFilter } from '../../src/events/incarnation-filter.js';
import type { ServiceEvent } from '../../src/events/service-event.js';
import { FailureDetector, type DetectorEvent } from '../../src/monitor/failure-detector.js';

const INTERVAL = 100;
const EPOCH = 1_790_000_000_000; // ms: the sender's clock at t = 0

/** An observing agent: its own detector, fed through observe/tick, and a publisher on it. */
function observer(self: string) {
  const detector = new FailureDetector({ intervalMs: INTERVAL, misses: 3, links: [0] });
  const source = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector });
  const published: ServiceEvent[] = [];
  const publisher = new NodeEventPublisher(self, source, { publish: (e) => published.push(e) });
  const emit = (events: DetectorEvent[]) => events.forEach((e) => source.emit('event', e));
  return { published, publisher, detector, emit };
}

/**
 * Node `a` sends a heartbeat every interval (seq counting from its start, stamped with its own
 * clock); `heard(t)` says whether the observer hears the one sent at t. `delay` is its network
 * delay. Ticks every 5 ms.
 */
function drive(o: ReturnType<typeof observer>, from: number, to: number, heard: (t: number) => boolean, incarnation = 5n, delay = 1, startedAt = 0) {
  for (let t = from; t <= to; t += 5) {
    if (t >= startedAt && (t - startedAt) % INTERVAL === 0 && heard(t)) {
      const seq = BigInt((t - startedAt) / INTERVAL + 1);
      o.emit(o.detector.observe({ node: 'a', link: 0, incarnation, seq, sentAtMs: EPOCH + t }, 0, EPOCH + t + delay));
    }
    o.emit(o.detector.tick(EPOCH + t + delay));
  }
}

const brief = (e: ServiceEvent) => `${e.node} ${e.status}`;

describe('node event numbering', () => {
  it('heal and die cycles of one incarnation: every UP and DOWN passes a subscriber once, in order', () => {
    const b = observer('b');
    const cut = (t: number) => !((t >= 1000 && t < 2000) || (t >= 3000 && t < 4000) || t >= 5000);
    drive(b, 0, 6000, cut);
    const sub = new IncarnationFilter();
    const seen = b.published.filter((e) => sub.accept(e));
    // Up, cut off (partition), heard again (heal, same incarnation), cut off again, heal, death.
    expect(seen.map(brief)).toEqual(['a UP', 'a DOWN', 'a UP', 'a DOWN', 'a UP', 'a DOWN']);
    expect(seen).toHaveLength(b.published.length);
    // The numbers are the node's own send times in µs: the first heartbeat heard for UP, the
    // last one heard + 1 for DOWN.
    expect(seen.map((e) => e.incarnation)).toEqual([0, 900, 2000, 2900, 4000, 4900].map((t, i) => (EPOCH + t) * 1000 + (i % 2)));
    expect(seen.filter((e) => e.status === 'DOWN').every((e) => e.reason === 'failure')).toBe(true);
  });

  it('a restart (new incarnation) sorts after the death before it, and after an unnoticed one', () => {
    const b = observer('b');
    drive(b, 0, 1000, (t) => t < 500); // dies at 500
    drive(b, 1005, 2000, () => true, 6n, 1, 1200); // comes back as incarnation 6 at 1200
    drive(b, 2005, 2300, () => true, 7n, 1, 2100); // restarts again before anyone noticed
    const sub = new IncarnationFilter();
    expect(b.published.filter((e) => sub.accept(e)).map(brief)).toEqual(['a UP', 'a DOWN', 'a UP', 'a DOWN', 'a UP']);
  });

  it('two agents publishing the same changes: a subscriber of both gets each change once', () => {
    // Both believe they speak for the cluster (each hears only a), as during a disagreement.
    const [b, c] = [observer('b'), observer('c')];
    const cut = (t: number) => !((t >= 1000 && t < 2000) || t >= 3000);
    drive(b, 0, 4000, cut, 5n, 1);
    drive(c, 0, 4000, cut, 5n, 7); // a further hop: hears everything 6 ms later
    expect(b.published.map(brief)).toEqual(['a UP', 'a DOWN', 'a UP', 'a DOWN']);
    expect(c.published.map((e) => e.incarnation)).toEqual(b.published.map((e) => e.incarnation));
    const sub = new IncarnationFilter();
    const merged = [b.published[0]!, c.published[0]!, c.published[1]!, b.published[1]!, b.published[2]!, c.published[2]!, c.published[3]!, b.published[3]!];
    expect(merged.filter((e) => sub.accept(e)).map(brief)).toEqual(['a UP', 'a DOWN', 'a UP', 'a DOWN']);
    expect(sub.dropped).toBe(4);
  });

  it('events without the sender time are numbered by their own time; one agent never numbers a node backwards', () => {
    const b = observer('b');
    b.emit([{ kind: 'node-up', node: 'a', incarnation: 1n, at: 5000, sentAtMs: 9000 }]);
    b.emit([{ kind: 'node-down', node: 'a', incarnation: 1n, at: 6000, lastHeardAt: 5000, lastSentAtMs: 4000 }]); // the sender's clock stepped back
    b.emit([{ kind: 'node-up', node: 'a', incarnation: 2n, at: 7000 }]);
    b.emit([{ kind: 'node-down', node: 'a', incarnation: 2n, at: 8000, lastHeardAt: 7000, lastSentAtMs: Number.NaN }]);
    // 9000 ms sent; 4000 ms sent is behind it: one above; no send time: its own 7000 ms is behind
    // too; NaN: its own 8000 ms + 1 is behind: one above again.
    expect(b.published.map((e) => e.incarnation)).toEqual([9_000_000, 9_000_001, 9_000_002, 9_000_003]);
    expect(b.publisher.lastChange('a')).toMatchObject({ type: 'node', node: 'a', status: 'DOWN', incarnation: 9_000_003 });
    expect(b.publisher.lastChange('z')).toBeUndefined();
  });

  it('an agent that does not speak for the cluster still numbers the changes it sees', () => {
    const c = observer('c');
    // c hears b too: b, the smaller name, speaks about a.
    c.emit(c.detector.observe({ node: 'b', link: 0, incarnation: 1n, seq: 1n, sentAtMs: EPOCH }, 0, EPOCH));
    drive(c, 0, 300, () => true);
    expect(c.published.map(brief)).toEqual(['b UP']); // about b, c speaks: b does not speak for itself
    expect(c.publisher.lastChange('a')).toMatchObject({ status: 'UP', incarnation: EPOCH * 1000 });
  });
});
