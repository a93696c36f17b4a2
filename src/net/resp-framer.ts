// A RESP (Redis serialization protocol) framer: finds where each complete top-level message ends
// in a byte stream fed in arbitrary chunks, without keeping the message bytes. RESP2 and RESP3
// (https://redis.io/docs/latest/develop/reference/protocol-spec/): simple lines (+ - : _ , # (),
// length-prefixed blobs ($ ! =), aggregates (* ~ > of n values, % of n pairs) nested to any depth
// up to a bound, and attributes (| n pairs that annotate the value after them, which belongs to
// the same message). Streamed RESP3 types (`$?`, `*?`) are not supported: Redis never sends them.
// Memory is O(nesting depth): blob payloads are skipped, lines keep at most their first 32 bytes.

const LINE_TYPES = new Set(['+', '-', ':', '_', ',', '#', '(']);
const BLOB_TYPES = new Set(['$', '!', '=']);
/** Aggregate type -> values per counted element (maps and attributes count pairs). */
const AGGREGATE_WIDTH = new Map([['*', 1], ['~', 1], ['>', 1], ['%', 2], ['|', 2]]);
const CR = 0x0d;
const LF = 0x0a;
/** A header's length field longer than this is not a number RESP would send. */
const HEADER_KEEP = 32;
/** Largest blob length accepted (Redis's proto-max-bulk-len upper bound is 512 MiB by default). */
const MAX_BLOB = 2 ** 32;

/** Called as each value's header is read; the tracker learns types without seeing payloads. */
export interface RespValueListener {
  /**
   * type: the type byte as a character ('+', '*', ...); depth: open aggregates around it (0 for
   * a top-level value; an attribute counts as one level); length: the header's number for blobs
   * and aggregates (-1 for RESP2 nulls), null for simple lines.
   */
  value?(type: string, depth: number, length: number | null): void;
  /**
   * A top-level message ended at this offset (exclusive) within the chunk being pushed; called at
   * once, before the next message's values.
   */
  end?(offsetInChunk: number): void;
}

export interface RespFramerOptions {
  listener?: RespValueListener;
  /** Aggregates nested deeper than this break the framer (default 64). */
  maxDepth?: number;
}

export class RespFramer {
  /** Why the stream cannot be framed (sticky), or null. */
  broken: string | null = null;
  /** Bytes pushed so far (the stream offset of the next byte), framed or not. */
  offset = 0;
  private header = '';
  private headerLength = 0;
  private sawCR = false;
  /** Blob payload bytes still to skip; then the 2-byte CRLF (blobTail counts those). */
  private blobRemaining = -1;
  private blobTail = 0;
  /** Values still expected at each open aggregate level. */
  private readonly pending: number[] = [];
  private readonly listener: RespValueListener | undefined;
  private readonly maxDepth: number;

  constructor(options: RespFramerOptions = {}) {
    this.listener = options.listener;
    this.maxDepth = options.maxDepth ?? 64;
  }

  /** True between two top-level messages (and at the start), unless broken. */
  get between(): boolean {
    return !this.broken && this.headerLength === 0 && this.blobRemaining < 0 && this.blobTail === 0 && this.pending.length === 0;
  }

  /**
   * Feeds the next bytes of the stream. Returns the offsets within `chunk` (exclusive ends, in
   * order) where top-level messages completed. Never throws; after a framing error `broken` is
   * set and the rest (of this and later chunks) is ignored.
   */
  push(chunk: Uint8Array): number[] {
    const ends: number[] = [];
    let i = 0;
    while (i < chunk.length && !this.broken) {
      if (this.blobRemaining > 0) {
        const n = Math.min(this.blobRemaining, chunk.length - i);
        i += n;
        this.blobRemaining -= n;
        if (this.blobRemaining === 0) this.blobTail = 2;
        continue;
      }
      const c = chunk[i++]!;
      if (this.blobTail > 0) {
        if (c !== (this.blobTail === 2 ? CR : LF)) this.broken = 'blob not followed by CRLF';
        else if (--this.blobTail === 0) {
          this.blobRemaining = -1;
          if (this.valueDone()) this.ended(i, ends);
        }
        continue;
      }
      if (this.sawCR) {
        if (c !== LF) {
          this.broken = 'CR not followed by LF';
          continue;
        }
        this.sawCR = false;
        const line = this.header;
        this.header = '';
        this.headerLength = 0;
        if (this.onLine(line)) this.ended(i, ends);
        continue;
      }
      if (c === CR) this.sawCR = true;
      else if (c === LF) this.broken = 'LF without CR';
      else {
        if (this.header.length < HEADER_KEEP) this.header += String.fromCharCode(c);
        this.headerLength++;
      }
    }
    this.offset += chunk.length;
    return ends;
  }

