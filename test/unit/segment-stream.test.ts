// The segment stream over loopback TCP (issue 12's second source): a SegmentStreamSource fed by
// an injected capture, a PeerShadow dialling it. Synthetic RESP conversations arrive whole (the
// backup's plans equal a ShadowTable fed directly); a wrong key is refused with nothing fed; a
// LOSS, a cut stream and a stream that comes back make the open connections reset with a reason;
// a backup that falls behind is cut; one run with the real capture ('any', loopback).
import net from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { TCP_ACK, TCP_PSH, TCP_SYN, type ParsedSegment } from '../../src/native.js';
import type { Endpoint } from '../../src/net/endpoint.js';
import { seqAdd } from '../../src/net/seq.js';
import { PeerShadow, type PeerShadowOptions } from '../../src/net/shadow/peer-shadow.js';
import { encodeCommand, respContinue } from '../../src/net/shadow/resp-continue.js';
import type { SegmentCapture } from '../../src/net/shadow/segment-capture.js';
import { SegmentStreamSource, type SegmentStreamSourceOptions } from '../../src/net/shadow/segment-stream-source.js';
import { encodeSegmentFrame } from '../../src/net/shadow/segment-wire.js';
import type { HeldPacket, PacketHold } from '../../src/net/held-traffic.js';
import type { ContinuePlan } from '../../src/net/shadow/shadow-connection.js';
import { ShadowTable } from '../../src/net/shadow/shadow-table.js';

