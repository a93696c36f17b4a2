// The frames of a segment stream (issue 12's second source): the primary P sends the backup B
// every segment its own capture saw of the services B may continue, over one TCP connection B
// dialled, so B can keep its shadows without a port mirror. Pure: encoding and a streaming
// decoder, no I/O (segment-stream-source.ts is P's end, peer-shadow.ts is B's).
//
// As the log mirror's wire (src/log/mirror-wire.ts; what both share is in
// src/wire/signed-frames.ts): every frame is length-prefixed and authenticated with HMAC-SHA256
// under a shared key; the MAC covers a random nonce from each end for this connection and a
// sequence number per direction, so a frame recorded on one connection is refused on any other
// (another nonce) and a frame replayed, dropped or reordered within one is refused too (the
// sequence). The frames are not encrypted: client payload crosses the link
// in clear (run it on a trusted link, or inside a tunnel).
//
// Layout (big endian, network order):
//    0  4  frame length: the bytes after this field, MAC included (u32)
//    4  4  magic "TKSS"
//    8  1  version 2 (1 had no time in LOSS)
//    9  1  type: 1 HELLO, 2 WELCOME, 3 SEGMENTS, 4 LOSS, 5 MARK, 6 ACK
//   10  8  the backup's nonce for this connection (u64, random, not 0)
//   18  8  the primary's nonce for this connection (u64, random, not 0; 0 in HELLO)
//   26  8  sequence (u64): 0 for each direction's first frame (HELLO, WELCOME), then +1 per frame
//   34  .. body
//  end-32  HMAC-SHA256 of every byte before it (the length field included)
// Bodies (text: u8 length + UTF-8; addresses as text, the canonical form; times: f64 ms since
// the epoch, sub-ms kept):
//   HELLO    (B -> P, first) B's node (text 1..64) | count (u8, 1..16) | per service: address
//            (text 2..45) | port (u16, 1..65535)
//   WELCOME  (P -> B, first) P's node (text 1..64) | refusal (u8: 0 accepted, 1 services,
//            2 capture, 3 node, 4 closing) | reason (text 0..200)
//   SEGMENTS (P -> B) count (u32) | address table: n (u16) | n x address (text 2..45) | count x
//            segment: present (u8: 1 mss, 2 wscale, 4 sackPermitted given, 8 timestamps,
//            16 payload, 32 timeMs, 64 sackPermitted's value) | src (u16 index) | dst (u16
//            index) | sport (u16) | dport (u16) | seq (u32) | ack (u32) | flags (u16) | window
//            (u16, raw) | urgent pointer (u16) | payload length (u32, from the IP header)
//            | [mss u16] | [wscale u8] | [tsval u32 | tsecr u32] | [timeMs f64]
//            | [payload: u32 length | bytes (what was captured, up to the payload length)]
//   LOSS     (P -> B) frames (u64 < 2^53, > 0) | time T (f64): P's capture dropped that many
//            frames since the last LOSS, after the segments sent before this frame; T is when it
//            counted them (capture clock): segments captured before T may still follow (its ring
//            held them), and a connection whose SYN is among them is as suspect as an open one
//   MARK     (P -> B, at least every 50 ms) capture time T (f64): every segment P's capture took
//            up to T has been sent before this frame (or a LOSS said it was lost)
//   ACK      (B -> P) the sequence number of the last P frame B has taken (u64) | the T of the
//            last MARK taken (f64; 0 when none). B sends one after the WELCOME (P streams only
//            once it has it: it covers P's fresh nonce, which a replayed HELLO cannot), then for
//            every MARK and at most one per chunk of SEGMENTS read.
import net from 'node:net';
import type { ParsedSegment } from '../../native.js';
import { BodyError, type BodyReader } from '../../wire/body-reader.js';
import { checkU64, checkWireKey, FrameFormat, fitText, MAC_BYTES, sequenceRefusal, SignedFrameReader, type WireReadResult, type WireRejection } from '../../wire/signed-frames.js';
import { canonicalAddress, type Endpoint } from '../endpoint.js';

