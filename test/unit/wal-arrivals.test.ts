// The PostgreSQL replay check's pieces (issue 12, "committed but not acknowledged"), pure: when
// the shadow saw a connection's first unanswered byte (ContinuePlan.unansweredSince, kept by
// ArrivalTimes), which of the primary's segments to its standby may carry WAL (a keepalive
// cannot), and the verdict: a request is replayed only when every WAL segment arrived before it
// did and no capture loss came after; the check over restore plans (pgWalReplayCheck).
import type { ParsedSegment } from '../../src/native.js';
import { TCP_ACK, TCP_PSH } from '../../src/native.js';
import { describe, expect, it } from 'vitest';
import { pgUnprovenReplayCheck, pgWalReplayCheck } from '../../src/agent/pg-replay-check.js';
import { ArrivalTimes } from '../../src/net/shadow/arrival-times.js';
import { pgContinue } from '../../src/net/shadow/pg-continue.js';
import { isKeepalive, WAL_SEEN_WITHIN_MS, WalArrivals } from '../../src/net/shadow/wal-arrivals.js';
import type { RestorePlan } from '../../src/net/shadow/continue-connections.js';
import { ShadowTable } from '../../src/net/shadow/shadow-table.js';
import { conversationSegments } from './shadow-plan-conversation.js';

const PRIMARY = { address: '198.18.7.10', port: 5432 };

function keepalive(): Buffer {
  const b = Buffer.alloc(22);
  b.write('d', 0, 'latin1');
  b.writeInt32BE(21, 1);
  b.write('k', 5, 'latin1');
  return b;
}

/** A segment from the primary's walsender to this standby, captured at `timeMs`. */
function fromPrimary(payload: Buffer, timeMs: number, over: Partial<ParsedSegment> = {}): ParsedSegment {
  return { family: 4, src: PRIMARY.address, dst: '198.18.7.11', sport: PRIMARY.port, dport: 40000, seq: 1, ack: 1, flags: TCP_ACK | TCP_PSH, window: 100, urgentPointer: 0, payloadLength: payload.length, payload: payload.subarray(0, 8), timeMs, ...over };
}

describe('ArrivalTimes', () => {
  it('gives the capture time of the chunk holding an offset, dropping what was answered', () => {
    const a = new ArrivalTimes();
    a.add(10, { ms: 1, late: false }, 0);
    a.add(20, { ms: 2, late: true }, 0);
    a.add(30, { ms: 3, late: false }, 10);
    expect(a.at(10)).toEqual({ ms: 2, late: true });
    expect(a.at(25)).toEqual({ ms: 3, late: false });
    expect(a.at(30)).toBeUndefined();
    for (let i = 0; i < 5000; i++) a.add(30 + (i + 1) * 10, { ms: 10 + i, late: false }, 30 + i * 10);
    expect(a.at(30 + 4999 * 10)).toEqual({ ms: 10 + 4999, late: false });
  });
});

