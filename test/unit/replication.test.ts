// Connection replication without privileges: the serving node's table (LocalConnections) fed by
// a fake capture and a fake sock_diag, its publisher, and a peer's ReplicaSet, joined by an
// in-memory transport that can lose, replay and hold datagrams; time is simulated.
import { describe, expect, it } from 'vitest';
import { LocalConnections, MAX_UNCONFIRMED, UNCONFIRMED_MS, type LocalChange } from '../../src/agent/replication/local-connections.js';
import { ReplicationPublisher, type ReplicationTransport } from '../../src/agent/replication/publisher.js';
import { ReplicaSet } from '../../src/agent/replication/replicas.js';
import { decodeReplication, type Envelope } from '../../src/agent/replication/wire.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type FlowRecord, type FlowSide } from '../../src/native.js';
import { goodbyePlugin } from '../../src/net/goodbye/index.js';
import type { DiagSocket } from '../../src/net/sockdiag.js';
import { FakeCapture } from './fake-capture.js';

/**
 * One whole refresh: refresh() works one 2 ms slice at a time and returns false with work left
 * (the heartbeats' loop must not wait); on a busy machine a slice can end before any work.
 */
function refreshAll(l: { refresh(): boolean }): void {
  for (let i = 0; i < 10_000 && !l.refresh(); i++);
}

const KEY = Buffer.from('the cluster key of the unit test');
const SERVICE = { address: '198.18.9.2', port: 6379 };
const client = (port: number) => ({ address: '198.18.9.1', port });

const side = (e: { address: string; port: number }, o: Partial<FlowSide>): FlowSide => ({
  address: e.address, port: e.port, nextSeq: 0, ack: 0, window: 65535, wscale: 7, mss: 1460, sackPermitted: true, tsval: 0, tsecr: 0, finSent: false, lastSeenMs: 0, packets: 1, bytes: 0, ...o,
});

/** A flow as the addon reports it: `a` the client, `b` the service. */
function flow(port: number, at: number, server: Partial<FlowSide>, peer: Partial<FlowSide>): FlowRecord {
  return { family: 4, state: 'ESTABLISHED', handshakeSeen: true, firstSeenMs: 0, lastSeenMs: at, a: side(client(port), { lastSeenMs: at, ...peer }), b: side(SERVICE, { lastSeenMs: at, ...server }) };
}

const synAck = (port: number, isn = 1000) => ({ src: SERVICE.address, sport: SERVICE.port, dst: client(port).address, dport: port, flags: TCP_SYN | TCP_ACK, seq: isn });

function diag(port: number): DiagSocket {
  return { family: 4, state: 1, src: SERVICE.address, sport: SERVICE.port, dst: client(port).address, dport: port, ifindex: 0, inode: port, uid: 0, cookie: String(port), rqueue: 0, wqueue: 0 };
}

/** Node A (serving, publisher) and node B (its backup, replicas), one clock, a wire between them. */
function cluster(o: { rate?: number; maxConnections?: number } = {}) {
  const clock = { now: 1_000_000 };
  const now = () => clock.now;
  const capture = new FakeCapture();
  let sockets: DiagSocket[] = [];
  const local = new LocalConnections({ openCapture: capture.open, listSockets: async () => sockets, now });
  const wire: Array<{ to: string; datagram: Buffer }> = [];
  const transport = (from: string): ReplicationTransport => ({
    linkFor: () => 0,
    send: (to, _link, datagram) => {
      expect(from).not.toBe(to);
      wire.push({ to, datagram });
    },
  });
  const incA = 111n;
  const incB = 222n;
  const publisher = new ReplicationPublisher({ node: 'a', incarnation: incA, key: KEY, local, transport: transport('a'), intervalMs: 100, maxBytesPerSecond: o.rate ?? 4 << 20, now, goodbye: (n) => goodbyePlugin(n) });
  const replicas = new ReplicaSet({ node: 'b', incarnation: incB, key: KEY, transport: transport('b'), subscriptions: new Map([['a', [SERVICE]]]), intervalMs: 100, now, ...(o.maxConnections ? { maxConnections: o.maxConnections } : {}) });
  const seen: Envelope[] = [];
  /** Delivers what is on the wire (each datagram decoded as the receiving agent would). */
  const deliver = (drop: (e: Envelope) => boolean = () => false) => {
    for (const { to, datagram } of wire.splice(0)) {
      const r = decodeReplication(datagram, KEY);
      if (!r.ok) throw new Error(`undecodable datagram: ${r.reason}`);
      seen.push(r.envelope);
      if (drop(r.envelope)) continue;
      if (to === 'a') {
        const m = r.envelope.message;
        if (m.type === 'subscribe') publisher.subscribe(r.envelope.from, r.envelope.fromIncarnation, m.services, r.envelope.seq);
      } else {
        replicas.receive(r.envelope);
      }
    }
  };
  /** Lets the event loop run (setImmediate flushes, the scan promise). */
  const settle = async () => {
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  };
  /** Advances time in 10 ms ticks, delivering everything. */
  const run = async (ms: number, drop?: (e: Envelope) => boolean) => {
    for (let t = 0; t < ms; t += 10) {
      clock.now += 10;
      publisher.tick();
      replicas.tick();
      await settle();
      deliver(drop);
      await settle();
      deliver(drop);
    }
  };
  const known = () => replicas.connections('a', SERVICE).map((c) => c.peer.port).sort((x, y) => x - y);
  return { clock, capture, local, publisher, replicas, wire, deliver, settle, run, known, seen, setSockets: (s: DiagSocket[]) => (sockets = s), incA, incB };
}

