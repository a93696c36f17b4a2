// A small, independent builder of captured frames for the parser and BPF tests: Ethernet (with
// optional 802.1Q tags) or raw IP, IPv4 with header options or IPv6 with extension headers,
// TCP with options and payload, and every checksum computed with a plain RFC 1071 sum. Every
// field can be overridden so tests can build exactly the malformed frame they mean.
// Also a reference locator of the TCP segment in a frame, used to check checksums of frames
// the native parser accepted.
import net from 'node:net';

/** RFC 1071 one's-complement sum of 16-bit big-endian words, folded; odd tail padded with 0. */
export function onesSum(chunks: Uint8Array[]): number {
  let sum = 0;
  for (const c of chunks) {
    // Every chunk but the last has an even length in all our uses (headers, pseudo-headers).
    for (let i = 0; i + 1 < c.length; i += 2) sum += (c[i]! << 8) | c[i + 1]!;
    if (c.length % 2 === 1) sum += c[c.length - 1]! << 8;
    while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  }
  return sum;
}

/** The Internet checksum to store: the complement of the one's-complement sum. */
export function inetChecksum(chunks: Uint8Array[]): number {
  return ~onesSum(chunks) & 0xffff;
}

/** Address text to its 4 or 16 network-order bytes. */
export function addressBytes(a: string): Buffer {
  if (net.isIPv4(a)) return Buffer.from(a.split('.').map(Number));
  if (!net.isIPv6(a)) throw new TypeError(`not an address: ${a}`);
  // A trailing dotted quad (::ffff:198.18.0.1) stands for the last two groups.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (dotted) {
    const q = dotted[2]!.split('.').map(Number);
    a = `${dotted[1]}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
  }
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function pseudoHeader(src: Uint8Array, dst: Uint8Array, tcpLength: number): Buffer {
  if (src.length === 4) {
    const p = Buffer.alloc(12);
    p.set(src, 0);
    p.set(dst, 4);
    p[9] = 6;
    p.writeUInt16BE(tcpLength & 0xffff, 10);
    return p;
  }
  const p = Buffer.alloc(40);
  p.set(src, 0);
  p.set(dst, 16);
  p.writeUInt32BE(tcpLength >>> 0, 32);
  p[39] = 6;
  return p;
}

/** TCP option encoders (raw bytes; the builder pads the list with NOPs to a multiple of 4). */
export const opt = {
  nop: (): number[] => [1],
  eol: (): number[] => [0],
  mss: (v: number): number[] => [2, 4, v >> 8, v & 0xff],
  ws: (shift: number): number[] => [3, 3, shift],
  sackPerm: (): number[] => [4, 2],
  ts: (tsval: number, tsecr: number): number[] => [8, 10, ...be32(tsval), ...be32(tsecr)],
  sack: (blocks: Array<[number, number]>): number[] => [5, 2 + 8 * blocks.length, ...blocks.flatMap(([l, r]) => [...be32(l), ...be32(r)])],
  raw: (...bytes: number[]): number[] => bytes,
};

function be32(v: number): number[] {
  return [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

/** One IPv6 extension header before TCP: its type and its length in 8-byte units beyond the first 8. */
export interface Ipv6Ext {
  type: number; // 0 hop-by-hop, 43 routing, 60 destination options, 44 fragment...
  len8?: number; // Hdr Ext Len field; default 0 (8 bytes)
}

export interface FrameSpec {
  src: string;
  dst: string; // same family as src
  sport?: number; // default 40000
  dport?: number; // default 7000
  seq?: number; // default 1000
  ack?: number; // default 2000
  flags?: number; // default ACK
  window?: number; // default 65535
  urgent?: number; // default 0
  /** TCP option bytes; padded with NOPs to a multiple of 4. */
  options?: number[];
  payload?: Uint8Array;
  /** 'raw': no link header (raw IP link type). Default 'ethernet'. */
  link?: 'ethernet' | 'raw';
  /** 802.1Q VLAN ids, outermost first (0, 1 or 2 tags). */
  vlans?: number[];
  /** Overrides the (innermost) ethertype. */
  ethertype?: number;
  /** IPv4 header option bytes (padded with NOP (1) to a multiple of 4). */
  ipOptions?: number[];
  /** IPv6 extension headers between the fixed header and TCP. */
  ipv6Ext?: Ipv6Ext[];
  /** IPv4 protocol / the last IPv6 next header (default 6). */
  protocol?: number;
  /** IPv4 flags+fragment offset field (default 0x4000: DF). */
  fragField?: number;
  /** Overrides of header length fields, in their own units. */
  ihl?: number;
  ipVersion?: number;
  totalLength?: number; // IPv4 total length, or IPv6 payload length
  dataOffset?: number;
  /** Overrides the TCP checksum field (default: the correct value). */
  tcpChecksum?: number;
  /** Bytes appended after the IP packet (Ethernet padding). */
  trailer?: number[];
}

export interface BuiltFrame {
  frame: Buffer;
  /** Offsets into the frame. */
  ipOffset: number;
  tcpOffset: number;
  tcpHeaderLength: number;
}

/** Builds a frame and returns the bytes with the offsets of its headers. */
export function buildFrameInfo(spec: FrameSpec): BuiltFrame {
  const src = addressBytes(spec.src);
  const dst = addressBytes(spec.dst);
  if (src.length !== dst.length) throw new TypeError('src and dst of different families');
  const v6 = src.length === 16;

  const options = [...(spec.options ?? [])];
  while (options.length % 4) options.push(1);
  const payload = Buffer.from(spec.payload ?? new Uint8Array());
  const tcpHeaderLength = 20 + options.length;
  const tcp = Buffer.alloc(tcpHeaderLength + payload.length);
  tcp.writeUInt16BE(spec.sport ?? 40000, 0);
  tcp.writeUInt16BE(spec.dport ?? 7000, 2);
  tcp.writeUInt32BE((spec.seq ?? 1000) >>> 0, 4);
  tcp.writeUInt32BE((spec.ack ?? 2000) >>> 0, 8);
  tcp[12] = ((spec.dataOffset ?? tcpHeaderLength / 4) & 0xf) << 4;
  tcp[13] = spec.flags ?? 0x10;
  tcp.writeUInt16BE(spec.window ?? 65535, 14);
  tcp.writeUInt16BE(spec.urgent ?? 0, 18);
  Buffer.from(options).copy(tcp, 20);
  payload.copy(tcp, tcpHeaderLength);
  tcp.writeUInt16BE(spec.tcpChecksum ?? inetChecksum([pseudoHeader(src, dst, tcp.length), tcp]), 16);

  let ip: Buffer;
  if (!v6) {
    const ipOpts = [...(spec.ipOptions ?? [])];
    while (ipOpts.length % 4) ipOpts.push(1);
    const hl = 20 + ipOpts.length;
    ip = Buffer.alloc(hl);
    ip[0] = ((spec.ipVersion ?? 4) << 4) | ((spec.ihl ?? hl / 4) & 0xf);
    ip.writeUInt16BE(spec.totalLength ?? hl + tcp.length, 2);
    ip.writeUInt16BE(0x1234, 4);
    ip.writeUInt16BE(spec.fragField ?? 0x4000, 6);
    ip[8] = 64;
    ip[9] = spec.protocol ?? 6;
    src.copy(ip, 12);
    dst.copy(ip, 16);
    Buffer.from(ipOpts).copy(ip, 20);
    ip.writeUInt16BE(inetChecksum([ip]), 10);
  } else {
    const exts = spec.ipv6Ext ?? [];
    const extBytes: Buffer[] = exts.map((e, i) => {
      const len8 = e.len8 ?? 0;
      const b = Buffer.alloc(8 + len8 * 8);
      b[0] = i + 1 < exts.length ? exts[i + 1]!.type : (spec.protocol ?? 6);
      b[1] = len8;
      // Options area: a PadN option covering the rest (valid for hop-by-hop / dest options).
      b[2] = 1;
      b[3] = b.length - 4;
      return b;
    });
    const ext = Buffer.concat(extBytes);
    ip = Buffer.alloc(40 + ext.length);
    ip[0] = (spec.ipVersion ?? 6) << 4;
    ip.writeUInt16BE(spec.totalLength ?? ext.length + tcp.length, 4);
    ip[6] = exts.length > 0 ? exts[0]!.type : (spec.protocol ?? 6);
    ip[7] = 64;
    src.copy(ip, 8);
    dst.copy(ip, 24);
    ext.copy(ip, 40);
  }

  let l2 = Buffer.alloc(0);
  if ((spec.link ?? 'ethernet') === 'ethernet') {
    const vlans = spec.vlans ?? [];
    l2 = Buffer.alloc(14 + 4 * vlans.length);
    Buffer.from([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]).copy(l2, 0);
    let at = 12;
    for (const id of vlans) {
      l2.writeUInt16BE(0x8100, at);
      l2.writeUInt16BE(id & 0x0fff, at + 2);
      at += 4;
    }
    l2.writeUInt16BE(spec.ethertype ?? (v6 ? 0x86dd : 0x0800), at);
  }
  const frame = Buffer.concat([l2, ip, tcp, Buffer.from(spec.trailer ?? [])]);
  return { frame, ipOffset: l2.length, tcpOffset: l2.length + ip.length, tcpHeaderLength };
}

export function buildFrame(spec: FrameSpec): Buffer {
  return buildFrameInfo(spec).frame;
}

export interface LocatedTcp {
  family: 4 | 6;
  src: Buffer;
  dst: Buffer;
  tcpOffset: number;
  tcpLength: number; // from the IP length fields
}

/**
 * A reference locator, written from the RFCs rather than from the native code: where the TCP
 * segment of a frame is, following up to two VLAN tags and IPv6 hop-by-hop, routing and
 * destination-options headers. null when the frame does not hold a whole TCP segment.
 */
export function locateTcp(f: Uint8Array, link: 0 | 1): LocatedTcp | null {
  const b = Buffer.from(f.buffer, f.byteOffset, f.byteLength);
  let off = 0;
  let ethertype: number;
  if (link === 1) {
    if (b.length < 14) return null;
    ethertype = b.readUInt16BE(12);
    off = 14;
    for (let tags = 0; tags < 2 && (ethertype === 0x8100 || ethertype === 0x88a8); tags++) {
      if (b.length < off + 4) return null;
      ethertype = b.readUInt16BE(off + 2);
      off += 4;
    }
  } else {
    if (b.length < 1) return null;
    ethertype = b[0]! >> 4 === 4 ? 0x0800 : b[0]! >> 4 === 6 ? 0x86dd : 0;
  }
  if (ethertype === 0x0800) {
    if (b.length < off + 20 || b[off]! >> 4 !== 4) return null;
    const ihl = (b[off]! & 0xf) * 4;
    const total = b.readUInt16BE(off + 2);
    if (ihl < 20 || total < ihl || off + total > b.length || b[off + 9] !== 6) return null;
    if (b.readUInt16BE(off + 6) & 0x3fff) return null;
    return { family: 4, src: b.subarray(off + 12, off + 16), dst: b.subarray(off + 16, off + 20), tcpOffset: off + ihl, tcpLength: total - ihl };
  }
  if (ethertype === 0x86dd) {
    if (b.length < off + 40 || b[off]! >> 4 !== 6) return null;
    const plen = b.readUInt16BE(off + 4);
    if (off + 40 + plen > b.length) return null;
    let next = b[off + 6]!;
    let at = off + 40;
    let left = plen;
    for (let hops = 0; next !== 6; hops++) {
      if (hops >= 8 || ![0, 43, 60].includes(next) || left < 8) return null;
      const len = (b[at + 1]! + 1) * 8;
      if (len > left) return null;
      next = b[at]!;
      at += len;
      left -= len;
    }
    return { family: 6, src: b.subarray(off + 8, off + 24), dst: b.subarray(off + 24, off + 40), tcpOffset: at, tcpLength: left };
  }
  return null;
}

/** Whether the TCP checksum of a located segment is right (the sum over everything is 0xffff). */
export function tcpChecksumOk(f: Uint8Array, loc: LocatedTcp): boolean {
  if (loc.tcpOffset + loc.tcpLength > f.length) return false;
  const seg = f.subarray(loc.tcpOffset, loc.tcpOffset + loc.tcpLength);
  return onesSum([pseudoHeader(loc.src, loc.dst, loc.tcpLength), seg]) === 0xffff;
}

/** mulberry32: a small seeded PRNG, so random tests are reproducible. Returns uint32. */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** The same generator as numbers in [0, 1), for tests that draw fractions. */
export function prng(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

/** Rewrites the TCP checksum of a (possibly mutated) frame when the locator finds a whole segment. */
export function fixTcpChecksum(f: Buffer, link: 0 | 1): boolean {
  const loc = locateTcp(f, link);
  if (!loc || loc.tcpLength < 20 || loc.tcpOffset + loc.tcpLength > f.length) return false;
  f.writeUInt16BE(0, loc.tcpOffset + 16);
  const seg = f.subarray(loc.tcpOffset, loc.tcpOffset + loc.tcpLength);
  f.writeUInt16BE(inetChecksum([pseudoHeader(loc.src, loc.dst, loc.tcpLength), seg]), loc.tcpOffset + 16);
  return true;
}
