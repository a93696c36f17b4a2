// A bounded big-endian cursor over one message body, shared by the wire formats (connection
// replication, the log mirror, the reliable request layer). Every read checks the bytes are
// there and throws BodyError otherwise, so a decoder reads fields in order and turns any
// BodyError into its own rejection ("bad body"), never an exception of another kind, never a
// read past the body. Text is length-prefixed (u8) UTF-8, refused when not valid UTF-8.
export class BodyError extends Error {}

export class BodyReader {
  private o: number;

  /** Reads `b` from `start` (bytes) up to `end` (exclusive; default the buffer's end). */
  constructor(
    private readonly b: Buffer,
    start = 0,
    private readonly limit = b.length,
  ) {
    this.o = start;
  }

  private need(n: number, what: string): number {
    if (this.o + n > this.limit) throw new BodyError(`truncated ${what}`);
    const at = this.o;
    this.o += n;
    return at;
  }

  u8(what = 'body'): number {
    return this.b[this.need(1, what)]!;
  }

  u16(what = 'body'): number {
    return this.b.readUInt16BE(this.need(2, what));
  }

  u32(what = 'body'): number {
    return this.b.readUInt32BE(this.need(4, what));
  }

  u64(what = 'body'): bigint {
    return this.b.readBigUInt64BE(this.need(8, what));
  }

  /** A u64 that must be a safe integer (at most 2^53 - 1) and at least `min`: an LSN, a message ID. */
  safeInt(what: string, min = 0): number {
    const v = this.u64(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(min)) throw new BodyError(`${what} ${v} is out of range (${min}..2^53-1)`);
    return Number(v);
  }

  /** The next `n` bytes, not copied (a view of the body). */
  bytes(n: number, what = 'body'): Buffer {
    const at = this.need(n, what);
    return this.b.subarray(at, at + n);
  }

  /** u32 length, then that many bytes (at most `max`), not copied. */
  lengthPrefixed(what: string, max: number): Buffer {
    const n = this.u32(what);
    if (n > max) throw new BodyError(`${what} of ${n} bytes, the most is ${max}`);
    return this.bytes(n, what);
  }

  /** u8 length (from `min` to `max` bytes), then that much UTF-8. */
  text(what: string, min: number, max: number): string {
    const len = this.u8(what);
    if (len < min || len > max) throw new BodyError(`${what} of ${len} bytes (${min}..${max})`);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.bytes(len, what));
    } catch (err) {
      if (err instanceof BodyError) throw err;
      throw new BodyError(`${what} is not UTF-8`);
    }
  }

  get atEnd(): boolean {
    return this.o === this.limit;
  }

  /** Throws unless every byte of the body was read. */
  end(): void {
    if (this.o !== this.limit) throw new BodyError(`${this.limit - this.o} trailing bytes`);
  }
}