export const SEGMENT_MAGIC = Buffer.from('TKSS', 'ascii');
export const SEGMENT_WIRE_VERSION = 2;
/** Bytes from the frame's start (its length field) to the body. */
export const SEGMENT_HEADER_BYTES = 34;
/** Shared keys shorter than this are refused (128 bits, as the agent's key file). */
export const MIN_SEGMENT_KEY_BYTES = 16;
export const MAX_NODE_BYTES = 64;
const MAX_REASON_BYTES = 200;
/** Services one HELLO may ask for. */
export const MAX_STREAM_SERVICES = 16;
/** The largest frame a reader accepts by default, bytes (length field included). */
export const DEFAULT_MAX_SEGMENT_FRAME_BYTES = 4 * 1024 * 1024;
/** How many body bytes a source packs into one SEGMENTS frame by default (then a new frame). */
export const DEFAULT_SEGMENTS_FRAME_BODY_BYTES = 1024 * 1024;
/** The largest payload one segment may carry on the wire (a GSO frame is at most 64 KiB; BIG TCP up to 512 KiB). */
export const MAX_WIRE_PAYLOAD_BYTES = 512 * 1024;

export type SegmentMessageType = 'hello' | 'welcome' | 'segments' | 'loss' | 'mark' | 'ack';
const FORMAT = new FrameFormat<SegmentMessageType>('segment stream', SEGMENT_MAGIC, SEGMENT_WIRE_VERSION, { hello: 1, welcome: 2, segments: 3, loss: 4, mark: 5, ack: 6 }, SEGMENT_HEADER_BYTES);

/** Why a primary refuses a backup in its WELCOME. */
export type WelcomeRefusal =
  /** A service the HELLO named cannot be streamed (not served here, too many hosts or ports). */
  | 'services'
  /** The capture could not be opened (permissions, the addon). */
  | 'capture'
  /** The backup is not one this primary streams to. */
  | 'node'
  /** The primary is closing its source. */
  | 'closing';
const REFUSAL_CODES: Record<WelcomeRefusal, number> = { services: 1, capture: 2, node: 3, closing: 4 };
const REFUSALS_BY_CODE = new Map(Object.entries(REFUSAL_CODES).map(([k, v]) => [v, k as WelcomeRefusal]));

export type SegmentMessage =
  | { type: 'hello'; node: string; services: Endpoint[] }
  | { type: 'welcome'; node: string; refusal: WelcomeRefusal | null; reason: string }
  | { type: 'segments'; segments: ParsedSegment[] }
  | { type: 'loss'; frames: number; timeMs: number }
  | { type: 'mark'; timeMs: number }
  | { type: 'ack'; frameSeq: bigint; markMs: number };

export interface SegmentFrame {
  backupNonce: bigint;
  /** 0 in HELLO. */
  primaryNonce: bigint;
  seq: bigint;
  message: SegmentMessage;
}

/**
 * Why the decoder refused the bytes it was given (src/wire/signed-frames.ts). After one, the
 * stream is dead: close it. Here 'session' is nonces of another connection, 'unexpected' is e.g.
 * a second HELLO, SEGMENTS before WELCOME, anything after a refusing WELCOME.
 */
export type SegmentRejection = WireRejection;

export type SegmentReadResult = WireReadResult<SegmentFrame>;

/** Throws TypeError/RangeError unless `key` is a Buffer of at least MIN_SEGMENT_KEY_BYTES. */
export function checkSegmentKey(key: Buffer): void {
  checkWireKey(key, "the segment stream's key", MIN_SEGMENT_KEY_BYTES);
}

/** Throws RangeError unless the services fit a HELLO: 1..16, IP addresses, ports 1..65535. */
export function checkStreamServices(services: readonly Endpoint[]): void {
  if (services.length === 0 || services.length > MAX_STREAM_SERVICES) throw new RangeError(`a segment stream carries 1..${MAX_STREAM_SERVICES} services (got ${services.length})`);
  for (const s of services) {
    if (net.isIP(s.address) === 0) throw new RangeError(`service address ${s.address} is not an IP address`);
    if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) throw new RangeError(`service port ${s.port} is not 1..65535`);
  }
}

