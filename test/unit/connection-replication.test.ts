// Connection replication as the agent wires it (ConnectionReplication on real HeartbeatAgents,
// over UDP on loopback; the serving side's capture is a fake). B subscribes when A comes up
// and gets A's connections; datagrams that are forged, replayed, from or for an earlier life,
// on the wrong link, for another node or from a stranger are dropped, counted, and change
// nothing.
import dgram from 'node:dgram';
import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectionReplication } from '../../src/agent/replication/connection-replication.js';
import { decodeReplication, encodeReplication, type Envelope } from '../../src/agent/replication/wire.js';
import { HeartbeatAgent } from '../../src/monitor/heartbeat-agent.js';
import { TCP_ACK, TCP_SYN } from '../../src/native.js';
import { FakeCapture } from './fake-capture.js';
import { testPort } from '../free-port.js';

const KEY = Buffer.from('replication key of the unit test');
const SERVICE = { address: '127.0.0.1', port: 6390 };
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

const until = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

function node(name: 'a' | 'b', port: number, peerPort: number, incarnation: bigint, capture?: FakeCapture, subscribed = name === 'b') {
  const peer = name === 'a' ? 'b' : 'a';
  const heartbeat = new HeartbeatAgent({
    node: name, incarnation, key: KEY, intervalMs: 20, misses: 3,
    links: [{ id: 0, address: '127.0.0.1', port }],
    peers: [{ node: peer, links: [{ id: 0, address: '127.0.0.1', port: peerPort }] }],
  });
  const replication = new ConnectionReplication({
    heartbeat, node: name, incarnation, key: KEY, peers: [peer], intervalMs: 20,
    subscriptions: new Map(subscribed ? [['a', [SERVICE]]] : []),
    ...(capture ? { openCapture: capture.open } : {}),
  });
  // Every datagram this node sends, as it left (for the replay tests).
  const sent: Buffer[] = [];
  const send = heartbeat.send.bind(heartbeat);
  heartbeat.send = (to, link, d) => {
    sent.push(d);
    send(to, link, d);
  };
  cleanups.push(() => {
    replication.stop();
    heartbeat.stop();
  });
  return { heartbeat, replication, sent };
}

