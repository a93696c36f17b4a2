// Frames the client side of a RESP connection: the requests a Redis server reads. Two forms
// (https://redis.io/docs/latest/develop/reference/protocol-spec/#sending-commands-to-a-redis-server):
// an array of bulk strings (`*<n>\r\n` then n times `$<len>\r\n<bytes>\r\n`) or an inline command
// (a line of words separated by spaces, ended by LF or CRLF). Like Redis, an inline line of only
// spaces, `*0` and `*-1` are no command and get no reply. Request bytes are not kept: only the end
// offset, the command name and, for the commands the caller asks for, a few small arguments
// and/or a digest of all of them (argumentsDigest: what a replication stream's copy is matched by).
import crypto, { createHash, type Hash } from 'node:crypto';

const CR = 0x0d;
const LF = 0x0a;
/** Redis's PROTO_INLINE_MAX_SIZE: a longer line without LF is a protocol error there too. */
const INLINE_MAX = 64 * 1024;
/** Bytes of an inline line kept to find the name and the kept arguments. */
const INLINE_KEEP = 4096;
/** Redis's default proto-max-bulk-len (512 MiB). */
const BULK_MAX = 512 * 1024 * 1024;
const NAME_KEEP = 32;
/** Arguments kept per request (count, total bytes); more marks the request truncated. */
const KEEP_ARGS = 8;
const KEEP_BYTES = 4096;
/** For a digested command, its arguments are kept whole up to this (to run it again): 1,024 words, 64 KiB. */
const DIGEST_KEEP_ARGS = 1024;
const DIGEST_KEEP_BYTES = 64 * 1024;

export interface RespRequest {
  /** Client stream offset (bytes) where the request ends (exclusive). */
  end: number;
  /** The command name, lowercased (first 32 bytes); '' for no command. */
  name: string;
  /** The arguments after the name, when keepArgs(name) or digestOf(name) said so; else empty. */
  args: Buffer[];
  /** Words of the command, its name included (an array's length; an inline line's words). */
  argc: number;
  /**
   * Arguments were asked for but not all kept (more than 8 or 4 KiB, for a digested command more
   * than 1,024 or 64 KiB; or quotes in an inline line).
   */
  truncated: boolean;
  /** False for what Redis does not answer: an empty inline line, `*0`, `*-1`. */
  answered: boolean;
  /**
   * With digestOf(name): argumentsDigest of the whole command (name lowercased); null for an
   * inline request (Redis re-encodes it, quoted words and all) and for one whose bytes a capture
   * lost (skipLost()). Absent otherwise.
   */
  digest?: string | null;
}

/**
 * SHA-1 (hex) of a command as Redis runs it: each argument's length (4 bytes, big-endian) and its
 * bytes, the name lowercased (a stream carries the client's own spelling of it). The same for a
 * request framed here and for its copy in the replication stream.
 */
export function argumentsDigest(argv: readonly Uint8Array[]): string {
  // One buffer, hashed at once: a takeover digests every command of the stream it reads back
  // (30,000 INCRs took 70-130 ms with a Hash object and three updates each).
  return sha1Hex(digestedBytes(argv));
}

/** What argumentsDigest hashes: each word's length (4 bytes, big-endian) and its bytes, the name lowercased. */
function digestedBytes(argv: readonly Uint8Array[]): Buffer {
  let size = 0;
  for (const a of argv) size += 4 + a.length;
  const bytes = Buffer.allocUnsafe(size);
  let at = 0;
  argv.forEach((a, i) => {
    bytes.writeUInt32BE(a.length, at);
    bytes.set(a, at + 4);
    if (i === 0) lowerLatin1(bytes, at + 4, at + 4 + a.length);
    at += 4 + a.length;
  });
  return bytes;
}

/**
 * Lowercases bytes[from, to) in place as latin1 text's toLowerCase() does (A-Z, and À-Þ but ×),
 * the framer's rule for a command's name: the two digests must agree byte for byte.
 */
function lowerLatin1(bytes: Buffer, from: number, to: number): void {
  for (let k = from; k < to; k++) {
    const c = bytes[k]!;
    if ((c >= 0x41 && c <= 0x5a) || (c >= 0xc0 && c <= 0xde && c !== 0xd7)) bytes[k] = c + 0x20;
  }
}

/** SHA-1 of `bytes`, hex: crypto.hash where Node has it (20.12+), without a Hash object. */
const sha1Hex: (bytes: Buffer) => string =
  typeof (crypto as { hash?: unknown }).hash === 'function'
    ? (bytes) => (crypto as unknown as { hash(algorithm: string, data: Buffer, encoding: 'hex'): string }).hash('sha1', bytes, 'hex')
    : (bytes) => createHash('sha1').update(bytes).digest('hex');