// ---- encoding ----

function checkUint(what: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${what} ${v} is not an integer in 0..${max}`);
}

function checkTime(what: string, v: number): void {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${what} ${v} is not a time (ms since the epoch)`);
}

function textBytes(what: string, s: string, min: number, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length < min || b.length > max) throw new RangeError(`${what} must be ${min}..${max} bytes: ${JSON.stringify(s.slice(0, 40))}`);
  return b;
}

/** Fixed bytes of one segment on the wire (present byte to payload length). */
const SEGMENT_FIXED_BYTES = 1 + 2 + 2 + 2 + 2 + 4 + 4 + 2 + 2 + 2 + 4;

/** Bytes one segment takes in a SEGMENTS body besides its addresses' table entries. */
export function segmentWireBytes(s: ParsedSegment): number {
  let n = SEGMENT_FIXED_BYTES;
  if (s.mss !== undefined) n += 2;
  if (s.wscale !== undefined) n += 1;
  if (s.tsval !== undefined || s.tsecr !== undefined) n += 8;
  if (s.timeMs !== undefined) n += 8;
  if (s.payload !== undefined) n += 4 + s.payload.length;
  return n;
}

/**
 * Splits captured segments into groups whose SEGMENTS bodies stay within `maxBodyBytes` (a
 * segment larger than that alone goes in a group of its own), in order.
 */
export function splitSegments(segments: readonly ParsedSegment[], maxBodyBytes = DEFAULT_SEGMENTS_FRAME_BODY_BYTES): ParsedSegment[][] {
  const out: ParsedSegment[][] = [];
  let group: ParsedSegment[] = [];
  let addresses = new Set<string>();
  let size = 6;
  for (const s of segments) {
    let add = segmentWireBytes(s);
    if (!addresses.has(s.src)) add += 1 + Buffer.byteLength(s.src);
    if (!addresses.has(s.dst) && s.dst !== s.src) add += 1 + Buffer.byteLength(s.dst);
    if (group.length > 0 && (size + add > maxBodyBytes || addresses.size >= 0xfffe)) {
      out.push(group);
      group = [];
      addresses = new Set();
      size = 6;
      add = segmentWireBytes(s) + 2 + Buffer.byteLength(s.src) + Buffer.byteLength(s.dst);
    }
    group.push(s);
    addresses.add(s.src);
    addresses.add(s.dst);
    size += add;
  }
  if (group.length > 0) out.push(group);
  return out;
}

const P_MSS = 1;
const P_WSCALE = 2;
const P_SACK_GIVEN = 4;
const P_TIMESTAMPS = 8;
const P_PAYLOAD = 16;
const P_TIME = 32;
const P_SACK_VALUE = 64;
const P_KNOWN = 127;

/**
 * A SEGMENTS body written in place at `room` bytes into a buffer that also has `tail` bytes after
 * it (the frame's header and MAC: the body of a megabyte is not copied again into its frame).
 */
