// The planned switchover's wire (src/net/switchover-wire.ts): every message round-trips, the
// same frames whatever the chunking, each rule of the session (which side may send what, the
// nonces, the sequence) refused with its reason, the states checked field by field, and a
// seeded fuzz of mutated and random streams.
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseTcpRepairState, type TcpRepairState } from '../../src/net/tcp-repair-state.js';
import {
  encodeSwitchoverFrame,
  isSwitchoverFrameStart,
  packStates,
  SwitchoverFrameReader,
  SwitchoverFrameWriter,
  type SwitchoverMessage,
} from '../../src/net/switchover-wire.js';
import { expectSameWhateverTheChunking, fuzzFrameReader, rejectionOf } from './frame-reader-checks.js';
import { KEY, OTHER_KEY, seededRandom } from './mirror-helpers.js';

const B = 0x1111222233334444n;
const P = 0x5555666677778888n;

function state(port = 40000, queue = 'hello world'): TcpRepairState {
  return parseTcpRepairState({
    version: 1,
    family: 4,
    local: { address: '198.18.7.200', port: 6379 },
    remote: { address: '198.18.7.3', port },
    send: { seq: 4294967000, queue: Buffer.from(queue).toString('base64'), unsent: Math.min(5, queue.length) },
    recv: { seq: 100, queue: Buffer.from('*1\r\n$4\r\nPING\r\n').toString('base64') },
    mss: 1448,
    options: { sack: true, timestamps: true, windowScale: { send: 7, recv: 9 } },
    timestamp: 3_000_000_000,
    window: { sndWl1: 103, sndWnd: 64240, maxWindow: 65535, rcvWnd: 65536, rcvWup: 114 },
    buffers: { send: 87040, recv: 131072 },
  });
}

const backupMessages: SwitchoverMessage[] = [
  { type: 'request', node: 'b', address: '198.18.7.200', port: 6379, quietWaitMs: 2000, barrier: 'resp-ping' },
  { type: 'go' },
  { type: 'release' },
  { type: 'done', moved: 999, reset: 1 },
];
const primaryMessages: SwitchoverMessage[] = [
  { type: 'challenge', node: 'a' },
  { type: 'quiet', quietMs: 71 },
  { type: 'states', states: [state(40000), state(40001, '')] },
  { type: 'dumped', connections: 2, quietMs: 12, dumpMs: 3, lockedAtMs: 1_790_000_000_000.5 },
  { type: 'released' },
  { type: 'unlocked', lockHeldMs: 812, releasedAfterMs: 420 },
];

function backupStream(key = KEY): Buffer[] {
  const w = new SwitchoverFrameWriter(key, B, P);
  return backupMessages.map((m) => w.frame(m));
}

function primaryStream(key = KEY): Buffer[] {
  const w = new SwitchoverFrameWriter(key, B, P);
  return primaryMessages.map((m) => w.frame(m));
}

const primaryReader = () => new SwitchoverFrameReader('primary', KEY, { primaryNonce: P });
const backupReader = () => new SwitchoverFrameReader('backup', KEY, { backupNonce: B });

