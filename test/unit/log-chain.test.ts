// The checksum chain over a log's records (src/log/log-chain.ts): what a primary and its backup
// compare to decide two logs hold the same records.
import { crc32c } from '@node-rs/crc32';
import { describe, expect, it } from 'vitest';
import { EMPTY_CHAIN, LogChain, chainNext, chainOver } from '../../src/log/log-chain.js';
import { seededRandom } from './mirror-helpers.js';

const u32le = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
};

describe('log chain', () => {
  it('is the CRC32C of the records\' (length, payload) pairs back to back, from 0 for no records', () => {
    const records = [Buffer.from('123456789'), Buffer.alloc(0), Buffer.from('abc')];
    const framed = Buffer.concat(records.flatMap((r) => [u32le(r.length), r]));
    expect(chainOver([])).toBe(EMPTY_CHAIN);
    expect(chainOver(records)).toBe(crc32c(framed));
    expect(chainNext(chainOver(records.slice(0, 2)), records[2]!)).toBe(chainOver(records));
    // A view into a larger buffer counts only its own bytes.
    const big = Buffer.from('xx123456789yy');
    expect(chainNext(EMPTY_CHAIN, big.subarray(2, 11))).toBe(chainNext(EMPTY_CHAIN, Buffer.from('123456789')));
  });

  it('tells apart what a last-record check cannot: other records before the same last one, records split differently, an empty record added', () => {
    const a = ['x1', 'x2', 'same'].map((s) => Buffer.from(s));
    const b = ['y1', 'y2', 'same'].map((s) => Buffer.from(s));
    expect(crc32c(a[2]!)).toBe(crc32c(b[2]!));
    expect(chainOver(a)).not.toBe(chainOver(b));
    expect(chainOver([Buffer.from('ab'), Buffer.from('c')])).not.toBe(chainOver([Buffer.from('a'), Buffer.from('bc')]));
    expect(chainOver([Buffer.from('a')])).not.toBe(chainOver([Buffer.from('a'), Buffer.alloc(0)]));
  });

  it('LogChain: the value before every LSN, folded from the kept point at or below it, equals the chain over the records below; 3 seeded logs', () => {
    for (const seed of [1, 2, 3]) {
      const { int } = seededRandom(seed);
      const first = [0, 7, 1000][seed - 1]!;
      const every = [1, 5, 64][seed - 1]!;
      const records = Array.from({ length: 300 + int(100) }, () => Buffer.from(Array.from({ length: int(40) }, () => int(256))));
      const chain = new LogChain(first, every);
      const before: number[] = [EMPTY_CHAIN];
      for (const r of records) {
        chain.push(r);
        before.push(chainNext(before.at(-1)!, r));
      }
      expect(chain.nextLsn).toBe(first + records.length);
      expect(chain.tip).toBe(before.at(-1));
      for (let i = 0; i <= records.length; i++) {
        const p = chain.pointAtOrBelow(first + i);
        expect(p.lsn).toBeLessThanOrEqual(first + i);
        expect(first + i - p.lsn).toBeLessThan(every);
        expect(chainOver(records.slice(p.lsn - first, i), p.chain)).toBe(before[i]);
      }
    }
  });

  it('bad input: an LSN outside the chain, a bad first LSN or spacing (RangeError, nothing changed)', () => {
    const chain = new LogChain(10, 4);
    chain.push(Buffer.from('a'));
    expect(() => chain.pointAtOrBelow(9)).toThrow(RangeError);
    expect(() => chain.pointAtOrBelow(12)).toThrow(RangeError);
    expect(() => chain.pointAtOrBelow(10.5)).toThrow(RangeError);
    expect(chain.pointAtOrBelow(11)).toEqual({ lsn: 11, chain: chainOver([Buffer.from('a')]) });
    expect(() => new LogChain(-1)).toThrow(RangeError);
    expect(() => new LogChain(2 ** 53)).toThrow(RangeError);
    expect(() => new LogChain(0, 0)).toThrow(RangeError);
    expect(() => new LogChain(0, 1.5)).toThrow(RangeError);
  });
});