function segmentsBody(segments: readonly ParsedSegment[], room = 0, tail = 0): Buffer {
  if (segments.length > 0xffffffff) throw new RangeError('too many segments for one frame');
  const table = new Map<string, number>();
  const names: Buffer[] = [];
  let size = 4 + 2;
  const index = (address: string): number => {
    let i = table.get(address);
    if (i === undefined) {
      if (net.isIP(address) === 0) throw new RangeError(`segment address ${address} is not an IP address`);
      if (table.size >= 0xffff) throw new RangeError('more than 65535 addresses in one SEGMENTS frame');
      i = table.size;
      table.set(address, i);
      const b = textBytes('address', address, 2, 45);
      names.push(b);
      size += 1 + b.length;
    }
    return i;
  };
  for (const s of segments) {
    index(s.src);
    index(s.dst);
    if (s.payload !== undefined && s.payload.length > MAX_WIRE_PAYLOAD_BYTES) throw new RangeError(`a segment payload of ${s.payload.length} bytes, the most is ${MAX_WIRE_PAYLOAD_BYTES}`);
    size += segmentWireBytes(s);
  }
  const b = Buffer.allocUnsafe(room + size + tail);
  let o = b.writeUInt32BE(segments.length, room);
  o = b.writeUInt16BE(names.length, o);
  for (const n of names) {
    o = b.writeUInt8(n.length, o);
    o += n.copy(b, o);
  }
  for (const s of segments) {
    checkUint('sport', s.sport, 0xffff);
    checkUint('dport', s.dport, 0xffff);
    checkUint('seq', s.seq, 0xffffffff);
    checkUint('ack', s.ack, 0xffffffff);
    checkUint('flags', s.flags, 0xffff);
    checkUint('window', s.window, 0xffff);
    checkUint('urgent pointer', s.urgentPointer, 0xffff);
    checkUint('payload length', s.payloadLength, 0xffffffff);
    const ts = s.tsval !== undefined || s.tsecr !== undefined;
    const present =
      (s.mss !== undefined ? P_MSS : 0) |
      (s.wscale !== undefined ? P_WSCALE : 0) |
      (s.sackPermitted !== undefined ? P_SACK_GIVEN | (s.sackPermitted ? P_SACK_VALUE : 0) : 0) |
      (ts ? P_TIMESTAMPS : 0) |
      (s.payload !== undefined ? P_PAYLOAD : 0) |
      (s.timeMs !== undefined ? P_TIME : 0);
    o = b.writeUInt8(present, o);
    o = b.writeUInt16BE(table.get(s.src)!, o);
    o = b.writeUInt16BE(table.get(s.dst)!, o);
    o = b.writeUInt16BE(s.sport, o);
    o = b.writeUInt16BE(s.dport, o);
    o = b.writeUInt32BE(s.seq, o);
    o = b.writeUInt32BE(s.ack, o);
    o = b.writeUInt16BE(s.flags, o);
    o = b.writeUInt16BE(s.window, o);
    o = b.writeUInt16BE(s.urgentPointer, o);
    o = b.writeUInt32BE(s.payloadLength, o);
    if (s.mss !== undefined) {
      checkUint('mss', s.mss, 0xffff);
      o = b.writeUInt16BE(s.mss, o);
    }
    if (s.wscale !== undefined) {
      checkUint('wscale', s.wscale, 0xff);
      o = b.writeUInt8(s.wscale, o);
    }
    if (ts) {
      checkUint('tsval', s.tsval ?? 0, 0xffffffff);
      checkUint('tsecr', s.tsecr ?? 0, 0xffffffff);
      o = b.writeUInt32BE(s.tsval ?? 0, o);
      o = b.writeUInt32BE(s.tsecr ?? 0, o);
    }
    if (s.timeMs !== undefined) {
      checkTime('timeMs', s.timeMs);
      o = b.writeDoubleBE(s.timeMs, o);
    }
    if (s.payload !== undefined) {
      o = b.writeUInt32BE(s.payload.length, o);
      o += s.payload.copy(b, o);
    }
  }
  return b;
}