describe('switchover wire', () => {
  it('every message round-trips, in order, and the reader learns the session', () => {
    const p = primaryReader();
    const got = p.push(Buffer.concat(backupStream()));
    expect(got.map((r) => r.ok && r.frame.message)).toEqual(backupMessages);
    expect(got.map((r) => r.ok && r.frame.primaryNonce)).toEqual([0n, P, P, P]);
    expect(p.session).toEqual({ backupNonce: B, primaryNonce: P });
    // Each barrier round-trips (PostgreSQL's: every backend idle).
    for (const barrier of ['none', 'pg-idle'] as const) {
      const m: SwitchoverMessage = { ...(backupMessages[0] as Extract<SwitchoverMessage, { type: 'request' }>), barrier };
      const r = primaryReader().push(new SwitchoverFrameWriter(KEY, B, P).frame(m));
      expect(r.map((x) => x.ok && x.frame.message)).toEqual([m]);
    }
    const b = backupReader();
    const back = b.push(Buffer.concat(primaryStream()));
    expect(back.every((r) => r.ok)).toBe(true);
    const states = back[2]!.ok && back[2]!.frame.message.type === 'states' ? back[2]!.frame.message.states : [];
    expect(states).toEqual(primaryMessages[2]!.type === 'states' ? primaryMessages[2]!.states : null);
    expect(back.map((r) => r.ok && r.frame.message.type)).toEqual(primaryMessages.map((m) => m.type));
    expect(b.session).toEqual({ backupNonce: B, primaryNonce: P });
  });

  it('the same frames whatever the chunking', () => {
    const stream = Buffer.concat(primaryStream());
    expectSameWhateverTheChunking(stream, backupReader().push(stream), backupReader);
  });

  it('tells its frames from the segment stream\'s by the magic', () => {
    expect(isSwitchoverFrameStart(backupStream()[0]!)).toBe(true);
    expect(isSwitchoverFrameStart(Buffer.from('\0\0\0\x40TKSS\x01\x01'))).toBe(false);
    expect(isSwitchoverFrameStart(Buffer.from('\0\0\0'))).toBe(false);
  });

  it('refuses what the session does not allow, with the reason', () => {
    const [request, go] = backupStream();
    // A frame from the wrong side.
    expect(rejectionOf(primaryReader().push(primaryStream()[0]!))).toBe('unexpected');
    // GO before REQUEST; a second REQUEST.
    expect(rejectionOf(primaryReader().push(go!))).toBe('sequence');
    const w = new SwitchoverFrameWriter(KEY, B, P);
    const goFirst = w.frame({ type: 'go' });
    expect(rejectionOf(primaryReader().push(goFirst))).toBe('unexpected');
    const twice = new SwitchoverFrameWriter(KEY, B, P);
    const r1 = twice.frame(backupMessages[0]!);
    const r2 = twice.frame(backupMessages[0]!);
    expect(rejectionOf(primaryReader().push(Buffer.concat([r1, r2])))).toBe('unexpected');
    // GO carrying another primary nonce (a GO recorded on another connection).
    const other = new SwitchoverFrameWriter(KEY, B, P + 1n);
    other.frame(backupMessages[0]!);
    expect(rejectionOf(primaryReader().push(Buffer.concat([request!, other.frame({ type: 'go' })])))).toBe('session');
    // A CHALLENGE for another request.
    const foreign = new SwitchoverFrameWriter(KEY, B + 1n, P).frame({ type: 'challenge', node: 'a' });
    expect(rejectionOf(backupReader().push(foreign))).toBe('session');
    // The primary's first frame may be a REFUSED instead (its reason reaches the operator); any other is refused.
    const refusal = backupReader().push(new SwitchoverFrameWriter(KEY, B, P).frame({ type: 'refused', reason: '198.18.5.100 is not on a' }));
    expect(refusal[0]).toMatchObject({ ok: true, frame: { message: { type: 'refused', reason: '198.18.5.100 is not on a' } } });
    expect(rejectionOf(backupReader().push(new SwitchoverFrameWriter(KEY, B, P).frame({ type: 'unlocked', lockHeldMs: 1, releasedAfterMs: 1 })))).toBe('unexpected');
    // Another key.
    expect(rejectionOf(primaryReader().push(backupStream(OTHER_KEY)[0]!))).toBe('hmac');
    // A REQUEST that names a primary nonce.
    const forged = encodeSwitchoverFrame({ backupNonce: B, primaryNonce: P, seq: 0n, message: backupMessages[0]! }, KEY);
    expect(rejectionOf(primaryReader().push(forged))).toBe('session');
  });

  it('refuses a state that does not pass the checks, naming it, and fields out of range', () => {
    const w = new SwitchoverFrameWriter(KEY, B, P);
    const challenge = w.frame(primaryMessages[0]!);
    // A state the encoder would refuse: its mss written over (same length) and the frame signed again.
    const frame = encodeSwitchoverFrame({ backupNonce: B, primaryNonce: P, seq: 1n, message: { type: 'states', states: [state()] } }, KEY);
    const at = frame.indexOf('"mss":1448');
    frame.write('"mss":   0', at);
    createHmac('sha256', KEY).update(frame.subarray(0, frame.length - 32)).digest().copy(frame, frame.length - 32);
    const r = backupReader().push(Buffer.concat([challenge, frame]));
    expect(r[1]).toMatchObject({ ok: false, reason: 'body' });
    expect(!r[1]!.ok && r[1]!.detail).toMatch(/state 0: .*mss/);
    expect(() => w.frame({ type: 'request', node: '', address: '198.18.7.200', port: 1, quietWaitMs: 0, barrier: 'none' })).toThrow(RangeError);
    expect(() => w.frame({ type: 'request', node: 'b', address: '198.18.7.200', port: 0, quietWaitMs: 0, barrier: 'none' })).toThrow(RangeError);
    expect(() => w.frame({ type: 'states', states: [] })).toThrow(RangeError);
    expect(() => w.frame({ type: 'request', node: 'b', address: '198.18.7.200', port: 1, quietWaitMs: 0, barrier: 'fence' as 'none' })).toThrow(/barrier fence/);
    expect(() => w.frame({ type: 'dumped', connections: 1, quietMs: 1, dumpMs: 1, lockedAtMs: Number.NaN })).toThrow(RangeError);
    expect(() => new SwitchoverFrameWriter(Buffer.alloc(8), B, P)).toThrow(RangeError);
  });

  it('packs states into frames of a bounded size, in order, one large state alone', () => {
    const small = Array.from({ length: 600 }, (_, i) => state(10000 + i));
    const big = state(9999, 'x'.repeat(400_000));
    const packed = packStates([...small.slice(0, 300), big, ...small.slice(300)], 256 * 1024);
    expect(packed.flat().map((s) => s.remote.port)).toEqual([...small.slice(0, 300), big, ...small.slice(300)].map((s) => s.remote.port));
    expect(packed.find((p) => p.includes(big))).toEqual([big]);
    for (const p of packed) expect(p.length).toBeLessThanOrEqual(0xffff);
    expect(packed.length).toBeGreaterThan(2);
    expect(packStates([])).toEqual([]);
  });

  it('fuzz: 3,000 seeded mutations of valid streams each end in a rejection, after exactly the untouched frames', () => {
    fuzzFrameReader(primaryStream(), backupReader, 0x5d17c0, ['short', 'magic', 'hmac', 'sequence', 'length']);
    fuzzFrameReader(backupStream(), primaryReader, 0x5d17c1, ['short', 'hmac', 'sequence']);
  });

  it('fuzz: 2,000 seeded random byte strings never throw, and nothing random passes the HMAC', () => {
    const { int } = seededRandom(0x5d17c2);
    for (let iter = 0; iter < 2000; iter++) {
      const b = Buffer.from(Array.from({ length: int(400) }, () => int(256)));
      if (int(2) === 0 && b.length >= 10) {
        b.writeUInt32BE(b.length - 4, 0);
        b.write('TKSW', 4);
        b[8] = 1;
        b[9] = 1 + int(12);
      }
      const r = int(2) ? primaryReader() : backupReader();
      const results = [...r.push(b), ...[r.finish()].filter((x) => x !== null)];
      expect(results.every((x) => !x.ok)).toBe(true);
    }
  });
});
