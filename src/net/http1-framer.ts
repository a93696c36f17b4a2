// An HTTP/1.1 message framer (RFC 9112): finds where each message of one direction of a
// connection starts its body and ends, in a byte stream fed in arbitrary chunks, without keeping
// bodies. It reads the start line and the header fields that decide framing and persistence
// (Content-Length, Transfer-Encoding, Connection, Upgrade, Expect) and nothing else.
//
// - Requests (§3): `method SP request-target SP HTTP-version CRLF`, field lines, CRLF. The body
//   is chunked (Transfer-Encoding whose last coding is chunked), Content-Length bytes, or none
//   (§6.3 rules 6 and 7). Empty lines before a start line are skipped (§2.2) and counted as the
//   next message's bytes.
// - Responses (§4): `HTTP-version SP status-code [SP reason-phrase] CRLF`. No body for 1xx, 204,
//   304 and any response to HEAD; a 2xx to CONNECT and a 101 end the HTTP stream (a tunnel, an
//   upgraded protocol). Otherwise chunked or Content-Length; a response with neither runs until
//   the connection closes (§6.3 rule 8): it cannot be framed, and the framer says so.
// - Chunked bodies (§7.1): chunk-size [chunk-ext] CRLF, data, CRLF; a last chunk of size 0,
//   then trailer field lines and the final CRLF.
//
// Strict where servers differ, so the framing here is never a guess at what the server did:
// lines end with CRLF (a bare LF or CR breaks the stream, though §2.2 lets a recipient accept a
// bare LF), obs-fold (§5.2), whitespace before a colon (§5.1), Transfer-Encoding together with
// Content-Length or in HTTP/1.0 (§6.1, §6.3: request smuggling), Content-Length lists that
// disagree (§6.3 rule 5) all break it. HTTP versions other than 1.0 and 1.1 break it (HTTP/2's
// prior-knowledge preface and a TLS ClientHello are named). Never throws: `broken` says why.

const CR = 0x0d;
const LF = 0x0a;

