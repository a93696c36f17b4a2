// The segment stream's frames (src/net/shadow/segment-wire.ts): round trips of every message and
// of random segment batches, the streaming decoder at every chunk boundary, each rejection,
// frames moved to another connection, and seeded mutations of valid streams.
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TCP_ACK, TCP_PSH, TCP_SYN, type ParsedSegment } from '../../src/native.js';
import {
  decodeSegmentFrame,
  encodeSegmentFrame,
  SEGMENT_HEADER_BYTES,
  SegmentFrameReader,
  segmentWireBytes,
  splitSegments,
  type SegmentFrame,
  type SegmentMessage,
} from '../../src/net/shadow/segment-wire.js';
import { expectSameWhateverTheChunking, fuzzFrameReader, rejectionOf } from './frame-reader-checks.js';
import { seededRandom } from './mirror-helpers.js';

const KEY = Buffer.from('segment-stream-test-key-01234567');
const OTHER_KEY = Buffer.from('another-segment-stream-key-89abc');
const B_NONCE = 0xb0b0b0b0b0n;
const P_NONCE = 0xa1a1a1a1a1n;

const hello: SegmentMessage = { type: 'hello', node: 'node-b', services: [{ address: '198.18.5.10', port: 6379 }, { address: 'fd00::10', port: 6380 }] };
const welcome: SegmentMessage = { type: 'welcome', node: 'node-a', refusal: null, reason: '' };

function seg(extra: Partial<ParsedSegment> = {}): ParsedSegment {
  const payload = extra.payload ?? Buffer.from('*1\r\n$4\r\nPING\r\n');
  return { family: 4, src: '198.18.5.20', dst: '198.18.5.10', sport: 40000, dport: 6379, seq: 0xfffffff0, ack: 1001, flags: TCP_ACK | TCP_PSH, window: 502, urgentPointer: 0, payloadLength: payload.length, payload, tsval: 77, tsecr: 66, timeMs: 1_764_500_000_123.456, ...extra };
}

/** Frame `seq` of one direction of the connection between B_NONCE and P_NONCE. */
function frame(from: 'primary' | 'backup', seq: bigint, message: SegmentMessage, key = KEY, nonces: { b?: bigint; p?: bigint } = {}): Buffer {
  const primaryNonce = from === 'backup' && seq === 0n ? 0n : (nonces.p ?? P_NONCE);
  return encodeSegmentFrame({ backupNonce: nonces.b ?? B_NONCE, primaryNonce, seq, message }, key);
}

/** A valid stream from P: WELCOME, then SEGMENTS, LOSS and MARK frames. */
function primaryStream(n: number): Buffer[] {
  const out = [frame('primary', 0n, welcome)];
  for (let i = 1; i <= n; i++) {
    const m: SegmentMessage = i % 3 === 0 ? { type: 'mark', timeMs: 1_764_500_000_000 + i } : i % 5 === 0 ? { type: 'loss', frames: i, timeMs: 1_764_500_000_000 + i / 8 } : { type: 'segments', segments: [seg({ seq: i }), seg({ src: '198.18.5.10', dst: '198.18.5.20', sport: 6379, dport: 40000, payload: Buffer.alloc(10 * i, i) })] };
    out.push(frame('primary', BigInt(i), m));
  }
  return out;
}

const backupReader = (opts: { nonce?: bigint; key?: Buffer; maxFrameBytes?: number } = {}) => new SegmentFrameReader({ role: 'backup', nonce: opts.nonce ?? B_NONCE }, { key: opts.key ?? KEY, ...(opts.maxFrameBytes ? { maxFrameBytes: opts.maxFrameBytes } : {}) });

