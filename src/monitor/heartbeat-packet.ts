// The heartbeat datagram agents exchange on every link (seed 004: a main and a failsafe link),
// authenticated with HMAC-SHA256 under a shared cluster key. Layout (big endian):
//   magic "TKHB" | version 2 | link id (u8) | flags (u8) | node id length (u8)
//   | node id (UTF-8, 1..64) | incarnation (u64) | sequence (u64) | sent at (f64, ms since the
//   epoch) | claim count (u8, 0..16) | claims | HMAC (32 bytes)
// A claim is a service address the sender holds: family (4 or 6) | address (4 or 16 bytes) |
// flags (u8: bit 0 `taken`, held because the sender took it over from a dead peer; bit 1
// `leased`, its own address under an address lease) | with `leased`: the lease (u16, seconds,
// 1..65535; see agent/address-lease.ts). A taken claim is never leased. An agent older than the
// lease refuses a heartbeat with a leased claim (`claims`): enable addressLease once every agent
// of the cluster knows it.
// The HMAC covers every byte before it. Incarnation grows at every start of an agent (persisted:
// see agent/incarnation.ts); sequence grows by one per heartbeat within an incarnation, so replays
// are recognised. Flags: bit 0 `leaving` (the agent stops: a planned departure, not a failure),
// bit 1 `serving` (with leaving: instances on the node still run, only the agent goes away).
// Version 1 (no flags byte) is refused: both ends of a cluster run the same version.
import { createHmac, timingSafeEqual } from 'node:crypto';
import net from 'node:net';

export interface Heartbeat {
  node: string;
  link: number;
  incarnation: bigint;
  seq: bigint;
  sentAtMs: number;
  /** Set on the last heartbeats of an agent that stops (planned); `serving`: its instances still run. */
  leaving?: { serving: boolean };
  /** Service addresses the sender holds (see agent/address-holding.ts); absent when none. */
  claims?: AddressClaim[];
}

export interface AddressClaim {
  /** Canonical IPv4 or IPv6 text. */
  address: string;
  /** Held because the sender took it over from a peer declared dead (else: its own). */
  taken: boolean;
  /** Its own address under a lease of this many seconds: gone within that once its agent stops renewing. */
  leaseSeconds?: number;
}

export const MAX_CLAIMS = 16;

export type HeartbeatRejection = 'short' | 'magic' | 'version' | 'flags' | 'node' | 'length' | 'claims' | 'hmac';

const MAGIC = Buffer.from('TKHB');
const VERSION = 2;
const LEAVING = 1;
const SERVING = 2;
const HEADER = 8; // magic, version, link, flags, node id length
const MAC_LENGTH = 32;
export const MAX_NODE_ID = 64;

export function encodeHeartbeat(hb: Heartbeat, key: Buffer): Buffer {
  const node = Buffer.from(hb.node, 'utf8');
  if (node.length === 0 || node.length > MAX_NODE_ID) throw new RangeError(`node id must be 1..${MAX_NODE_ID} bytes: ${hb.node}`);
  if (!Number.isInteger(hb.link) || hb.link < 0 || hb.link > 255) throw new RangeError(`link id must be 0..255: ${hb.link}`);
  const claims = hb.claims ?? [];
  if (claims.length > MAX_CLAIMS) throw new RangeError(`at most ${MAX_CLAIMS} address claims: ${claims.length}`);
  const claimBytes = claims.map(encodeClaim);
  const body = Buffer.alloc(HEADER + node.length + 8 + 8 + 8 + 1 + claimBytes.reduce((n, c) => n + c.length, 0));
  let o = MAGIC.copy(body, 0);
  body[o++] = VERSION;
  body[o++] = hb.link;
  body[o++] = hb.leaving ? LEAVING | (hb.leaving.serving ? SERVING : 0) : 0;
  body[o++] = node.length;
  o += node.copy(body, o);
  body.writeBigUInt64BE(hb.incarnation, o);
  body.writeBigUInt64BE(hb.seq, o + 8);
  body.writeDoubleBE(hb.sentAtMs, o + 16);
  o += 24;
  body[o++] = claims.length;
  for (const c of claimBytes) o += c.copy(body, o);
  return Buffer.concat([body, createHmac('sha256', key).update(body).digest()]);
}

const TAKEN = 1;
const LEASED = 2;

