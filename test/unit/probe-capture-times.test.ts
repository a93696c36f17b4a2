// The mirror's own timing of the stream probe (matchWrites, docs/CONTINUE.md): what the RESP
// tracker records of the probe's PUBLISH and its reply (and what it does not: anyone else's
// PUBLISH), the shadow table leaving the probe's connection out of plans and counts, and the
// window the replay check takes for each probe (the capture's, or the backup's clock's). Pure.
import { describe, expect, it } from 'vitest';
import { probeWindows } from '../../src/agent/redis-replay-check.js';
import type { StreamProbe as ProbeRecord } from '../../src/agent/redis-stream-probe.js';
import type { ParsedSegment } from '../../src/native.js';
import { ProbeCaptureTimes } from '../../src/net/shadow/probe-capture-times.js';
import { DEFAULT_MARGIN_MS, planMatch } from '../../src/net/shadow/replay-match.js';
import { PROBE_CHANNEL } from '../../src/net/shadow/replication-stream.js';
import { RequestLog, type LoggedWrite } from '../../src/net/shadow/request-log.js';
import { encodeCommand, respContinue } from '../../src/net/shadow/resp-continue.js';
import { ShadowTable } from '../../src/net/shadow/shadow-table.js';
import { prng } from './frame-builder.js';
import { conversationSegments } from './shadow-plan-conversation.js';

const NONCE = 'ab'.repeat(16);
const PROBE = '198.18.6.2|40001';
const publish = (nonce = NONCE, channel = PROBE_CHANNEL) => encodeCommand(['PUBLISH', channel, nonce]);
const info = encodeCommand(['INFO', 'replication']);
const at = (ms: number, late = false) => ({ ms, late });
const words = (...w: string[]) => w.map((x) => Buffer.from(x));

describe('ProbeCaptureTimes', () => {
  it('records the probe connection\'s PUBLISH on the probe channel with a nonce, nothing else', () => {
    const times = new ProbeCaptureTimes({ isProbe: (c) => c === PROBE });
    expect(times.sent('198.18.6.9|5000', words(PROBE_CHANNEL, NONCE), 1, true)).toBeNull(); // another client
    expect(times.sent(PROBE, words('news', NONCE), 1, true)).toBeNull(); // another channel
    expect(times.sent(PROBE, words(PROBE_CHANNEL, 'AB'.repeat(16)), 1, true)).toBeNull(); // not a nonce
    expect(times.sent(PROBE, words(PROBE_CHANNEL, NONCE, 'x'), 1, true)).toBeNull();
    expect(times.size).toBe(0);
    const e = times.sent(PROBE, words(PROBE_CHANNEL, NONCE), 5.25, false)!;
    e.answeredMs = 5.3;
    expect(times.get(NONCE)).toEqual({ connection: PROBE, sentMs: 5.25, sentExact: false, answeredMs: 5.3 });
    // A copy: the caller cannot change what is kept.
    times.get(NONCE)!.answeredMs = 99;
    expect(times.get(NONCE)!.answeredMs).toBe(5.3);
  });
  it('a nonce seen twice is no probe (dropped), and only the newest `keep` are remembered', () => {
    const times = new ProbeCaptureTimes({ isProbe: () => true, keep: 3 });
    const nonce = (i: number) => i.toString(16).padStart(32, '0');
    times.sent(PROBE, words(PROBE_CHANNEL, nonce(1)), 1, true);
    expect(times.sent(PROBE, words(PROBE_CHANNEL, nonce(1)), 2, true)).toBeNull();
    expect(times.get(nonce(1))).toBeUndefined();
    for (let i = 2; i <= 6; i++) times.sent(PROBE, words(PROBE_CHANNEL, nonce(i)), i, true);
    expect([2, 3, 4, 5, 6].map((i) => times.get(nonce(i))?.sentMs)).toEqual([undefined, undefined, 4, 5, 6]);
    expect(() => new ProbeCaptureTimes({ isProbe: () => true, keep: 0 })).toThrow(RangeError);
  });
});