describe('segment stream frames', () => {
  it('each message round-trips, with its envelope', () => {
    const messages: SegmentMessage[] = [
      hello,
      welcome,
      { type: 'welcome', node: 'node-a', refusal: 'capture', reason: 'the capture failed: EPERM' },
      { type: 'segments', segments: [] },
      {
        type: 'segments',
        segments: [
          { ...seg({ flags: TCP_SYN, payload: Buffer.alloc(0), payloadLength: 0 }), mss: 1460, wscale: 7, sackPermitted: true },
          { ...seg(), sackPermitted: false },
          { family: 6, src: 'fd00::20', dst: 'fd00::10', sport: 1, dport: 65535, seq: 0, ack: 0xffffffff, flags: 0x1ff, window: 0xffff, urgentPointer: 0xffff, payloadLength: 9000, payload: Buffer.alloc(200, 7) },
          { family: 4, src: '10.0.0.1', dst: '10.0.0.2', sport: 5, dport: 6, seq: 1, ack: 2, flags: TCP_ACK, window: 3, urgentPointer: 0, payloadLength: 0 },
        ],
      },
      { type: 'loss', frames: 2 ** 53 - 1, timeMs: 1_764_500_000_000.125 },
      { type: 'mark', timeMs: 1_764_500_000_123.25 },
      { type: 'ack', frameSeq: 2n ** 64n - 1n, markMs: 0 },
    ];
    for (const message of messages) {
      const f: SegmentFrame = { backupNonce: B_NONCE, primaryNonce: P_NONCE, seq: 5n, message };
      expect(decodeSegmentFrame(encodeSegmentFrame(f, KEY), KEY)).toEqual({ ok: true, frame: f });
    }
  });

  it('IPv6 addresses come back canonical; payloads are copies of their own, not views of the frame', () => {
    const f = frame('primary', 1n, { type: 'segments', segments: [seg({ family: 6, src: 'FD00:0:0::20', dst: 'fd00:0::10' })] });
    const r = decodeSegmentFrame(f, KEY);
    if (!r.ok || r.frame.message.type !== 'segments') throw new Error('not decoded');
    const s = r.frame.message.segments[0]!;
    expect([s.src, s.dst, s.family]).toEqual(['fd00::20', 'fd00::10', 6]);
    expect(s.payload!.buffer).not.toBe(f.buffer);
    expect(s.payload!.buffer.byteLength).toBe(s.payload!.length);
  });

  it('seeded random batches round-trip (500 batches), and splitSegments keeps bodies within the bound', () => {
    const { int, rnd } = seededRandom(0x5e65);
    const addr = (v6: boolean) => (v6 ? `fd00::${(1 + int(50)).toString(16)}` : `10.0.${int(4)}.${1 + int(200)}`);
    for (let iter = 0; iter < 500; iter++) {
      const segments: ParsedSegment[] = [];
      for (let k = int(40); k > 0; k--) {
        const v6 = int(2) === 1;
        const withPayload = int(3) > 0;
        const payload = Buffer.alloc(int(3) === 0 ? int(3000) : int(20), int(256));
        const s: ParsedSegment = { family: v6 ? 6 : 4, src: addr(v6), dst: addr(v6), sport: int(65536), dport: int(65536), seq: int(2 ** 32), ack: int(2 ** 32), flags: int(512), window: int(65536), urgentPointer: int(65536), payloadLength: withPayload ? payload.length + int(3) : int(1500) };
        if (withPayload) s.payload = payload;
        if (int(4) === 0) s.mss = int(65536);
        if (int(4) === 0) s.wscale = int(15);
        if (int(4) === 0) s.sackPermitted = int(2) === 1;
        if (int(2) === 0) [s.tsval, s.tsecr] = [int(2 ** 32), int(2 ** 32)];
        if (int(5) > 0) s.timeMs = 1.7e12 + rnd() * 1e9;
        segments.push(s);
      }
      const f: SegmentFrame = { backupNonce: B_NONCE, primaryNonce: P_NONCE, seq: BigInt(iter), message: { type: 'segments', segments } };
      const r = decodeSegmentFrame(encodeSegmentFrame(f, KEY), KEY);
      if (!r.ok || r.frame.message.type !== 'segments') throw new Error(`not decoded: ${JSON.stringify(r)}`);
      // Payloads as hex: vitest's deep equality walks a Buffer element by element, slowly.
      const plain = (x: ParsedSegment[]) => x.map((s) => ({ ...s, payload: s.payload?.toString('hex') }));
      expect(plain(r.frame.message.segments)).toEqual(plain(segments));
      const bound = 2000 + int(8000);
      const groups = splitSegments(segments, bound);
      expect(groups.flat().every((s, i) => s === segments[i]) && groups.flat().length === segments.length).toBe(true);
      for (const g of groups) {
        const body = encodeSegmentFrame({ ...f, message: { type: 'segments', segments: g } }, KEY).length - SEGMENT_HEADER_BYTES - 32;
        if (g.length > 1) expect(body).toBeLessThanOrEqual(bound);
        else expect(body).toBeLessThanOrEqual(Math.max(bound, segmentWireBytes(g[0]!) + 6 + 2 * 46));
      }
    }
  });

  it('refuses to encode what the wire cannot carry', () => {
    const env = { backupNonce: B_NONCE, primaryNonce: 0n, seq: 0n };
    const bad: [SegmentMessage, Buffer?][] = [
      [hello, Buffer.alloc(15)],
      [{ ...hello, node: '' } as SegmentMessage],
      [{ ...hello, node: 'x'.repeat(65) } as SegmentMessage],
      [{ type: 'hello', node: 'b', services: [] }],
      [{ type: 'hello', node: 'b', services: Array.from({ length: 17 }, (_, i) => ({ address: '10.0.0.1', port: 1 + i })) }],
      [{ type: 'hello', node: 'b', services: [{ address: 'example.com', port: 1 }] }],
      [{ type: 'hello', node: 'b', services: [{ address: '10.0.0.1', port: 0 }] }],
      [{ type: 'segments', segments: [seg({ seq: 2 ** 32 })] }],
      [{ type: 'segments', segments: [seg({ sport: -1 })] }],
      [{ type: 'segments', segments: [seg({ src: 'nowhere' })] }],
      [{ type: 'segments', segments: [seg({ timeMs: Number.NaN })] }],
      [{ type: 'segments', segments: [seg({ payload: Buffer.alloc(512 * 1024 + 1), payloadLength: 512 * 1024 + 1 })] }],
      [{ type: 'loss', frames: 0, timeMs: 1_764_500_000_000 }],
      [{ type: 'mark', timeMs: -1 }],
      [{ type: 'ack', frameSeq: -1n, markMs: 0 }],
    ];
    for (const [message, key] of bad) expect(() => encodeSegmentFrame({ ...env, message }, key ?? KEY), `${message.type} ${bad.findIndex((b) => b[0] === message)}`).toThrow(/must|not|carries|addresses|payload|LOSS|u64|time/);
    expect(() => encodeSegmentFrame({ ...env, seq: -1n, message: hello }, KEY)).toThrow(RangeError);
    expect(() => new SegmentFrameReader({ role: 'primary' }, { key: Buffer.alloc(8) })).toThrow(RangeError);
    expect(() => new SegmentFrameReader({ role: 'primary' }, { key: KEY, maxFrameBytes: 100 })).toThrow(RangeError);
  });

  it('the reader returns the same frames whatever the chunking (every 7th split point, and byte by byte)', () => {
    const stream = Buffer.concat(primaryStream(6));
    const whole = backupReader().push(stream);
    expect(whole.length).toBe(7);
    expect(whole.every((r) => r.ok)).toBe(true);
    expectSameWhateverTheChunking(stream, whole, () => backupReader());
  });

  it('the primary reader takes a HELLO, then ACKs only after accept()', () => {
    const p = new SegmentFrameReader({ role: 'primary' }, { key: KEY });
    const h = p.push(frame('backup', 0n, hello));
    expect(h).toEqual([{ ok: true, frame: { backupNonce: B_NONCE, primaryNonce: 0n, seq: 0n, message: hello } }]);
    expect(() => new SegmentFrameReader({ role: 'primary' }, { key: KEY }).accept(P_NONCE)).toThrow();
    const early = new SegmentFrameReader({ role: 'primary' }, { key: KEY });
    early.push(frame('backup', 0n, hello));
    expect(rejectionOf(early.push(frame('backup', 1n, { type: 'ack', frameSeq: 0n, markMs: 0 })))).toBe('unexpected');
    p.accept(P_NONCE);
    expect(p.push(frame('backup', 1n, { type: 'ack', frameSeq: 0n, markMs: 0 }))[0]!.ok).toBe(true);
    expect(rejectionOf(p.push(frame('backup', 2n, { type: 'ack', frameSeq: 3n, markMs: 0 }, KEY, { p: P_NONCE + 1n })))).toBe('session');
  });

  it('each rejection: short, magic, version, type, length, hmac, body, sequence, session, unexpected', () => {
    const [w, segs] = primaryStream(1) as [Buffer, Buffer];
    const mod = (b: Buffer, f: (c: Buffer) => void, resign = false) => {
      const c = Buffer.from(b);
      f(c);
      if (resign) createHmac('sha256', KEY).update(c.subarray(0, c.length - 32)).digest().copy(c, c.length - 32);
      return c;
    };
    const cases: [string, Buffer[], string, SegmentFrameReader?][] = [
      ['length below the smallest frame', [mod(w, (c) => c.writeUInt32BE(10, 0))], 'short'],
      ['magic', [mod(w, (c) => (c[5] = 0x41))], 'magic'],
      ['version', [mod(w, (c) => (c[8] = 1))], 'version'],
      ['type', [mod(w, (c) => (c[9] = 9))], 'type'],
      ['length above the largest frame', [w, mod(segs, (c) => c.writeUInt32BE(0x7fffffff, 0))], 'length'],
      ['a frame above maxFrameBytes', [w, frame('primary', 1n, { type: 'segments', segments: [seg({ payload: Buffer.alloc(1100) })] })], 'length', backupReader({ maxFrameBytes: 1024 })],
      ['wrong key', [frame('primary', 0n, welcome, OTHER_KEY)], 'hmac'],
      ['a changed payload byte', [w, mod(segs, (c) => c.writeUInt8(c.readUInt8(c.length - 40) ^ 1, c.length - 40))], 'hmac'],
      ['a segment count the body does not hold (re-signed)', [w, mod(segs, (c) => c.writeUInt32BE(3, SEGMENT_HEADER_BYTES), true)], 'body'],
      ['an address index past the table (re-signed)', [w, mod(segs, (c) => c.writeUInt16BE(9, SEGMENT_HEADER_BYTES + 6 + 2 * 12 + 1), true)], 'body'],
      ['trailing bytes (re-signed)', [w, mod(Buffer.concat([segs.subarray(0, segs.length - 32), Buffer.alloc(33)]), (c) => c.writeUInt32BE(c.length - 4, 0), true)], 'body'],
      ['a refusal code unknown (re-signed)', [mod(frame('primary', 0n, { ...welcome, refusal: 'node' }), (c) => (c[SEGMENT_HEADER_BYTES + 7] = 9), true)], 'body'],
      ['replayed SEGMENTS', [w, segs, segs], 'sequence'],
      ['SEGMENTS before the WELCOME', [segs], 'unexpected'],
      ['a WELCOME for another connection', [frame('primary', 0n, welcome, KEY, { b: B_NONCE + 1n })], 'session'],
      ['SEGMENTS of another connection', [w, frame('primary', 1n, { type: 'mark', timeMs: 1 }, KEY, { p: P_NONCE + 1n })], 'session'],
      ['SEGMENTS after a refusal', [frame('primary', 0n, { ...welcome, refusal: 'node', reason: 'who?' }), frame('primary', 1n, { type: 'mark', timeMs: 1 })], 'unexpected'],
      ['an ACK from the primary', [w, frame('primary', 1n, { type: 'ack', frameSeq: 0n, markMs: 0 })], 'unexpected'],
    ];
    for (const [what, frames, reason, reader] of cases) {
      const r = reader ?? backupReader();
      const results = frames.flatMap((f) => r.push(f));
      expect(rejectionOf(results), what).toBe(reason);
      expect(r.failed?.reason, what).toBe(reason);
      expect(r.push(w), `${what}: nothing after a rejection`).toEqual([]);
    }
    const cut = backupReader();
    cut.push(w.subarray(0, w.length - 3));
    expect(cut.finish()).toMatchObject({ ok: false, reason: 'short' });
    const p = new SegmentFrameReader({ role: 'primary' }, { key: KEY });
    expect(rejectionOf(p.push(frame('backup', 0n, hello, KEY, { b: 0n })))).toBe('session');
    expect(rejectionOf(new SegmentFrameReader({ role: 'primary' }, { key: KEY }).push(frame('primary', 0n, welcome)))).toBe('unexpected');
  });

  it('fuzz: 3,000 seeded mutations of valid streams each end in a rejection, after exactly the untouched frames', () => {
    fuzzFrameReader(primaryStream(8), () => backupReader(), 0x5eed012, ['short', 'magic', 'hmac', 'sequence', 'length']);
  });

  it('fuzz: 2,000 seeded random byte strings never throw, and nothing random passes the HMAC', () => {
    const { int } = seededRandom(0xf00d12);
    for (let iter = 0; iter < 2000; iter++) {
      const b = Buffer.from(Array.from({ length: int(400) }, () => int(256)));
      if (int(2) === 0 && b.length >= 10) {
        b.writeUInt32BE(b.length - 4, 0);
        b.write('TKSS', 4);
        b[8] = 1;
        b[9] = 1 + int(6);
      }
      const r = new SegmentFrameReader(int(2) ? { role: 'primary' } : { role: 'backup', nonce: B_NONCE }, { key: KEY });
      const results = [...r.push(b), ...[r.finish()].filter((x) => x !== null)];
      expect(results.every((x) => !x.ok)).toBe(true);
    }
  });
});
