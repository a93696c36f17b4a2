// A PostgreSQL protocol 3.0 message framer (https://www.postgresql.org/docs/current/protocol-overview.html):
// every message is a type byte and an int32 length that counts itself but not the type; the
// client's first message (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) has no type
// byte. Fed arbitrary chunks, it says where each message ends (stream offsets) and keeps the
// first bytes of its body, as many as `keep(type)` asks for: a tracker reads what it needs
// (a query's text, a status byte) without holding DataRow payloads.

/** The server's largest message (PQ_LARGE_MESSAGE_LIMIT, 1 GiB - 1); more is not PostgreSQL. */
const MAX_LENGTH = 0x3fffffff;
/** The largest startup packet a server reads (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_LENGTH = 10_000;

export interface PgMessage {
  /** The type byte as a character; '' for an untyped (startup-phase) message. */
  type: string;
  /** Body bytes (the length field minus its own 4). */
  length: number;
  /** Stream offset (bytes since the framer's first byte) where the message ends, exclusive. */
  end: number;
  /** The body's first min(length, keep(type)) bytes. */
  body: Buffer;
  /** True when the body was longer than what was kept. */
  truncated: boolean;
}

export interface PgFramerOptions {
  /** Whether messages start with a type byte (false for a client's first message). */
  typed: boolean;
  /** Body bytes to keep per message type (default none). */
  keep?: (type: string) => number;
}

export class PgMessageFramer {
  /** Why the stream cannot be PostgreSQL messages (sticky), or null. */
  broken: string | null = null;
  /** Bytes pushed so far: the stream offset of the next byte. */
  offset = 0;
  private typed: boolean;
  private readonly keep: (type: string) => number;
  private header = Buffer.alloc(5);
  private headerHave = 0;
  private type = '';
  private length = 0;
  private remaining = 0;
  private inBody = false;
  private kept: Buffer[] = [];
  private keptBytes = 0;
  private keepLimit = 0;

  constructor(options: PgFramerOptions) {
    this.typed = options.typed;
    this.keep = options.keep ?? (() => 0);
  }

  /** Switches between untyped (startup) and typed messages; takes effect at the next message. */
  setTyped(typed: boolean): void {
    this.typed = typed;
  }

  /** True between two messages (and at the start). */
  get between(): boolean {
    return this.headerHave === 0 && !this.inBody;
  }

  /**
   * Passes over `length` bytes not seen (a capture's loss) when they lie inside the body of the
   * message being read, after the bytes keep(type) asked for (a DataRow's values, say): the
   * message is framed as if they had been seen. Returns the message they complete, if any; null
   * (nothing changes) when they reach past the body, into its kept bytes, or the header.
   */
  skipLost(length: number): PgMessage[] | null {
    if (this.broken || length <= 0 || !this.inBody || this.keptBytes < this.keepLimit || length > this.remaining) return null;
    this.offset += length;
    this.remaining -= length;
    if (this.remaining > 0) return [];
    this.inBody = false;
    const m: PgMessage = { type: this.type, length: this.length, end: this.offset, body: this.kept.length === 1 ? this.kept[0]! : Buffer.concat(this.kept), truncated: this.keptBytes < this.length };
    this.kept = [];
    return [m];
  }

  /**
   * Feeds bytes; returns the messages they completed, in order. `until(message)` returning true
   * stops right after that message: the rest of the chunk is not consumed (see `offset`), for a
   * caller whose framing changes there (an SSLRequest's one-byte answer). Never throws.
   */
  push(chunk: Uint8Array, until?: (m: PgMessage) => boolean): PgMessage[] {
    const done: PgMessage[] = [];
    let i = 0;
    while (i < chunk.length && !this.broken) {
      if (!this.inBody) {
        const need = this.typed ? 5 : 4;
        const take = Math.min(need - this.headerHave, chunk.length - i);
        this.header.set(chunk.subarray(i, i + take), this.headerHave);
        this.headerHave += take;
        i += take;
        if (this.headerHave < need) break;
        this.type = this.typed ? String.fromCharCode(this.header[0]!) : '';
        const len = this.header.readInt32BE(this.typed ? 1 : 0);
        const max = this.typed ? MAX_LENGTH : MAX_STARTUP_LENGTH;
        if (len < 4 || len > max) {
          this.broken = `implausible ${this.typed ? `'${this.type}' message` : 'startup packet'} length ${len}`;
          break;
        }
        this.headerHave = 0;
        this.length = len - 4;
        this.remaining = this.length;
        this.keepLimit = Math.min(this.length, Math.max(0, this.keep(this.type)));
        this.kept = [];
        this.keptBytes = 0;
        this.inBody = true;
      }
      const n = Math.min(this.remaining, chunk.length - i);
      const k = Math.min(n, this.keepLimit - this.keptBytes);
      if (k > 0) {
        this.kept.push(Buffer.from(chunk.subarray(i, i + k)));
        this.keptBytes += k;
      }
      i += n;
      this.remaining -= n;
      if (this.remaining > 0) break;
      this.inBody = false;
      const m: PgMessage = {
        type: this.type,
        length: this.length,
        end: this.offset + i,
        body: this.kept.length === 1 ? this.kept[0]! : Buffer.concat(this.kept),
        truncated: this.keptBytes < this.length,
      };
      this.kept = [];
      done.push(m);
      if (until?.(m)) break;
    }
    this.offset += i;
    return done;
  }
}

/** Reads NUL-terminated strings and integers from a message body; throws RangeError past its end. */
export class PgBodyReader {
  private at = 0;
  constructor(private readonly body: Buffer) {}

  get rest(): number {
    return this.body.length - this.at;
  }

  /** latin1 keeps every byte as one character (re-encoding gives the same bytes back). */
  cstring(encoding: BufferEncoding = 'utf8'): string {
    const nul = this.body.indexOf(0, this.at);
    if (nul < 0) throw new RangeError('string without its NUL terminator');
    const s = this.body.toString(encoding, this.at, nul);
    this.at = nul + 1;
    return s;
  }

  int32(): number {
    if (this.at + 4 > this.body.length) throw new RangeError('int32 past the end of the message');
    const v = this.body.readInt32BE(this.at);
    this.at += 4;
    return v;
  }

  int16(): number {
    if (this.at + 2 > this.body.length) throw new RangeError('int16 past the end of the message');
    const v = this.body.readInt16BE(this.at);
    this.at += 2;
    return v;
  }

  bytes(n: number): Buffer {
    if (n < 0 || this.at + n > this.body.length) throw new RangeError('bytes past the end of the message');
    const b = this.body.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }
}

/** A typed message: type byte, int32 length (body + 4), body. */
export function pgMessage(type: string, ...parts: (Buffer | string)[]): Buffer {
  const body = Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, 'utf8'))));
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** A NUL-terminated string. */
export function cstr(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

/** An int32, big-endian. */
export function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  return b;
}

/**
 * An ErrorResponse's (or NoticeResponse's) fields by their type byte: 'S' severity, 'C' the
 * SQLSTATE, 'M' the message (protocol "Error and Notice Message Fields"). A truncated or
 * malformed body gives the fields read before the fault.
 */
export function pgErrorFields(body: Buffer): Map<string, string> {
  const fields = new Map<string, string>();
  const r = new PgBodyReader(body);
  try {
    for (let i = 0; i < 32 && r.rest > 1; i++) {
      const s = r.cstring();
      if (s.length > 0) fields.set(s[0]!, s.slice(1));
    }
  } catch {
    // a truncated body: what was read so far
  }
  return fields;
}