const KEY = Buffer.from('segment-stream-test-key-01234567');
const SERVER = { address: '198.18.5.10', port: 6379 };

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const until = async (what: string, cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** Stands in for the primary's capture: the test pushes segments and sets the drop counter. */
class FakeCapture implements SegmentCapture {
  readonly listeners = new Set<(s: ParsedSegment[]) => void>();
  drops = 0;
  closed = false;
  constructor(
    readonly services: readonly Endpoint[],
    readonly ready: Promise<void> = Promise.resolve(),
  ) {}
  onSegments(l: (s: ParsedSegment[]) => void) {
    this.listeners.add(l);
    return () => void this.listeners.delete(l);
  }
  stats() {
    return { drops: this.drops };
  }
  completeToMs(tickMs: number) {
    return tickMs - 5;
  }
  close() {
    this.closed = true;
  }
  push(segments: ParsedSegment[]) {
    for (const l of [...this.listeners]) l(segments);
  }
}

/** `ready`: when each capture is ready (default: at once). */
async function source(options: Partial<SegmentStreamSourceOptions> = {}, port = 0, ready?: () => Promise<void>) {
  const captures: FakeCapture[] = [];
  const src = new SegmentStreamSource({
    node: 'node-a',
    key: KEY,
    listen: { host: '127.0.0.1', port },
    capture: (services) => {
      const c = new FakeCapture(services, ready?.());
      captures.push(c);
      return c;
    },
    ...options,
  });
  cleanups.push(() => src.close());
  const at = await src.ready();
  /** The capture of the live subscription. */
  const live = () => captures.filter((c) => !c.closed).at(-1)!;
  return { src, port: at.port, captures, live };
}

function peer(port: number, options: Partial<PeerShadowOptions> = {}) {
  const p = new PeerShadow({ node: 'node-b', key: KEY, primary: { host: '127.0.0.1', port }, services: [SERVER], plugin: respContinue, reconnect: { minMs: 20, maxMs: 200 }, ...options });
  cleanups.push(() => p.close());
  return p;
}

/** Both ends of one client connection to SERVER: sequence numbers advance as they send. */
function conversation(clientPort: number) {
  const client = { address: '198.18.5.20', port: clientPort };
  let cNext = 0xfffffff0;
  let sNext = 7000;
  let ts = 100;
  const seg = (fromServer: boolean, flags: number, payload: Buffer | string = '', extra: Partial<ParsedSegment> = {}): ParsedSegment => {
    const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    const s: ParsedSegment = {
      family: 4,
      src: fromServer ? SERVER.address : client.address,
      dst: fromServer ? client.address : SERVER.address,
      sport: fromServer ? SERVER.port : client.port,
      dport: fromServer ? client.port : SERVER.port,
      seq: fromServer ? sNext : cNext,
      ack: fromServer ? cNext : sNext,
      flags,
      window: fromServer ? 500 : 600,
      urgentPointer: 0,
      payloadLength: data.length,
      payload: data,
      tsval: ts++,
      tsecr: 1,
      timeMs: Date.now() - 1 + Math.random(),
      ...extra,
    };
    if (fromServer) sNext = seqAdd(sNext, data.length);
    else cNext = seqAdd(cNext, data.length);
    return s;
  };
  const open = (): ParsedSegment[] => {
    const syn = { ...seg(false, TCP_SYN), ack: 0, mss: 1460, wscale: 7, sackPermitted: true };
    cNext = seqAdd(cNext, 1);
    const synAck = { ...seg(true, TCP_SYN | TCP_ACK), mss: 1400, wscale: 9, sackPermitted: true };
    sNext = seqAdd(sNext, 1);
    return [syn, synAck, seg(false, TCP_ACK)];
  };
  /** A request answered, then one the server has not answered yet. */
  const exchange = (): ParsedSegment[] => [
    seg(false, TCP_ACK | TCP_PSH, encodeCommand(['SELECT', '2'])),
    seg(true, TCP_ACK | TCP_PSH, '+OK\r\n'),
    seg(false, TCP_ACK | TCP_PSH, encodeCommand(['GET', 'k'])),
    seg(true, TCP_ACK | TCP_PSH, '$5\r\nvalue\r\n'),
    seg(false, TCP_ACK | TCP_PSH, encodeCommand(['INCR', 'n'])),
  ];
  return { client, seg, open, exchange };
}

/** A plan without what depends on when it was fed (lastSeenMs). */
const comparable = (plans: ContinuePlan[]) => plans.map((p) => (p.kind === 'restore' ? { ...p, lastSeenMs: 0 } : p));

describe('segment stream (loopback, injected capture)', () => {
  it('segments arrive whole: the backup plans what a ShadowTable fed directly plans; MARKs advance lastMarkMs; ACKs drain the unacknowledged bytes', async () => {
    const { src, port, live } = await source();
    const b = peer(port);
    await until('the subscription', () => src.stats().subscribers === 1 && b.connected);
    expect(live().services).toEqual([SERVER]);
    const direct = new ShadowTable({ services: [SERVER], plugin: respContinue });
    const sent: ParsedSegment[] = [];
    for (let i = 0; i < 5; i++) {
      const c = conversation(40000 + i);
      for (const batch of [c.open(), c.exchange()]) {
        live().push(batch);
        direct.segments(batch, Date.now());
        sent.push(...batch);
      }
    }
    // Segments of other endpoints the capture let through are not streamed.
    live().push([{ ...sent[3]!, sport: 9999, dport: 9998 }]);
    await until('every segment', () => b.stats().segmentsReceived === sent.length);
    const now = Date.now();
    const viaStream = b.table.plans(now);
    expect(viaStream).toHaveLength(5);
    expect(viaStream.every((p) => p.kind === 'restore')).toBe(true);
    expect(comparable(viaStream)).toEqual(comparable(direct.plans(now)));
    const p = (await b.plans(SERVER.address))[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.replay).toEqual(encodeCommand(['INCR', 'n']));
    expect((await b.plans('198.18.5.99')).length).toBe(0);
    const mark0 = b.lastMarkMs;
    await until('a later MARK', () => b.lastMarkMs > mark0 && b.lastMarkMs > Date.now() - 100);
    await until('the ACKs', () => src.stats().subscriptions[0]!.unackedBytes === 0);
    const s = b.stats();
    expect(s).toMatchObject({ connected: true, connections: 5, captureDrops: 0, breaks: 0, lastError: null });
    expect(s.lagMs).toBeLessThan(1000); // a MARK within 100 ms was just waited for; slack for a loaded machine
    expect(s.bytesReceived).toBeGreaterThan(0);
    expect(src.stats()).toMatchObject({ subscribers: 1, accepted: 1, segmentsSent: sent.length, cuts: 0 });
    expect(src.stats().subscriptions[0]!.markRoundTripMs).toBeGreaterThan(0);
  });

  it('a wrong key is refused: no capture opened, nothing fed, the backup keeps redialling', async () => {
    const events: string[] = [];
    const { src, port, captures } = await source({ onEvent: (e) => events.push(e.type) });
    const b = peer(port, { key: Buffer.from('not-the-key-of-this-primary-0000') });
    await until('two refused dials', () => b.stats().failedDials >= 2);
    expect(captures).toHaveLength(0);
    expect(src.stats()).toMatchObject({ subscribers: 0, accepted: 0, segmentsSent: 0 });
    expect(src.stats().rejected).toBeGreaterThanOrEqual(2);
    expect(events).toContain('rejected');
    expect(b.stats()).toMatchObject({ connected: false, connections: 0, segmentsReceived: 0, lastMarkMs: 0 });
    expect(b.stats().lastError).toMatch(/closed|ended|ECONNRESET/);
  });

  it('a WELCOME refusal (a service this primary does not stream, a backup it does not know) is reported', async () => {
    const { port, captures } = await source({ services: [{ address: SERVER.address, port: 1 }] });
    const refused: string[] = [];
    const b = peer(port, { onEvent: (e) => e.type === 'refused' && refused.push(`${e.refusal}: ${e.reason}`) });
    await until('a refusal', () => refused.length > 0);
    expect(refused[0]).toMatch(/^services: 198\.18\.5\.10:6379 is not a service node-a streams/);
    expect(b.stats().lastError).toMatch(/refused \(services\)/);
    expect(captures).toHaveLength(0);
    const other = await source({ backups: ['node-c'] });
    const b2 = peer(other.port);
    await until('a refusal', () => /refused \(node\)/.test(b2.stats().lastError ?? ''));
  });

  it('the WELCOME waits for the capture to be ready (a connection opened before would be missing from the copy); a capture that fails is a refusal', async () => {
    let setUp!: () => void;
    const ring = new Promise<void>((r) => (setUp = r));
    const { src, port, captures } = await source({}, 0, () => ring);
    const b = peer(port);
    await until('the capture opened', () => captures.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(b.connected).toBe(false);
    expect(src.stats().subscribers).toBe(0);
    setUp();
    await until('the subscription', () => src.stats().subscribers === 1 && b.connected);

    const failing = await source({}, 0, () => Promise.reject(new Error('EPERM: no ring')));
    const refused: string[] = [];
    const b2 = peer(failing.port, { onEvent: (e) => e.type === 'refused' && refused.push(`${e.refusal}: ${e.reason}`) });
    await until('a refusal', () => refused.length > 0);
    expect(refused[0]).toBe('capture: the capture failed: EPERM: no ring');
    expect(b2.connected).toBe(false);
    expect(failing.captures.every((c) => c.closed)).toBe(true);
  });

  it('a LOSS makes the open connections\' ends unproven, with the reason (their clients must show them); proven again once both ends show their streams whole', async () => {
    const { src, port, live } = await source();
    const b = peer(port);
    await until('the subscription', () => src.stats().subscribers === 1);
    const c = conversation(40100);
    live().push([...c.open(), ...c.exchange()]);
    await until('the segments', () => b.stats().segmentsReceived === 8);
    live().drops = 3;
    await until('the LOSS', () => b.stats().captureDrops === 3);
    const [p] = await b.plans();
    expect(p).toMatchObject({ kind: 'restore', unproven: expect.stringMatching(/lost 3 frames.*neither end has shown its stream whole/) });
    expect(b.stats().captureLosses).toBe(3);
    // The server answers INCR and the client acknowledges it: both ends in step with the copy.
    live().push([c.seg(true, TCP_ACK | TCP_PSH, ':1\r\n'), c.seg(false, TCP_ACK)]);
    await until('the segments', () => b.stats().segmentsReceived === 10);
    expect((await b.plans())[0]).toMatchObject({ kind: 'restore' });
    expect((await b.plans())[0]).not.toHaveProperty('unproven');
  });

  it('a stream cut mid-way: plans from the copy while it is down (complete up to lastMarkMs); when the primary comes back, the open connections\' ends are unproven, with the reason; new ones are whole', async () => {
    const first = await source();
    const events: string[] = [];
    const b = peer(first.port, { onEvent: (e) => events.push(e.type) });
    await until('the subscription', () => first.src.stats().subscribers === 1);
    const c = conversation(40200);
    first.live().push([...c.open(), ...c.exchange()]);
    await until('the segments and a MARK after them', () => b.stats().segmentsReceived === 8 && b.lastMarkMs > 0);
    await first.src.close();
    await until('the break', () => !b.connected && b.stats().breaks === 1);
    expect(first.captures.every((x) => x.closed)).toBe(true);
    const markAtBreak = b.lastMarkMs;
    // The primary may have died: the copy stands, complete up to the last MARK.
    expect((await b.plans())[0]!.kind).toBe('restore');
    expect(b.stats().lastError).toBe('the primary ended the stream');
    // It had not: it lost whatever it captured meanwhile, and the backup dials again.
    const again = await source({}, first.port);
    await until('the stream back', () => b.connected && again.src.stats().subscribers === 1);
    expect(events).toEqual(expect.arrayContaining(['connected', 'broken', 'resumed']));
    const [p] = await b.plans();
    expect(p).toMatchObject({ kind: 'restore', unproven: expect.stringMatching(/segment stream from the primary was down after capture time .*not in the copy/) });
    expect(p!.kind === 'restore' && p!.unproven).toContain(new Date(markAtBreak).toISOString());
    // A connection opened after the stream came back is whole.
    const d = conversation(40201);
    again.live().push([...d.open(), ...d.exchange()]);
    await until('the new segments', () => b.stats().segmentsReceived === 16);
    const plans = await b.plans();
    expect(plans.find((x) => x.client.port === 40201)).toMatchObject({ kind: 'restore' });
    expect(plans.find((x) => x.client.port === 40201)).not.toHaveProperty('unproven');
  });

  it("breakPolicy 'at-break' makes the open connections' ends unproven as soon as the stream breaks", async () => {
    const { src, port, live } = await source();
    const b = peer(port, { breakPolicy: 'at-break' });
    await until('the subscription', () => src.stats().subscribers === 1);
    const c = conversation(40300);
    live().push([...c.open(), ...c.exchange()]);
    await until('the segments', () => b.stats().segmentsReceived === 8);
    await src.close();
    await until('the break', () => b.stats().breaks === 1);
    expect((await b.plans())[0]).toMatchObject({ kind: 'restore', unproven: expect.stringMatching(/segment stream from the primary broke/) });
  });

  it('several backups subscribe at once, each with a capture of its own; a second subscription of the same backup replaces the first', async () => {
    const ended: string[] = [];
    const { src, captures } = await source({ onEvent: (e) => e.type === 'ended' && ended.push(`${e.backup}: ${e.reason}`) });
    const port = (await src.ready()).port;
    const b1 = peer(port, { reconnect: { minMs: 10_000, maxMs: 10_000 } }); // replaced below: no redial during the test
    const b2 = peer(port, { node: 'node-c' });
    await until('two subscriptions', () => src.stats().subscribers === 2 && b1.connected && b2.connected);
    const c = conversation(40500);
    const segs = [...c.open(), ...c.exchange()];
    for (const cap of captures) cap.push(segs);
    await until('both copies', () => b1.stats().segmentsReceived === 8 && b2.stats().segmentsReceived === 8);
    expect((await b1.plans())[0]!.kind).toBe('restore');
    expect((await b2.plans())[0]!.kind).toBe('restore');
    const b3 = peer(port); // node-b again (its old socket lingering, say)
    await until('the replacement', () => b3.connected && ended.length === 1);
    expect(ended[0]).toBe('node-b: replaced by a newer subscription of the same backup');
    expect(captures.filter((x) => x.closed)).toHaveLength(1);
    expect(src.stats().subscriptions.map((x) => x.backup).sort()).toEqual(['node-b', 'node-c']);
    await until('the replaced stream seen as broken', () => !b1.connected && b1.stats().breaks === 1);
  });

  it('a backup that falls more than maxPendingBytes behind is cut (not buffered without bound), and dials again', async () => {
    const { src, port, live } = await source({ maxPendingBytes: 256 * 1024 });
    const b = peer(port);
    await until('the subscription', () => src.stats().subscribers === 1);
    const c = conversation(40400);
    const big: ParsedSegment[] = c.open();
    for (let i = 0; i < 300; i++) big.push(c.seg(true, TCP_ACK, Buffer.alloc(60_000, i)));
    live().push(big); // 18 MB in one turn: more than the socket takes at once
    await until('the cut', () => src.stats().cuts === 1);
    await until('the break and the redial', () => b.stats().breaks >= 1 && b.connected);
    expect(b.stats().segmentsReceived).toBeLessThan(big.length);
  });
});

describe('segment stream (loopback, the real capture)', () => {
  it("a RESP-like exchange on 127.0.0.1, captured on 'any' by the source, is planned as a restore by the backup", async () => {
    // A server answering each PING line with +PONG.
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', (d) => {
        const n = d.toString().split('\r\n').filter((l) => l === 'PING').length;
        s.write('+PONG\r\n'.repeat(n));
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const service = { address: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
    const src = new SegmentStreamSource({ node: 'node-a', key: KEY, listen: { host: '127.0.0.1', port: 0 } });
    cleanups.push(() => src.close());
    const { port } = await src.ready();
    const b = new PeerShadow({ node: 'node-b', key: KEY, primary: { host: '127.0.0.1', port }, services: [service], plugin: respContinue });
    cleanups.push(() => b.close());
    // A MARK past 0: the source's ring is set up (on a libuv worker) and vouches from then on.
    await until('the subscription, its ring set up', () => src.stats().subscribers === 1 && b.connected && b.lastMarkMs > 0);
    const client = net.connect(service.port, service.address);
    cleanups.push(() => void client.destroy());
    await once(client, 'connect');
    let got = '';
    client.on('data', (d) => (got += d.toString()));
    for (let i = 1; i <= 3; i++) {
      client.write('PING\r\n');
      await until('the PONG', () => got.split('+PONG').length - 1 === i);
    }
    // Every segment of the exchange was captured before the last PONG reached the client: a MARK
    // past that moment says the backup has them all (a segment count would not: 'any' on
    // loopback, delayed ACKs).
    const done = Date.now();
    await until('a MARK past the exchange', () => b.lastMarkMs > done, 3000);
    const plans = await b.plans();
    expect(plans).toHaveLength(1);
    const p = plans[0]!;
    if (p.kind !== 'restore') throw new Error(`expected a restore, got: ${p.reason}`);
    expect(p.client.port).toBe(client.localPort);
    expect(p.replay.length).toBe(0);
    // The last PONG, unless the client's (delayed) ACK of it was captured already.
    expect(['', '+PONG\r\n']).toContain(p.state.send.queue.toString());
    expect(src.stats().lossFrames).toBe(0);
  });
});

/** Stands in for HeldTraffic: the test pushes packets; release() records how far it was told to go. */
class FakeHold implements PacketHold {
  readonly listeners = new Set<(p: HeldPacket[]) => void>();
  lastHeldId = 0;
  released = 0;
  constructor(readonly services: readonly Endpoint[]) {}
  onPackets(l: (p: HeldPacket[]) => void) {
    this.listeners.add(l);
    return () => void this.listeners.delete(l);
  }
  get heldCount() {
    return this.lastHeldId - this.released;
  }
  release(id: number) {
    this.released = Math.max(this.released, Math.min(id, this.lastHeldId));
  }
  stats() {
    return { received: 0, unparsed: 0, overflows: 0, egressRead: this.lastHeldId, egressReleased: this.released };
  }
  /** Segments as read from the queues: the server's are egress (held), the client's ingress. */
  push(segments: ParsedSegment[]) {
    const packets = segments.map((segment): HeldPacket => {
      const out = segment.sport === SERVER.port; // what a service sends (any address of it)
      return { direction: out ? 'out' : 'in', id: out ? ++this.lastHeldId : 0, timeMs: Date.now(), segment };
    });
    for (const l of [...this.listeners]) l(packets);
  }
}

describe('output commit (segment stream with an injected hold)', () => {
  async function heldSource(options: Partial<SegmentStreamSourceOptions> = {}) {
    const hold = new FakeHold([SERVER]);
    const events: string[] = [];
    const src = new SegmentStreamSource({ node: 'node-a', key: KEY, listen: { host: '127.0.0.1', port: 0 }, hold, onEvent: (e) => events.push(e.type === 'ended' ? `ended: ${e.reason}` : e.type), ...options });
    cleanups.push(() => src.close());
    const { port } = await src.ready();
    return { hold, src, port, events };
  }

  it('with no backup following, nothing is held; with one, what the server sends is released once the backup has acknowledged the frame carrying it', async () => {
    const { hold, src, port } = await heldSource();
    const c = conversation(40500);
    hold.push(c.open());
    expect(hold.released).toBe(1); // the SYN-ACK: nobody to wait for
    const b = peer(port);
    await until('the subscription', () => src.stats().subscribers === 1 && b.connected);
    const d = conversation(40501);
    hold.push(d.open());
    expect(hold.released).toBe(1); // d's SYN-ACK waits for the backup
    await until('the backup acknowledged it', () => hold.released === 2);
    hold.push(d.exchange());
    expect(hold.heldCount).toBe(2);
    await until('the replies released', () => hold.released === 4);
    // The copy holds everything that was released: its plan restores d with both replies.
    const plans = await b.plans();
    const dPlan = plans.find((p) => p.client.port === 40501)!;
    expect(dPlan.kind).toBe('restore');
    expect(src.stats().hold).toMatchObject({ egressRead: 4, egressReleased: 4, heldNow: 0 });
    // A segment of a service the backup did not ask for is not held for it.
    hold.push([{ ...d.seg(true, TCP_ACK, 'x'), src: '198.18.5.99' }]);
    expect(hold.released).toBe(5);
  });

  it('a backup that never acknowledges is cut after maxHoldMs, and what waited for it released; the source keeps serving', async () => {
    const { hold, src, port, events } = await heldSource({ maxHoldMs: 150 });
    // A backup that holds the key, says HELLO, then never ACKs (its loop is stuck, say).
    const silent = net.connect(port, '127.0.0.1');
    cleanups.push(() => void silent.destroy());
    silent.on('error', () => {});
    await once(silent, 'connect');
    silent.write(encodeSegmentFrame({ backupNonce: 77n, primaryNonce: 0n, seq: 0n, message: { type: 'hello', node: 'node-b', services: [SERVER] } }, KEY));
    await once(silent, 'data'); // the WELCOME
    const c = conversation(40502);
    const t0 = Date.now();
    hold.push(c.open());
    expect(hold.released).toBe(0);
    await until('the cut', () => events.some((e) => e.startsWith('ended: cut: a held packet waited more than 150 ms')), 2000);
    const waited = Date.now() - t0;
    expect(hold.released).toBe(1);
    // Cut no earlier than maxHoldMs, and within the next MARK ticks (25 ms each) of it.
    expect(waited).toBeGreaterThanOrEqual(150);
    expect(waited).toBeLessThan(150 + 200);
    expect(src.stats().cuts).toBe(1);
    hold.push(c.exchange());
    expect(hold.released).toBe(3); // nobody follows any more
  });
});