describe('LocalConnections', () => {
  it('knows a connection at the SYN-ACK, follows its state, forgets it at the server FIN or a RST', async () => {
    const capture = new FakeCapture();
    let clock = 1000;
    const l = new LocalConnections({ openCapture: capture.open, listSockets: async () => [], now: () => clock });
    const changes: LocalChange[] = [];
    l.on('change', (c) => changes.push(c));
    l.setScopes([{ address: SERVICE.address, port: SERVICE.port }]);
    expect(capture.scope).toEqual({ ports: [6379], payloadBytes: 0 });
    capture.push({ src: client(40000).address, sport: 40000, dst: SERVICE.address, dport: 6379, flags: TCP_SYN, seq: 5 });
    expect(l.size).toBe(0); // a SYN alone: the server has not accepted
    capture.push(synAck(40000));
    capture.push(synAck(40000)); // retransmitted: nothing new
    capture.push(synAck(40001));
    expect(changes.map((c) => `${c.kind}:${c.conn.peer.port}`)).toEqual(['open:40000', 'open:40001']);
    clock = 2000;
    capture.table = [flow(40000, 1990, { nextSeq: 1001, tsval: 77 }, { nextSeq: 6, ack: 1001, tsval: 5 })];
    refreshAll(l);
    expect(changes.at(-1)).toMatchObject({ kind: 'update', conn: { state: { deadNextSeq: 1001, peerNextSeq: 6, peerAck: 1001, deadWindow: 65535 >>> 7, deadTsval: 77, peerTsval: 5 }, stateAt: 1990 } });
    refreshAll(l); // nothing seen since
    expect(changes).toHaveLength(3);
    // The client's FIN does not end it (the server may answer); the server's does; so does a RST.
    capture.push({ src: client(40000).address, sport: 40000, dst: SERVICE.address, dport: 6379, flags: TCP_FIN | TCP_ACK, seq: 6 });
    expect(l.size).toBe(2);
    capture.push({ src: SERVICE.address, sport: 6379, dst: client(40000).address, dport: 40000, flags: TCP_FIN | TCP_ACK, seq: 1001 });
    capture.push({ src: client(40001).address, sport: 40001, dst: SERVICE.address, dport: 6379, flags: TCP_RST, seq: 9 });
    expect(changes.slice(3).map((c) => `${c.kind}:${c.conn.peer.port}`)).toEqual(['close:40000', 'close:40001']);
    expect(l.size).toBe(0);
    // A port reused with a new ISN is a new connection.
    capture.push(synAck(40002, 1));
    capture.push(synAck(40002, 99999));
    expect(changes.slice(5).map((c) => `${c.kind}:${c.conn.isn}`)).toEqual(['open:1', 'open:99999']);
    l.setScopes([]);
    expect(capture.closed).toBe(true);
    expect(changes.at(-1)).toMatchObject({ kind: 'close' });
  });

  it('a connection whose flow the state capture took before the control socket told of its open still gets its state', () => {
    const capture = new FakeCapture();
    const l = new LocalConnections({ openCapture: capture.open, listSockets: async () => [], now: () => 1000 });
    const changes: LocalChange[] = [];
    l.on('change', (c) => changes.push(c));
    l.setScopes([{ address: SERVICE.address, port: SERVICE.port }]);
    capture.table = [flow(40100, 990, { nextSeq: 1001 }, { nextSeq: 20, ack: 1001 })];
    refreshAll(l); // the change is taken while nothing is known of the connection
    capture.push(synAck(40100));
    refreshAll(l); // no flow changed since, but the new connection is looked up
    expect(changes.map((c) => c.kind)).toEqual(['open', 'update']);
    expect(l.list()[0]!.state).toMatchObject({ deadNextSeq: 1001, peerAck: 1001 });
  });

  it('sock_diag adds what the capture never saw open, drops what two scans miss, and does not bring back what closed during a scan', async () => {
    const capture = new FakeCapture();
    let clock = 1000;
    let listed: DiagSocket[] = [diag(41000), diag(41001), { ...diag(41002), src: '198.18.9.77' }];
    let release: (() => void) | undefined;
    const l = new LocalConnections({
      openCapture: capture.open,
      listSockets: async () => {
        const snapshot = listed;
        await new Promise<void>((r) => (release = r));
        return snapshot;
      },
      now: () => clock,
    });
    l.setScopes([{ address: SERVICE.address, port: SERVICE.port }]);
    // A dual-stack server (listening on ::) shows its IPv4 clients as ::ffff:a.b.c.d: the same
    // connection as the capture sees it.
    listed.push({ ...diag(41003), family: 6, src: `::ffff:${SERVICE.address}`, dst: `::ffff:${client(41003).address}` });
    let scan = l.scan();
    release!();
    await scan;
    expect(l.list().map((c) => c.peer.port).sort()).toEqual([41000, 41001, 41003]); // 198.18.9.77 is not the service address
    expect(l.get(`${SERVICE.address}|6379>${client(41003).address}|41003`)).toBeDefined();
    // 41001 closes (RST seen) while a scan that still lists it runs.
    clock = 2000;
    scan = l.scan();
    capture.push({ src: client(41001).address, sport: 41001, dst: SERVICE.address, dport: 6379, flags: TCP_RST, seq: 1 });
    release!();
    await scan;
    expect(l.list().map((c) => c.peer.port)).toEqual([41000, 41003]);
    // 41000 and 41003 disappear without the capture noticing: gone after two scans that miss them.
    listed = [];
    for (const t of [3000, 4000]) {
      clock = t;
      scan = l.scan();
      release!();
      await scan;
    }
    expect(l.size).toBe(0);
    expect(l.counters.scans).toBe(4);
  });

  it('a scope with a goodbye follows the streams: each connection says where its boundary is', () => {
    const capture = new FakeCapture();
    // A scope without an address: the port on this host's addresses (here the service's).
    const l = new LocalConnections({ openCapture: capture.open, listSockets: async () => [], now: () => 5000, isLocalAddress: (a) => a === SERVICE.address });
    l.setScopes([{ port: 6379, goodbye: goodbyePlugin('resp') }]);
    expect(capture.scope).toEqual({ ports: [6379], payloadBytes: 65535 });
    const c = client(42000);
    const up = { src: c.address, sport: c.port, dst: SERVICE.address, dport: 6379 };
    const down = { src: SERVICE.address, sport: 6379, dst: c.address, dport: c.port };
    capture.push({ ...up, flags: TCP_SYN, seq: 10 });
    capture.push({ ...down, flags: TCP_SYN | TCP_ACK, seq: 500 });
    capture.push({ ...up, flags: TCP_ACK | TCP_PSH, seq: 11, payload: Buffer.from('*2\r\n$4\r\nPING\r\n') });
    capture.push({ ...down, flags: TCP_ACK | TCP_PSH, seq: 501, payload: Buffer.from('+PO') });
    const mid = flow(42000, 4999, { nextSeq: 504 }, { nextSeq: 25, ack: 504 });
    mid.b.address = SERVICE.address;
    capture.table = [mid];
    refreshAll(l);
    expect(l.list()[0]).toMatchObject({ boundary: { atBoundary: false } });
    expect(l.boundaryOf({ address: SERVICE.address, port: 6379 }, c)).toMatchObject({ atBoundary: false, serverNext: 504 });
    capture.push({ ...down, flags: TCP_ACK | TCP_PSH, seq: 504, payload: Buffer.from('NG\r\n') });
    capture.table = [{ ...mid, lastSeenMs: 5000, b: { ...mid.b, nextSeq: 508, lastSeenMs: 5000 } }];
    refreshAll(l);
    expect(l.list()[0]).toMatchObject({ boundary: { atBoundary: true }, state: { deadNextSeq: 508 } });
    expect(l.boundaryOf({ address: SERVICE.address, port: 6379 }, c)).toMatchObject({ atBoundary: true, serverNext: 508 });
    // Where the follower and the flow table disagree, no boundary is claimed.
    capture.table = [{ ...mid, lastSeenMs: 5000, b: { ...mid.b, nextSeq: 600, lastSeenMs: 5000 } }];
    refreshAll(l);
    expect(l.list()[0]!.boundary).toMatchObject({ atBoundary: false, reason: expect.stringMatching(/stands at 508, the flow at 600/) });
  });

  it('refuses more than 16 service ports, changing nothing', () => {
    const capture = new FakeCapture();
    const l = new LocalConnections({ openCapture: capture.open, listSockets: async () => [], now: () => 0 });
    l.setScopes([{ port: 1 }]);
    expect(() => l.setScopes(Array.from({ length: 17 }, (_, i) => ({ port: 100 + i })))).toThrow(/at most 16/);
    expect(l.scopes).toEqual([{ port: 1 }]);
  });

  it('a connection from the serving node to itself (its own probe of the service address) is not replicated', async () => {
    const capture = new FakeCapture();
    const l = new LocalConnections({ openCapture: capture.open, listSockets: async () => [diag(50002)], now: () => 0, isLocalAddress: (a) => a === client(0).address });
    l.setScopes([{ address: SERVICE.address, port: SERVICE.port }]);
    capture.push(synAck(50001));
    await l.scan();
    expect(l.size).toBe(0);
  });

  it('a SYN flood fills neither the table nor the copies: SYN-ACKs nobody acks are held at most MAX_UNCONFIRMED at once, for UNCONFIRMED_MS', async () => {
    const capture = new FakeCapture();
    let clock = 1000;
    const l = new LocalConnections({ openCapture: capture.open, listSockets: async () => [diag(2)], now: () => clock });
    l.setScopes([{ address: SERVICE.address, port: SERVICE.port }]);
    // A real client: its ACK of the SYN-ACK reaches the flow table. Another the kernel lists.
    capture.push(synAck(1, 7000));
    capture.push(synAck(2, 8000));
    capture.table = [flow(1, 1000, { nextSeq: 7001 }, { nextSeq: 101, ack: 7001, packets: 2 })];
    refreshAll(l);
    await l.scan();
    // The flood: a SYN-ACK for each spoofed SYN, never answered.
    expect(l.size).toBe(2);
    for (let port = 10_000; port < 10_000 + MAX_UNCONFIRMED + 100; port++) capture.push(synAck(port));
    expect(l.size).toBe(2 + MAX_UNCONFIRMED);
    expect(l.counters.deferred).toBe(100);
    clock += UNCONFIRMED_MS + 1;
    refreshAll(l);
    expect(l.list().map((c) => c.peer.port).sort((a, b) => a - b)).toEqual([1, 2]);
    capture.push(synAck(3)); // room again
    expect(l.size).toBe(3);
  });

  it('a port without an address is this host\'s: its connections out to another server on that port are not held', () => {
    const capture = new FakeCapture();
    const l = new LocalConnections({ openCapture: capture.open, listSockets: async () => [], now: () => 0, isLocalAddress: (a) => a === SERVICE.address });
    l.setScopes([{ port: 6379 }]);
    capture.push(synAck(40000));
    capture.push({ ...synAck(40001), src: '198.18.9.50' }); // a server elsewhere answering this host
    expect(l.list().map((c) => c.peer.port)).toEqual([40000]);
  });

  it('a scan that ends after close() changes nothing; a capture opened again is read from its own start', async () => {
    const captures: FakeCapture[] = [];
    let release: (() => void) | undefined;
    const l = new LocalConnections({
      openCapture: (scope) => {
        captures.push(new FakeCapture());
        return captures.at(-1)!.open(scope);
      },
      listSockets: async () => {
        await new Promise<void>((r) => (release = r));
        return [diag(45000)];
      },
      now: () => 0,
    });
    l.setScopes([SERVICE]);
    captures[0]!.push(synAck(45001));
    captures[0]!.table = [flow(45002, 0, {}, {}), flow(45003, 0, {}, {}), flow(45001, 0, { nextSeq: 1001 }, { nextSeq: 9, ack: 1001, packets: 2 })];
    refreshAll(l);
    l.setScopes([]);
    l.setScopes([SERVICE]);
    expect(captures).toHaveLength(2);
    captures[1]!.push(synAck(45001));
    captures[1]!.table = [flow(45001, 0, { nextSeq: 1500 }, { nextSeq: 9, ack: 1500, packets: 2 })];
    refreshAll(l);
    expect(l.list()[0]!.state).toMatchObject({ deadNextSeq: 1500 });
    const scan = l.scan();
    l.close();
    release!();
    await scan;
    expect(l.size).toBe(0);
  });

  it('a scan under way when a new service is subscribed is followed by one that lists it', async () => {
    const capture = new FakeCapture();
    const asked: number[][] = [];
    let release: (() => void) | undefined;
    const l = new LocalConnections({
      openCapture: capture.open,
      listSockets: async (ports) => {
        asked.push(ports);
        await new Promise<void>((r) => (release = r));
        return [];
      },
      now: () => 0,
    });
    l.setScopes([{ port: 1 }]);
    const first = l.scan();
    l.setScopes([{ port: 1 }, { port: 2 }]);
    const second = l.scan();
    expect(l.scan()).toBe(second); // the same scopes: shared
    release!();
    await first;
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r)); // the second begins
    release!();
    await second;
    expect(asked).toEqual([[1], [1, 2]]);
  });
});

