// The mirror's frames (src/log/mirror-wire.ts): round trips, the streaming decoder at every chunk
// boundary, each rejection, replay into another connection, and seeded mutations of valid streams.
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeMirrorFrame, encodeMirrorFrame, MirrorFrameReader, MIRROR_HEADER_BYTES, type MirrorMessage } from '../../src/log/mirror-wire.js';
import { expectSameWhateverTheChunking, fuzzFrameReader, rejectionOf } from './frame-reader-checks.js';
import { BACKUP_INC, BACKUP_NONCE, KEY, OTHER_KEY, PRIMARY_INC, PRIMARY_NONCE, envelope, frame, primaryStream, record } from './mirror-helpers.js';

const backupReader = (opts: { nonce?: bigint; maxRecordBytes?: number; maxFrameBytes?: number; key?: Buffer } = {}) =>
  new MirrorFrameReader({ role: 'backup', incarnation: BACKUP_INC, nonce: opts.nonce ?? BACKUP_NONCE }, { key: opts.key ?? KEY, ...(opts.maxRecordBytes ? { maxRecordBytes: opts.maxRecordBytes } : {}), ...(opts.maxFrameBytes ? { maxFrameBytes: opts.maxFrameBytes } : {}) });

const hello: MirrorMessage = { type: 'hello', log: 'orders', node: 'node-b', firstLsn: 0, heldLsn: 7, lastCrc: 0xdeadbeef };

