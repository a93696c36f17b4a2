// PeerTakeover's order of work: `before` (the agent's fence of the dead peer) must succeed
// before anything of the peer's is touched; a failed fence means no takeover, reported.
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
});
