// Who may speak for a silent peer: deaths pass only with quorum (a majority, or two nodes with a
// tie breaker); without it they are held back, reported, and the node's return is not news.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { DetectorEvent } from '../../src/monitor/failure-detector.js';
import { QuorumGate, type Suppressed } from '../../src/monitor/quorum-gate.js';

function source(up: string[]) {
  const e = new EventEmitter<{ event: [DetectorEvent] }>();
  const state = { up: new Set(up) };
  return Object.assign(e, { state, detector: { status: () => [...state.up].map((node) => ({ node, heard: true, up: true, incarnation: 1n, links: [] })) } });
}
const down = (node: string): DetectorEvent => ({ kind: 'node-down', node, incarnation: 1n, at: 1, lastHeardAt: 0 });
const upEv = (node: string): DetectorEvent => ({ kind: 'node-up', node, incarnation: 1n, at: 2 });

function gate(nodes: string[], up: string[], tie?: 'fencing' | 'witness' | 'operator') {
  const s = source(up);
  const g = new QuorumGate(s, { nodes, self: nodes[0]!, twoNodeTieBreaker: tie });
  const out: DetectorEvent[] = [];
  const held: Suppressed[] = [];
  g.on('event', (e) => out.push(e));
  g.on('suppressed', (x) => held.push(x));
  return { s, g, out, held };
}

describe('QuorumGate', () => {
  it('three nodes: the two that still hear each other act on the third; the isolated one does not', () => {
    const majority = gate(['a', 'b', 'c'], ['b']);
    majority.s.emit('event', down('c'));
    expect(majority.out).toEqual([down('c')]);
    const isolated = gate(['a', 'b', 'c'], []);
    isolated.s.emit('event', down('b'));
    isolated.s.emit('event', down('c'));
    expect(isolated.out).toEqual([]);
    expect(isolated.held.map((h) => [h.node, h.heard, h.of])).toEqual([['b', 1, 3], ['c', 1, 3]]);
    expect(isolated.held[0]!.why).toMatch(/hears 1 of 3 nodes: not a majority; this node may be the one cut off/);
    // They come back: their return is not published either (nobody was told they went).
    isolated.s.emit('event', upEv('b'));
    expect(isolated.out).toEqual([]);
    // The next death of b, heard again, with quorum restored (c is up now), passes.
    isolated.s.state.up = new Set(['c']);
    isolated.s.emit('event', down('b'));
    expect(isolated.out).toEqual([down('b')]);
  });

  it('two nodes act alone only with a tie breaker; the reason says which', () => {
    const none = gate(['a', 'b'], []);
    none.s.emit('event', down('b'));
    expect(none.out).toEqual([]);
    expect(none.held[0]!.why).toMatch(/two nodes without fencing, a disk witness or quorum.twoNode/);
    expect(none.g.quorum()).toMatchObject({ ok: false, heard: 1, of: 2 });
    for (const tie of ['fencing', 'witness', 'operator'] as const) {
      const g = gate(['a', 'b'], [], tie);
      g.s.emit('event', down('b'));
      expect(g.out).toEqual([down('b')]);
      expect(g.g.quorum().why).toBe(`two nodes, tie broken by ${tie}`);
    }
  });

  it('one node alone always has quorum; planned departures and link events pass', () => {
    const solo = gate(['a'], []);
    expect(solo.g.quorum().ok).toBe(true);
    const g = gate(['a', 'b'], []);
    const left: DetectorEvent = { kind: 'node-left', node: 'b', incarnation: 1n, at: 1, serving: true };
    const link: DetectorEvent = { kind: 'link-down', node: 'b', link: 1, at: 1 };
    g.s.emit('event', left);
    g.s.emit('event', link);
    expect(g.out).toEqual([left, link]);
  });
});
