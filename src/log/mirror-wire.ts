// The frames a primary and its backup exchange over one TCP connection to mirror the log (seed
// 004: the replication agents RA_P and RA_B, step 250's sub-steps 251-256). Pure: encoding and a
// streaming decoder, no I/O. docs/MIRRORED-LOG.md draws the layout.
//
// Every frame is length-prefixed and authenticated with HMAC-SHA256 under a shared key (as the
// heartbeats and the connection replication are). The MAC covers both ends' incarnations, a
// random nonce from each end for this connection, and a sequence number per direction, so a
// frame recorded on one connection is refused on any other (another nonce) and a frame replayed,
// dropped or reordered within one is refused too (the sequence).
//
// Layout (big endian, network order):
//    0  4  frame length: the bytes after this field, MAC included (u32)
//    4  4  magic "TKML"
//    8  1  version 2 (2 added START's CRC and the resync answer)
//    9  1  type: 1 HELLO, 2 START, 3 RECORDS, 4 ACK
//   10  8  sender's incarnation (u64)
//   18  8  receiver's incarnation (u64; 0 in HELLO: the backup does not know it yet)
//   26  8  the backup's nonce for this connection (u64, random, not 0)
//   34  8  the primary's nonce for this connection (u64, random, not 0; 0 in HELLO)
//   42  8  sequence (u64): 0 for each direction's first frame (HELLO, START), then +1 per frame
//   50  .. body
//  end-32  HMAC-SHA256 of every byte before it (the length field included)
// Bodies (text: u8 length + UTF-8; LSNs u64 below 2^53):
//   HELLO   (backup -> primary, first) log name (text 1..64) | backup node (text 1..64)
//           | first LSN of the backup's log | held LSN: it holds every record below
//           | CRC32C of the record just below the held LSN (u32; 0 when it holds none)
//   START   (primary -> backup, first) primary node (text 1..64) | from LSN: the first record it
//           will send (= the HELLO's held LSN when accepted) | CRC32C of the primary's record
//           just below the from LSN (u32; 0 when there is none) | refusal (u8: 0 accepted,
//           1 diverged, 2 behind, 3 log, 4 node, 5 resync: cut your log to the from LSN, whose
//           record below must have that CRC, and connect again) | reason (text 0..200)
//   RECORDS (primary -> backup) first LSN | count (u32) | per record: length (u32) | bytes.
//           Count 0 is the keepalive: the backup answers every RECORDS frame with an ACK, so an
//           idle link is still seen to be alive.
//   ACK     (backup -> primary) held LSN (every record below is in the backup's memory)
//           | durable LSN (every record below is on its disk) | sequence number of the last
//           primary frame it has taken (u64)
import { createHmac, timingSafeEqual } from 'node:crypto';
import { BodyError, BodyReader } from '../wire/body-reader.js';

export const MIRROR_MAGIC = Buffer.from('TKML', 'ascii');
export const MIRROR_VERSION = 2;
const MAC_BYTES = 32;
/** Bytes from the frame's start (its length field) to the body. */
export const MIRROR_HEADER_BYTES = 50;
/** The smallest frame: header, an empty body, MAC. */
const MIN_FRAME_BYTES = MIRROR_HEADER_BYTES + MAC_BYTES;
/** Bytes of a RECORDS frame besides its records' bytes: header, first LSN, count, MAC. */
export const RECORDS_OVERHEAD = MIRROR_HEADER_BYTES + 12 + MAC_BYTES;
/** And per record: its length field. */
export const RECORD_HEAD_BYTES = 4;
/** Shared keys shorter than this are refused (as the agent's key file: 128 bits). */
export const MIN_KEY_BYTES = 16;
export const MAX_NAME_BYTES = 64;
const MAX_REASON_BYTES = 200;
/** The largest record by default (as the log's default), bytes. */
export const DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024;

export type MirrorMessageType = 'hello' | 'start' | 'records' | 'ack';
const TYPE_CODES: Record<MirrorMessageType, number> = { hello: 1, start: 2, records: 3, ack: 4 };
const TYPES_BY_CODE = new Map(Object.entries(TYPE_CODES).map(([k, v]) => [v, k as MirrorMessageType]));