describe('ConnectionReplication over UDP', () => {
  it('B subscribes when it hears A and gets A\'s connections; refused datagrams are counted and change nothing', async () => {
    const base = testPort(2);
    const capture = new FakeCapture();
    const a = node('a', base, base + 1, 1000n, capture);
    const b = node('b', base + 1, base, 2000n);
    a.replication.start();
    b.replication.start();
    await a.heartbeat.start();
    await b.heartbeat.start();
    const copy = () => b.replication.replicas.connections('a', SERVICE).map((c) => c.peer.port);
    await until(() => b.replication.status().peers[0]!.synced);
    expect(capture.scope?.ports).toEqual([6390]); // A follows what B asked for
    // The client is another host's (a connection from this host to itself is not replicated).
    capture.push({ src: SERVICE.address, sport: SERVICE.port, dst: '198.51.100.7', dport: 50001, flags: TCP_SYN | TCP_ACK, seq: 1 });
    await until(() => copy().length === 1);

    const attacker = dgram.createSocket('udp4');
    cleanups.push(() => attacker.close());
    const toB = (d: Buffer) => new Promise<void>((r) => attacker.send(d, base + 1, '127.0.0.1', () => r()));
    const rejected = () => b.replication.status().rejected;
    // Forged: the right layout, another key.
    const real = decodeReplication(a.sent.at(-1)!, KEY);
    expect(real.ok).toBe(true);
    const env = (real as { envelope: Envelope }).envelope;
    const forge = (e: Partial<Envelope>, key = KEY) => encodeReplication({ ...env, ...e, message: { type: 'delta', epoch: 1, records: [{ op: 'remove', service: 0, peer: { address: '198.51.100.7', port: 50001 } }] } }, key);
    await toB(forge({ seq: env.seq + 100n }, Buffer.from('not the cluster key of this test')));
    // Replayed: every datagram A sent, again.
    for (const d of a.sent) await toB(d);
    // From an earlier life of A, and for an earlier life of B.
    await toB(forge({ seq: env.seq + 100n, fromIncarnation: 999n }));
    await toB(forge({ seq: env.seq + 101n, toIncarnation: 1999n }));
    // On the wrong link, for another node, from a stranger.
    await toB(forge({ seq: env.seq + 102n, link: 1 }));
    await toB(forge({ seq: env.seq + 103n, to: 'c' }));
    await toB(forge({ seq: env.seq + 104n, from: 'x' }));
    // Garbage with the magic in front, and a datagram cut short.
    const body = Buffer.concat([Buffer.from('TKCR\x01\x03'), Buffer.alloc(40, 7)]);
    await toB(Buffer.concat([body, createHmac('sha256', KEY).update(body).digest()]));
    await toB(a.sent.at(-1)!.subarray(0, 30));
    await until(() => {
      const r = rejected();
      return r.hmac >= 1 && r.replayed >= a.sent.length - 1 && r['stale-incarnation'] >= 2 && r['wrong-link'] >= 1 && r['wrong-receiver'] >= 1 && r['unknown-peer'] >= 1 && r.body >= 1 && r.short >= 1;
    });
    expect(copy()).toEqual([50001]); // none of it removed the connection

    // A SUBSCRIBE to A from a stranger, and one replayed, are refused there too.
    const sub = decodeReplication(b.sent.find((d) => decodeReplication(d, KEY).ok && (decodeReplication(d, KEY) as { envelope: Envelope }).envelope.message.type === 'subscribe')!, KEY) as { envelope: Envelope };
    const toA = (d: Buffer) => new Promise<void>((r) => attacker.send(d, base, '127.0.0.1', () => r()));
    await toA(encodeReplication({ ...sub.envelope, from: 'x', seq: 99n }, KEY));
    await toA(encodeReplication(sub.envelope, KEY));
    await until(() => a.replication.status().rejected['unknown-peer'] >= 1 && a.replication.status().rejected.replayed >= 1);
    expect(a.replication.status().subscribers.map((s) => s.node)).toEqual(['b']);
  });

  it('subscriptions change at run time: B asks A for a service it did not ask at start, then for none; a bad list is refused and changes nothing', async () => {
    const base = testPort(2);
    const capture = new FakeCapture();
    const a = node('a', base, base + 1, 1000n, capture);
    const b = node('b', base + 1, base, 2000n, undefined, false);
    a.replication.start();
    b.replication.start();
    await a.heartbeat.start();
    await b.heartbeat.start();
    await until(() => b.heartbeat.detector.status().some((p) => p.node === 'a' && p.up));
    expect(b.replication.status().peers).toEqual([]);
    expect(() => b.replication.setSubscriptions(new Map([['z', [SERVICE]]]))).toThrow('replication: z is not a configured peer');
    expect(() => b.replication.setSubscriptions(new Map([['a', [{ address: 'nowhere', port: 1 }]]]))).toThrow('[0].address: nowhere is not an IP address');
    expect(b.replication.status().peers).toEqual([]);
    expect(b.replication.setSubscriptions(new Map([['a', [SERVICE]]]))).toEqual([{ peer: 'a', services: [SERVICE] }]);
    expect(b.replication.setSubscriptions(new Map([['a', [SERVICE]]]))).toEqual([]); // unchanged: nothing sent
    await until(() => b.replication.status().peers[0]?.synced === true);
    expect(capture.scope?.ports).toEqual([6390]);
    capture.push({ src: SERVICE.address, sport: SERVICE.port, dst: '198.51.100.7', dport: 50002, flags: TCP_SYN | TCP_ACK, seq: 1 });
    await until(() => b.replication.replicas.connections('a', SERVICE).length === 1);
    expect(b.replication.setSubscriptions(new Map())).toEqual([{ peer: 'a', services: [] }]);
    await until(() => a.replication.status().subscribers.length === 0);
    expect(b.replication.replicas.connections('a', SERVICE)).toEqual([]);
  });
});
