// The heartbeat datagram agents exchange on every link (seed 004: a main and a failsafe link),
// authenticated with HMAC-SHA256 under a shared cluster key. Layout (big endian):
//   magic "TKHB" | version 2 | link id (u8) | flags (u8) | node id length (u8)
//   | node id (UTF-8, 1..64) | incarnation (u64) | sequence (u64) | sent at (f64, ms since the
//   epoch) | HMAC (32 bytes)
// The HMAC covers every byte before it. Incarnation grows at every start of an agent (persisted:
// see agent/incarnation.ts); sequence grows by one per heartbeat within an incarnation, so replays
// are recognised. Flags: bit 0 `leaving` (the agent stops: a planned departure, not a failure),
// bit 1 `serving` (with leaving: instances on the node still run, only the agent goes away).
// Version 1 (no flags byte) is refused: both ends of a cluster run the same version.
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface Heartbeat {
  node: string;
  link: number;
  incarnation: bigint;
  seq: bigint;
  sentAtMs: number;
  /** Set on the last heartbeats of an agent that stops (planned); `serving`: its instances still run. */
  leaving?: { serving: boolean };
}

export type HeartbeatRejection = 'short' | 'magic' | 'version' | 'flags' | 'node' | 'length' | 'hmac';

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
  const body = Buffer.alloc(HEADER + node.length + 8 + 8 + 8);
  let o = MAGIC.copy(body, 0);
  body[o++] = VERSION;
  body[o++] = hb.link;
  body[o++] = hb.leaving ? LEAVING | (hb.leaving.serving ? SERVING : 0) : 0;
  body[o++] = node.length;
  o += node.copy(body, o);
  body.writeBigUInt64BE(hb.incarnation, o);
  body.writeBigUInt64BE(hb.seq, o + 8);
  body.writeDoubleBE(hb.sentAtMs, o + 16);
  return Buffer.concat([body, createHmac('sha256', key).update(body).digest()]);
}

/** Decodes and authenticates; never throws on bad input. */
export function decodeHeartbeat(buf: Buffer, key: Buffer): { ok: true; heartbeat: Heartbeat } | { ok: false; reason: HeartbeatRejection } {
  if (buf.length < HEADER + 1 + 24 + MAC_LENGTH) return { ok: false, reason: 'short' };
  if (!buf.subarray(0, 4).equals(MAGIC)) return { ok: false, reason: 'magic' };
  if (buf[4] !== VERSION) return { ok: false, reason: 'version' };
  const flags = buf[6]!;
  if ((flags & ~(LEAVING | SERVING)) !== 0 || (flags & SERVING && !(flags & LEAVING))) return { ok: false, reason: 'flags' };
  const nodeLength = buf[7]!;
  if (nodeLength === 0 || nodeLength > MAX_NODE_ID) return { ok: false, reason: 'node' };
  const bodyLength = HEADER + nodeLength + 24;
  if (buf.length !== bodyLength + MAC_LENGTH) return { ok: false, reason: 'length' };
  const body = buf.subarray(0, bodyLength);
  const mac = createHmac('sha256', key).update(body).digest();
  if (!timingSafeEqual(mac, buf.subarray(bodyLength))) return { ok: false, reason: 'hmac' };
  const o = HEADER + nodeLength;
  return {
    ok: true,
    heartbeat: {
      node: buf.toString('utf8', HEADER, o),
      link: buf[5]!,
      incarnation: buf.readBigUInt64BE(o),
      seq: buf.readBigUInt64BE(o + 8),
      sentAtMs: buf.readDoubleBE(o + 16),
      ...(flags & LEAVING ? { leaving: { serving: (flags & SERVING) !== 0 } } : {}),
    },
  };
}