describe('mirror frames', () => {
  it('each message round-trips, with its envelope', () => {
    const messages: MirrorMessage[] = [
      hello,
      { type: 'start', node: 'node-a', fromLsn: 7, prevCrc: 0, refusal: null, reason: '' },
      { type: 'start', node: 'node-a', fromLsn: 9, prevCrc: 0x89abcdef, refusal: 'diverged', reason: 'the backup holds records 9..11 the primary does not have' },
      { type: 'start', node: 'node-a', fromLsn: 4, prevCrc: 0xfedcba98, refusal: 'resync', reason: 'cut back to LSN 4, where node-a took over' },
      { type: 'records', firstLsn: 2 ** 53 - 4, records: [Buffer.alloc(0), Buffer.from('x'), record(5, 1000)] },
      { type: 'records', firstLsn: 0, records: [] },
      { type: 'ack', heldLsn: 12, durableLsn: 10, frameSeq: 2n ** 64n - 1n },
    ];
    for (const message of messages) {
      const env = envelope('primary', 5n);
      const r = decodeMirrorFrame(encodeMirrorFrame({ ...env, message }, KEY), KEY);
      expect(r).toEqual({ ok: true, frame: { ...env, message } });
    }
  });

  it('refuses to encode what the wire cannot carry', () => {
    const env = envelope('backup', 0n);
    expect(() => encodeMirrorFrame({ ...env, message: hello }, Buffer.alloc(15))).toThrow(RangeError);
    expect(() => encodeMirrorFrame({ ...env, message: { ...hello, node: '' } }, KEY)).toThrow(RangeError);
    expect(() => encodeMirrorFrame({ ...env, message: { ...hello, log: 'x'.repeat(65) } }, KEY)).toThrow(RangeError);
    expect(() => encodeMirrorFrame({ ...env, message: { ...hello, heldLsn: 2 ** 53 } }, KEY)).toThrow(RangeError);
    expect(() => encodeMirrorFrame({ ...env, seq: -1n, message: hello }, KEY)).toThrow(RangeError);
    expect(() => new MirrorFrameReader({ role: 'primary' }, { key: Buffer.alloc(8) })).toThrow(RangeError);
  });

  it('the reader returns the same frames whatever the chunking (every split point, and byte by byte)', () => {
    const stream = Buffer.concat(primaryStream(3, 3, 4));
    const whole = backupReader().push(stream);
    expect(whole.length).toBe(4);
    expect(whole.every((r) => r.ok)).toBe(true);
    expectSameWhateverTheChunking(stream, whole, () => backupReader());
  });

  it('each rejection: short, magic, version, type, length, hmac, body, sequence, session, unexpected', () => {
    const [start, recs] = primaryStream(0, 1, 2) as [Buffer, Buffer];
    const cases: [string, Buffer[], string, MirrorFrameReader?][] = [];
    const mod = (b: Buffer, f: (c: Buffer) => void) => {
      const c = Buffer.from(b);
      f(c);
      return c;
    };
    cases.push(['length below the smallest frame', [mod(start, (c) => c.writeUInt32BE(10, 0))], 'short']);
    cases.push(['magic', [mod(start, (c) => (c[5] = 0x41))], 'magic']);
    cases.push(['version', [mod(start, (c) => (c[8] = 1))], 'version']);
    cases.push(['type', [mod(start, (c) => (c[9] = 9))], 'type']);
    cases.push(['length above the largest frame', [start, mod(recs, (c) => c.writeUInt32BE(0x7fffffff, 0))], 'length']);
    cases.push(['wrong key', [frame('primary', 0n, { type: 'start', node: 'p', fromLsn: 0, prevCrc: 0, refusal: null, reason: '' }, OTHER_KEY)], 'hmac']);
    cases.push(['a changed payload byte', [start, mod(recs, (c) => c.writeUInt8(c.readUInt8(MIRROR_HEADER_BYTES + 20) ^ 1, MIRROR_HEADER_BYTES + 20))], 'hmac']);
    cases.push(['a record above maxRecordBytes', [start, frame('primary', 1n, { type: 'records', firstLsn: 0, records: [Buffer.alloc(300)] })], 'body', backupReader({ maxRecordBytes: 200, maxFrameBytes: 4096 })]);
    cases.push(['replayed RECORDS', [start, recs, recs], 'sequence']);
    cases.push(['RECORDS of another connection (its nonce)', [start, frame('primary', 1n, { type: 'records', firstLsn: 0, records: [] }, KEY, { primaryNonce: 77n })], 'session']);
    cases.push(['a START for another backup connection', [frame('primary', 0n, { type: 'start', node: 'p', fromLsn: 0, prevCrc: 0, refusal: null, reason: '' }, KEY, { backupNonce: 5n })], 'session']);
    cases.push(['a START for another backup life', [frame('primary', 0n, { type: 'start', node: 'p', fromLsn: 0, prevCrc: 0, refusal: null, reason: '' }, KEY, { backupIncarnation: 9n })], 'session']);
    cases.push(['RECORDS before START', [recs], 'unexpected']);
    cases.push(['a second START', [start, frame('primary', 1n, { type: 'start', node: 'p', fromLsn: 0, prevCrc: 0, refusal: null, reason: '' })], 'unexpected']);
    cases.push(['an ACK from the primary', [start, frame('primary', 1n, { type: 'ack', heldLsn: 0, durableLsn: 0, frameSeq: 0n })], 'unexpected']);
    for (const [what, frames, reason, reader] of cases) {
      const r = reader ?? backupReader();
      const results = r.push(Buffer.concat(frames));
      expect(rejectionOf(results), what).toBe(reason);
      expect(r.failed?.reason, what).toBe(reason);
      expect(r.push(start), `${what}: nothing after a rejection`).toEqual([]);
    }
    // A body that authenticates but is malformed: bytes after it.
    const env = envelope('primary', 0n);
    const good = encodeMirrorFrame({ ...env, message: { type: 'start', node: 'p', fromLsn: 0, prevCrc: 0, refusal: null, reason: '' } }, KEY);
    const body = good.subarray(MIRROR_HEADER_BYTES, good.length - 32);
    const longer = Buffer.concat([good.subarray(0, MIRROR_HEADER_BYTES), body, Buffer.from([0])]);
    longer.writeUInt32BE(longer.length + 32 - 4, 0);
    const signed = Buffer.concat([longer, createHmac('sha256', KEY).update(longer).digest()]);
    expect(rejectionOf(backupReader().push(signed))).toBe('body');
    // The stream ending inside a frame.
    const r = backupReader();
    expect(r.push(start.subarray(0, 30))).toEqual([]);
    expect(r.finish()).toMatchObject({ ok: false, reason: 'short' });
  });

  it("the primary's reader: HELLO first (no primary session in it), ACKs only after accept(), then this session only", () => {
    const h = frame('backup', 0n, hello);
    const ack = (seq: bigint, s = {}) => frame('backup', seq, { type: 'ack', heldLsn: 7, durableLsn: 7, frameSeq: 0n }, KEY, s);
    const p = () => new MirrorFrameReader({ role: 'primary' }, { key: KEY });
    expect(rejectionOf(p().push(ack(0n)))).toBe('unexpected');
    expect(rejectionOf(p().push(Buffer.concat([h, ack(1n)])))).toBe('unexpected'); // not accepted yet
    const r = p();
    expect(r.push(h)[0]).toMatchObject({ ok: true, frame: { message: hello } });
    expect(() => new MirrorFrameReader({ role: 'primary' }, { key: KEY }).accept(1n, 1n)).toThrow();
    r.accept(PRIMARY_INC, PRIMARY_NONCE);
    expect(r.push(ack(1n))[0]?.ok).toBe(true);
    expect(rejectionOf(r.push(ack(2n, { primaryNonce: 1n })))).toBe('session');
    const withSession = frame('backup', 0n, hello);
    withSession.writeBigUInt64BE(1n, 34); // a primary nonce in a HELLO (then re-signed)
    createHmac('sha256', KEY).update(withSession.subarray(0, withSession.length - 32)).digest().copy(withSession, withSession.length - 32);
    expect(rejectionOf(p().push(withSession))).toBe('session');
  });

  it('fuzz: 3,000 seeded mutations of valid streams each end in a rejection, after exactly the untouched frames', () => {
    // The mutations reach most of the checks.
    fuzzFrameReader(primaryStream(10, 4, 3), () => backupReader({ maxRecordBytes: 4096 }), 0x5eed004, ['short', 'magic', 'hmac', 'sequence', 'length']);
  });
});
