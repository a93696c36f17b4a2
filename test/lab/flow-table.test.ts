// The flow table behind a real capture ring: hand-built frames are sent from one namespace
// over a lab switch (a learning bridge) and captured (no BPF filter, so garbage reaches the
// parser too) in the other. The frames' addresses belong to nobody and their MAC is not the
// receiver's, so no kernel answers them: the table sees exactly the segments the test wrote, in
// order. They reach B as any switch delivers a frame to a destination MAC it has never seen as
// a source: flooded to every port (the test is about the table, not about the network).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import type { NodeChild } from '../../src/lab/node-child.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type CaptureStats, type FlowRecord } from '../../src/native.js';
import { seqAdd } from '../../src/net/seq.js';
import { buildFrame, opt, type FrameSpec } from '../unit/frame-builder.js';
import { Lab } from '../../src/lab/lab.js';

const fixture = fileURLToPath(new URL('fixtures/capture-watch.ts', import.meta.url));
// Sends each hex line of stdin as one frame out of eth0 (Node has no AF_PACKET socket).
const INJECT = [
  'import socket, sys',
  's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
  "s.bind(('eth0', 0))",
  'for line in sys.stdin.read().split():',
  '    s.send(bytes.fromhex(line))',
].join('\n');

let lab: Lab;
let watch: NodeChild;
let nextMarker = 60000;
let nextTag = 1;

beforeAll(async () => {
  // Every frame goes to 02:00:00:00:00:02, which sends nothing: unknown to the switch, flooded.
  lab = await Lab.create({ hosts: ['a', 'b'] });
  watch = lab.spawn('b', fixture, ['--interface', 'eth0']);
  await watch.waitFor('capturing');
});

afterAll(async () => {
  await lab?.destroy();
});

type Seg = Omit<FrameSpec, 'src' | 'dst'>;