describe('the RESP tracker times the probe', () => {
  it('the PUBLISH\'s first byte and the end of its own reply, pipelined with INFO; not a logged write', () => {
    const log = new RequestLog();
    const probes = new ProbeCaptureTimes({ isProbe: (c) => c === PROBE });
    const t = respContinue.createTracker({ connection: PROBE, log, probes });
    t.clientData(Buffer.concat([publish(), info]), at(10.001));
    expect(probes.get(NONCE)).toEqual({ connection: PROBE, sentMs: 10.001, sentExact: true, answeredMs: null });
    // The PUBLISH's reply ends in the first chunk; INFO's later.
    t.serverData(Buffer.from(':0\r\n$6\r\nro'), at(10.04));
    t.serverData(Buffer.from('le:m\r\n'), at(10.09));
    expect(probes.get(NONCE)!.answeredMs).toBe(10.04);
    expect(log.snapshot().writes).toEqual([]);
    expect(t.answeredClientBytes()).toBe(publish().length + info.length);
    // A first byte held behind a hole: recorded, not exact.
    const late = 'cd'.repeat(16);
    t.clientData(publish(late), at(20, true));
    expect(probes.get(late)!.sentExact).toBe(false);
  });
  it('a client\'s PUBLISH (even on the probe channel) is a write it cannot match, never a probe', () => {
    const log = new RequestLog();
    const probes = new ProbeCaptureTimes({ isProbe: (c) => c === PROBE });
    const t = respContinue.createTracker({ connection: '198.18.6.9|5000', log, probes });
    t.clientData(Buffer.concat([publish(), publish('00'.repeat(16), 'news')]), at(1));
    t.serverData(Buffer.from(':0\r\n:3\r\n'), at(2));
    expect(probes.size).toBe(0);
    expect(log.snapshot().writes.map((w) => [w.command, w.key, w.answeredMs])).toEqual([
      ['publish', null, 2],
      ['publish', null, 2],
    ]);
  });
  it('random bytes on a probe-timing tracker never throw, and time only whole probe PUBLISHes', () => {
    const rand = prng(0x9e0b);
    let timed = 0;
    for (let round = 0; round < 300; round++) {
      const probes = new ProbeCaptureTimes({ isProbe: () => true });
      const t = respContinue.createTracker({ connection: PROBE, log: new RequestLog(), probes });
      const good = Buffer.concat([publish(), info]);
      const bytes = Buffer.from(good);
      for (let m = 0; m < 1 + Math.floor(rand() * 4); m++) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
      expect(() => {
        t.clientData(bytes, at(1));
        t.serverData(Buffer.from(':0\r\n$1\r\nx\r\n'), at(2));
      }).not.toThrow();
      // A mutation may leave the PUBLISH whole (then it is timed), make another nonce of it, or break it (nothing timed).
      expect(probes.size).toBeLessThanOrEqual(1);
      const e = probes.get(NONCE);
      if (e) {
        timed++;
        expect(e).toMatchObject({ sentMs: 1, sentExact: true });
      }
    }
    expect(timed).toBeGreaterThan(0);
  });
});

describe('the shadow table leaves the probe\'s connection out', () => {
  const SERVER = { address: '198.18.6.1', port: 6379 };
  /** One client's handshake, a request and its reply, as segments captured at ms (the reply 0.05 ms later). */
  function exchange(client: { address: string; port: number }, request: Buffer, reply: Buffer, ms: number): ParsedSegment[] {
    const { seg, handshake } = conversationSegments(SERVER, client);
    return [...handshake.map((h) => ({ ...h, timeMs: ms })), { ...seg(false, request), timeMs: ms }, { ...seg(true, reply), timeMs: ms + 0.05 }];
  }
  it('times its PUBLISH, plans and counts only the clients', () => {
    const probeEnd = { address: '198.18.6.2', port: 40001 };
    const own = (e: { address: string; port: number }) => e.address === probeEnd.address && e.port === probeEnd.port;
    const probeTimes = new ProbeCaptureTimes({ isProbe: (c) => c === PROBE });
    const log = new RequestLog();
    const table = new ShadowTable({ services: [SERVER], plugin: respContinue, requestLog: log, probeTimes, ownClient: own });
    table.segments([...exchange(probeEnd, Buffer.concat([publish(), info]), Buffer.from(':0\r\n$1\r\nx\r\n'), 100), ...exchange({ address: '198.18.6.9', port: 5000 }, encodeCommand(['INCR', 'k']), Buffer.from(':1\r\n'), 100.02)], 200);
    expect(probeTimes.get(NONCE)).toEqual({ connection: PROBE, sentMs: 100, sentExact: true, answeredMs: 100.05 });
    expect(table.plans(200).map((p) => [p.kind, p.client.port])).toEqual([['restore', 5000]]);
    expect(table.stats().connections).toBe(1);
    expect(log.snapshot().writes.map((w) => w.connection)).toEqual(['198.18.6.9|5000']);
  });
});