function bodyOf(m: SegmentMessage): Buffer {
  switch (m.type) {
    case 'hello': {
      const node = textBytes('node', m.node, 1, MAX_NODE_BYTES);
      checkStreamServices(m.services);
      const addrs = m.services.map((s) => textBytes('address', s.address, 2, 45));
      const b = Buffer.alloc(1 + node.length + 1 + addrs.reduce((n, a) => n + 1 + a.length + 2, 0));
      let o = b.writeUInt8(node.length, 0);
      o += node.copy(b, o);
      o = b.writeUInt8(m.services.length, o);
      m.services.forEach((s, i) => {
        o = b.writeUInt8(addrs[i]!.length, o);
        o += addrs[i]!.copy(b, o);
        o = b.writeUInt16BE(s.port, o);
      });
      return b;
    }
    case 'welcome': {
      const node = textBytes('node', m.node, 1, MAX_NODE_BYTES);
      const reason = fitText(m.reason, MAX_REASON_BYTES);
      const b = Buffer.alloc(1 + node.length + 1 + 1 + reason.length);
      let o = b.writeUInt8(node.length, 0);
      o += node.copy(b, o);
      o = b.writeUInt8(m.refusal === null ? 0 : REFUSAL_CODES[m.refusal], o);
      o = b.writeUInt8(reason.length, o);
      reason.copy(b, o);
      return b;
    }
    case 'segments':
      return segmentsBody(m.segments);
    case 'loss': {
      if (!Number.isSafeInteger(m.frames) || m.frames < 1) throw new RangeError(`LOSS of ${m.frames} frames`);
      checkTime('loss time', m.timeMs);
      const b = Buffer.alloc(16);
      b.writeBigUInt64BE(BigInt(m.frames), 0);
      b.writeDoubleBE(m.timeMs, 8);
      return b;
    }
    case 'mark': {
      checkTime('mark time', m.timeMs);
      const b = Buffer.alloc(8);
      b.writeDoubleBE(m.timeMs, 0);
      return b;
    }
    case 'ack': {
      checkU64('frame sequence', m.frameSeq);
      checkTime('mark time', m.markMs);
      const b = Buffer.alloc(16);
      b.writeBigUInt64BE(m.frameSeq, 0);
      b.writeDoubleBE(m.markMs, 8);
      return b;
    }
  }
}

/**
 * One signed frame, ready for the socket. Throws TypeError/RangeError on values the wire cannot
 * carry (a name too long, a field out of range, a key shorter than MIN_SEGMENT_KEY_BYTES, a
 * frame above 4 GiB); nothing is written then.
 */
export function encodeSegmentFrame(frame: SegmentFrame, key: Buffer): Buffer {
  checkSegmentKey(key);
  checkU64('backup nonce', frame.backupNonce);
  checkU64('primary nonce', frame.primaryNonce);
  checkU64('sequence', frame.seq);
  let b: Buffer;
  if (frame.message.type === 'segments') {
    b = segmentsBody(frame.message.segments, SEGMENT_HEADER_BYTES, MAC_BYTES);
  } else {
    const body = bodyOf(frame.message);
    b = FORMAT.alloc(body.length);
    body.copy(b, SEGMENT_HEADER_BYTES);
  }
  b.writeBigUInt64BE(frame.backupNonce, 10);
  b.writeBigUInt64BE(frame.primaryNonce, 18);
  b.writeBigUInt64BE(frame.seq, 26);
  return FORMAT.seal(b, frame.message.type, key);
}

// ---- decoding ----

/** An address of the wire (text) checked and in canonical form. */
function readAddress(r: BodyReader, what: string): { address: string; family: 4 | 6 } {
  const t = r.text(what, 2, 45);
  const family = net.isIP(t);
  if (family === 0) throw new BodyError(`${what} ${JSON.stringify(t)} is not an IP address`);
  return { address: canonicalAddress(t), family: family as 4 | 6 };
}

function readTime(r: BodyReader, what: string): number {
  const v = r.bytes(8, what).readDoubleBE(0);
  if (!Number.isFinite(v) || v < 0) throw new BodyError(`${what} ${v} is not a time`);
  return v;
}

