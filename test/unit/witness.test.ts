// Seed 002: a node is dead only when the LAN heartbeat and the second witness agree. The filter
// holds a node-down until every witness confirms, drops it if the node is heard again, and lets
// everything else through.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { DetectorEvent } from '../../src/monitor/failure-detector.js';
import { WitnessedNodeEvents, type Disputed, type Witness } from '../../src/monitor/witnessed-node-events.js';

class FakeHeartbeat extends EventEmitter<{ event: [DetectorEvent] }> {
  readonly detector = { status: () => [] };
}
const down = (node: string): DetectorEvent => ({ kind: 'node-down', node, incarnation: 1n, at: 1, lastHeardAt: 0 });
const up = (node: string): DetectorEvent => ({ kind: 'node-up', node, incarnation: 1n, at: 2 });
const settle = (ms = 30) => new Promise((r) => setTimeout(r, ms));

function setup(witnesses: Witness[]) {
  const hb = new FakeHeartbeat();
  const w = new WitnessedNodeEvents(hb, witnesses, 20);
  const out: DetectorEvent[] = [];
  const disputed: Disputed[] = [];
  w.on('event', (e) => out.push(e));
  w.on('disputed', (d) => disputed.push(d));
  return { hb, w, out, disputed };
}

describe('witnessed node events', () => {
  it('a death both witnesses agree on passes at once; other events pass unchanged', async () => {
    const { hb, out, w } = setup([{ name: 'disk', confirmsDown: async () => true }]);
    hb.emit('event', { kind: 'link-down', node: 'a', link: 0, at: 1 });
    hb.emit('event', down('a'));
    await settle();
    expect(out.map((e) => e.kind)).toEqual(['link-down', 'node-down']);
    w.close();
  });

  it('a death the disk witness disputes is held and asked again until it agrees', async () => {
    let diskSaysDead = false;
    const asked: string[] = [];
    const { hb, out, disputed, w } = setup([{ name: 'disk', confirmsDown: (n) => (asked.push(n), diskSaysDead) }]);
    hb.emit('event', down('a'));
    await settle(70);
    expect(out).toEqual([]);
    expect(disputed).toEqual([expect.objectContaining({ node: 'a', witness: 'disk' })]); // reported once, not per recheck
    expect(asked.length).toBeGreaterThan(2);
    diskSaysDead = true;
    await settle(50);
    expect(out).toEqual([expect.objectContaining({ kind: 'node-down', node: 'a' })]);
    w.close();
  });

  it('a node heard again while disputed never becomes a death; a witness that throws does not confirm', async () => {
    const { hb, out, disputed, w } = setup([{ name: 'disk', confirmsDown: () => { throw new Error('device gone'); } }]);
    hb.emit('event', down('a'));
    await settle();
    hb.emit('event', up('a'));
    await settle(60);
    expect(out).toEqual([]);
    expect(disputed.map((d) => d.witness)).toEqual(['disk', 'heartbeat']);
    w.close();
  });

  it('without witnesses it is a pass-through', async () => {
    const { hb, out, w } = setup([]);
    hb.emit('event', down('a'));
    expect(out).toHaveLength(1);
    w.close();
  });
});
