// What the log mirror's wire (src/log/mirror-wire.ts) and the segment stream's
// (src/net/shadow/segment-wire.ts) have in common: length-prefixed frames over one TCP connection,
// each starting with the same 10 bytes and ending with an HMAC-SHA256, read by a streaming
// decoder that refuses with typed reasons and checks each end's sequence numbers. Pure, no I/O.
//
// Shared layout (big endian):
//    0  4  frame length: the bytes after this field, MAC included (u32)
//    4  4  magic (the wire's own)
//    8  1  version (the wire's own)
//    9  1  type code (the wire's own table)
//   10  .. the wire's own header fields (its nonces, sequence...), then the body
//  end-32  HMAC-SHA256 of every byte before it (the length field included)
// Each wire keeps its header fields, bodies, protocol order and messages; docs/MIRRORED-LOG.md
// and docs/CONTINUE.md draw the whole frames.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { BodyError, BodyReader } from './body-reader.js';

/** Bytes of the MAC that ends every frame (HMAC-SHA256). */
export const MAC_BYTES = 32;
export const U64_MAX = (1n << 64n) - 1n;

/** Why a decoder refused the bytes it was given. After one, the stream is dead: close it. */
export type WireRejection =
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
  /** The body is malformed (truncated, trailing bytes, a value out of range). */
  | 'body'
  /** Not the sequence number expected: a frame replayed, lost or reordered. */
  | 'sequence'
  /** The session fields (nonces, incarnations) of another connection: a frame recorded elsewhere. */
  | 'session'
  /** A message that may not come from this side, or not now (a second HELLO, data before the handshake). */
  | 'unexpected';

/** A refusal: its reason and a line for the log. */
export interface WireRefusal {
  ok: false;
  reason: WireRejection;
  detail: string;
}

export type WireReadResult<F> = { ok: true; frame: F } | WireRefusal;

/** Throws RangeError unless `v` fits a u64. */
export function checkU64(what: string, v: bigint): void {
  if (v < 0n || v > U64_MAX) throw new RangeError(`${what} ${v} is not a u64`);
}

/**
 * Throws TypeError unless `key` is a Buffer, RangeError unless it has at least `minBytes`.
 * `whose` names it in the message ("the mirror's key"); `typeHint` is added to the TypeError.
 */
export function checkWireKey(key: Buffer, whose: string, minBytes: number, typeHint = ''): void {
  if (!Buffer.isBuffer(key)) throw new TypeError(`${whose} must be a Buffer (got ${typeof key})${typeHint}`);
  if (key.length < minBytes) throw new RangeError(`${whose} must be at least ${minBytes} bytes (got ${key.length})`);
}

/** `s` as UTF-8, cut to at most `maxBytes` on a character boundary (a refusal's reason). */
export function fitText(s: string, maxBytes: number): Buffer {
  let out = s;
  while (Buffer.byteLength(out) > maxBytes) out = out.slice(0, -1);
  return Buffer.from(out, 'utf8');
}

/** The 'sequence' refusal of a frame numbered `seq` where `expected` was due. */
export function sequenceRefusal(type: string, seq: bigint, expected: bigint): { reason: WireRejection; detail: string } {
  return { reason: 'sequence', detail: `${type} numbered ${seq}, expected ${expected}` };
}

/** One wire's frame format: its magic, version, type codes and header size. */
export class FrameFormat<T extends string> {
  /** The smallest frame: header, an empty body, MAC. */
  readonly minFrameBytes: number;
  private readonly typesByCode: Map<number, T>;

  /**
   * `what` names the wire in the magic's refusal ("not a mirror frame"); `headerBytes` counts from
   * the length field to the body (at least 10).
   */
  constructor(
    private readonly what: string,
    readonly magic: Buffer,
    readonly version: number,
    private readonly codes: Readonly<Record<T, number>>,
    readonly headerBytes: number,
  ) {
    if (magic.length !== 4 || headerBytes < 10) throw new RangeError('a frame format has a 4-byte magic and a header of 10 bytes at least');
    this.typesByCode = new Map(Object.entries<number>(codes).map(([k, v]) => [v, k as T]));
    this.minFrameBytes = headerBytes + MAC_BYTES;
  }

  /**
   * An unwritten frame of `bodyBytes` of body (header and MAC around it), for `seal()`. Throws
   * RangeError, before allocating, when it would be above 4 GiB (the length field).
   */
  alloc(bodyBytes: number): Buffer {
    const total = this.headerBytes + bodyBytes + MAC_BYTES;
    if (total - 4 > 0xffffffff) throw new RangeError(`a frame of ${total} bytes does not fit the length field`);
    return Buffer.allocUnsafe(total);
  }

  /**
   * Finishes a frame `b` whose header fields (from byte 10) and body are written: writes its
   * length, magic, version and `type`'s code, then signs it (the last MAC_BYTES). Throws
   * RangeError when it is above 4 GiB (the length field).
   */
  seal(b: Buffer, type: T, key: Buffer): Buffer {
    const total = b.length;
    if (total - 4 > 0xffffffff) throw new RangeError(`a frame of ${total} bytes does not fit the length field`);
    b.writeUInt32BE(total - 4, 0);
    this.magic.copy(b, 4);
    b.writeUInt8(this.version, 8);
    b.writeUInt8(this.codes[type], 9);
    createHmac('sha256', key).update(b.subarray(0, total - MAC_BYTES)).digest().copy(b, total - MAC_BYTES);
    return b;
  }