/** Why a primary refuses a backup in its START. */
export type StartRefusal =
  /** The backup holds records the primary does not, or other ones. */
  | 'diverged'
  /** The backup lacks records the primary no longer has (they are below its log's first LSN). */
  | 'behind'
  /** The backup mirrors another log (the names differ). */
  | 'log'
  /** The backup is not the node the primary was told to mirror to. */
  | 'node'
  /**
   * The backup holds records past a point where this primary's history forked from the one the
   * backup followed (this primary took over there): it must cut its log back to the START's
   * from LSN and connect again (seed 004 step 465, the returning primary resynchronised).
   */
  | 'resync';
const REFUSAL_CODES: Record<StartRefusal, number> = { diverged: 1, behind: 2, log: 3, node: 4, resync: 5 };
const REFUSALS_BY_CODE = new Map(Object.entries(REFUSAL_CODES).map(([k, v]) => [v, k as StartRefusal]));

export type MirrorMessage =
  | { type: 'hello'; log: string; node: string; firstLsn: number; heldLsn: number; lastCrc: number }
  | { type: 'start'; node: string; fromLsn: number; prevCrc: number; refusal: StartRefusal | null; reason: string }
  | { type: 'records'; firstLsn: number; records: Buffer[] }
  | { type: 'ack'; heldLsn: number; durableLsn: number; frameSeq: bigint };

/** What every frame carries besides its message: who, which lives, which connection, which frame. */
export interface MirrorEnvelope {
  senderIncarnation: bigint;
  /** 0 in HELLO. */
  receiverIncarnation: bigint;
  backupNonce: bigint;
  /** 0 in HELLO. */
  primaryNonce: bigint;
  seq: bigint;
}

export interface MirrorFrame extends MirrorEnvelope {
  message: MirrorMessage;
}

/** Why the decoder refused the bytes it was given. After one, the stream is dead: close it. */
export type MirrorRejection =
  /** A length field below the smallest frame, or the stream ended inside a frame. */
  | 'short'
  | 'magic'
  | 'version'
  /** An unknown type code. */
  | 'type'
  /** A length field above the largest frame allowed. */
  | 'length'
  /** The MAC does not match (another key, or altered bytes). */
  | 'hmac'
  /** The body is malformed (truncated, trailing bytes, a value out of range, a record too large). */
  | 'body'
  /** Not the sequence number expected: a frame replayed, lost or reordered. */
  | 'sequence'
  /** Incarnations or nonces of another connection (a frame recorded elsewhere). */
  | 'session'
  /** A message that may not come from this side, or not now (a second HELLO, RECORDS before START). */
  | 'unexpected';

export type MirrorReadResult = { ok: true; frame: MirrorFrame } | { ok: false; reason: MirrorRejection; detail: string };

const U64_MAX = (1n << 64n) - 1n;

/** Throws RangeError unless `key` is a Buffer of at least MIN_KEY_BYTES. */
export function checkMirrorKey(key: Buffer): void {
  if (!Buffer.isBuffer(key)) throw new TypeError(`the mirror's key must be a Buffer (got ${typeof key}): Buffer.from(text) or a file's bytes`);
  if (key.length < MIN_KEY_BYTES) throw new RangeError(`the mirror's key must be at least ${MIN_KEY_BYTES} bytes (got ${key.length})`);
}

/** Throws RangeError unless `name` is 1..64 bytes of UTF-8 (a log's or a node's name). */
export function checkMirrorName(what: string, name: string): void {
  const n = Buffer.byteLength(name);
  if (n === 0 || n > MAX_NAME_BYTES) throw new RangeError(`${what} must be 1..${MAX_NAME_BYTES} bytes: ${JSON.stringify(name)}`);
}

/** How many bytes of records (their length fields included) a primary packs in a frame by default. */
export const DEFAULT_FRAME_RECORD_BYTES = 256 * 1024;

/**
 * The decoder's default bound on a frame, bytes: a frame packed to DEFAULT_FRAME_RECORD_BYTES,
 * or one record of `maxRecordBytes` alone, whichever is larger.
 */
export function frameBytesFor(maxRecordBytes: number): number {
  return RECORDS_OVERHEAD + Math.max(DEFAULT_FRAME_RECORD_BYTES, RECORD_HEAD_BYTES + maxRecordBytes);
}

// ---- encoding ----

