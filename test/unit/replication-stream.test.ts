// parseReplicationStream / findProbe: offsets, databases, what is skipped, strictness, and a
// seeded mutation fuzz (random bytes and mutated real streams: a result or a RangeError, never a
// loop, another error, or a command past the input).
import { describe, expect, it } from 'vitest';
import { encodeCommand } from '../../src/net/shadow/resp-continue.js';
import { findProbe, parseReplicationStream, PROBE_CHANNEL, type ReplicatedCommand } from '../../src/net/shadow/replication-stream.js';
import { prng } from './frame-builder.js';

const cmd = (...w: (string | Buffer)[]) => encodeCommand(w);
const words = (c: ReplicatedCommand) => c.argv.map((a) => a.toString('latin1'));

// Bytes 1..152 of a real stream (redis-server 7.0.15): a client in db 2 published, INCRed and
// published again, then the primary's heartbeat; read back with PSYNC from the promoted replica.
const REAL = Buffer.from(
  '*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n*3\r\n$7\r\nPUBLISH\r\n$14\r\ntakeover:probe\r\n$3\r\nabc\r\n*2\r\n$4\r\nINCR\r\n$1\r\nx\r\n' +
    '*3\r\n$7\r\nPUBLISH\r\n$14\r\ntakeover:probe\r\n$3\r\ndef\r\n*1\r\n$4\r\nping\r\n',
  'latin1',
);

describe('parseReplicationStream', () => {
  it('reads a real stream: offsets as master_repl_offset counts them, SELECT sets the db, ping skipped', () => {
    expect(REAL.length).toBe(152);
    const got = parseReplicationStream(REAL, 1, 0);
    expect(got.map((c) => ({ offset: c.offset, end: c.end, db: c.db, argv: words(c) }))).toEqual([
      { offset: 24, end: 70, db: 2, argv: ['PUBLISH', 'takeover:probe', 'abc'] },
      { offset: 71, end: 91, db: 2, argv: ['INCR', 'x'] },
      { offset: 92, end: 138, db: 2, argv: ['PUBLISH', 'takeover:probe', 'def'] },
    ]);
    // The primary's INFO after the first PUBLISH said master_repl_offset:70 (its end).
    expect(findProbe(got, 'abc')).toBe(0);
    expect(findProbe(got, 'def')).toBe(2);
    expect(findProbe(got, 'ab')).toBe(-1);
  });

  it('starts anywhere at a command boundary, in the db the caller says', () => {
    const got = parseReplicationStream(REAL.subarray(70), 71, 2);
    expect(got.map((c) => [c.offset, c.end, c.db, words(c)[0]])).toEqual([
      [71, 91, 2, 'INCR'],
      [92, 138, 2, 'PUBLISH'],
    ]);
    expect(parseReplicationStream(Buffer.alloc(0), 153, 5)).toEqual([]);
  });

  it('keeps binary words, empty words, MULTI/EXEC, and changes of db in between; skips REPLCONF GETACK', () => {
    const bin = Buffer.from([0, 13, 10, 255, 42, 36]);
    const s = Buffer.concat([
      cmd('set', bin, ''),
      cmd('SELECT', '15'),
      cmd('MULTI'),
      cmd('incr', 'a'),
      cmd('EXEC'),
      cmd('REPLCONF', 'GETACK', '*'),
      cmd('select', '0'),
      cmd('PING'),
      cmd('PUBLISH', PROBE_CHANNEL, 'n1'),
    ]);
    const got = parseReplicationStream(s, 1000, 3);
    expect(got.map((c) => [c.db, words(c)[0]])).toEqual([
      [3, 'set'],
      [15, 'MULTI'],
      [15, 'incr'],
      [15, 'EXEC'],
      [0, 'PUBLISH'],
    ]);
    expect(got[0]!.argv[1]).toEqual(bin);
    expect(got[0]!.argv[2]!.length).toBe(0);
    expect(got.at(-1)!.end).toBe(1000 + s.length - 1);
    expect(findProbe(got, 'n1')).toBe(4);
    // The name in any case; the channel and nonce exact.
    expect(findProbe(parseReplicationStream(cmd('publish', PROBE_CHANNEL, 'n1'), 1, 0), 'n1')).toBe(0);
    expect(findProbe(parseReplicationStream(cmd('PUBLISH', 'takeover:PROBE', 'n1'), 1, 0), 'n1')).toBe(-1);
    expect(findProbe(parseReplicationStream(cmd('PUBLISH', PROBE_CHANNEL, 'n1', 'x'), 1, 0), 'n1')).toBe(-1);
  });

  it('refuses what Redis does not propagate, naming the offset', () => {
    const bad: [string, RegExp][] = [
      ['*1\r\n$4\r\nPIN', /offset 9 .*cut/],
      ['*2\r\n$3\r\nGET\r\n', /offset 14 .*cut before/],
      ['PING\r\n', /offset 1 .*expected \*/],
      ['+OK\r\n', /expected \*/],
      ['*0\r\n', /empty array/],
      ['*-1\r\n', /non-digit/],
      ['*01\r\n$4\r\nPING\r\n', /leading zero/],
      ['*\r\n', /empty/],
      ['*1\n$4\r\nPING\r\n', /non-digit byte 0x0a/],
      ['*1\r\r$4\r\nPING\r\n', /CR not followed by LF/],
      ['*1\r\n:4\r\n', /expected \$/],
      ['*1\r\n$4\r\nPINGxx', /not followed by CRLF/],
      ['*1\r\n$9999999999999\r\n', /too long/],
      ['*2\r\n$6\r\nSELECT\r\n$2\r\n-1\r\n', /SELECT "-1"/],
      ['*2\r\n$6\r\nSELECT\r\n$2\r\n01\r\n', /SELECT "01"/],
      ['*3\r\n$6\r\nSELECT\r\n$1\r\n1\r\n$1\r\n1\r\n', /SELECT/],
      ['*2\r\n$6\r\nSELECT\r\n$10\r\n9999999999\r\n', /SELECT/],
    ];
    for (const [text, why] of bad) {
      const run = () => parseReplicationStream(Buffer.from(text, 'latin1'), 1, 0);
      expect(run, text).toThrow(RangeError);
      expect(run, text).toThrow(why);
    }
    // A good command before the bad one changes nothing: no partial result.
    expect(() => parseReplicationStream(Buffer.concat([cmd('INCR', 'a'), Buffer.from('*1\r\n$4\r\nPI')]), 500, 0)).toThrow(/offset 529 \(command at 521\)/);
    expect(() => parseReplicationStream(REAL, 0, 0)).toThrow(RangeError);
    expect(() => parseReplicationStream(REAL, 1.5, 0)).toThrow(RangeError);
    expect(() => parseReplicationStream(REAL, 1, -1)).toThrow(RangeError);
    expect(() => parseReplicationStream(REAL, 2 ** 53 - 10, 0)).toThrow(/overflow/);
  });

  it('parses 1 MiB of commands in well under a second', () => {
    const parts: Buffer[] = [];
    let n = 0;
    for (let size = 0; size < 1 << 20; n++) {
      const c = cmd('SET', `key:${n}`, 'v'.repeat(n % 200));
      parts.push(c);
      size += c.length;
    }
    const s = Buffer.concat(parts);
    const t0 = performance.now();
    const got = parseReplicationStream(s, 1, 0);
    const ms = performance.now() - t0;
    expect(got.length).toBe(n);
    expect(got.at(-1)!.end).toBe(s.length);
    expect(ms).toBeLessThan(1000);
  });
});

