// From tracked flows and replicated tables to the connections the close engine ends: which
// side is the dead one, what counts as state, and which source wins when several know one
// connection.
import { describe, expect, it } from 'vitest';
import type { DeadConnection } from '../../src/net/close-engine.js';
import { deadConnectionsFromFlows, mergeConnections } from '../../src/net/flow-knowledge.js';
import type { FlowRecord, FlowSide } from '../../src/native.js';

const DEAD = { address: '198.18.5.2', port: 7000 };
const side = (address: string, port: number, o: Partial<FlowSide> = {}): FlowSide => ({
  address, port, nextSeq: 0, ack: 0, window: 512 << 7, wscale: 7, mss: 1460, sackPermitted: true, tsval: 0, tsecr: 0, finSent: false, lastSeenMs: 0, packets: 1, bytes: 0, ...o,
});
const flow = (peerPort: number, dead: Partial<FlowSide>, peer: Partial<FlowSide>, state: FlowRecord['state'] = 'ESTABLISHED'): FlowRecord => ({
  family: 4, state, handshakeSeen: true, firstSeenMs: 0, lastSeenMs: 5000,
  a: side('198.18.5.1', peerPort, peer), b: side(DEAD.address, DEAD.port, dead),
});

describe('deadConnectionsFromFlows', () => {
  it('takes the dead side\'s position, the peer\'s, windows and aged timestamps; skips finished flows and other services', () => {
    const got = deadConnectionsFromFlows(
      [
        flow(40000, { nextSeq: 900, tsval: 77, lastSeenMs: 4000 }, { nextSeq: 12, ack: 900, tsval: 5, lastSeenMs: 4500 }),
        flow(40001, { nextSeq: 1 }, { nextSeq: 2 }, 'RESET'),
        { ...flow(40002, {}, {}), b: side(DEAD.address, 7001) },
      ],
      DEAD,
      { nowMs: 4250 },
    );
    expect(got).toEqual([
      {
        local: DEAD,
        peer: { address: '198.18.5.1', port: 40000 },
        tracked: { deadNextSeq: 900, peerNextSeq: 12, peerAck: 900, deadWindow: 512, peerWindow: 512 << 7, peerWindowShift: 7, deadTsval: 77, deadTsvalAgeMs: 250, peerTsval: 5 },
        observedAt: 4000,
      },
    ]);
  });

  it('the peer\'s receive window: in bytes with its scale; without the handshake only a zero window is known', () => {
    const [scaled, zero, unknown] = deadConnectionsFromFlows(
      [flow(40010, {}, { window: 3 << 7 }), flow(40011, { wscale: -1 }, { window: 0, wscale: -1 }), flow(40012, { wscale: -1 }, { window: 3, wscale: -1 })],
      DEAD,
    );
    expect(scaled!.tracked).toMatchObject({ peerWindow: 384, peerWindowShift: 7 });
    expect(zero!.tracked).toMatchObject({ peerWindow: 0 });
    expect(zero!.tracked!.peerWindowShift).toBeUndefined();
    expect(unknown!.tracked!.peerWindow).toBeUndefined(); // 3 bytes, or 3 << 14: not known
  });

  it('a flow the dead side never sent on (a peer\'s retransmission reaching the survivor) is a connection without state', () => {
    const got = deadConnectionsFromFlows([flow(40003, { packets: 0 }, { nextSeq: 55, ack: 900 })], DEAD);
    expect(got).toEqual([{ local: DEAD, peer: { address: '198.18.5.1', port: 40003 } }]);
  });
});

describe('mergeConnections', () => {
  const conn = (port: number, observedAt?: number, deadNextSeq?: number): DeadConnection => ({
    local: DEAD,
    peer: { address: '198.18.5.1', port },
    ...(deadNextSeq !== undefined ? { tracked: { deadNextSeq, peerNextSeq: 1, peerAck: deadNextSeq }, observedAt } : {}),
  });

  it('tracked beats untracked, the newest observation wins, operator-named peers are kept', () => {
    const merged = mergeConnections(
      DEAD,
      [{ address: '198.18.5.1', port: 1 }, { address: '198.18.5.1', port: 2 }],
      [conn(2, 100, 10), conn(3, 100, 10), conn(4)],
      [conn(3, 200, 20), conn(4, 50, 40), conn(5)],
    );
    expect(merged.map((c) => [c.peer.port, c.tracked?.deadNextSeq])).toEqual([[1, undefined], [2, 10], [3, 20], [4, 40], [5, undefined]]);
  });

  it('one source alone is returned as it is; addresses written differently are one connection', () => {
    const only = [conn(7, 1, 1)];
    expect(mergeConnections(DEAD, [], [], only)).toBe(only);
    const v6 = { address: 'fd7a:6b00::2', port: 7000 };
    const a: DeadConnection = { local: { address: 'FD7A:6B00:0::2', port: 7000 }, peer: { address: 'fd7a:6b00::1', port: 9 } };
    const b: DeadConnection = { local: v6, peer: { address: 'fd7a:6b00:0:0::1', port: 9 }, tracked: { deadNextSeq: 1, peerNextSeq: 1, peerAck: 1 }, observedAt: 1 };
    expect(mergeConnections(v6, [], [a], [b])).toEqual([b]);
  });
});