  /**
   * Passes over `length` bytes not seen (a capture's loss) when they lie inside the blob being
   * read: its payload and at most its closing CRLF (what follows must be seen). Returns the
   * offsets (within the skipped bytes, exclusive ends) where top-level messages completed, as
   * push() does (at most one: the blob's, where the skip ends on its CRLF); null (nothing
   * changes) when the bytes reach past the blob or no blob is being read, or the framer is broken.
   */
  skipLost(length: number): number[] | null {
    const inBlob = this.blobRemaining > 0 || this.blobTail > 0;
    if (this.broken || length <= 0 || !inBlob) return null;
    const payload = Math.max(this.blobRemaining, 0);
    const tail = this.blobRemaining > 0 ? 2 : this.blobTail;
    if (length > payload + tail) return null;
    this.offset += length;
    const ends: number[] = [];
    if (payload > 0) {
      this.blobRemaining -= Math.min(payload, length);
      if (this.blobRemaining === 0) this.blobTail = 2;
    }
    const tailSkipped = length - payload;
    if (tailSkipped > 0) {
      this.blobTail -= tailSkipped;
      if (this.blobTail === 0) {
        this.blobRemaining = -1;
        if (this.valueDone()) this.ended(length, ends);
      }
    }
    return ends;
  }

  private ended(offsetInChunk: number, ends: number[]): void {
    ends.push(offsetInChunk);
    this.listener?.end?.(offsetInChunk);
  }

  /** One header or simple line (without CRLF); true when it completed a top-level message. */
  private onLine(line: string): boolean {
    const type = line[0] ?? '';
    const depth = this.pending.length;
    if (LINE_TYPES.has(type)) {
      this.listener?.value?.(type, depth, null);
      return this.valueDone();
    }
    const rest = line.slice(1);
    const n = /^-?[0-9]{1,12}$/.test(rest) && this.headerLength <= HEADER_KEEP ? Number(rest) : NaN;
    if (BLOB_TYPES.has(type)) {
      if (!Number.isInteger(n) || n < -1 || n > MAX_BLOB) return this.fail(`bad blob length ${JSON.stringify(rest)}`);
      this.listener?.value?.(type, depth, n);
      if (n === -1) return this.valueDone();
      if (n === 0) this.blobTail = 2;
      else this.blobRemaining = n;
      return false;
    }
    const width = AGGREGATE_WIDTH.get(type);
    if (width !== undefined) {
      if (!Number.isInteger(n) || n < -1) return this.fail(`bad aggregate length ${JSON.stringify(rest)}`);
      this.listener?.value?.(type, depth, n);
      // An attribute annotates the value after it: its pairs and that value are one element.
      const count = type === '|' ? Math.max(n, 0) * 2 + 1 : n * width;
      if (count <= 0) return this.valueDone();
      if (this.pending.length >= this.maxDepth) return this.fail('aggregates nested too deep');
      this.pending.push(count);
      return false;
    }
    return this.fail(`unknown RESP type ${JSON.stringify(type)}`);
  }

  private fail(reason: string): false {
    this.broken = reason;
    return false;
  }

  /** A value completed; closes the aggregates it completes. True when a top-level message ended. */
  private valueDone(): boolean {
    while (this.pending.length > 0) {
      const top = this.pending.length - 1;
      if (--this.pending[top]! > 0) return false;
      this.pending.pop();
    }
    return true;
  }
}