describe('fuzz (seeded, bounded)', () => {
  const alphabet = Buffer.from('*$\r\n0123456789-+:SELECTPINGselectping \x00\xff', 'latin1');
  const seeds = [
    REAL,
    Buffer.concat([cmd('SELECT', '3'), cmd('MULTI'), cmd('set', Buffer.from([13, 10, 36]), ''), cmd('EXEC'), cmd('REPLCONF', 'GETACK', '*'), cmd('SELECT', '0'), cmd('ping'), cmd('PUBLISH', PROBE_CHANNEL, 'ab12')]),
  ];

  it('random bytes and mutated real streams: a faithful result or a RangeError, within the input, never a loop', () => {
    const rnd = prng(3055);
    const pick = (n: number) => Math.floor(rnd() * n);
    const mutate = (s: Buffer): Buffer => {
      let m = Buffer.from(s);
      for (let k = 1 + pick(4); k > 0 && m.length > 0; k--) {
        const at = pick(m.length);
        const op = pick(4);
        if (op === 0) m[at] = alphabet[pick(alphabet.length)]!;
        else if (op === 1) m = Buffer.concat([m.subarray(0, at), m.subarray(at + 1 + pick(3))]);
        else if (op === 2) m = Buffer.concat([m.subarray(0, at), alphabet.subarray(pick(alphabet.length - 4)).subarray(0, 1 + pick(4)), m.subarray(at)]);
        else m[at] = pick(256);
      }
      return rnd() < 0.3 ? m.subarray(pick(m.length + 1)) : m;
    };
    const random = () => Buffer.from(Array.from({ length: pick(80) }, () => (rnd() < 0.6 ? alphabet[pick(alphabet.length)]! : pick(256))));
    const tally = { parsed: 0, refused: 0, commands: 0 };
    const deadline = Date.now() + 20_000;
    for (let n = 0; n < 6000 && Date.now() < deadline; n++) {
      const input = rnd() < 0.15 ? random() : mutate(seeds[pick(seeds.length)]!);
      const before = Buffer.from(input);
      const start = 1 + pick(1e6);
      const db = pick(16);
      let got: ReplicatedCommand[];
      try {
        got = parseReplicationStream(input, start, db);
      } catch (e) {
        expect(e, `input ${input.toString('latin1')}`).toBeInstanceOf(RangeError);
        expect((e as Error).message).toMatch(/offset \d+/);
        tally.refused++;
        continue;
      }
      tally.parsed++;
      tally.commands += got.length;
      let prev = start - 1;
      for (const c of got) {
        expect(c.offset).toBeGreaterThan(prev);
        expect(c.end).toBeLessThanOrEqual(start + input.length - 1);
        // Faithful: the command's bytes are exactly its argv encoded.
        expect(encodeCommand(c.argv).equals(input.subarray(c.offset - start, c.end - start + 1))).toBe(true);
        expect(['select', 'ping', 'replconf']).not.toContain(c.argv[0]!.toString('latin1').toLowerCase());
        prev = c.end;
      }
      expect(input.equals(before)).toBe(true);
    }
    console.log(`fuzz: ${tally.parsed} parsed (${tally.commands} commands), ${tally.refused} refused`);
    expect(tally.parsed + tally.refused).toBeGreaterThan(1000);
    expect(tally.parsed).toBeGreaterThan(50);
    expect(tally.refused).toBeGreaterThan(500);
    expect(tally.commands).toBeGreaterThan(50);
  });
});