function lengthBytes(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

type State = 'start' | 'inline' | 'count' | 'bulkHeader' | 'bulkBody' | 'bulkTail';

export class RespRequestFramer {
  /** Why the stream is not RESP requests (sticky), or null. */
  broken: string | null = null;
  /** Bytes pushed so far (stream offset of the next byte). */
  offset = 0;
  private state: State = 'start';
  private header = '';
  private sawCR = false;
  private inline: Buffer[] = [];
  private inlineKept = 0;
  private inlineLength = 0;
  private argsLeft = 0;
  private argIndex = 0;
  private bulkLeft = 0;
  private tail = 0;
  private capture: Buffer[] = [];
  private captureLength = 0;
  private capturing = false;
  private req: RespRequest = newRequest();
  /**
   * With digestOf(name): the request's name as sent, its arguments being kept (req.args) to be
   * digested at once when it ends (argumentsDigest: one hash call per write, not a Hash object
   * and two updates per word).
   */
  private digestName: Buffer | null = null;
  /** The digest computed as the bytes pass, once a digested request's arguments are too large to keep. */
  private hash: Hash | null = null;
  /** Bytes of the request in progress were skipped (skipLost()): it has no digest. */
  private digestLost = false;

  /**
   * keepArgs(name): whether to keep the (small) arguments of commands with that name;
   * digestOf(name): whether to compute their argumentsDigest (RespRequest.digest).
   */
  constructor(
    private readonly keepArgs: (name: string) => boolean,
    private readonly digestOf: (name: string) => boolean = () => false,
  ) {}

  /** True between two requests (and at the start), unless broken. */
  get between(): boolean {
    return !this.broken && this.state === 'start';
  }

  /** Feeds the next client bytes; returns the requests they completed, in order. Never throws. */
  push(chunk: Uint8Array): RespRequest[] {
    const done: RespRequest[] = [];
    const base = this.offset;
    this.offset += chunk.length;
    let i = 0;
    while (i < chunk.length && !this.broken) {
      switch (this.state) {
        case 'start':
          if (chunk[i] === 0x2a) {
            i++;
            this.state = 'count';
          } else this.state = 'inline';
          break;
        case 'inline': {
          const lf = chunk.indexOf(LF, i);
          const stop = lf < 0 ? chunk.length : lf;
          const keep = Math.min(stop - i, INLINE_KEEP - this.inlineKept);
          if (keep > 0) this.inline.push(Buffer.from(chunk.subarray(i, i + keep)));
          this.inlineKept += Math.max(keep, 0);
          this.inlineLength += stop - i;
          if (this.inlineLength > INLINE_MAX) {
            this.broken = 'inline request longer than 64 KiB';
            break;
          }
          i = stop;
          if (lf >= 0) {
            i++;
            this.endInline(base + i, done);
          }
          break;
        }
        case 'count':
        case 'bulkHeader': {
          const c = chunk[i++]!;
          if (this.state === 'bulkHeader' && this.header === '' && !this.sawCR && c !== 0x24) {
            this.broken = `expected '$', got ${JSON.stringify(String.fromCharCode(c))}`;
            break;
          }
          if (this.sawCR) {
            if (c !== LF) this.broken = 'CR not followed by LF';
            else this.onHeader(base + i, done);
          } else if (c === CR) this.sawCR = true;
          else if (this.header.length >= 16) this.broken = 'request header too long';
          else this.header += String.fromCharCode(c);
          break;
        }
        case 'bulkBody': {
          const n = Math.min(this.bulkLeft, chunk.length - i);
          if (this.capturing) this.capture.push(Buffer.from(chunk.subarray(i, i + n)));
          this.hash?.update(chunk.subarray(i, i + n));
          i += n;
          this.bulkLeft -= n;
          if (this.bulkLeft === 0) {
            this.state = 'bulkTail';
            this.tail = 2;
          }
          break;
        }
        case 'bulkTail': {
          const c = chunk[i++]!;
          if (c !== (this.tail === 2 ? CR : LF)) this.broken = 'bulk string not followed by CRLF';
          else if (--this.tail === 0) this.endArg(base + i, done);
          break;
        }
      }
    }
    return done;
  }

  /**
   * Passes over `length` bytes not seen (a capture's loss) when they lie inside the payload of
   * an argument after the name: the request is still framed, but its arguments are not all
   * kept (truncated) and it has no digest (null: it cannot be looked up in a replication
   * stream). false (nothing changes) when they reach past that payload or lie elsewhere.
   */
  skipLost(length: number): boolean {
    if (this.broken || length <= 0 || this.state !== 'bulkBody' || this.argIndex === 0 || length > this.bulkLeft) return false;
    this.offset += length;
    this.bulkLeft -= length;
    if (this.capturing) {
      this.capturing = false;
      this.capture = [];
      this.req.truncated = true;
    }
    this.digestLost = this.digestName !== null;
    this.hash = null;
    if (this.bulkLeft === 0) {
      this.state = 'bulkTail';
      this.tail = 2;
    }
    return true;
  }

  private onHeader(end: number, done: RespRequest[]): void {
    const text = this.state === 'bulkHeader' ? this.header.slice(1) : this.header;
    this.header = '';
    this.sawCR = false;
    const n = /^-?[0-9]{1,10}$/.test(text) ? Number(text) : NaN;
    if (this.state === 'count') {
      if (!Number.isInteger(n) || n > 2 ** 31 - 1) return void (this.broken = `invalid multibulk length ${JSON.stringify(text)}`);
      if (n <= 0) return this.finish(end, false, done);
      this.argsLeft = n;
      this.req.argc = n;
      this.argIndex = 0;
      this.state = 'bulkHeader';
      return;
    }
    if (!Number.isInteger(n) || n < 0 || n > BULK_MAX) return void (this.broken = `invalid bulk length ${JSON.stringify(text)}`);
    this.bulkLeft = n;
    this.capture = [];
    const digested = this.digestName !== null;
    this.capturing = this.argIndex === 0 || ((digested || this.keepArgs(this.req.name)) && !this.req.truncated);
    const [maxArgs, maxBytes] = digested ? [DIGEST_KEEP_ARGS, DIGEST_KEEP_BYTES] : [KEEP_ARGS, KEEP_BYTES];
    if (this.argIndex > 0 && this.capturing && (this.req.args.length >= maxArgs || this.captureLength + n > maxBytes)) {
      this.capturing = false;
      this.req.truncated = true;
      // Not kept whole: digested as the rest passes, from what was kept so far.
      if (digested && !this.digestLost) this.hash = createHash('sha1').update(digestedBytes([this.digestName!, ...this.req.args]));
    }
    this.hash?.update(lengthBytes(n));
    if (this.argIndex === 0 && n > NAME_KEEP) this.capturing = false;
    if (n === 0) {
      this.state = 'bulkTail';
      this.tail = 2;
    } else this.state = 'bulkBody';
  }

  private endArg(end: number, done: RespRequest[]): void {
    if (this.capturing) {
      const arg = Buffer.concat(this.capture);
      if (this.argIndex === 0) {
        this.req.name = arg.toString('latin1').toLowerCase();
        if (this.digestOf(this.req.name)) this.digestName = arg;
      } else {
        this.req.args.push(arg);
        this.captureLength += arg.length;
      }
    } else if (this.argIndex === 0) this.req.name = '?';
    this.capture = [];
    this.argIndex++;
    if (--this.argsLeft === 0) this.finish(end, true, done);
    else this.state = 'bulkHeader';
  }

  private endInline(end: number, done: RespRequest[]): void {
    let line = Buffer.concat(this.inline).toString('latin1');
    const whole = this.inlineKept === this.inlineLength;
    this.inline = [];
    this.inlineKept = 0;
    this.inlineLength = 0;
    if (whole && line.endsWith('\r')) line = line.slice(0, -1);
    // Redis splits on isspace() (sdssplitargs); quoted words are not decoded here.
    const words = line.split(/[ \t\r\n\v\f]+/).filter((w) => w.length > 0);
    if (words.length === 0 && whole) return this.finish(end, false, done);
    this.req.argc = words.length;
    this.req.name = (words[0] ?? '?').replace(/["']/g, '').toLowerCase().slice(0, NAME_KEEP);
    if (this.digestOf(this.req.name)) this.req.digest = null;
    if (this.keepArgs(this.req.name)) {
      const args = words.slice(1);
      this.req.truncated = !whole || /["']/.test(line) || args.length > KEEP_ARGS;
      if (!this.req.truncated) this.req.args = args.map((w) => Buffer.from(w, 'latin1'));
    }
    this.finish(end, true, done);
  }

  private finish(end: number, answered: boolean, done: RespRequest[]): void {
    if (this.digestLost) this.req.digest = null;
    else if (this.hash) this.req.digest = this.hash.digest('hex');
    else if (this.digestName) this.req.digest = argumentsDigest([this.digestName, ...this.req.args]);
    this.hash = null;
    this.digestName = null;
    this.digestLost = false;
    this.req.end = end;
    this.req.answered = answered;
    done.push(this.req);
    this.req = newRequest();
    this.captureLength = 0;
    this.state = 'start';
  }
}

function newRequest(): RespRequest {
  return { end: 0, name: '', args: [], argc: 0, truncated: false, answered: true };
}
