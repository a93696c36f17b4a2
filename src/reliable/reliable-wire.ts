// The reliable request protocol between clients and the primary (seed 004's clients 54 and
// application process AP_P / AP_B; Table I's message: client ID, message ID, body). Pure:
// encoding and a streaming decoder, no I/O. docs/MIRRORED-LOG.md draws the table.
//
// One TCP connection per client at a time. Every frame (big endian):
//    0  4  frame length: the bytes after this field (u32)
//    4  4  magic "TKRQ"
//    8  1  version 1
//    9  1  type
//   10  .. body
// Types and bodies (text: u8 length + UTF-8; IDs: u64 below 2^53; bytes: u32 length + bytes):
//   1 HELLO     client -> server, first: client ID (text 1..64)
//   2 READY     server -> client, first: the server's incarnation (u64), its node (text 1..64).
//               "Serving; resend what you have outstanding."
//   3 RECOVERED server -> client, first, instead of READY after a takeover (seed step 429, the
//               recovery signal): incarnation (u64), node (text), the LSN recovered to (u64).
//               The client resends every outstanding message in message-ID order (step 540).
//   4 REQUEST   client -> server: message ID (>= 1) | acknowledged below (u64: the client holds
//               the replies of all its messages below this ID, <= message ID) | body (bytes)
//   5 REPLY     server -> client: message ID | status (u8: 0 ok, 1 stale) | body (bytes).
//               Stale: the ID is below what the client acknowledged; nothing applied, no reply kept.
//   6 ERROR     server -> client, then the server closes: code (u8: 1 protocol, 2 unavailable)
//               | reason (text 0..200)
// No MAC: the request layer is an application protocol, as a database's is; put it behind TLS or
// a private network (the mirror's link, which carries the log, is authenticated).
//
// The decoder refuses, in this order: a length below the smallest frame ('short') or above
// maxFrameBytes ('length', before buffering it), magic, version, type (as soon as their bytes
// arrive), then the body ('body': truncated, trailing bytes, an ID at or above 2^53 or 0, a text
// out of bounds, acknowledged above the message ID, a bad status or code). The first bad frame
// ends the stream: nothing of it or after it is returned as a message.

import { BodyError, BodyReader } from '../wire/body-reader.js';

export const RELIABLE_MAGIC = Buffer.from('TKRQ', 'ascii');
export const RELIABLE_VERSION = 1;
/** Bytes from the frame's start (its length field) to the body. */
export const RELIABLE_HEADER_BYTES = 10;
/** The largest body of a request or reply by default, bytes. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
const MAX_ID_TEXT = 64;
const MAX_REASON = 200;

export type ReliableMessage =
  | { type: 'hello'; clientId: string }
  | { type: 'ready'; incarnation: bigint; node: string }
  | { type: 'recovered'; incarnation: bigint; node: string; recoveredLsn: number }
  | { type: 'request'; msgId: number; ackBelow: number; body: Buffer }
  | { type: 'reply'; msgId: number; status: 'ok' | 'stale'; body: Buffer }
  | { type: 'error'; code: 'protocol' | 'unavailable'; reason: string };

const TYPE_CODES = { hello: 1, ready: 2, recovered: 3, request: 4, reply: 5, error: 6 } as const;
const TYPES = new Map(Object.entries(TYPE_CODES).map(([k, v]) => [v as number, k as ReliableMessage['type']]));
const ERROR_CODES = { protocol: 1, unavailable: 2 } as const;

export type ReliableRejection = 'short' | 'length' | 'magic' | 'version' | 'type' | 'body' | 'unexpected';

/** Bad bytes from the other side: the connection is closed, nothing of the frame is applied. */
export class ReliableProtocolError extends Error {
  override readonly name = 'ReliableProtocolError';
  readonly code = 'ERELIABLEPROTO';
  constructor(
    readonly reason: ReliableRejection,
    message: string,
  ) {
    super(message);
  }
}