describe.each([4, 6] as const)('flow table over IPv%s', (family) => {
  // Addresses nobody holds, in the lab ranges.
  const C = family === 4 ? '198.18.0.10' : 'fd7a:6b00::10';
  const S = family === 4 ? '198.18.0.11' : 'fd7a:6b00::11';
  const fromC = (s: Seg): FrameSpec => ({ src: C, dst: S, dport: 80, ...s });
  const fromS = (s: Seg): FrameSpec => ({ src: S, dst: C, sport: 80, ...s });

  /** Sends the frames, then a marker segment, and waits until the capture has parsed the marker. */
  async function send(frames: Array<FrameSpec | Buffer>): Promise<void> {
    const marker = nextMarker++;
    const all = [...frames.map((f) => (Buffer.isBuffer(f) ? f : buildFrame(f))), buildFrame({ src: C, dst: S, sport: marker, dport: 9, flags: TCP_ACK })];
    await lab.exec('a', 'python3', ['-c', INJECT], all.map((f) => f.toString('hex')).join('\n'));
    await watch.waitFor('segment', 5000, (e) => e.sport === marker);
  }

  async function snapshot(): Promise<{ flows: FlowRecord[]; stats: CaptureStats }> {
    const tag = nextTag++;
    watch.send({ cmd: 'flows', tag });
    return (await watch.waitFor('flows', 5000, (e) => e.tag === tag)) as unknown as { flows: FlowRecord[]; stats: CaptureStats };
  }

  async function flowOf(cport: number): Promise<FlowRecord | undefined> {
    const { flows } = await snapshot();
    return flows.find((f) => (f.a.port === cport && f.b.port === 80) || (f.b.port === cport && f.a.port === 80));
  }

  it('handshake, data across the 2^32 wrap, a retransmission, scaled windows, FINs, then port reuse', async () => {
    const cport = 40000 + family;
    const isnC = 0xfffffe00; // 512 below the wrap: the 1000 bytes of data cross it
    const isnS = 0x12345678;
    const c = (s: Seg) => fromC({ sport: cport, ...s });
    const s = (x: Seg) => fromS({ dport: cport, ...x });
    await send([
      c({ seq: isnC, ack: 0, flags: TCP_SYN, window: 64240, options: [...opt.mss(1460), ...opt.sackPerm(), ...opt.ts(100, 0), ...opt.nop(), ...opt.ws(7)] }),
      s({ seq: isnS, ack: isnC + 1, flags: TCP_SYN | TCP_ACK, window: 65160, options: [...opt.mss(1400), ...opt.sackPerm(), ...opt.ts(500, 100), ...opt.nop(), ...opt.ws(9)] }),
    ]);
    let f = (await flowOf(cport))!;
    expect(f).toMatchObject({ family, state: 'SYN_RECEIVED', handshakeSeen: true });
    expect(f.a).toMatchObject({ address: C, port: cport, nextSeq: isnC + 1, mss: 1460, sackPermitted: true, tsval: 100 });
    expect(f.b).toMatchObject({ address: S, port: 80, nextSeq: isnS + 1, ack: isnC + 1, mss: 1400, tsval: 500, tsecr: 100 });
    // Windows in SYNs are never scaled (RFC 7323 2.2), even once both SYNs are known.
    expect(f.a.window).toBe(64240);
    expect(f.b.window).toBe(65160);

    const data = Buffer.alloc(1000, 0x61);
    const dataEnd = seqAdd(isnC, 1001);
    await send([
      c({ seq: isnC + 1, ack: isnS + 1, flags: TCP_ACK, window: 502, options: [...opt.nop(), ...opt.nop(), ...opt.ts(101, 500)] }),
      c({ seq: isnC + 1, ack: isnS + 1, flags: TCP_ACK | TCP_PSH, window: 502, options: [...opt.nop(), ...opt.nop(), ...opt.ts(102, 500)], payload: data }),
      // A retransmission with an older TSval: neither nextSeq nor tsval may move back.
      c({ seq: isnC + 1, ack: isnS + 1, flags: TCP_ACK | TCP_PSH, window: 502, options: [...opt.nop(), ...opt.nop(), ...opt.ts(99, 500)], payload: data }),
      s({ seq: isnS + 1, ack: dataEnd, flags: TCP_ACK, window: 300, options: [...opt.nop(), ...opt.nop(), ...opt.ts(501, 102)] }),
      // An old ACK arriving late does not move ack back.
      s({ seq: isnS + 1, ack: isnC + 1, flags: TCP_ACK, window: 300 }),
    ]);
    f = (await flowOf(cport))!;
    expect(f).toMatchObject({ state: 'ESTABLISHED', handshakeSeen: true });
    expect(dataEnd).toBeLessThan(1000); // wrapped
    expect(f.a).toMatchObject({ nextSeq: dataEnd, ack: isnS + 1, window: 502 << 7, wscale: 7, tsval: 102, tsecr: 500, packets: 4, bytes: 2000, finSent: false });
    expect(f.b).toMatchObject({ nextSeq: isnS + 1, ack: dataEnd, window: 300 << 9, wscale: 9, tsval: 501, packets: 3, bytes: 0 });

    await send([
      c({ seq: dataEnd, ack: isnS + 1, flags: TCP_ACK | TCP_FIN, window: 502 }),
    ]);
    expect((await flowOf(cport))!.state).toBe('FIN_WAIT');
    await send([
      s({ seq: isnS + 1, ack: dataEnd + 1, flags: TCP_ACK | TCP_FIN, window: 300 }),
    ]);
    expect((await flowOf(cport))!.state).toBe('CLOSING');
    await send([c({ seq: dataEnd + 1, ack: isnS + 2, flags: TCP_ACK, window: 502 })]);
    f = (await flowOf(cport))!;
    expect(f).toMatchObject({ state: 'CLOSED', a: { finSent: true, nextSeq: dataEnd + 1, ack: isnS + 2 }, b: { finSent: true, nextSeq: isnS + 2 } });

    // The client reuses its port within the closed flow's linger, with an ISN *before* the old
    // one in sequence space: a new flow, not the old one with stale numbers.
    const isn2 = seqAdd(isnC, -100000);
    await send([c({ seq: isn2, ack: 0, flags: TCP_SYN, window: 64240, options: opt.ws(7) })]);
    f = (await flowOf(cport))!;
    expect(f).toMatchObject({ state: 'SYN_SENT', handshakeSeen: true, a: { address: C, nextSeq: isn2 + 1, packets: 1 }, b: { packets: 0, finSent: false } });
  });

  it('a flow first seen mid-stream: side a is the first sender, windows raw, wscale -1; a RST keeps it as RESET', async () => {
    const cport = 41000 + family;
    await send([fromS({ dport: cport, seq: 7000, ack: 9000, flags: TCP_ACK, window: 1234, payload: Buffer.alloc(10) })]);
    let f = (await flowOf(cport))!;
    expect(f).toMatchObject({ state: 'ESTABLISHED', handshakeSeen: false });
    expect(f.a).toMatchObject({ address: S, port: 80, nextSeq: 7010, ack: 9000, window: 1234, wscale: -1, mss: 0, bytes: 10 });
    expect(f.b).toMatchObject({ address: C, port: cport, packets: 0 });
    await send([fromC({ sport: cport, seq: 9000, ack: 7010, flags: TCP_ACK, window: 777 })]);
    await send([fromC({ sport: cport, seq: 9000, ack: 0, flags: TCP_RST, window: 0 })]);
    f = (await flowOf(cport))!;
    expect(f).toMatchObject({ state: 'RESET', b: { nextSeq: 9000, ack: 7010, window: 0, packets: 2 } });
  });

  /** A hop-by-hop header whose length field runs past the packet. */
  function extOverrun(spec: FrameSpec): Buffer {
    const b = buildFrame(spec);
    b[14 + 40 + 1] = 200;
    return b;
  }

  it('lone RSTs, flagless segments and malformed frames create no flow', async () => {
    const before = await snapshot();
    const p = 42000 + family * 100;
    const frames: Array<FrameSpec | Buffer> = [
      fromC({ sport: p, flags: TCP_RST }), // a RST for nothing
      fromC({ sport: p + 1, flags: TCP_RST | TCP_ACK }),
      fromC({ sport: p + 2, flags: 0 }), // no SYN, no ACK: no connection says this
      fromC({ sport: p + 3, flags: TCP_PSH }),
    ];
    const malformed: Array<FrameSpec | Buffer> = [
      fromC({ sport: p + 10, dataOffset: 4 }),
      fromC({ sport: p + 11, dataOffset: 15 }), // header longer than the segment
      fromC({ sport: p + 12, options: [2, 40, 0, 0] }), // option length past the header
      fromC({ sport: p + 13, options: [2, 3, 5, 1] }), // MSS of the wrong length
      fromC({ sport: p + 14, totalLength: 2000 }), // longer than the frame
      fromC({ sport: p + 15, protocol: 17 }),
      fromC({ sport: p + 16, ipVersion: family === 4 ? 6 : 4 }),
      fromC({ sport: 0, flags: TCP_SYN }), // port 0
      ...(family === 4
        ? [fromC({ sport: p + 17, ihl: 4 }), fromC({ sport: p + 18, fragField: 0x2000 }), fromC({ sport: p + 19, fragField: 0x0010 })]
        : [fromC({ sport: p + 17, ipv6Ext: [{ type: 44 }] }), extOverrun(fromC({ sport: p + 18, ipv6Ext: [{ type: 0 }] }))]),
      buildFrame(fromC({ sport: p + 20, flags: TCP_SYN })).subarray(0, family === 4 ? 14 + 20 + 10 : 14 + 40 + 10), // truncated
    ];
    await send([...frames, ...malformed]);
    const after = await snapshot();
    const ours = after.flows.filter((f) => f.a.port >= p && f.a.port < p + 100);
    expect(ours).toEqual([]);
    expect(after.stats.refused - before.stats.refused).toBe(frames.length);
    expect(after.stats.malformed - before.stats.malformed).toBeGreaterThanOrEqual(malformed.length);
    expect(after.stats.drops).toBe(0);
  });
});
