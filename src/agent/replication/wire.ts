// The datagrams agents exchange to replicate their connections (issue 9): what a backup needs to
// end a dead node's connections on a switched network, where it never sees the node's traffic.
// They travel on the heartbeat links and are authenticated the same way (HMAC-SHA256 under the
// cluster key), with both ends' incarnations and a sequence number so that nothing is replayed
// into another agent's life or another subscription.
//
// Layout (big endian):
//   magic "TKCR" | version 1 | type (u8) | link id (u8) | sender node (u8 length + UTF-8)
//   | receiver node (u8 length + UTF-8) | sender incarnation (u64) | receiver incarnation (u64)
//   | sequence (u64) | body | HMAC (32 bytes, over every byte before it)
// Bodies:
//   SUBSCRIBE  count (u8, 0..16), per service: family (u8 4|6) address port (u16) goodbye (u8 length + ASCII)
//              The whole list: it replaces the subscriber's last one; 0 services ends its stream.
//   SYNC       epoch (u32) part (u16) last (u8 0|1) count (u16) records (upserts only)
//   DELTA      epoch (u32) count (u16) records
//   SUMMARY    epoch (u32) connections (u32) pending (u32)
// The epoch of a stream is the sequence number (low 32 bits) of the SUBSCRIBE it answers, so the
// subscriber knows which of its lists a record's service index points into.
// A record: flags (u8: bits 0-1 op 1 upsert / 2 remove, bit 2 sequence numbers, bit 3 timestamps,
//   bit 4 boundary known, bit 5 at a boundary, bit 6 handshake options) | service index (u8)
//   | family (u8) peer address | peer port (u16) | for an upsert: age (u32, ms) [| dead side's
//   next seq, peer's next seq, peer's ack, dead side's ack (u32 each), dead side's and peer's raw
//   windows (u16 each)] [| dead TSval, peer TSval (u32 each)] [| window scale dead, peer (u8
//   each, 255 none), MSS dead, peer (u16 each), SACK permitted (u8 0|1)] [| boundary reason
//   (u8 length + UTF-8) when known and not at a boundary]
import { createHmac, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import { addressBytes, addressFromBytes, memoizedByAddress, type Endpoint } from '../../net/endpoint.js';
import { MAX_NODE_ID } from '../../monitor/heartbeat-packet.js';
import { BodyError, BodyReader } from '../../wire/body-reader.js';

export const REPLICATION_MAGIC = Buffer.from('TKCR');
const VERSION = 1;
const MAC_LENGTH = 32;
/** The largest datagram sent: fits a 1500-byte MTU under IPv6 + UDP headers, unfragmented. */
export const MAX_DATAGRAM = 1400;
/** Services one subscription may name. */
export const MAX_SERVICES = 16;
/** A goodbye plugin's name as a subscription carries it. */
export const GOODBYE_NAME = /^[a-z0-9-]{1,32}$/;
const MAX_REASON = 200;

export type MessageType = 'subscribe' | 'sync' | 'delta' | 'summary';
const TYPE_CODES: Record<MessageType, number> = { subscribe: 1, sync: 2, delta: 3, summary: 4 };
const TYPES_BY_CODE = new Map(Object.entries(TYPE_CODES).map(([k, v]) => [v, k as MessageType]));

/** A service whose connections a subscriber asks for: the address and port it would take over. */
export interface ReplicatedService {
  address: string;
  port: number;
  /** A goodbye plugin name: the subscriber will close with it, so follow message boundaries. */
  goodbye?: string;
}

/**
 * What the replicating node's capture saw of a connection (sequence numbers in sequence space):
 * what a backup needs to end it, and, with the handshake's options, to continue it.
 */
export interface ReplicatedState {
  /** The server side's (the node that may die: the "dead side") SND.NXT as seen on the wire. */
  deadNextSeq: number;
  /** The peer's SND.NXT. */
  peerNextSeq: number;
  /** The highest ack the peer sent (its RCV.NXT when it last acked). */
  peerAck: number;
  /** The highest ack the dead side sent (its RCV.NXT when it last acked). */
  deadAck: number;
  /** The raw 16-bit window fields each side last sent. */
  deadWindow: number;
  peerWindow: number;
  /** Last TSval each side sent, when the connection uses timestamps. */
  deadTsval?: number;
  peerTsval?: number;
  /** From the two SYNs, when both were seen: window scale shifts, MSS, SACK permitted by both. */
  handshake?: { deadWscale: number; peerWscale: number; deadMss: number; peerMss: number; sackPermitted: boolean };
}

export interface ConnectionRecord {
  op: 'upsert' | 'remove';
  /** Index into the subscription's services: the connection's server side. */
  service: number;
  peer: Endpoint;
  /** Upserts: how long before the datagram was sent the state below was current (ms). */
  ageMs?: number;
  state?: ReplicatedState;
  /** Upserts of a service with a goodbye: whether the server's stream sits between messages. */
  boundary?: { atBoundary: boolean; reason: string };
}

export type ReplicationMessage =
  /** The services the sender wants, all of them (none: it wants nothing more). */
  | { type: 'subscribe'; services: ReplicatedService[] }
  | { type: 'sync'; epoch: number; part: number; last: boolean; records: ConnectionRecord[] }
  | { type: 'delta'; epoch: number; records: ConnectionRecord[] }
  | { type: 'summary'; epoch: number; connections: number; pending: number };

export interface Envelope {
  from: string;
  to: string;
  link: number;
  /** The sender's incarnation, and the receiver's as the sender knows it (0 when it does not). */
  fromIncarnation: bigint;
  toIncarnation: bigint;
  /** Grows by one per datagram from this sender to this receiver within their incarnations. */
  seq: bigint;
  message: ReplicationMessage;
}

export type WireRejection = 'short' | 'magic' | 'version' | 'type' | 'node' | 'length' | 'hmac' | 'body';

// ---- encoding ----

/** Bytes before the body for these node names. */
export function headerBytes(from: string, to: string): number {
  return 4 + 1 + 1 + 1 + 1 + Buffer.byteLength(from) + 1 + Buffer.byteLength(to) + 24;
}

/** Room left for records in one datagram after the header, a body's fixed part and the MAC. */
export function recordRoom(from: string, to: string, type: 'sync' | 'delta'): number {
  return MAX_DATAGRAM - headerBytes(from, to) - MAC_LENGTH - (type === 'sync' ? 9 : 6);
}

class Writer {
  private readonly parts: Buffer[] = [];
  u8(v: number): this {
    this.parts.push(Buffer.of(v & 0xff));
    return this;
  }
  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    this.parts.push(b);
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.parts.push(b);
    return this;
  }
  u64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(v);
    this.parts.push(b);
    return this;
  }
  bytes(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
  text(s: string, max: number): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > max) throw new RangeError(`text longer than ${max} bytes: ${s.slice(0, 40)}`);
    return this.u8(b.length).bytes(b);
  }
  endpoint(address: string, port: number): this {
    const bytes = cachedAddressBytes(address);
    return this.u8(bytes.length === 4 ? 4 : 6).bytes(bytes).u16(port);
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

// Records name the same few client addresses over and over: each is converted once.
const cachedAddressBytes = memoizedByAddress(addressBytes);

/** The encoded size of one record (what the packer counts against recordRoom). */
export function recordBytes(r: ConnectionRecord): number {
  const address = net.isIPv4(r.peer.address) ? 4 : 16;
  if (r.op === 'remove') return 5 + address;
  let n = 9 + address;
  if (r.state) n += 20 + (r.state.deadTsval !== undefined && r.state.peerTsval !== undefined ? 8 : 0) + (r.state.handshake ? 7 : 0);
  if (r.boundary && !r.boundary.atBoundary) n += 1 + Buffer.byteLength(truncateUtf8(r.boundary.reason, MAX_REASON));
  return n;
}

export function encodeRecord(r: ConnectionRecord): Buffer {
  const w = new Writer();
  let flags = r.op === 'upsert' ? 1 : 2;
  if (r.op === 'upsert') {
    if (r.state) flags |= 4;
    if (r.state?.deadTsval !== undefined && r.state.peerTsval !== undefined) flags |= 8;
    if (r.boundary) flags |= 16 | (r.boundary.atBoundary ? 32 : 0);
    if (r.state?.handshake) flags |= 64;
  }
  w.u8(flags).u8(r.service).endpoint(r.peer.address, r.peer.port);
  if (r.op === 'remove') return w.done();
  w.u32(Math.min(0xffffffff, Math.max(0, Math.round(r.ageMs ?? 0))));
  const s = r.state;
  if (s) {
    w.u32(s.deadNextSeq).u32(s.peerNextSeq).u32(s.peerAck).u32(s.deadAck).u16(s.deadWindow).u16(s.peerWindow);
    if (flags & 8) w.u32(s.deadTsval!).u32(s.peerTsval!);
    const h = s.handshake;
    if (h) w.u8(h.deadWscale < 0 ? 255 : h.deadWscale).u8(h.peerWscale < 0 ? 255 : h.peerWscale).u16(h.deadMss).u16(h.peerMss).u8(h.sackPermitted ? 1 : 0);
  }
  if (r.boundary && !r.boundary.atBoundary) w.text(truncateUtf8(r.boundary.reason, MAX_REASON), MAX_REASON);
  return w.done();
}

/** Encodes and signs one datagram; throws RangeError when it would exceed MAX_DATAGRAM. */
export function encodeReplication(env: Envelope, key: Buffer): Buffer {
  for (const n of [env.from, env.to]) {
    const len = Buffer.byteLength(n);
    if (len === 0 || len > MAX_NODE_ID) throw new RangeError(`node id must be 1..${MAX_NODE_ID} bytes: ${n}`);
  }
  if (!Number.isInteger(env.link) || env.link < 0 || env.link > 255) throw new RangeError(`link id must be 0..255: ${env.link}`);
  const w = new Writer().bytes(REPLICATION_MAGIC).u8(VERSION).u8(TYPE_CODES[env.message.type]).u8(env.link);
  w.text(env.from, MAX_NODE_ID).text(env.to, MAX_NODE_ID).u64(env.fromIncarnation).u64(env.toIncarnation).u64(env.seq);
  const m = env.message;
  switch (m.type) {
    case 'subscribe':
      if (m.services.length > MAX_SERVICES) throw new RangeError(`a subscription names 0..${MAX_SERVICES} services, not ${m.services.length}`);
      w.u8(m.services.length);
      for (const s of m.services) {
        if (s.goodbye !== undefined && !GOODBYE_NAME.test(s.goodbye)) throw new RangeError(`bad goodbye name ${s.goodbye}`);
        w.endpoint(s.address, s.port).text(s.goodbye ?? '', 32);
      }
      break;
    case 'sync':
      w.u32(m.epoch).u16(m.part).u8(m.last ? 1 : 0).u16(m.records.length);
      for (const r of m.records) {
        if (r.op !== 'upsert') throw new RangeError('a sync carries upserts only');
        w.bytes(encodeRecord(r));
      }
      break;
    case 'delta':
      w.u32(m.epoch).u16(m.records.length);
      for (const r of m.records) w.bytes(encodeRecord(r));
      break;
    case 'summary':
      w.u32(m.epoch).u32(m.connections).u32(m.pending);
      break;
  }
  const body = w.done();
  const out = Buffer.concat([body, createHmac('sha256', key).update(body).digest()]);
  if (out.length > MAX_DATAGRAM) throw new RangeError(`replication datagram of ${out.length} bytes exceeds ${MAX_DATAGRAM}`);
  return out;
}

// ---- decoding ----

/** An endpoint in a body: family (u8 4|6), its address bytes, a port (u16, not 0). */
function readEndpoint(r: BodyReader): Endpoint {
  const family = r.u8('address family');
  if (family !== 4 && family !== 6) throw new BodyError(`address family ${family}`);
  const address = addressFromBytes(r.bytes(family === 4 ? 4 : 16, 'address'));
  const port = r.u16('port');
  if (port === 0) throw new BodyError('port 0');
  return { address, port };
}

function readRecord(r: BodyReader, syncOnly: boolean): ConnectionRecord {
  const flags = r.u8();
  const opBits = flags & 3;
  if (opBits !== 1 && opBits !== 2) throw new BodyError(`record op ${opBits}`);
  if (flags & 0x80) throw new BodyError('unknown record flags');
  const op = opBits === 1 ? 'upsert' : 'remove';
  if (syncOnly && op !== 'upsert') throw new BodyError('a sync carries upserts only');
  const service = r.u8();
  if (service >= MAX_SERVICES) throw new BodyError(`service index ${service}`);
  const peer = readEndpoint(r);
  if (op === 'remove') {
    if (flags & ~3) throw new BodyError('flags on a remove');
    return { op, service, peer };
  }
  if (flags & (8 | 64) && !(flags & 4)) throw new BodyError('timestamps or options without sequence numbers');
  if (flags & 32 && !(flags & 16)) throw new BodyError('at a boundary without a known boundary');
  const record: ConnectionRecord = { op, service, peer, ageMs: r.u32() };
  if (flags & 4) {
    const state: ReplicatedState = { deadNextSeq: r.u32(), peerNextSeq: r.u32(), peerAck: r.u32(), deadAck: r.u32(), deadWindow: r.u16(), peerWindow: r.u16() };
    if (flags & 8) {
      state.deadTsval = r.u32();
      state.peerTsval = r.u32();
    }
    if (flags & 64) {
      const shift = (v: number) => {
        if (v !== 255 && v > 14) throw new BodyError(`window scale ${v}`);
        return v === 255 ? -1 : v;
      };
      const deadWscale = shift(r.u8());
      const peerWscale = shift(r.u8());
      const deadMss = r.u16();
      const peerMss = r.u16();
      const sack = r.u8();
      if (sack > 1) throw new BodyError('SACK flag');
      state.handshake = { deadWscale, peerWscale, deadMss, peerMss, sackPermitted: sack === 1 };
    }
    record.state = state;
  }
  if (flags & 16) record.boundary = flags & 32 ? { atBoundary: true, reason: 'at a message boundary' } : { atBoundary: false, reason: r.text('boundary reason', 0, MAX_REASON) };
  return record;
}

function readBody(type: MessageType, r: BodyReader): ReplicationMessage {
  switch (type) {
    case 'subscribe': {
      const count = r.u8();
      if (count > MAX_SERVICES) throw new BodyError(`${count} services`);
      const services: ReplicatedService[] = [];
      for (let i = 0; i < count; i++) {
        const { address, port } = readEndpoint(r);
        const goodbye = r.text('goodbye', 0, 32);
        if (goodbye !== '' && !GOODBYE_NAME.test(goodbye)) throw new BodyError('bad goodbye name');
        services.push({ address, port, ...(goodbye ? { goodbye } : {}) });
      }
      return { type, services };
    }
    case 'sync': {
      const epoch = r.u32();
      const part = r.u16();
      const last = r.u8();
      if (last > 1) throw new BodyError('last flag');
      const count = r.u16();
      const records = Array.from({ length: count }, () => readRecord(r, true));
      return { type, epoch, part, last: last === 1, records };
    }
    case 'delta': {
      const epoch = r.u32();
      const count = r.u16();
      return { type, epoch, records: Array.from({ length: count }, () => readRecord(r, false)) };
    }
    case 'summary':
      return { type, epoch: r.u32(), connections: r.u32(), pending: r.u32() };
  }
}

/** The epoch a publisher gives the stream that answers the SUBSCRIBE numbered `seq`. */
export function epochOf(seq: bigint): number {
  return Number(BigInt.asUintN(32, seq));
}

/** Decodes and authenticates; never throws on bad input. */
export function decodeReplication(buf: Buffer, key: Buffer): { ok: true; envelope: Envelope } | { ok: false; reason: WireRejection } {
  if (buf.length < 4 + 4 + 2 + 24 + MAC_LENGTH) return { ok: false, reason: 'short' };
  if (!buf.subarray(0, 4).equals(REPLICATION_MAGIC)) return { ok: false, reason: 'magic' };
  if (buf[4] !== VERSION) return { ok: false, reason: 'version' };
  const type = TYPES_BY_CODE.get(buf[5]!);
  if (!type) return { ok: false, reason: 'type' };
  if (buf.length > MAX_DATAGRAM) return { ok: false, reason: 'length' };
  const bodyEnd = buf.length - MAC_LENGTH;
  const mac = createHmac('sha256', key).update(buf.subarray(0, bodyEnd)).digest();
  if (!timingSafeEqual(mac, buf.subarray(bodyEnd))) return { ok: false, reason: 'hmac' };
  const r = new BodyReader(buf, 6, bodyEnd);
  try {
    const link = r.u8();
    const from = r.text('sender node', 0, MAX_NODE_ID);
    const to = r.text('receiver node', 0, MAX_NODE_ID);
    if (!from || !to) return { ok: false, reason: 'node' };
    const fromIncarnation = r.u64();
    const toIncarnation = r.u64();
    const seq = r.u64();
    const message = readBody(type, r);
    if (!r.atEnd) return { ok: false, reason: 'body' };
    return { ok: true, envelope: { from, to, link, fromIncarnation, toIncarnation, seq, message } };
  } catch (err) {
    if (err instanceof BodyError) return { ok: false, reason: 'body' };
    throw err;
  }
}

function truncateUtf8(s: string, max: number): string {
  let out = s;
  while (Buffer.byteLength(out) > max) out = out.slice(0, -1);
  return out;
}
