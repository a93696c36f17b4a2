// The fingerprint of the part of a reply a dead server had sent (issue 12): the shadow keeps it
// for the reply in progress on every connection, the relay checks the replay's reply against it.
// Two CRCs of different polynomials (CRC-32C and CRC-32, @node-rs/crc32: SIMD, many GB/s) over
// the same bytes, with their count: a 64-bit check against accidental differences (a replay is
// not an adversary). SHA-256 cost a third of the shadow's time at 1 MiB replies: the capture then
// fell behind and, rightly, every connection was reset.
import { crc32, crc32c } from '@node-rs/crc32';

/** What a reply's first bytes were: how many, and their CRC-32C and CRC-32. */
export interface ReplyFingerprint {
  bytes: number;
  crc32c: number;
  crc32: number;
}

export class ReplyDigest {
  private bytes = 0;
  private c = 0;
  private i = 0;

  update(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    this.c = crc32c(b, this.c);
    this.i = crc32(b, this.i);
    this.bytes += chunk.length;
  }

  get length(): number {
    return this.bytes;
  }

  fingerprint(): ReplyFingerprint {
    return { bytes: this.bytes, crc32c: this.c, crc32: this.i };
  }

  /** Whether the bytes fed so far are the fingerprinted ones (same count, same CRCs). */
  matches(f: ReplyFingerprint): boolean {
    return this.bytes === f.bytes && this.c === f.crc32c && this.i === f.crc32;
  }
}