function encodeClaim(c: AddressClaim): Buffer {
  const family = net.isIP(c.address);
  if (family === 0) throw new RangeError(`not an IP address: ${c.address}`);
  const addr = family === 4 ? Buffer.from(c.address.split('.').map(Number)) : ipv6Bytes(c.address);
  if (c.leaseSeconds === undefined) return Buffer.concat([Buffer.from([family]), addr, Buffer.from([c.taken ? TAKEN : 0])]);
  if (c.taken) throw new RangeError(`a taken address is not leased: ${c.address}`);
  if (!Number.isInteger(c.leaseSeconds) || c.leaseSeconds < 1 || c.leaseSeconds > 0xffff) throw new RangeError(`lease must be 1..65535 s: ${c.leaseSeconds}`);
  const lease = Buffer.alloc(2);
  lease.writeUInt16BE(c.leaseSeconds);
  return Buffer.concat([Buffer.from([family]), addr, Buffer.from([LEASED]), lease]);
}

function ipv6Bytes(address: string): Buffer {
  const [head, tail] = new net.SocketAddress({ address, family: 'ipv6' }).address.split('::') as [string, string | undefined];
  const groups = (s: string | undefined) => (s ? s.split(':').filter(Boolean) : []);
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function ipv6Text(b: Buffer): string {
  const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16));
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

/** Claims from `buf` (count byte first) filling it exactly; undefined when malformed. */
function decodeClaims(buf: Buffer): AddressClaim[] | undefined {
  const count = buf[0]!;
  if (count > MAX_CLAIMS) return undefined;
  const out: AddressClaim[] = [];
  let o = 1;
  for (let i = 0; i < count; i++) {
    const family = buf[o];
    const len = family === 4 ? 4 : family === 6 ? 16 : -1;
    if (len < 0 || o + 1 + len + 1 > buf.length) return undefined;
    const addr = buf.subarray(o + 1, o + 1 + len);
    const flags = buf[o + 1 + len]!;
    if ((flags & ~(TAKEN | LEASED)) !== 0 || flags === (TAKEN | LEASED)) return undefined;
    const address = family === 4 ? [...addr].join('.') : ipv6Text(addr);
    o += 1 + len + 1;
    if (flags & LEASED) {
      if (o + 2 > buf.length) return undefined;
      const leaseSeconds = buf.readUInt16BE(o);
      if (leaseSeconds === 0) return undefined;
      out.push({ address, taken: false, leaseSeconds });
      o += 2;
    } else out.push({ address, taken: flags === TAKEN });
  }
  return o === buf.length ? out : undefined;
}

/**
 * The node id a datagram names, read without authenticating it (for counting rejections by the
 * peer they claim to come from), or undefined when the header is too damaged to say.
 */
export function claimedNode(buf: Buffer): string | undefined {
  if (buf.length < HEADER || !buf.subarray(0, 4).equals(MAGIC)) return undefined;
  const nodeLength = buf[7]!;
  if (nodeLength === 0 || nodeLength > MAX_NODE_ID || buf.length < HEADER + nodeLength) return undefined;
  return buf.toString('utf8', HEADER, HEADER + nodeLength);
}

/** Decodes and authenticates; never throws on bad input. */
export function decodeHeartbeat(buf: Buffer, key: Buffer): { ok: true; heartbeat: Heartbeat } | { ok: false; reason: HeartbeatRejection } {
  if (buf.length < HEADER + 1 + 24 + 1 + MAC_LENGTH) return { ok: false, reason: 'short' };
  if (!buf.subarray(0, 4).equals(MAGIC)) return { ok: false, reason: 'magic' };
  if (buf[4] !== VERSION) return { ok: false, reason: 'version' };
  const flags = buf[6]!;
  if ((flags & ~(LEAVING | SERVING)) !== 0 || (flags & SERVING && !(flags & LEAVING))) return { ok: false, reason: 'flags' };
  const nodeLength = buf[7]!;
  if (nodeLength === 0 || nodeLength > MAX_NODE_ID) return { ok: false, reason: 'node' };
  const bodyLength = buf.length - MAC_LENGTH;
  if (bodyLength < HEADER + nodeLength + 24 + 1) return { ok: false, reason: 'length' };
  const body = buf.subarray(0, bodyLength);
  const mac = createHmac('sha256', key).update(body).digest();
  if (!timingSafeEqual(mac, buf.subarray(bodyLength))) return { ok: false, reason: 'hmac' };
  const o = HEADER + nodeLength;
  const claims = decodeClaims(buf.subarray(o + 24, bodyLength));
  if (!claims) return { ok: false, reason: 'claims' };
  return {
    ok: true,
    heartbeat: {
      node: buf.toString('utf8', HEADER, o),
      link: buf[5]!,
      incarnation: buf.readBigUInt64BE(o),
      seq: buf.readBigUInt64BE(o + 8),
      sentAtMs: buf.readDoubleBE(o + 16),
      ...(flags & LEAVING ? { leaving: { serving: (flags & SERVING) !== 0 } } : {}),
      ...(claims.length ? { claims } : {}),
    },
  };
}