  /** Checks what the first 10 bytes of a frame allow (magic, version, type), as soon as they are there. */
  checkStart(head: Buffer): WireRefusal | null {
    if (head.length >= 8 && !head.subarray(4, 8).equals(this.magic)) return { ok: false, reason: 'magic', detail: `not a ${this.what} frame (magic ${head.subarray(4, 8).toString('hex')})` };
    if (head.length >= 9 && head[8] !== this.version) return { ok: false, reason: 'version', detail: `version ${head[8]}, this code speaks ${this.version}` };
    if (head.length >= 10 && !this.typesByCode.has(head[9]!)) return { ok: false, reason: 'type', detail: `type code ${head[9]}` };
    return null;
  }

  /**
   * Decodes one whole frame (its length field included): checks its length, start and MAC, then
   * `read` takes the body (a BodyReader from the header's end to the MAC) and the header fields
   * (from `buf`). A BodyError from `read`, or bytes it leaves, is the refusal 'body'. Never throws
   * on bad input.
   */
  decode<F>(buf: Buffer, key: Buffer, read: (type: T, body: BodyReader) => F): WireReadResult<F> {
    if (buf.length < this.minFrameBytes || buf.readUInt32BE(0) !== buf.length - 4) return { ok: false, reason: 'short', detail: `a frame of ${buf.length} bytes` };
    const early = this.checkStart(buf);
    if (early) return early;
    const type = this.typesByCode.get(buf[9]!)!;
    const macAt = buf.length - MAC_BYTES;
    const mac = createHmac('sha256', key).update(buf.subarray(0, macAt)).digest();
    if (!timingSafeEqual(mac, buf.subarray(macAt))) return { ok: false, reason: 'hmac', detail: `${type} frame fails its HMAC (another key, or altered)` };
    const r = new BodyReader(buf, this.headerBytes, macAt);
    try {
      const frame = read(type, r);
      if (!r.atEnd) return { ok: false, reason: 'body', detail: `${type} frame has bytes after its body` };
      return { ok: true, frame };
    } catch (err) {
      if (err instanceof BodyError) return { ok: false, reason: 'body', detail: `${type} frame: ${err.message}` };
      throw err;
    }
  }
}

/**
 * The streaming half of a wire's reader for one connection: `push()` takes the socket's chunks as
 * they come and returns the whole frames they complete, each bounded (length), checked by
 * `decode()` and then by `checkOrder()` (the wire's protocol for this end, which sees the
 * sequence number due in `expectedSeq`: 0 for the first frame, then +1 per frame taken). The
 * first bad frame ends the stream: it is returned as a rejection, and everything after it is
 * ignored (close the connection).
 *
 * Memory: at most one frame (maxFrameBytes) plus one chunk is buffered.
 */
export abstract class SignedFrameReader<F> {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private rejection: { reason: WireRejection; detail: string } | null = null;
  /** The sequence number the next frame must carry. */
  protected expectedSeq = 0n;

  /** `maxFrameBytes`: the largest frame accepted, its length field included (checked by the wire). */
  constructor(
    private readonly format: FrameFormat<string>,
    private readonly maxFrameBytes: number,
  ) {}

  /** The whole frame `buf` decoded and its MAC checked (the protocol's order is not checked here). */
  protected abstract decode(buf: Buffer): WireReadResult<F>;

  /** Null when `frame` may come now (and takes the session it opens), else why not. */
  protected abstract checkOrder(frame: F): { reason: WireRejection; detail: string } | null;

  /** The rejection that ended the stream, or null. */
  get failed(): { reason: WireRejection; detail: string } | null {
    return this.rejection;
  }

  /** Bytes buffered of a frame not yet whole. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** The frames `chunk` completes, in order; a rejection is last and ends the stream. */
  push(chunk: Buffer): WireReadResult<F>[] {
    if (this.rejection) return [];
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: WireReadResult<F>[] = [];
    const min = this.format.minFrameBytes;
    while (this.buffered >= 4) {
      const head = this.head(Math.min(this.buffered, 10));
      const length = head.readUInt32BE(0);
      if (length + 4 < min) return this.fail(out, 'short', `length field ${length}, the smallest frame has ${min - 4}`);
      if (length + 4 > this.maxFrameBytes) return this.fail(out, 'length', `length field ${length}, the largest frame allowed is ${this.maxFrameBytes} bytes`);
      const early = this.format.checkStart(head);
      if (early) return this.fail(out, early.reason, early.detail);
      if (this.buffered < length + 4) break;
      const result = this.decode(this.take(length + 4));
      if (!result.ok) return this.fail(out, result.reason, result.detail);
      const order = this.checkOrder(result.frame);
      if (order) return this.fail(out, order.reason, order.detail);
      this.expectedSeq++;
      out.push(result);
    }
    return out;
  }

  /** The stream ended: a rejection ('short') when it ended inside a frame, else null. */
  finish(): WireReadResult<F> | null {
    if (this.rejection || this.buffered === 0) return null;
    const detail = `the stream ended ${this.buffered} bytes into a frame`;
    this.stop('short', detail);
    return { ok: false, reason: 'short', detail };
  }

  private fail(out: WireReadResult<F>[], reason: WireRejection, detail: string): WireReadResult<F>[] {
    this.stop(reason, detail);
    out.push({ ok: false, reason, detail });
    return out;
  }

  private stop(reason: WireRejection, detail: string): void {
    this.rejection = { reason, detail };
    this.chunks = [];
    this.buffered = 0;
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
      // Only the chunks this frame needs are merged: the rest stay as they are (a 4 MiB frame
      // read in 64 KiB chunks is merged once, not once per chunk).
      let have = 0;
      let k = 0;
      while (have < n) have += this.chunks[k++]!.length;
      const merged = Buffer.concat(this.chunks.slice(0, k), have);
      out = merged.subarray(0, n);
      this.chunks = have > n ? [merged.subarray(n), ...this.chunks.slice(k)] : this.chunks.slice(k);
    }
    this.buffered -= n;
    return out;
  }
}
