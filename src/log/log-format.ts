// The mirrored log's on-disk format, byte by byte (docs/MIRRORED-LOG.md draws it): pure
// encoding and decoding, no I/O. All integers are little-endian.
//
// Segment file `<first LSN, 20 decimal digits>.log`:
//   header, 32 bytes:
//     0  8  magic "TKOVRLOG" (ASCII)
//     8  2  format version, u16 = 1
//    10  2  header size in bytes, u16 = 32
//    12  4  reserved, zero
//    16  8  first LSN: the number of the segment's first record, u64 (< 2^53)
//    24  4  reserved, zero
//    28  4  CRC32C of bytes 0..27
//   then records, back to back, each:
//     0  4  payload length in bytes, u32
//     4  4  CRC32C of bytes 0..3 (the length) followed by the payload
//     8  n  payload
import { crc32c } from '@node-rs/crc32';

export const MAGIC = Buffer.from('TKOVRLOG', 'ascii');
export const FORMAT_VERSION = 1;
/** Bytes of a segment's header. */
export const HEADER_BYTES = 32;
/** Bytes of a record's frame before its payload (length + CRC). */
export const FRAME_OVERHEAD = 8;
/** A segment's file name: its first LSN in 20 decimal digits, then `.log`. */
export const SEGMENT_NAME = /^(\d{20})\.log$/;

/** The file name of the segment whose first record is `firstLsn`. */
export function segmentName(firstLsn: number): string {
  return `${String(firstLsn).padStart(20, '0')}.log`;
}

/** The first LSN a segment file name carries, or null for a name that is not a segment's. */
export function parseSegmentName(name: string): number | null {
  const m = SEGMENT_NAME.exec(name);
  if (!m) return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : null;
}

/** A segment header's 32 bytes for a segment starting at record `firstLsn`. */
export function encodeHeader(firstLsn: number): Buffer {
  if (!Number.isSafeInteger(firstLsn) || firstLsn < 0) throw new RangeError(`first LSN ${firstLsn} is not an integer in 0..2^53-1`);
  const b = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt16LE(FORMAT_VERSION, 8);
  b.writeUInt16LE(HEADER_BYTES, 10);
  b.writeBigUInt64LE(BigInt(firstLsn), 16);
  b.writeUInt32LE(crc32c(b.subarray(0, 28)), 28);
  return b;
}

/** What reading a header found: its first LSN, or why it is not one. */
export type HeaderCheck = { ok: true; firstLsn: number } | { ok: false; reason: string; torn: boolean };

/**
 * Checks the header at the start of `file`. `torn` is true when the header is short or all
 * zeros: a crash between creating the file and its header being durable, not damage.
 */
export function decodeHeader(file: Uint8Array): HeaderCheck {
  const b = Buffer.from(file.buffer, file.byteOffset, Math.min(file.length, HEADER_BYTES));
  if (b.length < HEADER_BYTES) return { ok: false, reason: `header is ${b.length} bytes, needs ${HEADER_BYTES}`, torn: true };
  if (b.every((x) => x === 0)) return { ok: false, reason: 'header is all zeros', torn: true };
  if (!b.subarray(0, 8).equals(MAGIC)) return { ok: false, reason: `not a log segment (magic ${JSON.stringify(b.subarray(0, 8).toString('latin1'))})`, torn: false };
  if (b.readUInt32LE(28) !== crc32c(b.subarray(0, 28))) return { ok: false, reason: 'header checksum mismatch', torn: false };
  const version = b.readUInt16LE(8);
  if (version !== FORMAT_VERSION) return { ok: false, reason: `format version ${version}, this code reads ${FORMAT_VERSION}`, torn: false };
  if (b.readUInt16LE(10) !== HEADER_BYTES) return { ok: false, reason: `header size ${b.readUInt16LE(10)}, expected ${HEADER_BYTES}`, torn: false };
  const first = b.readBigUInt64LE(16);
  if (first > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: `first LSN ${first} is above 2^53-1`, torn: false };
  return { ok: true, firstLsn: Number(first) };
}

/** The checksum of a record: CRC32C over its 4 length bytes, then its payload. */
export function recordCrc(lengthBytes: Uint8Array, payload: Uint8Array): number {
  return crc32c(payload, crc32c(lengthBytes));
}

/** One record's frame (length, CRC, a copy of the payload). */
export function encodeFrame(payload: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(FRAME_OVERHEAD + payload.length);
  b.writeUInt32LE(payload.length, 0);
  b.set(payload, FRAME_OVERHEAD);
  b.writeUInt32LE(recordCrc(b.subarray(0, 4), b.subarray(FRAME_OVERHEAD)), 4);
  return b;
}

/** What is at one offset of a segment: a whole valid record, or why not. */
export type FrameCheck =
  | { kind: 'record'; payload: Buffer; end: number }
  /** The frame (its 8-byte head, or the payload its length announces) runs past the end of the file. */
  | { kind: 'incomplete'; reason: string }
  /** The frame is all there but its CRC does not match. */
  | { kind: 'bad-crc'; end: number };

/** Reads the frame at `offset` of `file` (a whole segment); never reads past `file`'s end. */
export function checkFrame(file: Buffer, offset: number): FrameCheck {
  if (offset + FRAME_OVERHEAD > file.length) return { kind: 'incomplete', reason: `${file.length - offset} bytes left, a record's head is ${FRAME_OVERHEAD}` };
  const len = file.readUInt32LE(offset);
  const end = offset + FRAME_OVERHEAD + len;
  if (end > file.length) return { kind: 'incomplete', reason: `record length ${len} runs ${end - file.length} bytes past the end of the file` };
  const payload = file.subarray(offset + FRAME_OVERHEAD, end);
  if (recordCrc(file.subarray(offset, offset + 4), payload) !== file.readUInt32LE(offset + 4)) return { kind: 'bad-crc', end };
  return { kind: 'record', payload, end };
}