function readSegments(r: BodyReader): ParsedSegment[] {
  const count = r.u32('segment count');
  const n = r.u16('address count');
  const table: { address: string; family: 4 | 6 }[] = [];
  for (let i = 0; i < n; i++) table.push(readAddress(r, 'address'));
  const address = (i: number) => {
    const a = table[i];
    if (!a) throw new BodyError(`address index ${i} of a table of ${table.length}`);
    return a;
  };
  // Each segment reads at least SEGMENT_FIXED_BYTES: a count the body cannot hold ends in a
  // 'truncated' BodyError within the body's length, whatever the count says.
  const segments: ParsedSegment[] = [];
  for (let i = 0; i < count; i++) {
    const present = r.u8('segment');
    if ((present & ~P_KNOWN) !== 0 || ((present & P_SACK_VALUE) !== 0 && (present & P_SACK_GIVEN) === 0)) throw new BodyError(`segment ${i}: present bits ${present.toString(2)}`);
    const src = address(r.u16('segment'));
    const dst = address(r.u16('segment'));
    if (src.family !== dst.family) throw new BodyError(`segment ${i}: ${src.address} to ${dst.address} mixes families`);
    const s: ParsedSegment = {
      family: src.family,
      src: src.address,
      dst: dst.address,
      sport: r.u16('segment'),
      dport: r.u16('segment'),
      seq: r.u32('segment'),
      ack: r.u32('segment'),
      flags: r.u16('segment'),
      window: r.u16('segment'),
      urgentPointer: r.u16('segment'),
      payloadLength: r.u32('segment'),
    };
    if (present & P_MSS) s.mss = r.u16('mss');
    if (present & P_WSCALE) s.wscale = r.u8('wscale');
    if (present & P_SACK_GIVEN) s.sackPermitted = (present & P_SACK_VALUE) !== 0;
    if (present & P_TIMESTAMPS) {
      s.tsval = r.u32('tsval');
      s.tsecr = r.u32('tsecr');
    }
    if (present & P_TIME) s.timeMs = readTime(r, 'timeMs');
    if (present & P_PAYLOAD) {
      const view = r.lengthPrefixed('payload', MAX_WIRE_PAYLOAD_BYTES);
      if (view.length > s.payloadLength) throw new BodyError(`segment ${i}: ${view.length} payload bytes, its payload length is ${s.payloadLength}`);
      // A copy of its own: the shadow may keep a payload for long (an unanswered request), and a
      // view would keep the whole frame (up to megabytes) alive with it.
      const own = Buffer.allocUnsafeSlow(view.length);
      view.copy(own);
      s.payload = own;
    }
    segments.push(s);
  }
  return segments;
}

function readBody(type: SegmentMessageType, r: BodyReader): SegmentMessage {
  switch (type) {
    case 'hello': {
      const node = r.text('node', 1, MAX_NODE_BYTES);
      const count = r.u8('service count');
      if (count < 1 || count > MAX_STREAM_SERVICES) throw new BodyError(`${count} services (1..${MAX_STREAM_SERVICES})`);
      const services: Endpoint[] = [];
      for (let i = 0; i < count; i++) {
        const { address } = readAddress(r, 'service address');
        const port = r.u16('service port');
        if (port === 0) throw new BodyError('service port 0');
        services.push({ address, port });
      }
      return { type, node, services };
    }
    case 'welcome': {
      const node = r.text('node', 1, MAX_NODE_BYTES);
      const code = r.u8('refusal');
      const refusal = code === 0 ? null : REFUSALS_BY_CODE.get(code);
      if (refusal === undefined) throw new BodyError(`refusal code ${code}`);
      const reason = r.text('reason', 0, MAX_REASON_BYTES);
      return { type, node, refusal, reason };
    }
    case 'segments':
      return { type, segments: readSegments(r) };
    case 'loss':
      return { type, frames: r.safeInt('lost frames', 1), timeMs: readTime(r, 'loss time') };
    case 'mark':
      return { type, timeMs: readTime(r, 'mark time') };
    case 'ack':
      return { type, frameSeq: r.u64('frame sequence'), markMs: readTime(r, 'mark time') };
  }
}

/**
 * Decodes one whole frame (its length field included) and checks its MAC. The protocol's order
 * is not checked here (SegmentFrameReader does). Never throws on bad input.
 */
export function decodeSegmentFrame(buf: Buffer, key: Buffer): SegmentReadResult {
  return FORMAT.decode(buf, key, (type, r) => ({ backupNonce: buf.readBigUInt64BE(10), primaryNonce: buf.readBigUInt64BE(18), seq: buf.readBigUInt64BE(26), message: readBody(type, r) }));
}

