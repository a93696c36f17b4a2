import { describe, expect, it } from 'vitest';
import { TCP_ACK, TCP_RST, type SegmentSpec } from '../../src/native.js';
import { CloseEngine, type DeadConnection, type PeerAnswer } from '../../src/net/close-engine.js';
import { parseCloseMethod } from '../../src/net/close-method.js';
import { summarizeResults, type CloseResult } from '../../src/net/close-result.js';
import { failUnsent } from '../../src/net/close-remote.js';
import { seqAdd } from '../../src/net/seq.js';
import { postgresErrorResponse } from '../../src/net/goodbye/postgres.js';
import { PeerModel } from './peer-model.js';

const DEAD = { address: '198.18.1.1', port: 5432 };

/** Runs an engine against peer models on a simulated clock with a 0.1 ms one-way delay. */
function simulate(peers: PeerModel[], conns: DeadConnection[], method: string, opts = {}) {
  let now = 0;
  const inFlight: Array<{ at: number; answer: PeerAnswer }> = [];
  const sent: SegmentSpec[] = [];
  const byPort = new Map(peers.map((p) => [p.port, p]));
  const engine = new CloseEngine(conns, parseCloseMethod(method), {
    now: () => now,
    send: (s) => {
      sent.push(s);
      for (const a of byPort.get(s.dport)!.receive(s, now + 0.1)) inFlight.push({ at: now + 0.2, answer: a });
    },
  }, opts);
  engine.start();
  for (let step = 0; step < 100_000 && !engine.done; step++) {
    now += 0.1;
    for (const f of inFlight.splice(0).filter((f) => (f.at <= now ? true : (inFlight.push(f), false)))) engine.answer(f.answer);
    engine.tick();
  }
  return { results: engine.results(), sent, elapsed: now };
}

function peer(port: number, rcvNxt = 1000, sndNxt = 5000, extra: Partial<{ silent: boolean }> = {}) {
  return new PeerModel('198.18.1.2', port, rcvNxt, sndNxt, 65535, 500, extra.silent ?? false);
}
const conn = (port: number, tracked?: DeadConnection['tracked']): DeadConnection => ({
  local: DEAD,
  peer: { address: '198.18.1.2', port },
  ...(tracked ? { tracked } : {}),
});
const exactTrack = { deadNextSeq: 1000, peerNextSeq: 5000, peerAck: 1000 };

