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
//    8  1  version 3 (2 added START's CRC and the resync answer; 3 made both CRCs the chain over
//          every record below, log-chain.ts, instead of the last record's CRC)
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
//           | the chain (log-chain.ts) over its records from its first LSN to the held LSN
//           (u32; 0 when it holds none)
//   START   (primary -> backup, first) primary node (text 1..64) | from LSN: the first record it
//           will send (= the HELLO's held LSN when accepted) | the chain over the primary's
//           records from the backup's first LSN to the from LSN (u32; 0 when there is none)
//           | refusal (u8: 0 accepted, 1 diverged, 2 behind, 3 log, 4 node, 5 resync: cut your
//           log to the from LSN, your records below it must have that chain, and connect again)
//           | reason (text 0..200)
//   RECORDS (primary -> backup) first LSN | count (u32) | per record: length (u32) | bytes.
//           Count 0 is the keepalive: the backup answers every RECORDS frame with an ACK, so an
//           idle link is still seen to be alive.
//   ACK     (backup -> primary) held LSN (every record below is in the backup's memory)
//           | durable LSN (every record below is on its disk) | sequence number of the last
//           primary frame it has taken (u64)
import { BodyError, type BodyReader } from '../wire/body-reader.js';
import { checkU64, checkWireKey, FrameFormat, fitText, MAC_BYTES, sequenceRefusal, SignedFrameReader, type WireReadResult, type WireRejection } from '../wire/signed-frames.js';

export const MIRROR_MAGIC = Buffer.from('TKML', 'ascii');
export const MIRROR_VERSION = 3;
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
const FORMAT = new FrameFormat<MirrorMessageType>('mirror', MIRROR_MAGIC, MIRROR_VERSION, { hello: 1, start: 2, records: 3, ack: 4 }, MIRROR_HEADER_BYTES);

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

/**
 * Why the decoder refused the bytes it was given (src/wire/signed-frames.ts). After one, the
 * stream is dead: close it. Here 'body' includes a record above maxRecordBytes, 'session' is
 * incarnations or nonces of another connection, 'unexpected' is e.g. a second HELLO or RECORDS
 * before START.
 */
export type MirrorRejection = WireRejection;

export type MirrorReadResult = WireReadResult<MirrorFrame>;

/** Throws RangeError unless `key` is a Buffer of at least MIN_KEY_BYTES. */
export function checkMirrorKey(key: Buffer): void {
  checkWireKey(key, "the mirror's key", MIN_KEY_BYTES, ": Buffer.from(text) or a file's bytes");
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

function textBytes(s: string, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > max) throw new RangeError(`text longer than ${max} bytes: ${s.slice(0, 40)}`);
  return b;
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
      const reason = fitText(m.reason, MAX_REASON_BYTES);
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
  const b = FORMAT.alloc(body.length);
  b.writeBigUInt64BE(frame.senderIncarnation, 10);
  b.writeBigUInt64BE(frame.receiverIncarnation, 18);
  b.writeBigUInt64BE(frame.backupNonce, 26);
  b.writeBigUInt64BE(frame.primaryNonce, 34);
  b.writeBigUInt64BE(frame.seq, 42);
  body.copy(b, MIRROR_HEADER_BYTES);
  return FORMAT.seal(b, frame.message.type, key);
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
  return FORMAT.decode(buf, key, (type, r) => ({
    senderIncarnation: buf.readBigUInt64BE(10),
    receiverIncarnation: buf.readBigUInt64BE(18),
    backupNonce: buf.readBigUInt64BE(26),
    primaryNonce: buf.readBigUInt64BE(34),
    seq: buf.readBigUInt64BE(42),
    message: readBody(type, r, maxRecordBytes),
  }));
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
 * A streaming decoder for one connection (SignedFrameReader: `push()`, `finish()`, `failed`,
 * `pendingBytes`): `push()` takes the socket's chunks as they come and returns the whole frames
 * they complete, each checked (length, magic, version, type, MAC, body) and in protocol order for
 * this end (HELLO/START first, sequence numbers 0, 1, 2..., the same incarnations and nonces on
 * every frame). The first bad frame ends the stream: it is returned as a rejection, and
 * everything after it is ignored (close the connection).
 *
 * Memory: at most one frame (maxFrameBytes) plus one chunk is buffered.
 */
export class MirrorFrameReader extends SignedFrameReader<MirrorFrame> {
  private readonly key: Buffer;
  private readonly maxRecordBytes: number;
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
    const maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    const maxFrameBytes = options.maxFrameBytes ?? frameBytesFor(maxRecordBytes);
    if (maxFrameBytes < MIN_FRAME_BYTES + 64) throw new RangeError(`maxFrameBytes ${maxFrameBytes} is too small`);
    super(FORMAT, maxFrameBytes);
    this.key = options.key;
    this.maxRecordBytes = maxRecordBytes;
    this.backupIncarnation = end.role === 'backup' ? end.incarnation : null;
    this.backupNonce = end.role === 'backup' ? end.nonce : null;
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

  protected decode(buf: Buffer): MirrorReadResult {
    return decodeMirrorFrame(buf, this.key, this.maxRecordBytes);
  }

  /** The protocol's order for this end; adopts the session from the first frame. */
  protected checkOrder(f: MirrorFrame): { reason: MirrorRejection; detail: string } | null {
    const type = f.message.type;
    const first = this.expectedSeq === 0n;
    if (this.end.role === 'primary') {
      if (first ? type !== 'hello' : type !== 'ack' || !this.accepted) return { reason: 'unexpected', detail: `${type} from the backup ${first ? 'before its HELLO' : this.accepted ? 'after the handshake' : 'before the START was sent'}` };
    } else if (first ? type !== 'start' : type !== 'records') {
      return { reason: 'unexpected', detail: `${type} from the primary ${first ? 'before its START' : 'after the START'}` };
    }
    if (f.seq !== this.expectedSeq) return sequenceRefusal(type, f.seq, this.expectedSeq);
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
}
