// The native frame parser against frames built independently (test/unit/packet-frames.ts):
// exact fields for good frames, null for every kind of bad one, nothing thrown on noise.
import { describe, expect, it } from 'vitest';
import { LINK_ETHERNET, LINK_RAW_IP, native } from '../../src/native.js';
import { frame, opt, prng, type FrameSpec } from './packet-frames.js';

const v4: FrameSpec = { src: '198.18.0.1', dst: '198.18.0.2' };
const v6: FrameSpec = { src: 'fd7a:6b00::1', dst: 'fd7a:6b00::2' };
const parse = (b: Buffer, link = LINK_ETHERNET, verifyChecksum = false) => native.parsePacket(b, link, { verifyChecksum });

describe('parsePacket: well-formed frames', () => {
  it('IPv4 with every option we read, and payload', () => {
    const payload = Buffer.from('hello world');
    const b = frame({ ...v4, sport: 40001, dport: 5432, seq: 0xfffffff0, ack: 7, flags: 0x18, window: 501, urgent: 3,
      options: [...opt.mss(1460), ...opt.nop(), ...opt.ws(7), ...opt.sackOk(), ...opt.ts(123456789, 42)], payload });
    expect(parse(b, LINK_ETHERNET, true)).toEqual({
      family: 4, src: '198.18.0.1', dst: '198.18.0.2', sport: 40001, dport: 5432, seq: 0xfffffff0, ack: 7, flags: 0x18,
      window: 501, urgentPointer: 3, payloadLength: 11, mss: 1460, wscale: 7, sackPermitted: true, tsval: 123456789, tsecr: 42,
      payload,
    });
  });

  it('IPv6 through hop-by-hop and destination-options headers, VLAN tag, raw IP link', () => {
    const b = frame({ ...v6, vlan: 42, ipv6Ext: [[0, 0], [60, 1]], options: opt.ts(1, 2), payload: Buffer.from([1, 2, 3]) });
    expect(parse(b, LINK_ETHERNET, true)).toMatchObject({ family: 6, src: 'fd7a:6b00::1', dst: 'fd7a:6b00::2', tsval: 1, tsecr: 2, payloadLength: 3 });
    expect(parse(frame({ ...v4, rawIp: true }), LINK_RAW_IP, true)).toMatchObject({ family: 4, sport: 40000, dport: 7000 });
    expect(parse(frame({ ...v6, rawIp: true }), LINK_RAW_IP, true)).toMatchObject({ family: 6 });
  });

  it('IPv4 header options are skipped; window scale above 14 is taken as 14 (RFC 7323)', () => {
    expect(parse(frame({ ...v4, ipOptions: [1, 1, 1, 1, 1, 1, 1, 0], options: opt.ws(20) }), LINK_ETHERNET, true)).toMatchObject({ wscale: 14 });
  });
});