describe('CloseEngine against a model of the peer kernel', () => {
  it('tracked exact RST: resets and is verified by the probe that draws a RST', () => {
    const p = peer(40000);
    const { results } = simulate([p], [conn(40000, exactTrack)], 'rst');
    expect(p.wasReset).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'reset', ok: true, verified: true, seq: 1000, seqSource: 'tracked', action: 'rst' });
    expect(results[0]!.elapsedMs).toBeLessThan(1);
  });

  it('a wrong in-window RST is ignored (RFC 5961) and the challenge ACK gives the exact value', () => {
    const p = peer(40001);
    const { results, sent } = simulate([p], [conn(40001, { ...exactTrack, deadNextSeq: 1000 + 700, peerAck: 1000 })], 'rst');
    expect(p.ignoredRsts).toBe(1);
    expect(p.wasReset).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'reset', ok: true, seq: 1000, seqSource: 'challenge-ack' });
    const rsts = sent.filter((s) => s.flags & TCP_RST).map((s) => s.seq);
    expect(rsts).toEqual([1700, 1000]);
  });

  it('a data segment of the peer crossing our exact RST confirms the value instead of being taken for a challenge ACK', () => {
    let now = 0;
    const sent: SegmentSpec[] = [];
    const engine = new CloseEngine([conn(40011, exactTrack)], parseCloseMethod('rst'), { now: () => now, send: (x) => sent.push(x) });
    engine.start();
    // The peer's own retransmission, sent before our RST arrived: its ack is the value we used.
    engine.answer({ src: '198.18.1.2', sport: 40011, dst: DEAD.address, dport: DEAD.port, seq: 5000, ack: 1000, flags: TCP_ACK, payloadLength: 20 });
    expect(sent.filter((x) => x.flags & TCP_RST)).toHaveLength(1);
    // Then the verification probe's answer: the peer no longer has the connection.
    now = 0.3;
    engine.answer({ src: '198.18.1.2', sport: 40011, dst: DEAD.address, dport: DEAD.port, seq: 1, ack: 0, flags: TCP_RST });
    expect(engine.results()[0]).toMatchObject({ outcome: 'reset', seqSource: 'tracked', verified: true });
  });

  it('an untracked connection is learned through a probe and reset', () => {
    const p = peer(40002, 0xfffffff0, 77);
    const { results } = simulate([p], [conn(40002)], 'rst');
    expect(p.wasReset).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'reset', seq: 0xfffffff0, ack: 77, seqSource: 'dup-ack' });
  });

  it('FIN: tracked exact goes straight out and is acknowledged; untracked is probed first', () => {
    const a = peer(40003);
    const b = peer(40004, 123456, 654321);
    const { results, sent } = simulate([a, b], [conn(40003, exactTrack), conn(40004)], 'fin');
    expect(a.gotFin && b.gotFin).toBe(true);
    expect(a.wasReset || b.wasReset).toBe(false);
    expect(results.map((r) => r.outcome)).toEqual(['closed', 'closed']);
    expect(results[1]).toMatchObject({ seq: 123456, ack: 654321, seqSource: 'dup-ack', verified: true });
    expect(sent.filter((s) => s.dport === 40003 && s.flags === TCP_ACK)).toHaveLength(0);
  });

  it('break: one urgent byte at the exact sequence number', () => {
    const p = peer(40005);
    const { results } = simulate([p], [conn(40005)], 'break');
    expect(p.urgent).toEqual([0x21]);
    expect(results[0]).toMatchObject({ outcome: 'urgent-delivered', ok: true });
  });

  it('goodbye at a boundary delivers the protocol bytes then FIN; without one it falls back to RST', () => {
    const a = peer(40006);
    const b = peer(40007);
    const { results } = simulate(
      [a, b],
      [conn(40006, { ...exactTrack, atBoundary: true }), conn(40007, { ...exactTrack, atBoundary: false, boundaryReason: 'mid-message' })],
      'goodbye:postgres',
    );
    expect(a.data.equals(postgresErrorResponse({ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' }))).toBe(true);
    expect(a.gotFin).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'goodbye-delivered', action: 'goodbye:postgres' });
    expect(b.wasReset).toBe(true);
    expect(results[1]).toMatchObject({ outcome: 'reset', action: 'rst', fallback: 'mid-message' });
  });

  it('goodbye falls back to RST when the peer missed data the tracker saw', () => {
    const p = peer(40008, 1000);
    const { results } = simulate([p], [conn(40008, { deadNextSeq: 1500, peerAck: 1000, peerNextSeq: 5000, atBoundary: true })], 'goodbye:postgres');
    expect(p.data.length).toBe(0);
    expect(p.wasReset).toBe(true);
    expect(results[0]!.fallback).toMatch(/differs from the tracked stream position/);
  });

  it('FIN at a tracked value the peer is not at: its challenge ACK gives the exact value and the FIN is resent there', () => {
    const p = peer(40012, 1000);
    const { results, sent } = simulate([p], [conn(40012, { deadNextSeq: 1300, peerAck: 1300, peerNextSeq: 5000 })], 'fin');
    expect(p.gotFin).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'closed', action: 'fin', seq: 1000, seqSource: 'challenge-ack' });
    expect(results[0]!.fallback).toBeUndefined();
    expect(sent.filter((x) => x.flags & 0x01).map((x) => x.seq)).toEqual([1300, 1000]);
  });

  it('a goodbye on a connection with timestamps: a TSval aged by the time since it was seen passes PAWS at once', () => {
    const p = peer(40014);
    p.tsRecent = 50_000; // the dead side's clock went on after the tracked value
    const { results, sent } = simulate([p], [conn(40014, { ...exactTrack, atBoundary: true, deadTsval: 49_900, peerTsval: 9, deadTsvalAgeMs: 150 })], 'goodbye:postgres');
    expect(results[0]).toMatchObject({ outcome: 'goodbye-delivered', ok: true });
    expect(p.pawsDropped).toBe(0);
    expect(sent.filter((x) => x.payload)).toHaveLength(1);
    expect(sent[0]!.tsval).toBe(49_900 + 150 + 1);
    expect(sent[0]!.tsecr).toBe(9);
  });

  it('a goodbye whose TSval fails PAWS is sent again at once with the TSval the duplicate ACK echoes', () => {
    const p = peer(40015);
    p.tsRecent = 50_000;
    const { results, sent } = simulate([p], [conn(40015, { ...exactTrack, atBoundary: true, deadTsval: 49_000, peerTsval: 9 })], 'goodbye:postgres');
    expect(p.pawsDropped).toBe(1);
    expect(results[0]).toMatchObject({ outcome: 'goodbye-delivered', ok: true });
    expect(sent.filter((x) => x.payload).map((x) => x.tsval)).toEqual([49_001, 50_001]);
    // Not after the 250 ms answer timeout: within a round trip or two.
    expect(results[0]!.elapsedMs).toBeLessThan(2);
  });

  it('a silent peer fails after bounded attempts, waiting out the rate limit between them', () => {
    const p = peer(40009, 1, 1, { silent: true });
    const { results, elapsed } = simulate([p], [conn(40009)], 'fin', { attempts: 3, answerTimeoutMs: 100, rateLimitMs: 550 });
    expect(results[0]).toMatchObject({ outcome: 'failed', ok: false });
    expect(results[0]!.error).toMatch(/no answer to probes after 3 attempts/);
    expect(elapsed).toBeGreaterThanOrEqual(100 + 550 + 550);
    expect(elapsed).toBeLessThan(1300);
  });

  it('a peer that takes the urgent byte and then resets (RST acking it) counts as delivered', () => {
    let now = 0;
    const engine = new CloseEngine([conn(40013, exactTrack)], parseCloseMethod('break'), { now: () => now, send: () => {} });
    engine.start();
    now = 0.2;
    engine.answer({ src: '198.18.1.2', sport: 40013, dst: DEAD.address, dport: DEAD.port, seq: 5000, ack: 1001, flags: TCP_RST | TCP_ACK });
    expect(engine.results()[0]).toMatchObject({ outcome: 'urgent-delivered', ok: true, verified: true });
  });

  it('a peer that no longer has the connection is reported as not connected', () => {
    const p = peer(40010);
    p.open = false;
    const { results } = simulate([p], [conn(40010)], 'fin');
    expect(results[0]).toMatchObject({ outcome: 'not-connected', ok: true });
  });

  it('verification probes wait until every closing segment is out, and a while longer', () => {
    let now = 0;
    const sent: Array<{ at: number; flags: number }> = [];
    const conns = Array.from({ length: 200 }, (_, i) => conn(30000 + i, exactTrack));
    const engine = new CloseEngine(conns, parseCloseMethod('rst'), { now: () => now, send: (x) => sent.push({ at: now, flags: x.flags }) });
    engine.start();
    // Beginning takes slices of BEGIN_SLICE_MS of real time; a loaded machine needs more than one.
    for (let i = 0; i < 200 && engine.beginning; i++) engine.tick();
    expect(sent.every((x) => x.flags & TCP_RST)).toBe(true);
    expect(sent).toHaveLength(200);
    expect(engine.nextDeadline()).toBe(10); // 0.05 ms per connection
    now = 10;
    engine.tick();
    expect(sent.slice(200).every((x) => x.flags === TCP_ACK && x.at === 10)).toBe(true);
    expect(sent).toHaveLength(400);
  });

  it('connections the deadline left unbegun fail as such, each once, whenever results() is asked', () => {
    const conns = Array.from({ length: 20_000 }, (_, i) => conn(10_000 + i, exactTrack));
    conns.push(conns.at(-1)!); // named twice
    const engine = new CloseEngine(conns, parseCloseMethod('rst'), { now: () => 0, send: () => {} });
    engine.start(); // one slice of BEGIN_SLICE_MS: far from 20,000
    expect(engine.beginning).toBe(true);
    const first = engine.results();
    const notBegun = first.filter((r) => r.error === 'not begun before the deadline').length;
    expect(first).toHaveLength(20_000);
    expect(notBegun).toBeGreaterThan(0);
    expect(engine.results().filter((r) => r.error === 'not begun before the deadline')).toHaveLength(notBegun);
  });

  it('1,000 tracked connections are all reset, each with its own exact seq', () => {
    const peers = Array.from({ length: 1000 }, (_, i) => peer(20000 + i, seqAdd(1000, i * 7919), i));
    const conns = peers.map((p) => conn(p.port, { deadNextSeq: p.rcvNxt, peerAck: p.rcvNxt, peerNextSeq: p.sndNxt }));
    const { results } = simulate(peers, conns, 'rst');
    expect(results.every((r) => r.outcome === 'reset' && r.verified)).toBe(true);
    expect(peers.every((p) => p.wasReset)).toBe(true);
  });

  it('rejects unknown methods with a clear message', () => {
    expect(() => parseCloseMethod('kill')).toThrow(/unknown close method "kill"/);
    expect(() => parseCloseMethod('goodbye:smtp')).toThrow(/unknown goodbye protocol "smtp"/);
  });
});