function checkLsn(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${what} ${v} is not an LSN`);
}

function checkU64(what: string, v: bigint): void {
  if (v < 0n || v > U64_MAX) throw new RangeError(`${what} ${v} is not a u64`);
}

function textBytes(s: string, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > max) throw new RangeError(`text longer than ${max} bytes: ${s.slice(0, 40)}`);
  return b;
}

/** A reason cut to fit its field (on a character boundary). */
function fitReason(s: string): Buffer {
  let out = s;
  while (Buffer.byteLength(out) > MAX_REASON_BYTES) out = out.slice(0, -1);
  return Buffer.from(out, 'utf8');
}

/** The body's bytes, or for RECORDS its size (written in place by encodeMirrorFrame). */
function bodyOf(m: MirrorMessage): Buffer {
  switch (m.type) {
    case 'hello': {
      checkMirrorName('log name', m.log);
      checkMirrorName('node', m.node);
      checkLsn('first LSN', m.firstLsn);
      checkLsn('held LSN', m.heldLsn);
      const log = textBytes(m.log, MAX_NAME_BYTES);
      const node = textBytes(m.node, MAX_NAME_BYTES);
      const b = Buffer.alloc(2 + log.length + node.length + 20);
      let o = b.writeUInt8(log.length, 0);
      o += log.copy(b, o);
      o = b.writeUInt8(node.length, o);
      o += node.copy(b, o);
      o = b.writeBigUInt64BE(BigInt(m.firstLsn), o);
      o = b.writeBigUInt64BE(BigInt(m.heldLsn), o);
      b.writeUInt32BE(m.lastCrc >>> 0, o);
      return b;
    }
    case 'start': {
      checkMirrorName('node', m.node);
      checkLsn('from LSN', m.fromLsn);
      const node = textBytes(m.node, MAX_NAME_BYTES);
      const reason = fitReason(m.reason);
      const b = Buffer.alloc(1 + node.length + 8 + 4 + 1 + 1 + reason.length);
      let o = b.writeUInt8(node.length, 0);
      o += node.copy(b, o);
      o = b.writeBigUInt64BE(BigInt(m.fromLsn), o);
      o = b.writeUInt32BE(m.prevCrc >>> 0, o);
      o = b.writeUInt8(m.refusal === null ? 0 : REFUSAL_CODES[m.refusal], o);
      o = b.writeUInt8(reason.length, o);
      reason.copy(b, o);
      return b;
    }
    case 'ack': {
      checkLsn('held LSN', m.heldLsn);
      checkLsn('durable LSN', m.durableLsn);
      checkU64('frame sequence', m.frameSeq);
      const b = Buffer.alloc(24);
      b.writeBigUInt64BE(BigInt(m.heldLsn), 0);
      b.writeBigUInt64BE(BigInt(m.durableLsn), 8);
      b.writeBigUInt64BE(m.frameSeq, 16);
      return b;
    }
    case 'records': {
      checkLsn('first LSN', m.firstLsn);
      if (!Number.isSafeInteger(m.firstLsn + m.records.length)) throw new RangeError('records pass 2^53');
      let size = 12;
      for (const r of m.records) size += RECORD_HEAD_BYTES + r.length;
      const b = Buffer.allocUnsafe(size);
      let o = b.writeBigUInt64BE(BigInt(m.firstLsn), 0);
      o = b.writeUInt32BE(m.records.length, o);
      for (const r of m.records) {
        o = b.writeUInt32BE(r.length, o);
        o += r.copy(b, o);
      }
      return b;
    }
  }
}

/**
 * One signed frame, ready for the socket. Throws RangeError on values out of range (a name too
 * long, an LSN not below 2^53, a key shorter than MIN_KEY_BYTES) or a frame above 4 GiB.
 */
export function encodeMirrorFrame(frame: MirrorFrame, key: Buffer): Buffer {
  checkMirrorKey(key);
  for (const [what, v] of [
    ['sender incarnation', frame.senderIncarnation],
    ['receiver incarnation', frame.receiverIncarnation],
    ['backup nonce', frame.backupNonce],
    ['primary nonce', frame.primaryNonce],
    ['sequence', frame.seq],
  ] as const) {
    checkU64(what, v);
  }
  const body = bodyOf(frame.message);
  const total = MIRROR_HEADER_BYTES + body.length + MAC_BYTES;
  if (total - 4 > 0xffffffff) throw new RangeError(`a frame of ${total} bytes does not fit the length field`);
  const b = Buffer.allocUnsafe(total);
  b.writeUInt32BE(total - 4, 0);
  MIRROR_MAGIC.copy(b, 4);
  b.writeUInt8(MIRROR_VERSION, 8);
  b.writeUInt8(TYPE_CODES[frame.message.type], 9);
  b.writeBigUInt64BE(frame.senderIncarnation, 10);
  b.writeBigUInt64BE(frame.receiverIncarnation, 18);
  b.writeBigUInt64BE(frame.backupNonce, 26);
  b.writeBigUInt64BE(frame.primaryNonce, 34);
  b.writeBigUInt64BE(frame.seq, 42);
  body.copy(b, MIRROR_HEADER_BYTES);
  createHmac('sha256', key).update(b.subarray(0, total - MAC_BYTES)).digest().copy(b, total - MAC_BYTES);
  return b;
}

// ---- decoding ----

function readBody(type: MirrorMessageType, r: BodyReader, maxRecordBytes: number): MirrorMessage {
  switch (type) {
    case 'hello': {
      const log = r.text('log name', 1, MAX_NAME_BYTES);
      const node = r.text('node', 1, MAX_NAME_BYTES);
      const firstLsn = r.safeInt('first LSN');
      const heldLsn = r.safeInt('held LSN');
      const lastCrc = r.u32();
      if (heldLsn < firstLsn) throw new BodyError(`held LSN ${heldLsn} below the log's first ${firstLsn}`);
      return { type, log, node, firstLsn, heldLsn, lastCrc };
    }
    case 'start': {
      const node = r.text('node', 1, MAX_NAME_BYTES);
      const fromLsn = r.safeInt('from LSN');
      const prevCrc = r.u32();
      const code = r.u8();
      const refusal = code === 0 ? null : REFUSALS_BY_CODE.get(code);
      if (refusal === undefined) throw new BodyError(`refusal code ${code}`);
      const reason = r.text('reason', 0, MAX_REASON_BYTES);
      return { type, node, fromLsn, prevCrc, refusal, reason };
    }
    case 'records': {
      const firstLsn = r.safeInt('first LSN');
      const count = r.u32();
      if (!Number.isSafeInteger(firstLsn + count)) throw new BodyError('records pass 2^53');
      const records: Buffer[] = [];
      for (let i = 0; i < count; i++) {
        const len = r.u32();
        if (len > maxRecordBytes) throw new BodyError(`record ${firstLsn + i} of ${len} bytes, the most is ${maxRecordBytes}`);
        records.push(r.bytes(len, 'record'));
      }
      return { type, firstLsn, records };
    }
    case 'ack': {
      const heldLsn = r.safeInt('held LSN');
      const durableLsn = r.safeInt('durable LSN');
      const frameSeq = r.u64();
      if (durableLsn > heldLsn) throw new BodyError(`durable LSN ${durableLsn} above held ${heldLsn}`);
      return { type, heldLsn, durableLsn, frameSeq };
    }
  }
}

