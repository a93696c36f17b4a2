// Builds Ethernet / IPv4 / IPv6 / TCP frames byte by byte for the parser and filter tests,
// with an independent RFC 1071 checksum, so the tests do not trust the code under test.
import net from 'node:net';

export interface FrameSpec {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  urgent?: number;
  /** Raw TCP option bytes (padded to 4 here). */
  options?: number[];
  payload?: Buffer;
  vlan?: number;
  /** IPv4 header options bytes (padded to 4). */
  ipOptions?: number[];
  /** IPv6 extension headers before TCP: [nextHeaderType, lengthIn8ByteUnitsMinus1]. */
  ipv6Ext?: Array<[number, number]>;
  protocol?: number;
  fragment?: { mf?: boolean; offset?: number };
  rawIp?: boolean;
  badChecksum?: boolean;
}

export function checksum(...parts: Buffer[]): number {
  const b = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function addrBytes(a: string): Buffer {
  if (net.isIPv4(a)) return Buffer.from(a.split('.').map(Number));
  const sa = new net.SocketAddress({ address: a, family: 'ipv6' }).address;
  const [h, t] = sa.includes('::') ? sa.split('::') : [sa, undefined];
  const head = h ? h.split(':') : [];
  const tail = t ? t.split(':') : [];
  const groups = t === undefined ? head : [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), 2 * i));
  return out;
}

const pad4 = (bytes: number[]) => Buffer.from([...bytes, ...Array((4 - (bytes.length % 4)) % 4).fill(1)]);

export function tcpSegment(s: FrameSpec, srcB: Buffer, dstB: Buffer): Buffer {
  const opts = pad4(s.options ?? []);
  const payload = s.payload ?? Buffer.alloc(0);
  const tcp = Buffer.alloc(20 + opts.length);
  tcp.writeUInt16BE(s.sport ?? 40000, 0);
  tcp.writeUInt16BE(s.dport ?? 7000, 2);
  tcp.writeUInt32BE((s.seq ?? 1000) >>> 0, 4);
  tcp.writeUInt32BE((s.ack ?? 2000) >>> 0, 8);
  tcp[12] = ((20 + opts.length) / 4) << 4;
  tcp[13] = s.flags ?? 0x10;
  tcp.writeUInt16BE(s.window ?? 65535, 14);
  tcp.writeUInt16BE(s.urgent ?? 0, 18);
  opts.copy(tcp, 20);
  const seg = Buffer.concat([tcp, payload]);
  const pseudo =
    srcB.length === 4
      ? Buffer.concat([srcB, dstB, Buffer.from([0, 6, seg.length >> 8, seg.length & 0xff])])
      : Buffer.concat([srcB, dstB, Buffer.from([0, 0, seg.length >> 8, seg.length & 0xff, 0, 0, 0, 6])]);
  seg.writeUInt16BE(checksum(pseudo, seg) ^ (s.badChecksum ? 0x5a5a : 0), 16);
  return seg;
}

export function frame(s: FrameSpec): Buffer {
  const srcB = addrBytes(s.src);
  const dstB = addrBytes(s.dst);
  const proto = s.protocol ?? 6;
  let l4 = tcpSegment(s, srcB, dstB);
  let ip: Buffer;
  let ethertype: number;
  if (srcB.length === 4) {
    const o = pad4(s.ipOptions ?? []);
    ip = Buffer.alloc(20 + (s.ipOptions ? o.length : 0));
    ip[0] = 0x40 | (ip.length / 4);
    ip.writeUInt16BE(ip.length + l4.length, 2);
    const frag = (s.fragment?.mf ? 0x2000 : 0) | (s.fragment?.offset ?? 0) | (s.fragment ? 0 : 0x4000);
    ip.writeUInt16BE(frag, 6);
    ip[8] = 64;
    ip[9] = proto;
    srcB.copy(ip, 12);
    dstB.copy(ip, 16);
    if (s.ipOptions) o.copy(ip, 20);
    ip.writeUInt16BE(checksum(ip), 10);
    ethertype = 0x0800;
  } else {
    const exts: Buffer[] = [];
    const chain = s.ipv6Ext ?? [];
    chain.forEach(([, len], i) => {
      const e = Buffer.alloc((len + 1) * 8);
      e[0] = i + 1 < chain.length ? chain[i + 1]![0] : proto;
      e[1] = len;
      exts.push(e);
    });
    l4 = Buffer.concat([...exts, l4]);
    ip = Buffer.alloc(40);
    ip[0] = 0x60;
    ip.writeUInt16BE(l4.length, 4);
    ip[6] = chain.length ? chain[0]![0] : proto;
    ip[7] = 64;
    srcB.copy(ip, 8);
    dstB.copy(ip, 24);
    ethertype = 0x86dd;
  }
  if (s.rawIp) return Buffer.concat([ip, l4]);
  const eth = Buffer.alloc(s.vlan !== undefined ? 18 : 14);
  Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]).copy(eth);
  if (s.vlan !== undefined) {
    eth.writeUInt16BE(0x8100, 12);
    eth.writeUInt16BE(s.vlan, 14);
    eth.writeUInt16BE(ethertype, 16);
  } else eth.writeUInt16BE(ethertype, 12);
  return Buffer.concat([eth, ip, l4]);
}

/** Option bytes: MSS, window scale, SACK permitted, timestamps. */
export const opt = {
  mss: (v: number) => [2, 4, v >> 8, v & 0xff],
  ws: (v: number) => [3, 3, v],
  sackOk: () => [4, 2],
  ts: (val: number, ecr: number) => [8, 10, ...u32(val), ...u32(ecr)],
  nop: () => [1],
  end: () => [0],
};

function u32(v: number): number[] {
  return [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

/** Deterministic PRNG (mulberry32) for seeded random tests. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