function checkId(what: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${what} ${v} must be an integer from ${min} below 2^53`);
}

function text(what: string, s: string, min: number, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length < min || b.length > max) throw new RangeError(`${what} must take ${min}..${max} bytes of UTF-8, not ${b.length}`);
  return Buffer.concat([Buffer.from([b.length]), b]);
}

function u64(v: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
}

function bytes(b: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(b.length);
  return Buffer.concat([h, b]);
}

/** Checks a client ID (1..64 bytes of UTF-8); RangeError otherwise. */
export function checkClientId(id: string): void {
  text('client ID', id, 1, MAX_ID_TEXT);
}

/** One frame. Throws RangeError on a message the decoder would refuse (an ID out of range, a text too long). */
export function encodeReliable(m: ReliableMessage): Buffer {
  let body: Buffer;
  switch (m.type) {
    case 'hello':
      body = text('client ID', m.clientId, 1, MAX_ID_TEXT);
      break;
    case 'ready':
      body = Buffer.concat([u64(m.incarnation), text('node', m.node, 1, MAX_ID_TEXT)]);
      break;
    case 'recovered':
      checkId('recovered LSN', m.recoveredLsn, 0);
      body = Buffer.concat([u64(m.incarnation), text('node', m.node, 1, MAX_ID_TEXT), u64(m.recoveredLsn)]);
      break;
    case 'request':
      checkId('message ID', m.msgId, 1);
      checkId('acknowledged-below', m.ackBelow, 0);
      if (m.ackBelow > m.msgId) throw new RangeError(`acknowledged-below ${m.ackBelow} above message ID ${m.msgId}`);
      body = Buffer.concat([u64(m.msgId), u64(m.ackBelow), bytes(m.body)]);
      break;
    case 'reply':
      checkId('message ID', m.msgId, 1);
      body = Buffer.concat([u64(m.msgId), Buffer.from([m.status === 'ok' ? 0 : 1]), bytes(m.body)]);
      break;
    case 'error':
      {
        // Cut to MAX_REASON bytes (a UTF-8 sequence may be cut: the reason is for logs).
        const r = Buffer.from(m.reason, 'utf8').subarray(0, MAX_REASON);
        body = Buffer.concat([Buffer.from([ERROR_CODES[m.code], r.length]), r]);
      }
      break;
  }
  const head = Buffer.alloc(RELIABLE_HEADER_BYTES);
  head.writeUInt32BE(RELIABLE_HEADER_BYTES - 4 + body.length, 0);
  RELIABLE_MAGIC.copy(head, 4);
  head[8] = RELIABLE_VERSION;
  head[9] = TYPE_CODES[m.type];
  return Buffer.concat([head, body]);
}

function decodeBody(type: ReliableMessage['type'], b: BodyReader, maxBody: number): ReliableMessage {
  let m: ReliableMessage;
  switch (type) {
    case 'hello':
      m = { type, clientId: b.text('client ID', 1, MAX_ID_TEXT) };
      break;
    case 'ready':
      m = { type, incarnation: b.u64('incarnation'), node: b.text('node', 1, MAX_ID_TEXT) };
      break;
    case 'recovered':
      m = { type, incarnation: b.u64('incarnation'), node: b.text('node', 1, MAX_ID_TEXT), recoveredLsn: b.safeInt('recovered LSN', 0) };
      break;
    case 'request': {
      const msgId = b.safeInt('message ID', 1);
      const ackBelow = b.safeInt('acknowledged-below', 0);
      if (ackBelow > msgId) throw new ReliableProtocolError('body', `acknowledged-below ${ackBelow} above message ID ${msgId}`);
      m = { type, msgId, ackBelow, body: Buffer.from(b.lengthPrefixed('request body', maxBody)) };
      break;
    }
    case 'reply': {
      const msgId = b.safeInt('message ID', 1);
      const s = b.u8('status');
      if (s > 1) throw new ReliableProtocolError('body', `reply status ${s}`);
      m = { type, msgId, status: s === 0 ? 'ok' : 'stale', body: Buffer.from(b.lengthPrefixed('reply body', maxBody)) };
      break;
    }
    case 'error': {
      const c = b.u8('error code');
      if (c !== 1 && c !== 2) throw new ReliableProtocolError('body', `error code ${c}`);
      m = { type, code: c === 1 ? 'protocol' : 'unavailable', reason: b.text('reason', 0, MAX_REASON) };
      break;
    }
  }
  b.end();
  return m;
}

export type ReliableReadResult = { ok: true; message: ReliableMessage } | { ok: false; error: ReliableProtocolError };

/**
 * A streaming decoder: push() the bytes as they come, get the whole frames in them. After the
 * first bad frame it returns that error and nothing more (the caller closes the connection).
 * `accept` lists the types this side may receive (a server takes hello and request; a client
 * ready, recovered, reply and error); another type is 'unexpected'.
 */
export class ReliableFrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private dead = false;
  private readonly maxFrameBytes: number;
  private readonly maxBodyBytes: number;

  constructor(
    private readonly accept: ReadonlySet<ReliableMessage['type']>,
    options: { maxBodyBytes?: number } = {},
  ) {
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    // The largest frame: a request or reply of the largest body, header and fixed fields included.
    this.maxFrameBytes = RELIABLE_HEADER_BYTES + 8 + 8 + 4 + this.maxBodyBytes;
  }

  /** Whether a bad frame ended the stream. */
  get failed(): boolean {
    return this.dead;
  }

  push(chunk: Buffer): ReliableReadResult[] {
    if (this.dead) return [];
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: ReliableReadResult[] = [];
    for (;;) {
      const early = this.checkHead();
      if (early) {
        this.dead = true;
        this.buf = Buffer.alloc(0);
        out.push({ ok: false, error: early });
        return out;
      }
      if (this.buf.length < 4) break;
      const total = 4 + this.buf.readUInt32BE(0);
      if (this.buf.length < total) break;
      const frame = this.buf.subarray(0, total);
      this.buf = this.buf.subarray(total);
      const type = TYPES.get(frame[9]!)!;
      try {
        out.push({ ok: true, message: decodeBody(type, new BodyReader(frame, RELIABLE_HEADER_BYTES), this.maxBodyBytes) });
      } catch (err) {
        this.dead = true;
        this.buf = Buffer.alloc(0);
        out.push({ ok: false, error: err instanceof ReliableProtocolError ? err : new ReliableProtocolError('body', err instanceof BodyError ? err.message : String(err)) });
        return out;
      }
    }
    if (this.buf.length > 0 && this.buf.byteOffset > 0) this.buf = Buffer.from(this.buf); // let the chunk go
    return out;
  }

  /** The stream ended: bytes left mean a frame cut short. */
  finish(): ReliableProtocolError | null {
    if (this.dead || this.buf.length === 0) return null;
    this.dead = true;
    return new ReliableProtocolError('short', `the stream ended inside a frame (${this.buf.length} bytes)`);
  }

  /** The head of the buffered frame, checked as soon as its bytes are there. */
  private checkHead(): ReliableProtocolError | null {
    const b = this.buf;
    if (b.length >= 4) {
      const len = b.readUInt32BE(0);
      if (len < RELIABLE_HEADER_BYTES - 4) return new ReliableProtocolError('short', `frame length ${len}, the smallest is ${RELIABLE_HEADER_BYTES - 4}`);
      if (4 + len > this.maxFrameBytes) return new ReliableProtocolError('length', `frame of ${4 + len} bytes, the most is ${this.maxFrameBytes}`);
    }
    for (let i = 4; i < 8 && i < b.length; i++) if (b[i] !== RELIABLE_MAGIC[i - 4]) return new ReliableProtocolError('magic', 'not a TKRQ frame');
    if (b.length > 8 && b[8] !== RELIABLE_VERSION) return new ReliableProtocolError('version', `version ${b[8]}, this side speaks ${RELIABLE_VERSION}`);
    if (b.length > 9) {
      const type = TYPES.get(b[9]!);
      if (!type) return new ReliableProtocolError('type', `type ${b[9]}`);
      if (!this.accept.has(type)) return new ReliableProtocolError('unexpected', `a ${type} frame is not for this side`);
    }
    return null;
  }
}

/** What a server reads, and what a client reads. */
export const SERVER_ACCEPTS: ReadonlySet<ReliableMessage['type']> = new Set(['hello', 'request']);
export const CLIENT_ACCEPTS: ReadonlySet<ReliableMessage['type']> = new Set(['ready', 'recovered', 'reply', 'error']);