describe('the replay check\'s probe windows', () => {
  const record = (nonce: string, sentMs: number, receivedMs: number, offset: number): ProbeRecord => ({
    nonce, sentMs, receivedMs, rttMs: receivedMs - sentMs, replid: 'f'.repeat(40), offset, db: 0, local: { address: '198.18.6.2', port: 40001 },
  });
  it('the capture\'s window when it saw the probe exactly, answered, on the probe\'s own connection; else the backup\'s clock', () => {
    const captured = new Map([
      ['n1', { connection: PROBE, sentMs: 100.2, sentExact: true, answeredMs: 100.23 }],
      ['n2', { connection: PROBE, sentMs: 200.2, sentExact: false, answeredMs: 200.23 }], // behind a hole
      ['n3', { connection: PROBE, sentMs: 300.2, sentExact: true, answeredMs: null }], // reply not seen
      ['n4', { connection: '198.18.6.2|40002', sentMs: 400.2, sentExact: true, answeredMs: 400.23 }], // another connection
    ]);
    const windows = probeWindows(['n1', 'n2', 'n3', 'n4', 'n5'].map((n, i) => record(n, 100 * (i + 1), 100 * (i + 1) + 0.5, i + 10)), (n) => captured.get(n));
    expect(windows).toEqual([
      { offset: 10, sentMs: 100.2, receivedMs: 100.23, captured: true },
      { offset: 11, sentMs: 200, receivedMs: 200.5, captured: false },
      { offset: 12, sentMs: 300, receivedMs: 300.5, captured: false },
      { offset: 13, sentMs: 400, receivedMs: 400.5, captured: false },
      { offset: 14, sentMs: 500, receivedMs: 500.5, captured: false },
    ]);
  });
  it('a writer with a 0.3 ms gap after each reply: the capture\'s window finds a clean probe under a 0.1 ms margin, the backup\'s does not', async () => {
    // INCR every 0.45 ms: sent at t, answered at t + 0.15, the next sent 0.3 ms later.
    const writes: LoggedWrite[] = [];
    for (let t = 0; t < 20; t += 0.45) writes.push({ connection: 'c1', command: 'incr', key: 'k', sentMs: 1000 + t, sentExact: true, answeredMs: 1000 + t + 0.15, failed: false });
    const log = { since: 0, writes };
    // The probe ran at 1010.2 (between the writes answered at 1010.05 and sent at 1010.35).
    const backup = { offset: 50, sentMs: 1009.9, receivedMs: 1010.4 };
    const mirror = { offset: 50, sentMs: 1010.17, receivedMs: 1010.2 };
    expect((await planMatch(log, [backup], ['c1'], 0.1)).probes.get('k')).toMatch(/every recent probe/);
    expect((await planMatch(log, [mirror], ['c1'], 0.1)).probes.get('k')).toEqual(mirror);
    // Under the default margin (a mirror that may stamp frames up to 0.5 ms out of order) neither is clean.
    expect((await planMatch(log, [mirror], ['c1'], DEFAULT_MARGIN_MS)).probes.get('k')).toMatch(/every recent probe/);
  });
});
