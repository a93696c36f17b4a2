// The backup's shadow of a connection, from synthetic segments: handshake options, both streams
// in order, what is let go, and the plan (restore state, replay, or why a reset).
import { describe, expect, it } from 'vitest';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type ParsedSegment } from '../../src/native.js';
import { seqAdd } from '../../src/net/seq.js';
import type { ContinuePlugin, ExchangeTracker } from '../../src/net/shadow/exchange-tracker.js';
import { ReplyDigest } from '../../src/net/shadow/reply-digest.js';
import { RequestLog } from '../../src/net/shadow/request-log.js';
import { encodeCommand, respContinue } from '../../src/net/shadow/resp-continue.js';
import { ShadowTable } from '../../src/net/shadow/shadow-table.js';
import { checkTcpRepairState } from '../../src/net/tcp-repair-state.js';

/** Requests and replies are lines; each request gets one reply line. */
function linePlugin(): ContinuePlugin {
  return {
    name: 'lines',
    createTracker(): ExchangeTracker {
      const requestEnds: number[] = [];
      let clientBytes = 0;
      let serverBytes = 0;
      let replies = 0;
      let complete = 0;
      return {
        clientData(chunk) {
          for (const b of chunk) {
            clientBytes++;
            if (b === 10) requestEnds.push(clientBytes);
          }
        },
        serverData(chunk) {
          for (const b of chunk) {
            serverBytes++;
            if (b === 10) {
              replies++;
              complete = serverBytes;
            }
          }
        },
        answeredClientBytes: () => (replies === 0 ? 0 : requestEnds[replies - 1]!),
        completeServerBytes: () => complete,
        sessionPreamble: () => ({ bytes: Buffer.alloc(0), replies: 0 }),
        blocker: () => (replies > requestEnds.length ? 'more replies than requests' : null),
      };
    },
    createReplyCounter: () => ({ push: () => [], broken: null }),
  };
}

const SERVER = { address: '198.18.5.10', port: 6379 };
const CLIENT = { address: '198.18.5.20', port: 40000 };
const CISN = 0xfffffff0; // wraps during the test
const SISN = 1000;

/** A tiny model of the two ends: sequence numbers advance as they send. */
function conversation() {
  let cNext = seqAdd(CISN, 1);
  let sNext = seqAdd(SISN, 1);
  let ts = 500;
  const seg = (fromServer: boolean, flags: number, payload = '', extra: Partial<ParsedSegment> = {}): ParsedSegment => {
    const data = Buffer.from(payload);
    const s: ParsedSegment = {
      family: 4,
      src: fromServer ? SERVER.address : CLIENT.address,
      dst: fromServer ? CLIENT.address : SERVER.address,
      sport: fromServer ? SERVER.port : CLIENT.port,
      dport: fromServer ? CLIENT.port : SERVER.port,
      seq: fromServer ? sNext : cNext,
      ack: fromServer ? cNext : sNext,
      flags,
      window: fromServer ? 500 : 600,
      urgentPointer: 0,
      payloadLength: data.length,
      payload: data,
      tsval: ts++,
      tsecr: 1,
      timeMs: 1_000_000,
      ...extra,
    };
    // A FIN takes one sequence number after the segment's bytes.
    const used = data.length + (flags & TCP_FIN ? 1 : 0);
    if (fromServer) sNext = seqAdd(sNext, used);
    else cNext = seqAdd(cNext, used);
    return s;
  };
  const handshake: ParsedSegment[] = [
    { ...seg(false, TCP_SYN), seq: CISN, ack: 0, mss: 1460, wscale: 7, sackPermitted: true },
    { ...seg(true, TCP_SYN | TCP_ACK), seq: SISN, mss: 1400, wscale: 9, sackPermitted: true },
    seg(false, TCP_ACK),
  ];
  return { seg, handshake, next: () => ({ cNext, sNext }) };
}

function table(maxRetainedBytes?: number) {
  return new ShadowTable({ services: [SERVER], plugin: linePlugin(), ...(maxRetainedBytes ? { maxRetainedBytes } : {}) });
}