/**
 * Decodes one whole frame (its length field included) and checks its MAC. The protocol's order
 * is not checked here (MirrorFrameReader does). Never throws on bad input.
 */
export function decodeMirrorFrame(buf: Buffer, key: Buffer, maxRecordBytes = DEFAULT_MAX_RECORD_BYTES): MirrorReadResult {
  if (buf.length < MIN_FRAME_BYTES || buf.readUInt32BE(0) !== buf.length - 4) return { ok: false, reason: 'short', detail: `a frame of ${buf.length} bytes` };
  const early = checkStart(buf);
  if (early) return early;
  const type = TYPES_BY_CODE.get(buf[9]!)!;
  const macAt = buf.length - MAC_BYTES;
  const mac = createHmac('sha256', key).update(buf.subarray(0, macAt)).digest();
  if (!timingSafeEqual(mac, buf.subarray(macAt))) return { ok: false, reason: 'hmac', detail: `${type} frame fails its HMAC (another key, or altered)` };
  const r = new BodyReader(buf, MIRROR_HEADER_BYTES, macAt);
  try {
    const message = readBody(type, r, maxRecordBytes);
    if (!r.atEnd) return { ok: false, reason: 'body', detail: `${type} frame has bytes after its body` };
    return {
      ok: true,
      frame: {
        senderIncarnation: buf.readBigUInt64BE(10),
        receiverIncarnation: buf.readBigUInt64BE(18),
        backupNonce: buf.readBigUInt64BE(26),
        primaryNonce: buf.readBigUInt64BE(34),
        seq: buf.readBigUInt64BE(42),
        message,
      },
    };
  } catch (err) {
    if (err instanceof BodyError) return { ok: false, reason: 'body', detail: `${type} frame: ${err.message}` };
    throw err;
  }
}

