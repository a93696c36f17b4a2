// buildSegment byte layout, checked field by field and against an independent checksum.
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { buildSegment, type SegmentSpec } from '../../src/net/forge.js';
import { TCP_ACK, TCP_PSH, TCP_RST, TCP_URG } from '../../src/native.js';

/** RFC 1071 one's-complement sum of 16-bit words, folded, not yet complemented. */
function onesSum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function addressBytes(address: string): Buffer {
  if (net.isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  const sa = new net.SocketAddress({ address, family: 'ipv6' });
  // Expand :: by hand; SocketAddress only canonicalises.
  const [head, tail] = sa.address.includes('::') ? sa.address.split('::') : [sa.address, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** The TCP checksum verifies when the sum over pseudo-header + segment folds to 0xffff. */
function tcpChecksumOk(src: string, dst: string, segment: Buffer): boolean {
  const v6 = net.isIPv6(src);
  const pseudo = Buffer.alloc(v6 ? 40 : 12);
  if (v6) {
    addressBytes(src).copy(pseudo, 0);
    addressBytes(dst).copy(pseudo, 16);
    pseudo.writeUInt32BE(segment.length, 32);
    pseudo[39] = 6;
  } else {
    addressBytes(src).copy(pseudo, 0);
    addressBytes(dst).copy(pseudo, 4);
    pseudo[9] = 6;
    pseudo.writeUInt16BE(segment.length, 10);
  }
  return onesSum(Buffer.concat([pseudo, segment])) === 0xffff;
}

const v4: SegmentSpec = {
  src: '198.18.0.1',
  dst: '198.18.0.2',
  sport: 7000,
  dport: 54321,
  seq: 0xfffffff0,
  ack: 123456789,
  flags: TCP_ACK | TCP_PSH | TCP_URG,
  window: 512,
  urgentPointer: 3,
  payload: Buffer.from('hello'), // odd length: exercises the checksum's padding
  tsval: 0xdeadbeef,
  tsecr: 42,
  ttl: 17,
};

describe('buildSegment IPv4', () => {
  const pkt = buildSegment(v4);

  it('has a 20-byte IPv4 header with DF, TTL, protocol and a valid checksum', () => {
    expect(pkt.length).toBe(20 + 32 + 5);
    expect(pkt[0]).toBe(0x45);
    expect(pkt.readUInt16BE(2)).toBe(pkt.length);
    expect(pkt.readUInt16BE(6)).toBe(0x4000); // DF, offset 0
    expect(pkt[8]).toBe(17);
    expect(pkt[9]).toBe(6);
    expect(pkt.subarray(12, 16)).toEqual(addressBytes('198.18.0.1'));
    expect(pkt.subarray(16, 20)).toEqual(addressBytes('198.18.0.2'));
    expect(onesSum(pkt.subarray(0, 20))).toBe(0xffff);
  });

  it('has the TCP fields, the timestamp option and the payload at their offsets', () => {
    const t = pkt.subarray(20);
    expect(t.readUInt16BE(0)).toBe(7000);
    expect(t.readUInt16BE(2)).toBe(54321);
    expect(t.readUInt32BE(4)).toBe(0xfffffff0);
    expect(t.readUInt32BE(8)).toBe(123456789);
    expect(t[12]! >> 4).toBe(8); // 32-byte header
    expect(t[13]).toBe(TCP_ACK | TCP_PSH | TCP_URG);
    expect(t.readUInt16BE(14)).toBe(512);
    expect(t.readUInt16BE(18)).toBe(3);
    expect([...t.subarray(20, 24)]).toEqual([1, 1, 8, 10]);
    expect(t.readUInt32BE(24)).toBe(0xdeadbeef);
    expect(t.readUInt32BE(28)).toBe(42);
    expect(t.subarray(32).toString()).toBe('hello');
    expect(tcpChecksumOk(v4.src, v4.dst, t)).toBe(true);
  });

  it('uses the defaults: window 65535, TTL 64, no options, no payload, urgent 0', () => {
    const p = buildSegment({ src: '198.18.0.1', dst: '198.18.0.2', sport: 1, dport: 2, seq: 0, ack: 0, flags: TCP_RST });
    expect(p.length).toBe(40);
    expect(p[8]).toBe(64);
    expect(p[20 + 12]! >> 4).toBe(5);
    expect(p[20 + 13]).toBe(TCP_RST);
    expect(p.readUInt16BE(20 + 14)).toBe(65535);
    expect(p.readUInt16BE(20 + 18)).toBe(0);
    expect(onesSum(p.subarray(0, 20))).toBe(0xffff);
    expect(tcpChecksumOk('198.18.0.1', '198.18.0.2', p.subarray(20))).toBe(true);
  });

  it('produces valid checksums for many random segments', () => {
    for (let i = 0; i < 200; i++) {
      const payload = Buffer.from(Array.from({ length: i * 7 % 1401 }, () => Math.floor(Math.random() * 256)));
      const spec: SegmentSpec = {
        src: `198.18.0.${i % 256}`,
        dst: `198.18.0.${(i * 13) % 256}`,
        sport: Math.floor(Math.random() * 65536),
        dport: Math.floor(Math.random() * 65536),
        seq: Math.floor(Math.random() * 2 ** 32),
        ack: Math.floor(Math.random() * 2 ** 32),
        flags: i % 256,
        payload,
        ...(i % 2 ? { tsval: Math.floor(Math.random() * 2 ** 32) } : {}),
      };
      const p = buildSegment(spec);
      expect(onesSum(p.subarray(0, 20))).toBe(0xffff);
      expect(tcpChecksumOk(spec.src, spec.dst, p.subarray(20))).toBe(true);
    }
  });
});

describe('buildSegment IPv6', () => {
  const spec: SegmentSpec = {
    src: 'fd7a:6b00::1',
    dst: 'fd7a:6b00::abcd:2',
    sport: 443,
    dport: 40000,
    seq: 1,
    ack: 0xffffffff,
    flags: TCP_ACK,
    payload: Buffer.from('xyz'),
    tsval: 7,
    ttl: 255,
  };
  const pkt = buildSegment(spec);

  it('has a 40-byte IPv6 header with payload length, next header and hop limit', () => {
    expect(pkt.length).toBe(40 + 32 + 3);
    expect(pkt.readUInt32BE(0)).toBe(0x60000000);
    expect(pkt.readUInt16BE(4)).toBe(32 + 3);
    expect(pkt[6]).toBe(6);
    expect(pkt[7]).toBe(255);
    expect(pkt.subarray(8, 24)).toEqual(addressBytes(spec.src));
    expect(pkt.subarray(24, 40)).toEqual(addressBytes(spec.dst));
  });

  it('has TCP fields and a checksum over the IPv6 pseudo-header', () => {
    const t = pkt.subarray(40);
    expect(t.readUInt16BE(0)).toBe(443);
    expect(t.readUInt16BE(2)).toBe(40000);
    expect(t.readUInt32BE(4)).toBe(1);
    expect(t.readUInt32BE(8)).toBe(0xffffffff);
    expect(t[12]! >> 4).toBe(8);
    expect(t.readUInt32BE(24)).toBe(7);
    expect(t.readUInt32BE(28)).toBe(0); // tsecr defaults to 0
    expect(t.subarray(32).toString()).toBe('xyz');
    expect(tcpChecksumOk(spec.src, spec.dst, t)).toBe(true);
  });
});

describe('buildSegment validation', () => {
  const base = { src: '198.18.0.1', dst: '198.18.0.2', sport: 1, dport: 2, seq: 0, ack: 0, flags: 0 };
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['bad src', { src: '198.18.0.300' }, /spec\.src/],
    ['src not a string', { src: 1 }, /spec\.src/],
    ['bad dst', { dst: 'nope' }, /spec\.dst/],
    ['mixed families', { dst: 'fd7a:6b00::2' }, /spec\.dst.*family/],
    ['sport too big', { sport: 65536 }, /spec\.sport/],
    ['dport negative', { dport: -1 }, /spec\.dport/],
    ['sport fractional', { sport: 1.5 }, /spec\.sport/],
    ['seq too big', { seq: 2 ** 32 }, /spec\.seq/],
    ['ack missing', { ack: undefined }, /spec\.ack/],
    ['flags too big', { flags: 0x100 }, /spec\.flags/],
    ['window too big', { window: 65536 }, /spec\.window/],
    ['urgentPointer NaN', { urgentPointer: NaN }, /spec\.urgentPointer/],
    ['ttl zero', { ttl: 0 }, /spec\.ttl/],
    ['tsval too big', { tsval: 2 ** 32 }, /spec\.tsval/],
    ['tsecr without tsval', { tsecr: 1 }, /spec\.tsecr/],
    ['payload too long', { payload: Buffer.alloc(1401) }, /spec\.payload.*1400/],
    ['payload not bytes', { payload: 'text' }, /spec\.payload/],
  ];
  it.each(cases)('%s', (_name, patch, message) => {
    let caught: unknown;
    try {
      buildSegment({ ...base, ...patch } as unknown as SegmentSpec);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(TypeError);
    expect((caught as TypeError & { code: string }).code).toBe('ERR_INVALID_ARG_VALUE');
    expect((caught as Error).message).toMatch(message);
  });

  it('rejects a non-object spec', () => {
    expect(() => buildSegment(null as unknown as SegmentSpec)).toThrow(TypeError);
  });

  it('accepts the limits: 1400-byte payload, port 65535, seq 2^32-1', () => {
    const p = buildSegment({ ...base, sport: 65535, seq: 2 ** 32 - 1, payload: new Uint8Array(1400) });
    expect(p.length).toBe(20 + 20 + 1400);
  });
});