/** A start line or field line longer than this breaks the stream (bytes, CRLF excluded). */
export const MAX_LINE = 8 * 1024;
/** A head (start line and fields) or trailer section longer than this breaks it (bytes). */
export const MAX_HEAD = 64 * 1024;
/** Field lines in one head or trailer section. */
export const MAX_FIELDS = 256;
/** A chunk-size line (with its extensions) longer than this breaks it (bytes). */
export const MAX_CHUNK_LINE = 4096;
/** Empty lines skipped before a start line (§2.2 asks for at least one before a request line). */
const MAX_LEADING_EMPTY = 8;
/** Largest Content-Length or chunk size accepted (bytes): exact in a double. */
const MAX_LENGTH = Number.MAX_SAFE_INTEGER;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\x00-\x20\x7f]+) HTTP\/(\d)\.(\d)$/;
const STATUS_LINE = /^HTTP\/(\d)\.(\d) (\d{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/;
/** A field value (RFC 9110 §5.5): no CR, LF or NUL; other controls are refused by servers too. */
const FIELD_VALUE = /^[^\x00-\x08\x0a-\x1f\x7f]*$/;
const CHUNK_LINE = /^([0-9A-Fa-f]{1,13})[ \t]*(;[^\x00-\x08\x0a-\x1f\x7f]*)?$/;

/** What a message's head says: its start line and the fields that frame it. */
export interface Http1Head {
  /** Stream offset (bytes) of the message's first byte (skipped empty lines included). */
  start: number;
  /** Stream offset just after the head's final CRLF: where the body starts. */
  headEnd: number;
  /** Request method (case-sensitive, RFC 9110 §9.1); '' for a response. */
  method: string;
  /** Request target as sent; '' for a response. */
  target: string;
  /** Response status code; 0 for a request. */
  status: number;
  /** Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
  /**
   * The connection ends after this message (RFC 9112 §9.3): `Connection: close`, or HTTP/1.0
   * without `Connection: keep-alive`.
   */
  close: boolean;
  /** The Upgrade field's value when Connection lists `upgrade` (RFC 9110 §7.8), else null. */
  upgrade: string | null;
  /** `Expect: 100-continue` (RFC 9110 §10.1.1). */
  expectContinue: boolean;
  /** How the body is delimited: none, Content-Length bytes, chunked, or not HTTP after the head. */
  body: 'none' | 'length' | 'chunked' | 'tunnel';
  /** The body's length in bytes with body 'length', else 0. */
  length: number;
  /**
   * Every field of the head: lowercased names, each with its values in order (one per field
   * line, unsplit). For what framing does not read (a resume's validators: http-range-resume.ts).
   */
  fields: ReadonlyMap<string, readonly string[]>;
}

/** A message complete: its head, and the stream offset just after its last byte. */
export interface Http1Message {
  head: Http1Head;
  end: number;
}

/** What push() found, in stream order: a head read (its body may follow), a message ended. */
export type Http1Event = { kind: 'head'; head: Http1Head } | { kind: 'end'; message: Http1Message };

export interface Http1FramerOptions {
  /**
   * Responses only: the method of the request the next final response answers (RFC 9112 §6.3
   * rules 1 and 2: HEAD and CONNECT change a response's framing); undefined: not HEAD nor CONNECT.
   */
  requestMethod?: () => string | undefined;
  /**
   * Called with each event as it happens, before the framer reads on (push() returns them too):
   * a response framer's requestMethod must already know of the responses before it.
   */
  onEvent?: (event: Http1Event) => void;
}

type State = 'head' | 'body' | 'chunkSize' | 'chunkData' | 'chunkEnd' | 'trailers' | 'opaque';

export class Http1Framer {
  /** Why the stream cannot be framed (sticky), or null. */
  broken: string | null = null;
  /**
   * Why the bytes after the last message are not HTTP any more (101 Switching Protocols, a
   * CONNECT tunnel), or null. Later bytes are ignored; the stream is not broken.
   */
  opaque: string | null = null;
  /** Bytes pushed so far (stream offset of the next byte). */
  offset = 0;
  private state: State = 'head';
  /** The line being read (latin1), and whether its CR was seen. */
  private line = '';
  private sawCR = false;
  private lines: string[] = [];
  private sectionBytes = 0;
  private leadingEmpty = 0;
  private messageStart = 0;
  private remaining = 0;
  private chunkEndSeen = 0;
  private current: Http1Head | null = null;

  constructor(
    readonly role: 'request' | 'response',
    private readonly options: Http1FramerOptions = {},
  ) {}

  /** True between two messages (and at the start): not broken, no byte of a message pending. */
  get between(): boolean {
    return !this.broken && this.state === 'head' && this.line === '' && !this.sawCR && this.lines.length === 0 && this.leadingEmpty === 0;
  }

  /** The head of the message being read, once its head is complete (its body may be pending). */
  get inProgress(): Http1Head | null {
    return this.current;
  }

  /**
   * Feeds the next bytes of the stream; returns what they completed (stream offsets). Never
   * throws; after a framing error `broken` is set and the rest is ignored.
   */
  push(chunk: Uint8Array): Http1Event[] {
    const events: Http1Event[] = [];
    const base = this.offset;
    this.offset += chunk.length;
    let i = 0;
    while (i < chunk.length && !this.broken && this.state !== 'opaque') {
      switch (this.state) {
        case 'head':
        case 'trailers':
        case 'chunkSize':
          i = this.readLine(chunk, i, base, events);
          break;
        case 'body':
        case 'chunkData': {
          const n = Math.min(this.remaining, chunk.length - i);
          i += n;
          this.remaining -= n;
          if (this.remaining > 0) break;
          if (this.state === 'body') this.finish(base + i, events);
          else {
            this.state = 'chunkEnd';
            this.chunkEndSeen = 0;
          }
          break;
        }
        case 'chunkEnd': {
          const c = chunk[i++]!;
          if (c !== (this.chunkEndSeen === 0 ? CR : LF)) this.broken = 'chunk data not followed by CRLF';
          else if (++this.chunkEndSeen === 2) this.state = 'chunkSize';
          break;
        }
      }
    }
    return events;
  }

  /**
   * Passes over `length` bytes not seen (a capture's loss) when they lie inside the body being
   * read: a Content-Length body, or one chunk's data (not its CRLF, nor a chunk-size line or
   * trailer). Returns what they completed (a message whose Content-Length body they end), as
   * push() does; null (nothing changes) when they reach past that, or the framer is broken.
   */
  skipLost(length: number): Http1Event[] | null {
    if (this.broken || length <= 0 || (this.state !== 'body' && this.state !== 'chunkData') || length > this.remaining) return null;
    const events: Http1Event[] = [];
    this.offset += length;
    this.remaining -= length;
    if (this.remaining === 0) {
      if (this.state === 'body') this.finish(this.offset, events);
      else {
        this.state = 'chunkEnd';
        this.chunkEndSeen = 0;
      }
    }
    return events;
  }

  /** Reads up to the end of a line (or of the chunk); on a whole line, acts on it. */
  private readLine(chunk: Uint8Array, i: number, base: number, events: Http1Event[]): number {
    if (this.sawCR) {
      if (chunk[i] !== LF) return this.fail(i, 'CR not followed by LF');
      this.sawCR = false;
      this.onLine(base + i + 1, events);
      return i + 1;
    }
    // A TLS record (handshake type 22) is known from its first byte, long before any line end.
    if (chunk[i] === 0x16 && this.state === 'head' && this.line === '' && this.lines.length === 0) return this.fail(i, 'a TLS handshake (HTTPS): encrypted, cannot be followed');
    const limit = this.state === 'chunkSize' ? MAX_CHUNK_LINE : MAX_LINE;
    let j = i;
    while (j < chunk.length && chunk[j] !== CR && chunk[j] !== LF) j++;
    if (j - i + this.line.length > limit) return this.fail(j, `${this.state === 'chunkSize' ? 'chunk-size line' : 'line'} longer than ${limit} bytes`);
    if (j > i) this.line += Buffer.from(chunk.buffer, chunk.byteOffset + i, j - i).toString('latin1');
    if (j === chunk.length) return j;
    if (chunk[j] === LF) return this.fail(j, 'bare LF (lines end with CRLF)');
    if (j + 1 === chunk.length) {
      this.sawCR = true;
      return j + 1;
    }
    if (chunk[j + 1] !== LF) return this.fail(j, 'CR not followed by LF');
    this.onLine(base + j + 2, events);
    return j + 2;
  }

  private emit(events: Http1Event[], event: Http1Event): void {
    events.push(event);
    this.options.onEvent?.(event);
  }

  private fail(i: number, why: string): number {
    this.broken = why;
    return i;
  }

  /** A whole line (without its CRLF) is in `line`; `end` is the stream offset after its LF. */
  private onLine(end: number, events: Http1Event[]): void {
    const line = this.line;
    this.line = '';
    if (this.state === 'chunkSize') return this.onChunkSize(line);
    if (line === '') {
      if (this.state === 'head' && this.lines.length === 0) {
        // §2.2: empty lines before a request line are skipped; clients skip them before a status
        // line too (a server's stray CRLF after a body), so they are the next message's bytes.
        if (++this.leadingEmpty > MAX_LEADING_EMPTY) return void (this.broken = `more than ${MAX_LEADING_EMPTY} empty lines before a start line`);
        return;
      }
      return this.state === 'head' ? this.onHead(end, events) : this.finish(end, events);
    }
    this.sectionBytes += line.length + 2;
    if (this.sectionBytes > MAX_HEAD) return void (this.broken = `${this.state === 'head' ? 'head' : 'trailer section'} longer than ${MAX_HEAD} bytes`);
    if (this.lines.length > 0 || this.state === 'trailers') {
      const c0 = line.charCodeAt(0);
      if (c0 === 0x20 || c0 === 0x09) return void (this.broken = 'obsolete line folding (RFC 9112 §5.2)');
      const fieldsSoFar = this.state === 'head' ? this.lines.length - 1 : this.lines.length;
      if (fieldsSoFar >= MAX_FIELDS) return void (this.broken = `more than ${MAX_FIELDS} field lines`);
    } else if (this.lines.length === 0 && this.state === 'head') {
      this.messageStart = end - line.length - 2 - this.leadingEmpty * 2;
      const why = this.startLineError(line);
      if (why) return void (this.broken = why);
    }
    this.lines.push(line);
  }

  /** Why a start line is not one this framer follows, or null. */
  private startLineError(line: string): string | null {
    if (line === 'PRI * HTTP/2.0') return 'the HTTP/2 connection preface (prior knowledge): HTTP/2 is not followed';
    const m = this.role === 'request' ? REQUEST_LINE.exec(line) : STATUS_LINE.exec(line);
    if (!m) return `not an HTTP/1.x ${this.role === 'request' ? 'request' : 'status'} line: ${JSON.stringify(line.slice(0, 60))}`;
    const [major, minor] = this.role === 'request' ? [m[3], m[4]] : [m[1], m[2]];
    if (major !== '1' || (minor !== '0' && minor !== '1')) return `HTTP/${major}.${minor} is not followed (1.0 and 1.1 are)`;
    return null;
  }

  /** The head is complete (its final CRLF ends at `end`): decide how the body is delimited. */
  private onHead(end: number, events: Http1Event[]): void {
    const [startLine, ...fieldLines] = this.lines;
    this.lines = [];
    this.sectionBytes = 0;
    this.leadingEmpty = 0;
    const fields = parseFields(fieldLines);
    if (typeof fields === 'string') return void (this.broken = fields);
    const head: Http1Head = { start: this.messageStart, headEnd: end, method: '', target: '', status: 0, minor: 1, close: false, upgrade: null, expectContinue: false, body: 'none', length: 0, fields };
    if (this.role === 'request') {
      const m = REQUEST_LINE.exec(startLine!)!;
      head.method = m[1]!;
      head.target = m[2]!;
      head.minor = m[4] === '0' ? 0 : 1;
    } else {
      const m = STATUS_LINE.exec(startLine!)!;
      head.status = Number(m[3]);
      head.minor = m[2] === '0' ? 0 : 1;
      if (head.status < 100) return void (this.broken = `status code ${head.status} (not 1xx-5xx)`);
    }
    const connection = tokens(fields.get('connection'));
    head.close = connection.includes('close') || (head.minor === 0 && !connection.includes('keep-alive'));
    const upgrade = fields.get('upgrade');
    if (upgrade !== undefined && connection.includes('upgrade')) head.upgrade = upgrade.join(', ');
    head.expectContinue = tokens(fields.get('expect')).includes('100-continue');
    const framing = this.bodyOf(head, fields);
    if (typeof framing === 'string') return void (this.broken = framing);
    head.body = framing.body;
    head.length = framing.length;
    this.current = head;
    this.emit(events, { kind: 'head', head });
    switch (head.body) {
      case 'none':
        return this.finish(end, events);
      case 'tunnel':
        this.finish(end, events);
        this.state = 'opaque';
        this.opaque = head.status === 101 ? `101 Switching Protocols${head.upgrade ? ` to ${head.upgrade}` : ''}` : `a tunnel (${head.method || 'CONNECT'})`;
        return;
      case 'length':
        if (head.length === 0) return this.finish(end, events);
        this.state = 'body';
        this.remaining = head.length;
        return;
      case 'chunked':
        this.state = 'chunkSize';
        return;
    }
  }

  /** How the message's body is delimited (RFC 9112 §6.3), or why it cannot be framed. */
  private bodyOf(head: Http1Head, fields: Map<string, string[]>): { body: Http1Head['body']; length: number } | string {
    if (this.role === 'response') {
      const method = this.options.requestMethod?.();
      if (head.status === 101) return { body: 'tunnel', length: 0 };
      if (method === 'CONNECT' && head.status >= 200 && head.status < 300) return { body: 'tunnel', length: 0 };
      if (head.status < 200 || head.status === 204 || head.status === 304 || method === 'HEAD') return { body: 'none', length: 0 };
    } else if (head.method === 'CONNECT') return { body: 'tunnel', length: 0 };
    const te = fields.get('transfer-encoding');
    const cl = fields.get('content-length');
    if (te !== undefined) {
      if (cl !== undefined) return 'both Transfer-Encoding and Content-Length (RFC 9112 §6.3: servers differ in how they frame it)';
      if (head.minor === 0) return 'Transfer-Encoding in an HTTP/1.0 message (RFC 9112 §6.1)';
      const codings = tokens(te);
      if (codings.length === 0 || codings.some((c) => !TOKEN.test(c))) return `Transfer-Encoding ${JSON.stringify(te.join(', '))} malformed`;
      if (codings.indexOf('chunked') !== codings.length - 1) {
        if (codings.includes('chunked')) return 'Transfer-Encoding with chunked not last, or more than once';
        return this.role === 'request'
          ? 'a request whose Transfer-Encoding does not end with chunked (RFC 9112 §6.3 rule 4: unframeable)'
          : 'a response delimited by the connection\'s close (Transfer-Encoding without chunked last): it cannot be framed';
      }
      return { body: 'chunked', length: 0 };
    }
    if (cl !== undefined) {
      const values = cl.flatMap((v) => v.split(',')).map((v) => v.trim());
      if (values.some((v) => !/^\d{1,16}$/.test(v)) || new Set(values).size !== 1) return `Content-Length ${JSON.stringify(cl.join(', '))} invalid (RFC 9112 §6.3 rule 5)`;
      const length = Number(values[0]);
      if (length > MAX_LENGTH) return `Content-Length ${length} too large`;
      return { body: 'length', length };
    }
    if (this.role === 'request') return { body: 'none', length: 0 };
    return 'a response delimited by the connection\'s close (no Content-Length, not chunked): it cannot be framed';
  }

  private onChunkSize(line: string): void {
    const m = CHUNK_LINE.exec(line);
    if (!m) return void (this.broken = `chunk-size line ${JSON.stringify(line.slice(0, 40))} invalid`);
    const size = parseInt(m[1]!, 16);
    if (size > MAX_LENGTH) return void (this.broken = `chunk size ${size} too large`);
    if (size === 0) {
      this.state = 'trailers';
      this.lines = [];
      this.sectionBytes = 0;
      return;
    }
    this.state = 'chunkData';
    this.remaining = size;
  }

  /** The message ends at `end` (its last byte before it). Trailer fields are checked, not kept. */
  private finish(end: number, events: Http1Event[]): void {
    if (this.state === 'trailers') {
      const fields = parseFields(this.lines);
      this.lines = [];
      this.sectionBytes = 0;
      if (typeof fields === 'string') return void (this.broken = `trailer section: ${fields}`);
    }
    const head = this.current!;
    this.current = null;
    this.state = 'head';
    this.emit(events, { kind: 'end', message: { head, end } });
  }
}

/** Field lines to lowercased names and their values (in order), or why they are malformed. */
function parseFields(lines: readonly string[]): Map<string, string[]> | string {
  const fields = new Map<string, string[]>();
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) return `field line without a name and colon: ${JSON.stringify(line.slice(0, 60))}`;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return `field name ${JSON.stringify(name.slice(0, 60))} invalid (no whitespace before the colon, RFC 9112 §5.1)`;
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!FIELD_VALUE.test(value)) return `field ${name}: value with control characters`;
    const key = name.toLowerCase();
    const list = fields.get(key);
    if (list) list.push(value);
    else fields.set(key, [value]);
  }
  return fields;
}

/** A comma-separated list field's elements (RFC 9110 §5.6.1), lowercased, empty ones dropped. */
function tokens(values: readonly string[] | undefined): string[] {
  if (!values) return [];
  return values.flatMap((v) => v.split(',')).map((v) => v.trim().toLowerCase()).filter((v) => v.length > 0);
}