describe('WalArrivals', () => {
  it('a keepalive is 22 bytes: d, 21, k; anything else may carry WAL', () => {
    expect(isKeepalive(keepalive(), 22)).toBe(true);
    expect(isKeepalive(keepalive(), 44)).toBe(false); // two messages in one segment: counted as WAL
    const w = keepalive();
    w.write('w', 5, 'latin1');
    expect(isKeepalive(w, 22)).toBe(false);
  });

  it('replays a request that arrived after the last WAL, and no other; a capture loss, a late or early request cannot be ordered', () => {
    const wal = new WalArrivals(PRIMARY);
    expect(wal.verdict({ ms: 5000, late: false }, 3000)).toMatch(/replication connection to 198\.18\.7\.10:5432 was never seen \(walCheck\.primary must be/);
    // The standby's own report to the primary shows the capture watches the right connection.
    wal.take([fromPrimary(Buffer.from('r'), 900, { src: '198.18.7.11', sport: 40000, dst: PRIMARY.address, dport: PRIMARY.port })]);
    expect(wal.lastWalMs).toBe(-Infinity);
    expect(wal.verdict({ ms: 5000, late: false }, 3000)).toMatch(/has not started/);
    expect(wal.verdict({ ms: 5000, late: false }, 900 + 30_001)).toMatch(/last seen 30001 ms ago/);
    expect(wal.watch(900 + 30_001)).toEqual({ startedMs: null, lastSeenMs: 900, lastWalMs: null, unseen: true });
    wal.started(1000);
    wal.take([fromPrimary(Buffer.from('dxxxxwWAL'), 2000), fromPrimary(keepalive(), 3000), fromPrimary(Buffer.from('x'), 9999, { sport: 5433 }), fromPrimary(Buffer.from('x'), 9999, { src: '198.18.7.99' }), fromPrimary(Buffer.alloc(0), 9999)]);
    expect(wal.lastWalMs).toBe(2000);
    expect(wal.verdict({ ms: 2500, late: false }, 3000)).toBeNull();
    expect(wal.verdict({ ms: 2000, late: false }, 3000)).toMatch(/sent WAL to the standby 0\.0 ms after its unanswered request arrived: the request's commit may be in it/);
    expect(wal.verdict({ ms: 2500, late: true }, 3000)).toMatch(/held behind a capture hole/);
    expect(wal.verdict({ ms: 500, late: false }, 3000)).toMatch(/before the capture of the replication connection started/);
    expect(wal.verdict(undefined, 3000)).toMatch(/not known/);
    wal.lost(2600);
    expect(wal.verdict({ ms: 2500, late: false }, 3000)).toMatch(/lost frames after its unanswered request arrived/);
    expect(wal.verdict({ ms: 2700, late: false }, 3000)).toBeNull();
    wal.take([fromPrimary(Buffer.from('w'), 2800, { timeMs: undefined })]);
    expect(wal.verdict({ ms: 5000, late: false }, 6000)).toMatch(/sent WAL/); // no capture time: as if last
  });
});

describe('WalArrivals.watchChange', () => {
  it('says once that the watch went unseen (never seen, or silent for 30 s), and once that it is seen again', () => {
    const wal = new WalArrivals(PRIMARY);
    expect(wal.watchChange(100_000)).toBeUndefined(); // not started: nothing to judge
    wal.started(1000);
    expect(wal.watchChange(1000 + WAL_SEEN_WITHIN_MS)).toBeUndefined();
    expect(wal.watchChange(1001 + WAL_SEEN_WITHIN_MS)).toEqual({ type: 'wal-unseen', primary: PRIMARY, lastSeenMs: null, startedMs: 1000 });
    expect(wal.watchChange(2000 + WAL_SEEN_WITHIN_MS)).toBeUndefined(); // said once
    wal.take([fromPrimary(keepalive(), 40_000)]);
    expect(wal.watchChange(40_500)).toEqual({ type: 'wal-seen', primary: PRIMARY, unseenForMs: 39_000 });
    expect(wal.watchChange(41_000)).toBeUndefined();
    expect(wal.watchChange(40_001 + WAL_SEEN_WITHIN_MS)).toEqual({ type: 'wal-unseen', primary: PRIMARY, lastSeenMs: 40_000, startedMs: 1000 });
  });
});

describe('pgWalReplayCheck over a takeover\'s plans', () => {
  const query = (sql: string) => {
    const text = Buffer.from(`${sql}\0`, 'latin1');
    const b = Buffer.alloc(5 + text.length);
    b.write('Q', 0, 'latin1');
    b.writeInt32BE(4 + text.length, 1);
    text.copy(b, 5);
    return b;
  };

  const SERVER = { address: '198.18.7.100', port: 5432 };
  /** A logged-in session per [arrivedMs, sql], its plan with that request unanswered. */
  function plansOf(requests: Array<[number, string]>): RestorePlan[] {
    const startup = Buffer.alloc(8 + 'user\0u\0\0'.length);
    startup.writeInt32BE(startup.length, 0);
    startup.writeInt32BE(196608, 4);
    startup.write('user\0u\0\0', 8, 'latin1');
    const ok = Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0, 0x5a, 0, 0, 0, 5, 0x49]); // AuthenticationOk, ReadyForQuery 'I'
    return requests.map(([arrivedMs, sql], i) => {
      const { seg, handshake } = conversationSegments(SERVER, { address: '198.18.7.20', port: 40000 + i });
      const t = new ShadowTable({ services: [SERVER], plugin: pgContinue() });
      t.segments([...handshake, seg(false, startup), seg(true, ok)], 1000);
      t.segments([{ ...seg(false, query(sql)), timeMs: arrivedMs }], arrivedMs);
      const p = t.plans(3000)[0]!;
      if (p.kind !== 'restore') throw new Error(p.reason);
      expect(p.unansweredSince).toEqual({ ms: arrivedMs, late: false });
      return p;
    });
  }
  const walAt2000 = () => {
    const wal = new WalArrivals(PRIMARY);
    wal.started(1000);
    wal.take([fromPrimary(Buffer.from('dWAL'), 2000)]);
    return wal;
  };

  it('unproven reset: a session whose unanswered INSERT arrived after the last WAL is replayed; one before it is refused, saying why', async () => {
    const plans = plansOf([[1500, 'INSERT INTO t VALUES (1)'], [2500, 'INSERT INTO t VALUES (2)']]);
    const result = await pgWalReplayCheck(walAt2000(), () => undefined, Promise.resolve(), { unproven: 'reset', nowMs: () => 3000 })(plans);
    expect([...result.refused.keys()]).toEqual(['198.18.7.20|40000']);
    expect(result.refused.get('198.18.7.20|40000')).toMatch(/^not replayed: the primary sent WAL to the standby 500\.0 ms after/);
    expect(result.readOnly?.size).toBe(0);
    expect(result.counts).toMatchObject({ replays: 2, refused: 1, readOnly: 0 });
  });

  it('by default one WAL cannot rule out is replayed read-only, unless a statement could lift the mode (refused, saying both)', async () => {
    const plans = plansOf([[1500, 'SELECT v FROM t'], [1600, 'SET default_transaction_read_only = off; COMMIT; INSERT INTO t VALUES (3)'], [2500, 'INSERT INTO t VALUES (2)']]);
    const result = await pgWalReplayCheck(walAt2000(), () => undefined, Promise.resolve(), { nowMs: () => 3000 })(plans);
    expect([...result.readOnly!.keys()]).toEqual(['198.18.7.20|40000']);
    expect(result.readOnly!.get('198.18.7.20|40000')).toMatch(/^the primary sent WAL to the standby 500\.0 ms after/);
    expect([...result.refused.keys()]).toEqual(['198.18.7.20|40001']);
    expect(result.refused.get('198.18.7.20|40001')).toMatch(/^not replayed: the primary sent WAL .*; nor read-only: a statement could lift the read-only mode \(a read-only setting\)/);
    expect(result.counts).toMatchObject({ replays: 3, refused: 1, readOnly: 1 });
  });

  it('without walCheck every unanswered request is unproven: read-only where it can be, reset where not or when told so', async () => {
    const plans = plansOf([[1500, 'SELECT v FROM t'], [2500, 'RESET ALL; INSERT INTO t VALUES (2)']]);
    const readOnly = await pgUnprovenReplayCheck(Promise.resolve(), 'read-only')(plans);
    expect([...readOnly.readOnly!.keys()]).toEqual(['198.18.7.20|40000']);
    expect(readOnly.readOnly!.get('198.18.7.20|40000')).toMatch(/nothing here tells whether the dead primary committed it \(no walCheck\)/);
    expect(readOnly.refused.get('198.18.7.20|40001')).toMatch(/^not replayed: nothing here tells.*; nor read-only: .*RESET ALL/);
    const reset = await pgUnprovenReplayCheck(Promise.resolve(), 'reset')(plans);
    expect([...reset.refused.keys()]).toEqual(['198.18.7.20|40000', '198.18.7.20|40001']);
    expect(reset.counts).toMatchObject({ replays: 2, refused: 2, readOnly: 0 });
  });
});