describe('CloseEngine against a peer whose receive window cannot take the closing data', () => {
  const GOODBYE = postgresErrorResponse({ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' });
  function narrow(port: number, window: number, set: Partial<Pick<PeerModel, 'bareFinInZeroWindow' | 'trims' | 'shrinks' | 'windowShift'>> = {}): PeerModel {
    const p = new PeerModel('198.18.1.2', port, 1000, 5000, window, 500, false);
    return Object.assign(p, set);
  }
  const payloadsTo = (sent: SegmentSpec[], port: number) => sent.filter((x) => x.dport === port && x.payload);

  it('goodbye, the tracked window 0: a FIN instead, no data sent; the peer reads to end-of-file', () => {
    const p = narrow(41000, 0);
    const { results, sent } = simulate([p], [conn(41000, { ...exactTrack, atBoundary: true, peerWindow: 0 })], 'goodbye:postgres');
    expect(payloadsTo(sent, 41000)).toHaveLength(0);
    expect(p.gotFin).toBe(true);
    expect(p.data.length).toBe(0);
    expect(results[0]).toMatchObject({ outcome: 'closed', ok: true, verified: true, action: 'fin', method: 'goodbye:postgres', seqSource: 'tracked' });
    expect(results[0]!.fallback).toBe("the peer's receive window is 0: the goodbye cannot be delivered; FIN instead");
  });

  it('goodbye, the window not tracked: the ACK that drops it shows window 0, and the FIN follows at once', () => {
    const p = narrow(41001, 0);
    const { results, sent } = simulate([p], [conn(41001, { ...exactTrack, atBoundary: true })], 'goodbye:postgres');
    expect(p.windowDrops).toBe(1);
    expect(payloadsTo(sent, 41001)).toHaveLength(1); // sent once, never again into the closed window
    expect(results[0]).toMatchObject({ outcome: 'closed', ok: true, action: 'fin' });
    expect(results[0]!.fallback).toMatch(/receive window is 0/);
    expect(results[0]!.elapsedMs).toBeLessThan(2); // a round trip or two, not the 250 ms answer timeout
  });

  it('goodbye to an untracked connection (boundary assumed): the probe\'s answer shows window 0, so the FIN goes instead', () => {
    const p = narrow(41002, 0);
    const { results, sent } = simulate([p], [conn(41002)], 'goodbye:postgres', { assumeBoundary: true });
    expect(payloadsTo(sent, 41002)).toHaveLength(0);
    expect(results[0]).toMatchObject({ outcome: 'closed', action: 'fin', seqSource: 'dup-ack' });
    expect(results[0]!.fallback).toMatch(/receive window is 0/);
  });

  it('goodbye into a window smaller than the message (scale known): a FIN instead', () => {
    const p = narrow(41003, 64, { windowShift: 2 });
    const { results, sent } = simulate([p], [conn(41003, { ...exactTrack, atBoundary: true, peerWindow: 64, peerWindowShift: 2 })], 'goodbye:postgres');
    expect(GOODBYE.length).toBeGreaterThan(64);
    expect(payloadsTo(sent, 41003)).toHaveLength(0);
    expect(results[0]).toMatchObject({ outcome: 'closed', action: 'fin' });
    expect(results[0]!.fallback).toBe("the peer's receive window is smaller than the goodbye: FIN instead");
  });

  it('a peer whose raw window field looks small but is scaled takes the goodbye', () => {
    const p = narrow(41004, 4096, { windowShift: 7 }); // the field says 32: 4,096 bytes
    const { results } = simulate([p], [conn(41004, { ...exactTrack, atBoundary: true, peerWindowShift: 7 })], 'goodbye:postgres');
    expect(results[0]).toMatchObject({ outcome: 'goodbye-delivered', action: 'goodbye:postgres' });
    expect(results[0]!.fallback).toBeUndefined();
    expect(p.data.equals(GOODBYE)).toBe(true);
  });

  it('a peer that takes part of the goodbye (it trims to its window) gets the rest from there, once', () => {
    const p = narrow(41005, 30, { trims: true });
    const { results, sent } = simulate([p], [conn(41005, { ...exactTrack, atBoundary: true })], 'goodbye:postgres');
    expect(p.data.equals(GOODBYE)).toBe(true); // in order, no byte twice
    expect(p.gotFin).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'goodbye-delivered', ok: true, action: 'goodbye:postgres' });
    expect(payloadsTo(sent, 41005).map((x) => x.seq)).toEqual([1000, 1030, 1060]);
  });

  it('a peer that took part of the goodbye and then closed its window: RST (the stream is mid-message)', () => {
    const p = narrow(41006, 30, { trims: true, shrinks: true });
    const { results } = simulate([p], [conn(41006, { ...exactTrack, atBoundary: true })], 'goodbye:postgres');
    expect(p.data.length).toBe(30);
    expect(p.wasReset).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'reset', ok: true, action: 'rst', seq: 1030 });
    expect(results[0]!.fallback).toMatch(/took part of the goodbye, then its receive window fell to 0/);
  });

  it('a peer that took the whole goodbye but not its FIN into the zero window that left: only the FIN is resent, then RST', () => {
    let now = 0;
    const sent: SegmentSpec[] = [];
    const engine = new CloseEngine([conn(41012, { ...exactTrack, atBoundary: true })], parseCloseMethod('goodbye:postgres'), { now: () => now, send: (x) => sent.push(x) }, { answerTimeoutMs: 100 });
    engine.start();
    now = 0.2;
    const ack = (n: number) => engine.answer({ src: '198.18.1.2', sport: 41012, dst: DEAD.address, dport: DEAD.port, seq: 5000, ack: n, flags: TCP_ACK, window: 0 });
    ack(1000 + GOODBYE.length); // every byte, not the FIN
    expect(sent.at(-1)).toMatchObject({ seq: 1000 + GOODBYE.length, flags: 0x11 }); // FIN|ACK, no data
    expect(sent.at(-1)!.payload).toBeUndefined();
    now = 0.4;
    ack(1000 + GOODBYE.length);
    now = 600; // past the retry's wait (the rate limit)
    engine.tick();
    // At the value the peer's own ACK gave: exact, so final (RFC 5961) without a probe.
    expect(sent.at(-1)).toMatchObject({ seq: 1000 + GOODBYE.length, flags: TCP_RST | TCP_ACK });
    expect(engine.results()[0]).toMatchObject({ outcome: 'reset', action: 'rst', ok: true });
    expect(engine.results()[0]!.fallback).toBe("the peer's receive window is 0 and it did not take the FIN: RST instead");
  });

  it('break, the window 0 (tracked or shown by the answer): a RST instead of the urgent byte', () => {
    const a = narrow(41007, 0);
    const b = narrow(41008, 0);
    const { results } = simulate([a, b], [conn(41007, { ...exactTrack, peerWindow: 0 }), conn(41008)], 'break');
    expect(a.wasReset && b.wasReset).toBe(true);
    expect(a.urgent).toEqual([]);
    expect(results[0]).toMatchObject({ outcome: 'reset', ok: true, verified: true, action: 'rst', method: 'break', seqSource: 'tracked' });
    expect(results[1]).toMatchObject({ outcome: 'reset', ok: true, action: 'rst', seqSource: 'dup-ack' });
    for (const r of results) expect(r.fallback).toBe("the peer's receive window is 0: the urgent byte cannot be delivered; RST instead");
  });

  it('fin into a zero window: taken by a peer that takes a bare FIN there (Linux); else a RST after the answer timeout', () => {
    const linux = narrow(41009, 0);
    const strict = narrow(41010, 0, { bareFinInZeroWindow: false });
    const { results } = simulate([linux, strict], [conn(41009, { ...exactTrack, peerWindow: 0 }), conn(41010, { ...exactTrack, peerWindow: 0 })], 'fin', { answerTimeoutMs: 100 });
    expect(linux.gotFin).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'closed', action: 'fin' });
    expect(results[0]!.fallback).toBeUndefined();
    expect(strict.windowDrops).toBe(1); // not sent again into the closed window
    expect(strict.wasReset).toBe(true);
    expect(results[1]).toMatchObject({ outcome: 'reset', ok: true, action: 'rst', seq: 1000 });
    expect(results[1]!.fallback).toBe("the peer's receive window is 0 and it did not take the FIN: RST instead");
    expect(results[1]!.elapsedMs).toBeGreaterThanOrEqual(100);
    expect(results[1]!.elapsedMs).toBeLessThan(200);
  });

  it('goodbye to a peer that takes nothing into its zero window, not even a bare FIN: FIN, then RST, both reasons said', () => {
    const p = narrow(41011, 0, { bareFinInZeroWindow: false });
    const { results } = simulate([p], [conn(41011, { ...exactTrack, atBoundary: true })], 'goodbye:postgres');
    expect(p.wasReset).toBe(true);
    expect(results[0]).toMatchObject({ outcome: 'reset', ok: true, action: 'rst', method: 'goodbye:postgres' });
    expect(results[0]!.fallback).toBe(
      "the peer's receive window is 0: the goodbye cannot be delivered; FIN instead; the peer's receive window is 0 and it did not take the FIN: RST instead",
    );
    expect(summarizeResults(results).fallbacks).toEqual({ [results[0]!.fallback!]: 1 });
  });
});