/** Checks what the first 10 bytes of a frame allow (magic, version, type), as soon as they are there. */
function checkStart(head: Buffer): MirrorReadResult | null {
  if (head.length >= 8 && !head.subarray(4, 8).equals(MIRROR_MAGIC)) return { ok: false, reason: 'magic', detail: `not a mirror frame (magic ${head.subarray(4, 8).toString('hex')})` };
  if (head.length >= 9 && head[8] !== MIRROR_VERSION) return { ok: false, reason: 'version', detail: `version ${head[8]}, this code speaks ${MIRROR_VERSION}` };
  if (head.length >= 10 && !TYPES_BY_CODE.has(head[9]!)) return { ok: false, reason: 'type', detail: `type code ${head[9]}` };
  return null;
}

/** The end of the connection whose frames a reader takes. */
export type MirrorRole =
  /** The primary's reader: the backup's HELLO, then its ACKs. */
  | { role: 'primary' }
  /** The backup's reader: the primary's START (for this backup's incarnation and nonce), then RECORDS. */
  | { role: 'backup'; incarnation: bigint; nonce: bigint };

export interface MirrorFrameReaderOptions {
  key: Buffer;
  /** The largest record accepted, bytes. Default 16 MiB. */
  maxRecordBytes?: number;
  /** The largest frame accepted, bytes (length field included). Default `frameBytesFor(maxRecordBytes)`. */
  maxFrameBytes?: number;
}

/**
 * A streaming decoder for one connection: `push()` takes the socket's chunks as they come and
 * returns the whole frames they complete, each checked (length, magic, version, type, MAC, body)
 * and in protocol order for this end (HELLO/START first, sequence numbers 0, 1, 2..., the same
 * incarnations and nonces on every frame). The first bad frame ends the stream: it is returned
 * as a rejection, and everything after it is ignored (close the connection).
 *
 * Memory: at most one frame (maxFrameBytes) plus one chunk is buffered.
 */
export class MirrorFrameReader {
  private readonly key: Buffer;
  private readonly maxRecordBytes: number;
  private readonly maxFrameBytes: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private expectedSeq = 0n;
  private rejection: MirrorReadResult | null = null;
  /** The session as it is known so far (what later frames must carry). */
  private backupIncarnation: bigint | null;
  private backupNonce: bigint | null;
  private primaryIncarnation: bigint | null = null;
  private primaryNonce: bigint | null = null;
  /** The primary's reader takes ACKs only once `accept()` says its START went out. */
  private accepted = false;

  constructor(
    private readonly end: MirrorRole,
    options: MirrorFrameReaderOptions,
  ) {
    checkMirrorKey(options.key);
    this.key = options.key;
    this.maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    this.maxFrameBytes = options.maxFrameBytes ?? frameBytesFor(this.maxRecordBytes);
    if (this.maxFrameBytes < MIN_FRAME_BYTES + 64) throw new RangeError(`maxFrameBytes ${this.maxFrameBytes} is too small`);
    this.backupIncarnation = end.role === 'backup' ? end.incarnation : null;
    this.backupNonce = end.role === 'backup' ? end.nonce : null;
  }

  /** The rejection that ended the stream, or null. */
  get failed(): { reason: MirrorRejection; detail: string } | null {
    return this.rejection && !this.rejection.ok ? { reason: this.rejection.reason, detail: this.rejection.detail } : null;
  }

  /** Bytes buffered of a frame not yet whole. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /**
   * The primary's reader, once its START (accepting) is sent: ACKs must now carry this
   * incarnation and nonce. Throws unless a HELLO was read.
   */
  accept(primaryIncarnation: bigint, primaryNonce: bigint): void {
    if (this.end.role !== 'primary' || this.backupNonce === null) throw new Error('accept() is for a primary reader after the HELLO');
    this.primaryIncarnation = primaryIncarnation;
    this.primaryNonce = primaryNonce;
    this.accepted = true;
  }

