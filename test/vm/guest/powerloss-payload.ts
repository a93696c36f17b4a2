// The power-loss test's records (test/vm/powerloss.test.ts): each names its case and its
// sequence number and carries bytes that follow from the two, so a record read back from a disk
// is checked byte for byte against what was appended, whichever LSN it got. Sizes vary from 64
// to ~6 KiB so that a group commit's batch spans several pages and a power cut can tear it.

/** The payload of record `seq` of case `c` (both small non-negative integers). */
export function powerlossPayload(c: number, seq: number): Buffer {
  const head = Buffer.from(`powerloss case ${c} record ${seq};`);
  const size = head.length + 32 + (Math.imul(seq + 1, 2654435761) >>> 0) % 6000;
  const out = Buffer.alloc(size);
  head.copy(out);
  // xorshift32 from a seed of (c, seq), never 0.
  let s = (Math.imul(c + 1, 0x9e3779b1) ^ Math.imul(seq + 1, 0x85ebca6b)) | 1;
  for (let p = head.length; p < size; p++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[p] = s & 0xff;
  }
  return out;
}

/**
 * The sequence number a record of case `c` names, when the record is exactly that record's
 * payload; undefined for anything else (another case, a damaged or foreign record).
 */
export function powerlossSeq(c: number, record: Buffer): number | undefined {
  const m = /^powerloss case (\d+) record (\d+);/.exec(record.subarray(0, 48).toString('latin1'));
  if (!m || Number(m[1]) !== c) return undefined;
  const seq = Number(m[2]);
  return powerlossPayload(c, seq).equals(record) ? seq : undefined;
}