describe('summarizeResults', () => {
  it('counts outcomes, actions, sources, verified and fallbacks; lists the first failures in full', () => {
    const r = (o: Partial<CloseResult>): CloseResult => ({ local: DEAD, peer: { address: '198.18.1.2', port: 1 }, method: 'goodbye:postgres', action: 'rst', outcome: 'reset', ok: true, verified: true, elapsedMs: 1, ...o });
    const results = [
      r({ seqSource: 'tracked' }),
      r({ seqSource: 'dup-ack', verified: false, fallback: 'mid-message' }),
      r({ action: 'goodbye:postgres', outcome: 'goodbye-delivered', seqSource: 'tracked' }),
      ...Array.from({ length: 12 }, (_, i) => r({ outcome: 'failed', ok: false, verified: false, error: `no answer ${i}`, fallback: 'mid-message' })),
    ];
    const s = summarizeResults(results);
    expect(s).toMatchObject({
      connections: 15,
      outcomes: { reset: 2, 'goodbye-delivered': 1, failed: 12 },
      actions: { rst: 14, 'goodbye:postgres': 1 },
      seqSources: { tracked: 2, 'dup-ack': 1 },
      verified: 2,
      fallbacks: { 'mid-message': 13 },
    });
    expect(s.failures.map((f) => f.error)).toEqual(Array.from({ length: 10 }, (_, i) => `no answer ${i}`));
    expect(summarizeResults([])).toEqual({ connections: 0, outcomes: {}, actions: {}, seqSources: {}, verified: 0, fallbacks: {}, failures: [] });
  });
});

describe('failUnsent', () => {
  it('a connection finished when its RST was queued, but whose RST was still queued at the deadline, failed', () => {
    const r = (port: number): CloseResult => ({ local: DEAD, peer: { address: '198.18.1.2', port }, method: 'rst', action: 'rst', outcome: 'reset', ok: true, verified: false, elapsedMs: 1 });
    const results = [r(1), r(2)];
    const rst: SegmentSpec = { src: DEAD.address, sport: DEAD.port, dst: '198.18.1.2', dport: 2, seq: 1, ack: 0, flags: TCP_RST };
    expect(failUnsent(results, [])).toBe(results);
    expect(failUnsent(results, [rst]).map((x) => [x.peer.port, x.outcome, x.ok])).toEqual([[1, 'reset', true], [2, 'failed', false]]);
    expect(failUnsent(results, [rst])[1]!.error).toMatch(/still queued at the deadline/);
  });
});
