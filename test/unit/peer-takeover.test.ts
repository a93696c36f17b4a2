// PeerTakeover's order of work: `before` (the agent's fence of the dead peer) must succeed
// before anything of the peer's is touched; a failed fence means no takeover, reported. Then a
// leased address is waited out, and a wait that ends in `abandon` touches nothing.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { PeerTakeover } from '../../src/agent/peer-takeover.js';
import type { DetectorEvent } from '../../src/monitor/failure-detector.js';
import type { FlowTracker } from '../../src/net/flow-tracker.js';

describe('PeerTakeover', () => {
  it('a failing `before` (fencing) stops the takeover: nothing is touched, the error is reported', async () => {
    const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
    const touched: string[] = [];
    // Any use of the tracker would mean closePeers ran.
    const tracker = new Proxy({}, { get: (_, k) => (touched.push(String(k)), undefined) }) as unknown as FlowTracker;
    const calls: string[] = [];
    const plan = new PeerTakeover({
      heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 5432 }, tracker, interface: 'nowhere0', prefixLength: 24,
      before: async (down) => {
        calls.push(down.node);
        throw new Error('fencing a failed: /dev/sdb: RESERVATION CONFLICT');
      },
    });
    const failed = new Promise<Error>((resolve) => plan.once('failed', resolve));
    plan.on('done', () => calls.push('done'));
    events.emit('event', { kind: 'node-down', node: 'b', incarnation: 1n, at: 0, lastHeardAt: 0 }); // not this plan's peer
    events.emit('event', { kind: 'node-down', node: 'a', incarnation: 1n, at: 0, lastHeardAt: 0 });
    expect((await failed).message).toMatch(/fencing a failed/);
    expect(calls).toEqual(['a']);
    expect(touched).toEqual([]);
    plan.close();
  });

  it('a leased address: after `before`, the wait for the lease; abandoned (the peer holds the address again): nothing touched, said once', async () => {
    const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
    const touched: string[] = [];
    const tracker = new Proxy({}, { get: (_, k) => (touched.push(String(k)), undefined) }) as unknown as FlowTracker;
    const calls: string[] = [];
    let release: (v: { kind: 'abandon'; why: string }) => void = () => {};
    const plan = new PeerTakeover({
      heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 5432 }, tracker, interface: 'nowhere0', prefixLength: 24,
      before: async () => void calls.push('fence'),
      leases: {
        waitOut: (peer, address, decidedAt, onWait) => {
          calls.push(`wait ${peer} ${address} ${decidedAt}`);
          onWait?.({ kind: 'wait', until: decidedAt + 7000, seconds: 5 });
          return new Promise((r) => (release = r));
        },
      },
    });
    const waiting: unknown[] = [];
    plan.on('waiting', (w) => waiting.push(w));
    plan.on('done', () => calls.push('done'));
    plan.on('failed', () => calls.push('failed'));
    const abandoned = new Promise((resolve) => plan.once('abandoned', resolve));
    events.emit('event', { kind: 'node-down', node: 'a', incarnation: 1n, at: 1000, lastHeardAt: 675 });
    await new Promise((r) => setTimeout(r, 10));
    expect(calls).toEqual(['fence', 'wait a 10.9.9.9 1000']);
    expect(plan.busy).toBe(true);
    expect(waiting).toEqual([{ down: expect.objectContaining({ node: 'a', at: 1000 }), address: '10.9.9.9', seconds: 5, until: 8000 }]);
    // Another node-down of the same peer while it waits starts nothing more.
    events.emit('event', { kind: 'node-down', node: 'a', incarnation: 2n, at: 1500, lastHeardAt: 1500 });
    release({ kind: 'abandon', why: 'a is alive and holds 10.9.9.9' });
    expect(await abandoned).toEqual({ down: expect.objectContaining({ at: 1000 }), address: '10.9.9.9', why: 'a is alive and holds 10.9.9.9', at: expect.any(Number) });
    await plan.settled();
    expect(calls).toEqual(['fence', 'wait a 10.9.9.9 1000']);
    expect(touched).toEqual([]);
    expect(plan.busy).toBe(false);
    await plan.close();
  });
});
