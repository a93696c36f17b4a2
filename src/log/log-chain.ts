// A checksum chain over a log's records: what the primary and its backup compare to decide that
// two logs hold the same records (the mirror's HELLO and START, the fork point of a resync).
//
// Comparing the last record alone is not enough: a returning primary that wrote records its
// backup never received, and a new primary that then wrote the same number of other records,
// can end with the same record at the same LSN (a client's order resent and applied in another
// order gets the same reply); the records before it differ and the logs would be taken for one.
// The chain covers every record from the log's first LSN, so any difference anywhere below the
// compared LSN changes it (up to CRC32C's 2^-32 chance of an accidental match; it guards
// against accidents, not against someone forging records).
//
// Definition (docs/MIRRORED-LOG.md, "Wire format"): the chain of an empty range is 0; the chain
// after record n is CRC32C continued from the chain before it over the record's length (u32 LE)
// then its payload. So the chain over records [first, end) is the CRC32C of those records'
// (length, payload) pairs back to back: the lengths keep ["ab", "c"] apart from ["a", "bc"].
//
// A log keeps the chain's value every `every` records (LogChain below, 4,096 by default: one
// number per 4,096 records in memory); the value at any other LSN is folded from the point below
// it over at most `every` records read again.
import { crc32c } from '@node-rs/crc32';

/** The chain of no records. */
export const EMPTY_CHAIN = 0;

const lengthBytes = Buffer.alloc(4);

/** The chain after a record whose chain before is `chain` (u32). Pure. */
export function chainNext(chain: number, payload: Uint8Array): number {
  lengthBytes.writeUInt32LE(payload.length, 0);
  return crc32c(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), crc32c(lengthBytes, chain));
}

/** The chain over `records` in order, continued from `chain` (EMPTY_CHAIN: from the log's first record). Pure. */
export function chainOver(records: Iterable<Uint8Array>, chain = EMPTY_CHAIN): number {
  let c = chain;
  for (const r of records) c = chainNext(c, r);
  return c;
}

/**
 * The chain of a log as it grows from `firstLsn`: the value over every record pushed so far
 * (`tip`), and the value before every `every`-th LSN, so the value before any LSN is found by
 * folding at most `every - 1` records from the point below it (`pointAtOrBelow`).
 */
export class LogChain {
  private current = EMPTY_CHAIN;
  private next: number;
  /** points[j]: the chain over [firstLsn, firstLsn + j * every). */
  private readonly points: number[] = [EMPTY_CHAIN];

  /** Throws RangeError unless `firstLsn` is an LSN (a safe integer ≥ 0) and `every` an integer ≥ 1. */
  constructor(
    readonly firstLsn: number,
    readonly every = 4096,
  ) {
    if (!(Number.isSafeInteger(firstLsn) && firstLsn >= 0)) throw new RangeError(`firstLsn ${firstLsn} is not an LSN`);
    if (!(Number.isSafeInteger(every) && every >= 1)) throw new RangeError(`every ${every} must be an integer of at least 1`);
    this.next = firstLsn;
  }

  /** The LSN the next record pushed has. */
  get nextLsn(): number {
    return this.next;
  }

  /** The chain over [firstLsn, nextLsn). */
  get tip(): number {
    return this.current;
  }

  /** Adds the record at `nextLsn`. */
  push(payload: Uint8Array): void {
    this.current = chainNext(this.current, payload);
    this.next++;
    if ((this.next - this.firstLsn) % this.every === 0) this.points.push(this.current);
  }

  /**
   * The latest LSN at or below `lsn` whose chain before it is known, with that chain: fold the
   * records from there up to `lsn` with chainNext to get the chain over [firstLsn, lsn). Throws
   * RangeError when `lsn` is outside [firstLsn, nextLsn].
   */
  pointAtOrBelow(lsn: number): { lsn: number; chain: number } {
    if (!(Number.isSafeInteger(lsn) && lsn >= this.firstLsn && lsn <= this.next)) throw new RangeError(`LSN ${lsn} is outside the chain's ${this.firstLsn}..${this.next}`);
    if (lsn === this.next) return { lsn, chain: this.current };
    const j = Math.floor((lsn - this.firstLsn) / this.every);
    return { lsn: this.firstLsn + j * this.every, chain: this.points[j]! };
  }
}
