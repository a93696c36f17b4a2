// The heartbeat datagram agents exchange on every link (seed 004: a main and a failsafe link),
// authenticated with HMAC-SHA256 under a shared cluster key. Layout (big endian):
//   magic "TKHB" | version 1 | link id (u8) | node id length (u8) | node id (UTF-8, 1..64)
//   | incarnation (u64) | sequence (u64) | sent at (f64, ms since the epoch) | HMAC (32 bytes)
// The HMAC covers every byte before it. Incarnation changes when an agent restarts; sequence
// grows by one per heartbeat within an incarnation, so replays are recognised.
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface Heartbeat {
  node: string;
  link: number;
  incarnation: bigint;
  seq: bigint;
  sentAtMs: number;
}

export type HeartbeatRejection = 'short' | 'magic' | 'version' | 'node' | 'length' | 'hmac';

const MAGIC = Buffer.from('TKHB');
const VERSION = 1;
const MAC_LENGTH = 32;
export const MAX_NODE_ID = 64;

export function encodeHeartbeat(hb: Heartbeat, key: Buffer): Buffer {
  const node = Buffer.from(hb.node, 'utf8');
  if (node.length === 0 || node.length > MAX_NODE_ID) throw new RangeError(`node id must be 1..${MAX_NODE_ID} bytes: ${hb.node}`);
  if (!Number.isInteger(hb.link) || hb.link < 0 || hb.link > 255) throw new RangeError(`link id must be 0..255: ${hb.link}`);
  const body = Buffer.alloc(4 + 1 + 1 + 1 + node.length + 8 + 8 + 8);
  let o = MAGIC.copy(body, 0);
  body[o++] = VERSION;
  body[o++] = hb.link;
  body[o++] = node.length;
  o += node.copy(body, o);
  body.writeBigUInt64BE(hb.incarnation, o);
  body.writeBigUInt64BE(hb.seq, o + 8);
  body.writeDoubleBE(hb.sentAtMs, o + 16);
  return Buffer.concat([body, createHmac('sha256', key).update(body).digest()]);
}

/**
 * The node id a datagram names, read without authenticating it (for counting rejections by the
 * peer they claim to come from), or undefined when the header is too damaged to say.
 */
export function claimedNode(buf: Buffer): string | undefined {
  if (buf.length < 7 || !buf.subarray(0, 4).equals(MAGIC)) return undefined;
  const nodeLength = buf[6]!;
  if (nodeLength === 0 || nodeLength > MAX_NODE_ID || buf.length < 7 + nodeLength) return undefined;
  return buf.toString('utf8', 7, 7 + nodeLength);
}

/** Decodes and authenticates; never throws on bad input. */
export function decodeHeartbeat(buf: Buffer, key: Buffer): { ok: true; heartbeat: Heartbeat } | { ok: false; reason: HeartbeatRejection } {
  if (buf.length < 7 + 1 + 24 + MAC_LENGTH) return { ok: false, reason: 'short' };
  if (!buf.subarray(0, 4).equals(MAGIC)) return { ok: false, reason: 'magic' };
  if (buf[4] !== VERSION) return { ok: false, reason: 'version' };
  const nodeLength = buf[6]!;
  if (nodeLength === 0 || nodeLength > MAX_NODE_ID) return { ok: false, reason: 'node' };
  const bodyLength = 7 + nodeLength + 24;
  if (buf.length !== bodyLength + MAC_LENGTH) return { ok: false, reason: 'length' };
  const body = buf.subarray(0, bodyLength);
  const mac = createHmac('sha256', key).update(body).digest();
  if (!timingSafeEqual(mac, buf.subarray(bodyLength))) return { ok: false, reason: 'hmac' };
  const o = 7 + nodeLength;
  return {
    ok: true,
    heartbeat: {
      node: buf.toString('utf8', 7, o),
      link: buf[5]!,
      incarnation: buf.readBigUInt64BE(o),
      seq: buf.readBigUInt64BE(o + 8),
      sentAtMs: buf.readDoubleBE(o + 16),
    },
  };
}