describe('ShadowConnection', () => {
  it('plans a restore: RCV.NXT after every client byte, SND.UNA at the client ACK, the unanswered request replayed', () => {
    const c = conversation();
    const t = table();
    t.segments(c.handshake, 1_000_000);
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-a\n')], 1_000_000);
    const unacked = c.seg(true, TCP_ACK | TCP_PSH, '');
    t.segments([unacked, c.seg(false, TCP_ACK | TCP_PSH, 'GET b\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-b\n')], 1_000_000);
    // The client has acked value-a only; then sends GET c, unanswered.
    const beforeB = seqAdd(SISN, 1 + 'value-a\n'.length);
    t.segments([{ ...c.seg(false, TCP_ACK | TCP_PSH, 'GET c\n'), ack: beforeB }], 1_000_000);
    const plans = t.plans(1_000_250);
    expect(plans).toHaveLength(1);
    const p = plans[0]!;
    if (p.kind !== 'restore') throw new Error(`expected a restore, got ${p.reason}`);
    const { cNext } = c.next();
    expect(p.state.recv.seq).toBe(cNext);
    expect(p.state.recv.queue.length).toBe(0);
    expect(p.state.send.seq).toBe(beforeB);
    expect(p.state.send.queue.toString()).toBe('value-b\n');
    expect(p.state.send.unsent).toBe('value-b\n'.length);
    expect(p.replay.toString()).toBe('GET c\n');
    expect(p.state.mss).toBe(1400);
    expect(p.state.options).toEqual({ sack: true, timestamps: true, windowScale: { send: 7, recv: 9 } });
    expect(p.state.timestamp).toBe(507 + 250 + 1); // value-b's TSval (the 8th segment) aged by 250 ms, plus one
    expect(p.state.window.sndWnd).toBe(600 << 7);
    expect(p.state.window.rcvWnd).toBe(500 << 9);
    expect(() => checkTcpRepairState(p.state)).not.toThrow();
  });

  it('a request the capture lost, then its reply: reset for the bytes the server acknowledged (a protocol that cannot follow a gap), not for the unpaired reply', () => {
    const c = conversation();
    const t = table();
    t.segments(c.handshake, 1_000_000);
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-a\n')], 1_000_000);
    c.seg(false, TCP_ACK | TCP_PSH, 'GET b\n'); // sent, never captured
    t.segments([c.seg(true, TCP_ACK | TCP_PSH, 'value-b\n')], 1_000_000);
    const p = t.plans(1_000_000)[0]!;
    expect(p).toMatchObject({ kind: 'reset', reason: 'the capture lost 6 client bytes the server acknowledged: this protocol\'s requests cannot be followed past a loss' });
  });

  it('releases answered requests and acknowledged replies (memory stays bounded by what is in flight)', () => {
    const c = conversation();
    const t = table(4096);
    t.segments(c.handshake, 1);
    for (let i = 0; i < 2000; i++) {
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, `REQUEST ${i}\n`), c.seg(true, TCP_ACK | TCP_PSH, `REPLY ${i}\n`), c.seg(false, TCP_ACK)], 1);
    }
    const p = t.plans(1)[0]!;
    expect(p.kind).toBe('restore');
    if (p.kind === 'restore') {
      expect(p.replay.length).toBe(0);
      expect(p.state.send.queue.length).toBe(0);
    }
  });

  it('holds segments that arrive ahead of a hole until the retransmission fills it', () => {
    const c = conversation();
    const t = table();
    t.segments(c.handshake, 1);
    const first = c.seg(false, TCP_ACK | TCP_PSH, 'GET ');
    const second = c.seg(false, TCP_ACK | TCP_PSH, 'x\n');
    t.segments([second], 1);
    const holed = t.plans(1)[0]!;
    expect(holed.kind).toBe('restore'); // the server acked nothing beyond the hole: what we hold is whole
    if (holed.kind === 'restore') expect(holed.replay.toString()).toBe('');
    t.segments([first], 1);
    const filled = t.plans(1)[0]!;
    if (filled.kind !== 'restore') throw new Error(filled.reason);
    expect(filled.replay.toString()).toBe('GET x\n');
  });

  const resets: Array<[string, (c: ReturnType<typeof conversation>, t: ShadowTable) => void, RegExp]> = [
    ['the server acked client bytes the capture missed', (c, t) => {
      c.seg(false, TCP_ACK | TCP_PSH, 'lost\n'); // never captured
      t.segments([c.seg(true, TCP_ACK)], 1);
    }, /capture lost 5 client bytes the server acknowledged/],
    ['the client acked server bytes the capture missed (a protocol that cannot follow a gap)', (c, t) => {
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n')], 1);
      c.seg(true, TCP_ACK | TCP_PSH, 'value\n'); // never captured
      t.segments([c.seg(false, TCP_ACK)], 1);
    }, /capture lost 6 server bytes the client acknowledged: this protocol's replies cannot be followed past a loss/],
    ['both ends sent a FIN', (c, t) => t.segments([c.seg(false, TCP_ACK | TCP_FIN), c.seg(true, TCP_ACK | TCP_FIN)], 1), /both ends sent a FIN/],
    ['server bytes before its FIN were not captured', (c, t) => {
      c.seg(true, TCP_ACK | TCP_PSH, 'bye\n'); // never captured
      t.segments([c.seg(true, TCP_ACK | TCP_FIN)], 1);
    }, /the server's bytes before its FIN are missing/],
    ['client bytes before its FIN were not captured', (c, t) => {
      c.seg(false, TCP_ACK | TCP_PSH, 'GET z\n'); // never captured
      t.segments([c.seg(false, TCP_ACK | TCP_FIN)], 1);
    }, /the client's bytes before its FIN are missing/],
    ['bytes come past a FIN', (c, t) => {
      const fin = c.seg(false, TCP_ACK | TCP_FIN);
      t.segments([fin, { ...c.seg(false, TCP_ACK | TCP_PSH, 'more\n'), seq: fin.seq }], 1);
    }, /past the sender's FIN/],
    ['a truncated capture', (c, t) => t.segments([{ ...c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n'), payload: Buffer.from('GE') }], 1), /truncated/],
    ['the retention bound', (c, t) => t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'x'.repeat(5000))], 1), /more than 4096 bytes/],
  ];
  for (const [name, act, reason] of resets) {
    it(`plans an exact reset, with the reason, when ${name}`, () => {
      const c = conversation();
      const t = table(4096);
      t.segments(c.handshake, 1);
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'HELLO\n'), c.seg(true, TCP_ACK | TCP_PSH, 'hi\n'), c.seg(false, TCP_ACK)], 1);
      act(c, t);
      const p = t.plans(1)[0]!;
      if (p.kind !== 'reset') throw new Error('expected a reset');
      expect(p.reason).toMatch(reason);
      expect(p.dead.tracked?.peerWindowShift).toBe(7);
    });
  }

  it('follows: a connection shadowed from its SYN, until reset; not one joined mid-stream, nor the shadow\'s own', () => {
    const c = conversation();
    const own = { ...CLIENT, port: 40001 };
    const t = new ShadowTable({ services: [SERVER], plugin: linePlugin(), ownClient: (e) => e.port === own.port });
    t.segments(c.handshake, 1);
    t.segments([{ ...c.handshake[0]!, sport: own.port }], 1);
    t.segments([{ ...c.seg(false, TCP_ACK | TCP_PSH, 'x\n'), sport: 40002 }], 1); // no SYN seen
    expect(t.follows(CLIENT, SERVER)).toBe(true);
    expect(t.follows({ address: '::ffff:198.18.5.20', port: CLIENT.port }, SERVER)).toBe(true); // any spelling
    expect(t.follows(own, SERVER)).toBe(false);
    expect(t.follows({ ...CLIENT, port: 40002 }, SERVER)).toBe(false);
    t.segments([c.seg(true, TCP_RST)], 1);
    expect(t.follows(CLIENT, SERVER)).toBe(false);
  });

  it('clientDataSince: the client bytes past a restore\'s RCV.NXT (sent after the plans), its FIN with them; null when there are none', () => {
    const c = conversation();
    const t = table();
    t.segments(c.handshake, 1);
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-a\n')], 1);
    const p = t.plans(1)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(t.clientDataSince(CLIENT, SERVER, p.state.recv.seq)).toBeNull();
    t.segments([{ ...c.seg(false, TCP_ACK | TCP_PSH, 'GET b\n'), tsval: 900, window: 321 }], 1);
    expect(t.clientDataSince(CLIENT, SERVER, p.state.recv.seq)).toEqual({ seq: p.state.recv.seq, bytes: Buffer.from('GET b\n'), fin: false, window: 321, tsval: 900 });
    const fin = c.seg(false, TCP_ACK | TCP_FIN);
    t.segments([fin], 1);
    const after = t.clientDataSince(CLIENT, SERVER, seqAdd(p.state.recv.seq, 6))!;
    expect(after).toMatchObject({ bytes: Buffer.alloc(0), fin: true }); // a bare FIN
    expect(t.clientDataSince(CLIENT, SERVER, seqAdd(fin.seq, 1))).toBeNull(); // past the FIN: nothing
    expect(t.clientDataSince({ ...CLIENT, port: 1 }, SERVER, p.state.recv.seq)).toBeNull(); // not shadowed
  });

  describe('half-closed connections (one FIN)', () => {
    /** A reply of `reply` and the server's FIN right after it (HTTP's Connection: close, Redis after QUIT). */
    function closedByServer(ackOfClient: (c: ReturnType<typeof conversation>, fin: ParsedSegment) => ParsedSegment[]) {
      const c = conversation();
      const t = table();
      t.segments(c.handshake, 1);
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-a\n'), c.seg(false, TCP_ACK)], 1);
      const acked = c.next().sNext;
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'QUIT\n')], 1);
      const last = c.seg(true, TCP_ACK | TCP_PSH, 'bye\n');
      const fin = c.seg(true, TCP_ACK | TCP_FIN);
      t.segments([last, fin, ...ackOfClient(c, fin)], 1);
      return { c, t, acked };
    }

    it('the server had closed: restored with its unacknowledged bytes, then its FIN (the goodbye path); nothing replayed', () => {
      const { t, acked, c } = closedByServer(() => []);
      const p = t.plans(1)[0]!;
      if (p.kind !== 'restore') throw new Error(p.reason);
      expect(p.goodbye).toEqual({ reason: expect.stringMatching(/server had closed its side \(FIN\)/), bytes: Buffer.alloc(0) });
      expect(p.state.send.seq).toBe(acked);
      expect(p.state.send.queue.toString()).toBe('bye\n');
      expect(p.replay.length).toBe(0);
      expect(p.preamble.replies).toBe(0);
      expect(p.clientEnded).toBeUndefined();
      expect(p.state.recv.seq).toBe(c.next().cNext);
      expect(() => checkTcpRepairState(p.state)).not.toThrow();
    });

    it('the client acknowledged the FIN (ack = FIN + 1): no byte is taken for lost, the restored socket sends the FIN again', () => {
      const { t } = closedByServer((c) => [c.seg(false, TCP_ACK)]);
      const p = t.plans(1)[0]!;
      if (p.kind !== 'restore') throw new Error(p.reason);
      expect(p.state.send.queue.length).toBe(0);
      expect(p.goodbye?.reason).toMatch(/FIN/);
    });

    it('the ACK of the FIN captured before the FIN (a capture on several CPUs): the same plan', () => {
      const c = conversation();
      const t = table();
      t.segments(c.handshake, 1);
      const fin = c.seg(true, TCP_ACK | TCP_FIN);
      t.segments([c.seg(false, TCP_ACK)], 1); // ack = FIN + 1, taken first
      t.segments([fin], 1);
      const p = t.plans(1)[0]!;
      if (p.kind !== 'restore') throw new Error(p.reason);
      expect(p.state.send.seq).toBe(fin.seq); // SND.UNA at the FIN's own number
      expect(p.state.send.queue.length).toBe(0);
    });

    it('the client had half-closed after a request: its FIN counted in RCV.NXT, the request replayed, clientEnded', () => {
      const c = conversation();
      const t = table();
      t.segments(c.handshake, 1);
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-a\n')], 1);
      const finSegment = { ...c.seg(false, TCP_ACK | TCP_PSH | TCP_FIN, 'GET b\n') };
      t.segments([finSegment, c.seg(true, TCP_ACK)], 1);
      const p = t.plans(1)[0]!;
      if (p.kind !== 'restore') throw new Error(p.reason);
      expect(p.clientEnded).toBe(true);
      expect(p.replay.toString()).toBe('GET b\n');
      expect(p.state.recv.seq).toBe(seqAdd(finSegment.seq, 'GET b\n'.length + 1));
      expect(p.state.recv.seq).toBe(c.next().cNext);
      expect(p.goodbye).toBeUndefined();
    });

    it('an exact reset of a closing connection counts both FINs in the numbers it gives the close engine', () => {
      const c = conversation();
      const t = table();
      t.segments(c.handshake, 1);
      t.segments([c.seg(true, TCP_ACK | TCP_FIN), c.seg(false, TCP_ACK | TCP_FIN)], 1);
      const p = t.plans(1)[0]!;
      if (p.kind !== 'reset') throw new Error('expected a reset');
      const { cNext, sNext } = c.next();
      expect(p.dead.tracked).toMatchObject({ deadNextSeq: sNext, peerNextSeq: cNext });
    });

    it('a capture loss is made good by segments after a FIN (their numbers count it)', () => {
      const { c, t } = closedByServer(() => []);
      t.captureLost(3, 1);
      expect((t.plans(1)[0] as { unproven?: string }).unproven).toMatch(/capture lost 3 frames/);
      t.segments([c.seg(false, TCP_ACK), c.seg(true, TCP_ACK)], 1); // the client acks the FIN; the server's next ACK starts after it
      const p = t.plans(1)[0]!;
      if (p.kind !== 'restore') throw new Error(p.reason);
      expect(p.unproven).toBeUndefined();
    });
  });

  describe('server bytes the client acknowledged that the capture lost (its ring overflowed)', () => {
    const get = encodeCommand(['GET', 'big']);
    const value = 'v'.repeat(3000);
    const reply = `$3000\r\n${value}\r\n`;
    const respTable = () => new ShadowTable({ services: [SERVER], plugin: respContinue });
    /** The reply (its first `bytes`) in segments of 500 bytes, at capture time `ms` each; `lost`: the indexes never captured. */
    const sendReply = (c: ReturnType<typeof conversation>, lost: number[], ms: number, bytes = reply.length) => {
      const segs: ParsedSegment[] = [];
      for (let i = 0, at = 0; at < bytes; i++, at += 500) {
        const s = c.seg(true, TCP_ACK | TCP_PSH, reply.slice(at, at + 500), { timeMs: ms });
        if (!lost.includes(i)) segs.push(s);
      }
      return segs;
    };
    it('a hole inside a bulk reply is skipped once the client acknowledged it: the connection is continued, the next request replayed', () => {
      const c = conversation();
      const t = respTable();
      t.segments(c.handshake, 1_000_000);
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, get.toString('latin1'), { timeMs: 1_000_000 })], 1_000_000);
      t.segments(sendReply(c, [2, 3], 1_000_001), 1_000_001);
      // The client's ACK of the whole reply, and its next request, 5 ms later (past REORDER_MS).
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, get.toString('latin1'), { timeMs: 1_000_006 })], 1_000_006);
      const p = t.plans(1_000_010)[0]!;
      if (p.kind !== 'restore') throw new Error(p.reason);
      expect(p.replay).toEqual(get);
      expect(p.state.send.queue.length).toBe(0);
      expect(p.state.send.seq).toBe(c.next().sNext);
      expect(p.state.recv.seq).toBe(c.next().cNext);
    });
    it('a hole the client has not acknowledged waits for the retransmission (the connection is not lost for it)', () => {
      const c = conversation();
      const t = respTable();
      t.segments(c.handshake, 1_000_000);
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, get.toString('latin1'), { timeMs: 1_000_000 })], 1_000_000);
      const all = sendReply(c, [], 1_000_001);
      t.segments([...all.slice(0, 2), ...all.slice(3)], 1_000_001);
      // An ACK that stops before the hole: nothing skipped.
      t.segments([{ ...c.seg(false, TCP_ACK, '', { timeMs: 1_000_009 }), ack: all[2]!.seq }], 1_000_009);
      t.segments([all[2]!], 1_000_010);
      const p = t.plans(1_000_010)[0]!;
      if (p.kind !== 'restore') throw new Error(p.reason);
      expect(p.state.send.queue.toString()).toBe(reply.slice(1000)); // retained: the client has not acknowledged it
    });
    it('a hole that reaches past the bulk string (a whole small reply lost): reset, saying why', () => {
      const c = conversation();
      const t = respTable();
      t.segments(c.handshake, 1_000_000);
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, encodeCommand(['INCR', 'n']).toString('latin1'), { timeMs: 1_000_000 })], 1_000_000);
      c.seg(true, TCP_ACK | TCP_PSH, ':1\r\n'); // never captured
      t.segments([c.seg(false, TCP_ACK, '', { timeMs: 1_000_001 })], 1_000_001);
      expect(t.plans(1_000_010)[0]).toMatchObject({ kind: 'reset', reason: expect.stringMatching(/capture lost 4 server bytes the client acknowledged: they reach past a bulk string's payload/) });
    });
    it('a hole in a request the server acknowledged: answered, the connection goes on (the write logged without a key); unanswered, reset (its replay lacks the bytes)', () => {
      const set = encodeCommand(['SET', 'k', 'w'.repeat(3000)]).toString('latin1');
      for (const answered of [true, false]) {
        const c = conversation();
        const log = new RequestLog();
        const t = new ShadowTable({ services: [SERVER], plugin: respContinue, requestLog: log });
        t.segments(c.handshake, 1_000_000);
        const segs = [0, 1000, 2000, 3000].map((at) => c.seg(false, TCP_ACK | TCP_PSH, set.slice(at, at + 1000), { timeMs: 1_000_001 }));
        t.segments([segs[0]!, segs[2]!, segs[3]!], 1_000_001); // segs[1] never captured
        t.segments([c.seg(true, TCP_ACK | (answered ? TCP_PSH : 0), answered ? '+OK\r\n' : '', { timeMs: 1_000_005 })], 1_000_005);
        const p = t.plans(1_000_010)[0]!;
        if (answered) {
          if (p.kind !== 'restore') throw new Error(p.reason);
          expect(p.replay.length).toBe(0);
          expect(log.snapshot().writes.map((w) => [w.command, w.key, w.answeredMs])).toEqual([['set', null, 1_000_005]]);
        } else expect(p).toMatchObject({ kind: 'reset', reason: 'client requests not yet answered were not retained' });
      }
    });
    it('a hole inside the reply in progress at the death: reset (the replay\'s reply cannot be checked against bytes never seen)', () => {
      const c = conversation();
      const t = respTable();
      t.segments(c.handshake, 1_000_000);
      t.segments([c.seg(false, TCP_ACK | TCP_PSH, get.toString('latin1'), { timeMs: 1_000_000 })], 1_000_000);
      const segs = sendReply(c, [1], 1_000_001, 1500); // segments 0 and 2 captured; the server died before sending the rest
      t.segments(segs, 1_000_001);
      t.segments([c.seg(false, TCP_ACK, '', { timeMs: 1_000_001 })], 1_000_001);
      expect(t.plans(1_000_010)[0]).toMatchObject({ kind: 'reset', reason: expect.stringMatching(/middle of a reply .* that was not followed/) });
    });
  });

  it('continues a connection whose server died mid-reply: the replay\'s reply must start with the bytes it sent', () => {
    const c = conversation();
    const t = table();
    t.segments(c.handshake, 1);
    // One segment ends a reply and starts the next; the rest of that one never comes.
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\nGET b\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-a\nval'), c.seg(true, TCP_ACK | TCP_PSH, 'ue-')], 1);
    // The client acked all but the last 3 bytes.
    t.segments([{ ...c.seg(false, TCP_ACK), ack: seqAdd(SISN, 1 + 'value-a\nval'.length) }], 1);
    const p = t.plans(1)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.replay.toString()).toBe('GET b\n');
    expect(p.state.send.queue.toString()).toBe('ue-');
    const digest = new ReplyDigest();
    digest.update(Buffer.from('value-'));
    expect(p.expectReply).toEqual(digest.fingerprint());
    expect(p.expectReply!.bytes).toBe(6);
    // A reply that completes clears it.
    t.segments([c.seg(true, TCP_ACK | TCP_PSH, 'b\n'), c.seg(false, TCP_ACK)], 1);
    const q = t.plans(1)[0]!;
    expect(q.kind === 'restore' && q.expectReply).toBeUndefined();
  });

  it('after a capture loss, a connection\'s end is unproven (its client must show it) until both ends showed their streams whole; reset if the lost frame was its data', () => {
    const c = conversation();
    const t = table();
    t.segments(c.handshake, 1);
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-a\n')], 1);
    t.captureLost(1, 1_000_000);
    expect(t.plans(1)[0]).toMatchObject({ kind: 'restore', unproven: 'the capture lost 1 frames while it was open, and neither end has shown its stream whole since' });
    const after = { timeMs: 1_000_001 }; // captured after the loss was counted
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET b\n', after)], 1);
    expect(t.plans(1)[0]).toMatchObject({ kind: 'restore', unproven: expect.stringMatching(/the server has not shown its stream whole since/) });
    t.segments([c.seg(true, TCP_ACK | TCP_PSH, 'value-b\n', after)], 1);
    expect(t.plans(1)[0]).toMatchObject({ kind: 'restore' });
    expect(t.plans(1)[0]).not.toHaveProperty('unproven');
    // This time the lost frame was the client's request: its next segment starts past the copy.
    t.captureLost(1, 1_000_001);
    c.seg(false, TCP_ACK | TCP_PSH, 'GET c\n'); // lost
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET d\n', { timeMs: 1_000_002 }), c.seg(true, TCP_ACK | TCP_PSH, 'value-c\nvalue-d\n', { timeMs: 1_000_002 })], 1);
    expect(t.plans(1)[0]).toMatchObject({ kind: 'reset' });
  });

  it('after a capture loss, segments the ring still held from before the count show nothing: a request lost after them leaves the end unproven', () => {
    // The ring took both ends' ACKs at 1,000,000, then dropped the client's request (1,000,001);
    // the drop counter was read at 1,000,002, before the agent was handed the ACKs it held.
    const c = conversation();
    const t = table();
    t.segments(c.handshake, 1);
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n'), c.seg(true, TCP_ACK | TCP_PSH, 'value-a\n')], 1);
    const held = [c.seg(false, TCP_ACK), c.seg(true, TCP_ACK)];
    c.seg(false, TCP_ACK | TCP_PSH, 'GET b\n', { timeMs: 1_000_001 }); // dropped
    t.captureLost(1, 1_000_002);
    t.segments(held, 1);
    // Their numbers match the copy, yet the request after them is missing from it.
    expect(t.plans(1)[0]).toMatchObject({ kind: 'restore', unproven: expect.stringMatching(/neither end has shown its stream whole since$/) });
  });

  it('a connection the capture took before a loss was counted, but handed over after it, is as suspect as an open one; one opened after the count is not', () => {
    // The ring still held its frames when the drop counter was read: its lost ones may be among the dropped.
    const early = conversation();
    const t = table();
    t.captureLost(3, 1_000_000); // every segment of conversation() is stamped 1,000,000
    t.segments(early.handshake, 1);
    expect(t.plans(1)[0]).toMatchObject({ kind: 'restore', unproven: expect.stringMatching(/^the capture lost 3 frames while it was open, and /) });
    // Made good as an open one is: both ends show their streams whole, in segments captured after the count.
    t.segments([early.seg(false, TCP_ACK | TCP_PSH, 'GET a\n', { timeMs: 1_000_001 }), early.seg(true, TCP_ACK | TCP_PSH, 'value-a\n', { timeMs: 1_000_001 })], 1);
    expect(t.plans(1)[0]).not.toHaveProperty('unproven');
    const later = table();
    later.captureLost(3, 999_999.5);
    later.segments(conversation().handshake, 1);
    expect(later.plans(1)[0]).toMatchObject({ kind: 'restore' });
    expect(later.plans(1)[0]).not.toHaveProperty('unproven');
  });

  it('does not shadow a connection joined mid-stream, and forgets a reset one', () => {
    const c = conversation();
    const t = table();
    t.segments([c.seg(false, TCP_ACK | TCP_PSH, 'GET a\n')], 1);
    expect(t.stats()).toMatchObject({ connections: 0, unknownSegments: 1 });
    t.segments(c.handshake, 1);
    t.segments([c.seg(true, TCP_RST)], 1);
    expect(t.plans(1)).toHaveLength(0);
    t.sweep(2);
    expect(t.stats().connections).toBe(0);
  });

  it('refuses a SYN beyond maxConnections and replaces a reused 4-tuple', () => {
    const t = new ShadowTable({ services: [SERVER], plugin: linePlugin(), maxConnections: 1 });
    const a = conversation();
    t.segments(a.handshake, 1);
    t.segments([{ ...a.handshake[0]!, sport: 40001 }], 1);
    expect(t.stats()).toMatchObject({ connections: 1, refused: 1 });
    t.segments([a.seg(false, TCP_ACK | TCP_FIN)], 1);
    t.segments([{ ...a.handshake[0]!, seq: 77 }], 1); // a new connection on the same 4-tuple
    const p = t.plans(1)[0]!;
    expect(p.kind === 'reset' && p.reason).toBe('the handshake was not seen');
  });
});