describe('publisher and replicas', () => {
  it('a subscription gets a full sync after a scan; then opens (at once), closes (at the next tick) and changed state (once an interval) follow', async () => {
    const c = cluster();
    c.setSockets([diag(43000), diag(43001)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver(); // the SUBSCRIBE reaches A
    expect(c.local.scopes).toEqual([{ address: SERVICE.address, port: 6379 }]);
    await c.run(20);
    expect(c.known()).toEqual([43000, 43001]);
    expect(c.replicas.status()[0]).toMatchObject({ synced: true, connections: 2, counters: { syncs: 1, gaps: 0 } });
    // An open reaches B on the next turn of the loop, without waiting for a tick.
    c.capture.push(synAck(43002));
    await c.settle();
    c.deliver();
    expect(c.known()).toEqual([43000, 43001, 43002]);
    // Changed state: at most once per connection per interval.
    for (let i = 1; i <= 5; i++) {
      c.capture.table = [flow(43002, c.clock.now, { nextSeq: 1000 + i }, { nextSeq: 9, ack: 1000 + i })];
      refreshAll(c.local);
      await c.run(20);
    }
    const updates = c.seen.filter((e) => e.message.type === 'delta' && e.message.records.some((r) => r.peer.port === 43002 && r.state));
    expect(updates.length).toBeLessThanOrEqual(2);
    await c.run(100);
    expect(c.replicas.connections('a', SERVICE).find((x) => x.peer.port === 43002)!.tracked).toMatchObject({ deadNextSeq: 1005, peerAck: 1005 });
    // A close goes with the next tick (or the next open).
    c.capture.push({ src: client(43000).address, sport: 43000, dst: SERVICE.address, dport: 6379, flags: TCP_RST, seq: 1 });
    await c.settle();
    c.deliver();
    expect(c.known()).toEqual([43000, 43001, 43002]);
    await c.run(10);
    expect(c.known()).toEqual([43001, 43002]);
    // Summaries every interval keep the copy's age small.
    expect(c.replicas.status()[0]!.lastUpdateAgeMs).toBeLessThanOrEqual(100);
    expect(c.replicas.status()[0]!.peerCount).toBe(3);
  });

  it('a lost delta is noticed at the next datagram; the peer subscribes again and the copy is whole again', async () => {
    const c = cluster();
    c.setSockets([diag(44000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    c.capture.push(synAck(44001));
    await c.settle();
    c.deliver(() => true); // that delta is lost
    expect(c.known()).toEqual([44000]);
    c.setSockets([diag(44000), diag(44001)]);
    await c.run(1200); // a summary shows the gap; the resubscription waits out 1 s since the last
    expect(c.known()).toEqual([44000, 44001]);
    const s = c.replicas.status()[0]!;
    expect(s.counters.gaps).toBeGreaterThanOrEqual(1);
    expect(s.counters.syncs).toBe(2);
    expect(s.lastSubscribeReason).toMatch(/were lost/);
  });

  it('replayed and old-incarnation datagrams are refused and counted, and change nothing', async () => {
    const c = cluster();
    c.setSockets([diag(45000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(250);
    const old = c.seen.filter((e) => e.to === 'b');
    expect(old.length).toBeGreaterThan(1);
    for (const e of old) c.replicas.receive(e); // replayed
    expect(c.replicas.rejected.replayed).toBe(old.length);
    // Meant for an earlier life of B; sent by an earlier life of A.
    const sync = old.find((e) => e.message.type === 'sync')!;
    c.replicas.receive({ ...sync, seq: 1000n, toIncarnation: c.incB - 1n });
    c.replicas.peerUp('a', c.incA + 1n); // A restarted: its heartbeats show a new life
    c.replicas.receive({ ...sync, seq: 1001n });
    expect(c.replicas.rejected['stale-incarnation']).toBe(2);
    c.replicas.receive({ ...sync, to: 'c' });
    c.replicas.receive({ ...sync, from: 'x' });
    expect(c.replicas.rejected).toMatchObject({ 'wrong-receiver': 1, 'unknown-peer': 1 });
    expect(c.known()).toEqual([45000]);
  });

  it('a serving node that restarts starts its stream over: until its new sync, its old copy is listed but no delta applies to it', async () => {
    const c = cluster();
    c.setSockets([diag(45100)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(250);
    expect(c.known()).toEqual([45100]);
    const status = () => c.replicas.status()[0]!;
    expect(status()).toMatchObject({ synced: true, epoch: 1 });
    // A's new life: its first sync is lost; a delta of its epoch 1 (the old life's number too) follows.
    const next = { from: 'a', to: 'b', link: 0, fromIncarnation: c.incA + 1n, toIncarnation: c.incB };
    c.replicas.peerUp('a', c.incA + 1n);
    expect(status()).toMatchObject({ synced: false, connections: 1 });
    c.replicas.receive({ ...next, seq: 2n, message: { type: 'delta', epoch: 1, records: [{ op: 'remove', service: 0, peer: client(45100) }, { op: 'upsert', service: 0, peer: client(45101), ageMs: 0 }] } });
    expect(c.known()).toEqual([45100]);
    c.replicas.receive({ ...next, seq: 3n, message: { type: 'sync', epoch: 1, part: 0, last: true, records: [{ op: 'upsert', service: 0, peer: client(45102), ageMs: 0 }] } });
    expect(c.known()).toEqual([45102]);
    expect(status()).toMatchObject({ synced: true, epoch: 1 });
  });

  it('a summary whose count differs makes the peer subscribe again', async () => {
    const c = cluster();
    c.setSockets([diag(46000), diag(46001)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    // B's copy silently loses an entry (as if a remove had been applied twice over).
    c.replicas.receive({ from: 'a', to: 'b', link: 0, fromIncarnation: c.incA, toIncarnation: c.incB, seq: BigInt(c.seen.filter((e) => e.to === 'b').length + 1), message: { type: 'delta', epoch: c.publisher.status()[0]!.epoch, records: [{ op: 'remove', service: 0, peer: client(46001) }] } } as unknown as Envelope);
    expect(c.known()).toEqual([46000]);
    await c.run(1100);
    expect(c.replicas.status()[0]!.counters.mismatches).toBeGreaterThanOrEqual(1);
    expect(c.known()).toEqual([46000, 46001]);
  });

  it('a backup that restarts finds the serving node still following its service: no connection dropped, no stream forgotten', async () => {
    const c = cluster();
    c.setSockets([diag(48000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    const scope = c.capture.scope;
    c.publisher.unsubscribe('b'); // B's old life is declared down on A
    expect(c.capture.scope).toEqual(scope);
    expect(c.local.size).toBe(1);
    c.publisher.subscribe('b', c.incB + 1n, [SERVICE], 1n); // its new life subscribes
    expect(c.local.scopes).toHaveLength(1);
    expect(c.publisher.status().map((s) => s.incarnation)).toEqual([String(c.incB + 1n)]);
  });

  it('after a partition (each side declared the other down, both in the same life), the copy resumes: the sequence goes on, nothing is refused as replayed', async () => {
    const c = cluster();
    c.setSockets([diag(49000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(250);
    c.publisher.unsubscribe('b');
    c.replicas.peerDown('a');
    c.wire.length = 0; // what was in flight is lost in the partition
    c.replicas.peerUp('a', c.incA); // healed: A's heartbeats again, the same life
    c.deliver();
    await c.run(20);
    c.capture.push(synAck(49001));
    await c.settle();
    c.deliver();
    expect(c.known()).toEqual([49000, 49001]);
    expect(c.replicas.rejected.replayed).toBe(0);
    expect(c.replicas.status()[0]!.counters.syncs).toBe(2);
  });

  it('the byte rate is capped: a sync of 12,000 connections takes as long as the rate says, and nothing is lost', async () => {
    const n = 12_000;
    const c = cluster({ rate: 32 * 1024 }); // 32 KiB/s; the burst is 64 KiB
    c.setSockets(Array.from({ length: n }, (_, i) => diag(1024 + i)));
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    const sent = () => c.seen.filter((e) => e.to === 'b').reduce((k, e) => k + (e.message.type === 'sync' ? e.message.records.length : 0), 0);
    // The scan of 12,000 sockets runs in slices over several turns of the loop; then the burst.
    for (let i = 0; i < 200 && sent() === 0; i++) {
      await c.settle();
      c.deliver();
    }
    // The burst goes out a slice of the loop at a time (the clock stands still: no refill meanwhile).
    for (let i = 0, before = -1; i < 200 && sent() !== before; i++) {
      before = sent();
      await c.settle();
      c.deliver();
    }
    const first = sent();
    expect(first).toBeGreaterThan(4000); // the burst: 64 KiB of 13-byte records
    expect(first).toBeLessThan(n);
    expect(c.publisher.status()[0]!.pending).toBe(n - first);
    await c.run(1000);
    const afterOneSecond = sent() - first;
    expect(afterOneSecond * 13).toBeLessThan(32 * 1024 * 1.05);
    expect(afterOneSecond * 13).toBeGreaterThan(32 * 1024 * 0.8);
    await c.run(2500);
    expect(c.known()).toHaveLength(n);
    expect(c.replicas.status()[0]!.counters.gaps).toBe(0);
  });

  it('the copy is bounded: past maxConnections upserts are refused and counted', async () => {
    const c = cluster({ maxConnections: 10 });
    c.setSockets(Array.from({ length: 15 }, (_, i) => diag(21000 + i)));
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    expect(c.known()).toHaveLength(10);
    expect(c.replicas.rejected.overflow).toBe(5);
  });

  it('when the peer dies the copy stays as it was; the close engine gets it with ages, boundaries and the client\'s window', async () => {
    const c = cluster();
    c.setSockets([diag(47000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    // The client has stopped reading: its receive window is 0 (scaled by 7, from its SYN).
    c.capture.table = [flow(47000, c.clock.now, { nextSeq: 3000, tsval: 500 }, { nextSeq: 70, ack: 3000, tsval: 4, window: 0 })];
    refreshAll(c.local);
    await c.run(100);
    c.replicas.peerDown('a');
    c.clock.now += 250;
    const [conn] = c.replicas.connections('a', SERVICE);
    expect(conn).toMatchObject({ local: SERVICE, peer: client(47000), tracked: { deadNextSeq: 3000, peerAck: 3000, deadTsval: 500, peerTsval: 4, peerWindow: 0, peerWindowShift: 7 } });
    expect(conn!.tracked!.deadTsvalAgeMs).toBeGreaterThanOrEqual(250);
    expect(c.replicas.connections('a', { address: SERVICE.address, port: 1 })).toEqual([]);
    await c.run(3000);
    expect(c.replicas.status()[0]!.counters.subscribes).toBe(1); // no subscription to a dead peer
  });
});

describe('the services asked for change at run time (a clustered application registered or removed)', () => {
  const OTHER = { address: '198.18.9.2', port: 5432 };
  const diagOn = (svc: { address: string; port: number }, port: number): DiagSocket => ({ ...diag(port), src: svc.address, sport: svc.port });
  const knownOn = (c: ReturnType<typeof cluster>, svc: { address: string; port: number }) => c.replicas.connections('a', svc).map((x) => x.peer.port).sort((x, y) => x - y);

  it('a service added in front: the copy keeps what it had under the right service, takes nothing the peer streamed for the old list, and syncs the new one', async () => {
    const c = cluster();
    c.setSockets([diag(51000), diagOn(OTHER, 52000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    expect(c.known()).toEqual([51000]);
    // OTHER first: SERVICE's index moves from 0 to 1.
    expect(c.replicas.setServices('a', [OTHER, SERVICE])).toBe(true);
    expect(c.replicas.setServices('a', [OTHER, SERVICE])).toBe(false); // the same list: nothing sent
    expect(c.known()).toEqual([51000]);
    expect(knownOn(c, OTHER)).toEqual([]);
    // A opens a connection before it gets the new SUBSCRIBE: its delta names service 0 of the old
    // list (SERVICE), which is OTHER in the new one. It must not land there.
    c.capture.push(synAck(51001));
    await c.settle();
    expect(c.wire.map((w) => decodeReplication(w.datagram, KEY)).map((r) => (r.ok ? r.envelope.message.type : r.reason))).toEqual(['subscribe', 'delta']);
    c.deliver();
    expect(knownOn(c, OTHER)).toEqual([]);
    expect(c.known()).toEqual([51000]);
    await c.run(20);
    expect(c.known()).toEqual([51000, 51001]);
    expect(knownOn(c, OTHER)).toEqual([52000]);
    expect(c.replicas.status()[0]).toMatchObject({ services: [OTHER, SERVICE], synced: true, lastSubscribeReason: 'the services asked for changed' });
    expect(c.publisher.status()[0]!.services).toEqual([OTHER, SERVICE]);
    expect(c.local.scopes.map((s) => s.port).sort()).toEqual([5432, 6379]);
  });

  it('a sync the peer sent for the old list, arriving after the list changed, is not read against the new one', async () => {
    const c = cluster();
    c.setSockets([diag(57000), diagOn(OTHER, 58000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver(); // SUBSCRIBE [SERVICE] reaches A
    await c.settle(); // A's scan, then its SYNC: record 57000 as service 0 (SERVICE in that list)
    expect(c.wire.map((w) => decodeReplication(w.datagram, KEY)).map((r) => (r.ok ? r.envelope.message.type : r.reason))).toEqual(['sync']);
    c.replicas.setServices('a', [OTHER, SERVICE]); // service 0 is OTHER now
    c.deliver();
    expect(knownOn(c, OTHER)).toEqual([]);
    expect(c.replicas.status()[0]).toMatchObject({ synced: false });
    await c.run(20);
    expect(c.known()).toEqual([57000]);
    expect(knownOn(c, OTHER)).toEqual([58000]);
    expect(c.replicas.status()[0]).toMatchObject({ synced: true, counters: { gaps: 0, syncs: 1 } });
  });

  it('a service removed is dropped from the copy at once; no service at all ends the peer\'s stream (told again while it still streams)', async () => {
    const c = cluster();
    c.replicas.setServices('a', [SERVICE, OTHER]);
    c.setSockets([diag(53000), diagOn(OTHER, 54000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    expect([c.known(), knownOn(c, OTHER)]).toEqual([[53000], [54000]]);
    c.replicas.setServices('a', [OTHER]);
    expect([c.known(), knownOn(c, OTHER)]).toEqual([[], [54000]]);
    await c.run(50);
    expect([c.known(), knownOn(c, OTHER)]).toEqual([[], [54000]]);
    expect(c.replicas.status()[0]).toMatchObject({ services: [OTHER], synced: true });
    // Nothing asked any more; the SUBSCRIBE that says so is lost: A goes on streaming (summaries),
    // and B says it again once it has waited for an answer (1 s).
    c.replicas.setServices('a', []);
    expect(c.replicas.connections('a', OTHER)).toEqual([]);
    expect(c.replicas.status()).toEqual([]); // a peer asked for nothing is not listed
    c.wire.length = 0;
    const seenBefore = c.seen.length;
    await c.run(1500);
    const subscribes = c.seen.slice(seenBefore).filter((e) => e.message.type === 'subscribe');
    expect(subscribes.map((e) => e.message)).toEqual([{ type: 'subscribe', services: [] }]);
    expect(c.publisher.status()).toEqual([]); // A's stream to B ended
    const after = c.seen.length;
    await c.run(500);
    expect(c.seen.length).toBe(after); // and nothing more is sent
    expect([...(c.capture.scope?.ports ?? [])].sort()).toEqual([5432, 6379]); // A still follows what it was asked for (a backup coming back finds it followed)
  });

  it('a new list\'s SUBSCRIBE that is lost is asked again; what the peer streams for the old list meanwhile is not taken', async () => {
    const c = cluster();
    c.setSockets([diag(55000), diagOn(OTHER, 56000)]);
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    c.replicas.setServices('a', [OTHER]);
    c.wire.length = 0; // the SUBSCRIBE is lost
    await c.run(500); // A's summaries of the old epoch arrive: not applied, not an answer
    expect(c.replicas.status()[0]).toMatchObject({ synced: false, connections: 0 });
    await c.run(800);
    expect(knownOn(c, OTHER)).toEqual([56000]);
    expect(c.replicas.status()[0]).toMatchObject({ synced: true, lastSubscribeReason: 'no sync arrived', counters: { gaps: 0 } });
  });

  it('a list the wire cannot carry, or a peer it was not made with, is refused with the reason and changes nothing', async () => {
    const c = cluster();
    c.replicas.peerUp('a', c.incA);
    c.deliver();
    await c.run(20);
    const before = c.replicas.status();
    const sent = c.seen.length;
    const many = Array.from({ length: 17 }, (_, i) => ({ address: '198.18.9.2', port: 1000 + i }));
    expect(() => c.replicas.setServices('a', many)).toThrow('replication: the services asked of a: 17, at most 16 per peer');
    expect(() => c.replicas.setServices('a', [SERVICE, { address: '198.18.9.300', port: 1 }])).toThrow('replication: the services asked of a: [1].address: 198.18.9.300 is not an IP address');
    expect(() => c.replicas.setServices('a', [{ address: '198.18.9.2', port: 0 }])).toThrow('[0].port: 0 is not a port (1-65535)');
    expect(() => c.replicas.setServices('a', [{ ...SERVICE, goodbye: 'No Such' }])).toThrow('[0].goodbye: No Such is not a goodbye name');
    expect(() => c.replicas.setServices('a', [SERVICE, { address: '198.18.9.2', port: 6379 }])).toThrow('[1]: 198.18.9.2 port 6379 is listed twice');
    expect(() => c.replicas.setServices('z', [SERVICE])).toThrow('replication: z is not a configured peer');
    await c.run(20);
    expect(c.replicas.status()).toEqual(before.map((s) => ({ ...s, lastUpdateAgeMs: expect.any(Number), counters: expect.any(Object) })));
    expect(c.seen.slice(sent).filter((e) => e.message.type === 'subscribe')).toEqual([]);
    expect(c.known()).toEqual([]);
  });
});