  /** The frames `chunk` completes, in order; a rejection is last and ends the stream. */
  push(chunk: Buffer): MirrorReadResult[] {
    if (this.rejection) return [];
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: MirrorReadResult[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const head = this.head(Math.min(this.buffered, 10));
      const length = head.readUInt32BE(0);
      if (length + 4 < MIN_FRAME_BYTES) return this.fail(out, 'short', `length field ${length}, the smallest frame has ${MIN_FRAME_BYTES - 4}`);
      if (length + 4 > this.maxFrameBytes) return this.fail(out, 'length', `length field ${length}, the largest frame allowed is ${this.maxFrameBytes} bytes`);
      const early = checkStart(head);
      if (early && !early.ok) return this.fail(out, early.reason, early.detail);
      if (this.buffered < length + 4) break;
      const result = decodeMirrorFrame(this.take(length + 4), this.key, this.maxRecordBytes);
      if (!result.ok) return this.fail(out, result.reason, result.detail);
      const order = this.checkOrder(result.frame);
      if (order) return this.fail(out, order.reason, order.detail);
      this.expectedSeq++;
      out.push(result);
    }
    return out;
  }

  /** The stream ended: a rejection ('short') when it ended inside a frame, else null. */
  finish(): MirrorReadResult | null {
    if (this.rejection || this.buffered === 0) return null;
    const r: MirrorReadResult = { ok: false, reason: 'short', detail: `the stream ended ${this.buffered} bytes into a frame` };
    this.rejection = r;
    this.chunks = [];
    this.buffered = 0;
    return r;
  }

  private fail(out: MirrorReadResult[], reason: MirrorRejection, detail: string): MirrorReadResult[] {
    const r: MirrorReadResult = { ok: false, reason, detail };
    this.rejection = r;
    this.chunks = [];
    this.buffered = 0;
    out.push(r);
    return out;
  }

  /** The protocol's order for this end; adopts the session from the first frame. */
  private checkOrder(f: MirrorFrame): { reason: MirrorRejection; detail: string } | null {
    const type = f.message.type;
    const first = this.expectedSeq === 0n;
    if (this.end.role === 'primary') {
      if (first ? type !== 'hello' : type !== 'ack' || !this.accepted) return { reason: 'unexpected', detail: `${type} from the backup ${first ? 'before its HELLO' : this.accepted ? 'after the handshake' : 'before the START was sent'}` };
    } else if (first ? type !== 'start' : type !== 'records') {
      return { reason: 'unexpected', detail: `${type} from the primary ${first ? 'before its START' : 'after the START'}` };
    }
    if (f.seq !== this.expectedSeq) return { reason: 'sequence', detail: `${type} numbered ${f.seq}, expected ${this.expectedSeq}` };
    if (first && this.end.role === 'primary') {
      if (f.receiverIncarnation !== 0n || f.primaryNonce !== 0n || f.backupNonce === 0n) return { reason: 'session', detail: 'a HELLO with a primary session or no nonce' };
      this.backupIncarnation = f.senderIncarnation;
      this.backupNonce = f.backupNonce;
      return null;
    }
    if (first) {
      if (f.receiverIncarnation !== this.backupIncarnation || f.backupNonce !== this.backupNonce || f.primaryNonce === 0n) return { reason: 'session', detail: 'a START for another backup connection' };
      this.primaryIncarnation = f.senderIncarnation;
      this.primaryNonce = f.primaryNonce;
      return null;
    }
    const [sender, receiver] = this.end.role === 'primary' ? [this.backupIncarnation, this.primaryIncarnation] : [this.primaryIncarnation, this.backupIncarnation];
    if (f.senderIncarnation !== sender || f.receiverIncarnation !== receiver || f.backupNonce !== this.backupNonce || f.primaryNonce !== this.primaryNonce) {
      return { reason: 'session', detail: `${type} of another connection (incarnations or nonces differ)` };
    }
    return null;
  }

  /** The first `n` bytes buffered (n <= buffered), merging chunks only when the first is shorter. */
  private head(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
    return this.chunks[0]!.subarray(0, n);
  }

  /** Removes and returns the first `n` bytes buffered (a copy when they span chunks). */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks, this.buffered);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }
}