/** The end of the connection whose frames a reader takes. */
export type SegmentStreamRole =
  /** P's reader: the backup's HELLO, then (after accept()) its ACKs. */
  | { role: 'primary' }
  /** B's reader: P's WELCOME for this connection's nonce, then SEGMENTS, LOSS and MARK. */
  | { role: 'backup'; nonce: bigint };

export interface SegmentFrameReaderOptions {
  key: Buffer;
  /** The largest frame accepted, bytes (length field included). Default 4 MiB. */
  maxFrameBytes?: number;
}

/**
 * A streaming decoder for one connection (SignedFrameReader: `push()`, `finish()`, `failed`,
 * `pendingBytes`): `push()` takes the socket's chunks as they come and returns the whole frames
 * they complete, each checked (length, magic, version, type, MAC, body) and in protocol order for
 * this end (HELLO/WELCOME first, sequence numbers 0, 1, 2..., the same nonces on every frame,
 * nothing after a refusing WELCOME). The first bad frame ends the stream: it is returned as a
 * rejection, and everything after it is ignored (close the connection).
 *
 * Memory: at most one frame (maxFrameBytes) plus one chunk is buffered.
 */
export class SegmentFrameReader extends SignedFrameReader<SegmentFrame> {
  private readonly key: Buffer;
  private backupNonce: bigint | null;
  private primaryNonce: bigint | null = null;
  private accepted = false;
  private refused = false;

  /** Throws RangeError on a short key or a maxFrameBytes below 1 KiB. */
  constructor(
    private readonly end: SegmentStreamRole,
    options: SegmentFrameReaderOptions,
  ) {
    checkSegmentKey(options.key);
    const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_SEGMENT_FRAME_BYTES;
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1024) throw new RangeError(`maxFrameBytes ${maxFrameBytes} is too small (1024 at least)`);
    super(FORMAT, maxFrameBytes);
    this.key = options.key;
    this.backupNonce = end.role === 'backup' ? end.nonce : null;
  }

  /** P's reader, once its WELCOME (accepting) is sent with `primaryNonce`. Throws unless a HELLO was read. */
  accept(primaryNonce: bigint): void {
    if (this.end.role !== 'primary' || this.backupNonce === null) throw new Error('accept() is for a primary reader after the HELLO');
    this.primaryNonce = primaryNonce;
    this.accepted = true;
  }

  protected decode(buf: Buffer): SegmentReadResult {
    return decodeSegmentFrame(buf, this.key);
  }

  protected checkOrder(f: SegmentFrame): { reason: SegmentRejection; detail: string } | null {
    const type = f.message.type;
    const first = this.expectedSeq === 0n;
    if (this.end.role === 'primary') {
      if (first ? type !== 'hello' : type !== 'ack' || !this.accepted) return { reason: 'unexpected', detail: `${type} from the backup ${first ? 'before its HELLO' : this.accepted ? 'after the handshake' : 'before the WELCOME was sent'}` };
    } else if (this.refused || (first ? type !== 'welcome' : type === 'welcome' || type === 'hello' || type === 'ack')) {
      return { reason: 'unexpected', detail: `${type} from the primary ${this.refused ? 'after a refusal' : first ? 'before its WELCOME' : 'after the WELCOME'}` };
    }
    if (f.seq !== this.expectedSeq) return sequenceRefusal(type, f.seq, this.expectedSeq);
    if (first && this.end.role === 'primary') {
      if (f.primaryNonce !== 0n || f.backupNonce === 0n) return { reason: 'session', detail: 'a HELLO with a primary nonce, or without its own' };
      this.backupNonce = f.backupNonce;
      return null;
    }
    if (first) {
      if (f.backupNonce !== this.backupNonce || f.primaryNonce === 0n) return { reason: 'session', detail: 'a WELCOME for another backup connection' };
      this.primaryNonce = f.primaryNonce;
      if (f.message.type === 'welcome' && f.message.refusal !== null) this.refused = true;
      return null;
    }
    if (f.backupNonce !== this.backupNonce || f.primaryNonce !== this.primaryNonce) return { reason: 'session', detail: `${type} of another connection (nonces differ)` };
    return null;
  }
}