describe('parsePacket: malformed frames are rejected', () => {
  const good = frame({ ...v4, options: [...opt.mss(1460), ...opt.ts(5, 6)], payload: Buffer.from('abcdef') });
  const good6 = frame({ ...v6, ipv6Ext: [[0, 0]], options: opt.mss(1440) });

  it('every truncation of a valid frame, IPv4 and IPv6', () => {
    for (const g of [good, good6]) {
      for (let n = 0; n < g.length; n++) {
        // Shorter than the IP length says: the capture would report the wire length; the parser
        // is told the same length as it has, so the IP length runs past the frame.
        expect(parse(g.subarray(0, n)), `${n} bytes`).toBeNull();
      }
      expect(parse(g)).not.toBeNull();
    }
  });

  it.each([
    ['IP total length past the frame', (b: Buffer) => b.writeUInt16BE(b.readUInt16BE(16) + 1, 16)],
    ['IHL below 5', (b: Buffer) => (b[14] = 0x44)],
    ['IP version not 4', (b: Buffer) => (b[14] = 0x55)],
    ['TCP data offset below 5', (b: Buffer) => (b[14 + 20 + 12] = 0x40)],
    ['TCP data offset past the segment', (b: Buffer) => (b[14 + 20 + 12] = 0xf0)],
    ['not TCP', (b: Buffer) => (b[14 + 9] = 17)],
    ['unknown ethertype', (b: Buffer) => b.writeUInt16BE(0x0806, 12)],
    ['zero source port', (b: Buffer) => b.writeUInt16BE(0, 34)],
    ['zero destination port', (b: Buffer) => b.writeUInt16BE(0, 36)],
  ])('%s', (_name, mutate) => {
    const b = Buffer.from(good);
    mutate(b);
    expect(parse(b)).toBeNull();
  });

  it.each([
    ['option length running past the header', [2, 40, 0, 0]],
    ['option length below 2', [9, 1, 0, 0]],
    ['MSS of the wrong length', [2, 3, 5, 1]],
    ['window scale of the wrong length', [3, 4, 7, 1]],
    ['SACK-permitted of the wrong length', [4, 3, 0, 1]],
    ['timestamps of the wrong length', [8, 6, 0, 0, 0, 0, 1, 1]],
    ['kind without a length byte at the end', [1, 1, 1, 2]],
  ])('TCP options: %s', (_name, options) => {
    expect(parse(frame({ ...v4, options }))).toBeNull();
  });

  it('fragments: IPv4 MF or offset, IPv6 fragment header', () => {
    expect(parse(frame({ ...v4, fragment: { mf: true } }))).toBeNull();
    expect(parse(frame({ ...v4, fragment: { offset: 8 } }))).toBeNull();
    expect(parse(frame({ ...v6, ipv6Ext: [[44, 0]] }))).toBeNull();
    expect(parse(frame({ ...v6, ipv6Ext: [[0, 0], [43, 0], [44, 0]] }))).toBeNull();
  });

  it('checksums: a wrong one is rejected when verifying, a right one accepted', () => {
    expect(parse(frame({ ...v4, badChecksum: true }), LINK_ETHERNET, true)).toBeNull();
    expect(parse(frame({ ...v6, badChecksum: true }), LINK_ETHERNET, true)).toBeNull();
    expect(parse(frame({ ...v4, badChecksum: true }), LINK_ETHERNET, false)).not.toBeNull();
  });

  it('bad arguments are a TypeError, not a crash', () => {
    expect(() => native.parsePacket('x' as unknown as Uint8Array, 1)).toThrow(TypeError);
    expect(() => native.parsePacket(good, 7)).toThrow(/linkType/);
  });
});

describe('parsePacket: seeded random input', () => {
  it('20,000 random and mutated frames: never throws, accepted results are consistent', () => {
    const rnd = prng(0x7a6b);
    const seeds = [
      frame({ ...v4, options: [...opt.mss(1460), ...opt.ws(7), ...opt.ts(9, 9)], payload: Buffer.alloc(20, 7) }),
      frame({ ...v6, ipv6Ext: [[0, 0], [60, 0]], options: opt.sackOk(), payload: Buffer.alloc(5) }),
      frame({ ...v4, vlan: 7, flags: 0x02 }),
    ];
    let accepted = 0;
    let checked = 0;
    for (let i = 0; i < 20_000; i++) {
      let b: Buffer;
      const kind = rnd();
      if (kind < 0.2) {
        b = Buffer.alloc(Math.floor(rnd() * 120));
        for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
      } else {
        b = Buffer.from(seeds[Math.floor(rnd() * seeds.length)]!);
        const flips = 1 + Math.floor(rnd() * 4);
        for (let f = 0; f < flips; f++) { const at = Math.floor(rnd() * b.length); b[at] = b[at]! ^ (1 << Math.floor(rnd() * 8)); }
        if (rnd() < 0.3) b = b.subarray(0, Math.floor(rnd() * b.length));
      }
      const verify = rnd() < 0.5;
      const r = parse(b, rnd() < 0.9 ? LINK_ETHERNET : LINK_RAW_IP, verify);
      if (!r) continue;
      accepted++;
      expect(r.family === 4 || r.family === 6).toBe(true);
      expect(r.sport).toBeGreaterThan(0);
      expect(r.dport).toBeGreaterThan(0);
      expect(r.payload?.length ?? 0).toBeLessThanOrEqual(r.payloadLength);
      if (verify) {
        checked++;
        expect(r.payload?.length ?? 0).toBe(r.payloadLength);
      }
    }
    // The mutations leave many frames valid (payload and header bits that do not matter).
    expect(accepted).toBeGreaterThan(1000);
    expect(checked).toBeGreaterThan(100);
  });
});
