// The replay matcher (seed 003 [0055], [0077]-[0080]), pure: what the RESP tracker logs of a
// connection's writes (keys, capture times, transactions, databases), and the verdicts from
// probes and a replication stream: replay when nothing unanswered ran, reset when some ran or
// nothing can tell, acknowledged writes the replica lacks counted.
import { describe, expect, it } from 'vitest';
import { decideReplays, planMatch, type StreamProbe, type StreamWrite } from '../../src/net/shadow/replay-match.js';
import { RequestLog, type LoggedWrite } from '../../src/net/shadow/request-log.js';
import { encodeCommand, respContinue } from '../../src/net/shadow/resp-continue.js';
import { argumentsDigest, RespRequestFramer, type RespRequest } from '../../src/net/shadow/resp-request.js';
import { respWriteKey, respWriteKind } from '../../src/net/shadow/resp-write-kinds.js';

const cmd = (...w: string[]) => encodeCommand(w);
const keyOf = (db: number, ...argv: string[]) => respWriteKey(String(db), argumentsDigest(argv.map((a) => Buffer.from(a))))!;

describe('the RESP tracker logs writes', () => {
  it('keys each write by database and arguments (name case ignored), with the capture times of its first byte and of its reply', () => {
    const log = new RequestLog();
    const t = respContinue.createTracker({ connection: 'c1', log });
    t.clientData(Buffer.concat([cmd('SELECT', '2'), cmd('incr', 'k')]), { ms: 100, late: false });
    t.serverData(Buffer.from('+OK\r\n'), { ms: 101, late: false });
    t.serverData(Buffer.from(':1\r\n'), { ms: 102, late: false });
    // A request split over two chunks: its time is its first byte's.
    const two = cmd('INCR', 'k');
    t.clientData(two.subarray(0, 5), { ms: 110, late: false });
    t.clientData(Buffer.concat([two.subarray(5), cmd('GET', 'k'), cmd('INCRBYFLOAT', 'k', '1.5')]), { ms: 120, late: false });
    t.serverData(Buffer.from(':2\r\n'), { ms: 121, late: false });
    const { writes } = log.snapshot();
    expect(writes.map((w) => [w.command, w.key, w.sentMs, w.answeredMs, w.failed])).toEqual([
      ['incr', keyOf(2, 'INCR', 'k'), 100, 102, false],
      ['incr', keyOf(2, 'incr', 'k'), 110, 121, false],
      // A read is not logged; a write the stream carries rewritten is, without a key.
      ['incrbyfloat', null, 120, null, false],
    ]);
  });
  it('marks a failed write, a late first byte, writes queued in MULTI answered by EXEC, and stops keying after a refused SELECT', () => {
    const log = new RequestLog();
    const t = respContinue.createTracker({ connection: 'c1', log });
    t.clientData(cmd('INCR', 'x'), { ms: 10, late: true });
    t.serverData(Buffer.from('-ERR value is not an integer\r\n'), { ms: 11, late: false });
    t.clientData(Buffer.concat([cmd('MULTI'), cmd('INCR', 'a'), cmd('INCR', 'b'), cmd('EXEC')]), { ms: 20, late: false });
    t.serverData(Buffer.from('+OK\r\n+QUEUED\r\n+QUEUED\r\n'), { ms: 21, late: false });
    let w = log.snapshot().writes;
    expect(w.map((e) => [e.command, e.sentExact, e.answeredMs, e.failed])).toEqual([
      ['incr', false, 11, true],
      ['incr', true, null, false],
      ['incr', true, null, false],
    ]);
    t.serverData(Buffer.from('*2\r\n:1\r\n:1\r\n'), { ms: 25, late: false });
    t.clientData(Buffer.concat([cmd('MULTI'), cmd('INCR', 'a'), cmd('DISCARD'), cmd('SELECT', 'x'), cmd('INCR', 'a')]), { ms: 30, late: false });
    t.serverData(Buffer.from('+OK\r\n+QUEUED\r\n+OK\r\n-ERR invalid DB index\r\n'), { ms: 31, late: false });
    w = log.snapshot().writes;
    expect(w.slice(1).map((e) => [e.answeredMs, e.failed, e.key === null])).toEqual([
      [25, false, false],
      [25, false, false],
      [31, true, false], // discarded
      [null, false, true], // after SELECT x: not keyed
    ]);
  });
  it('logs nothing without a log, and keeps tracking as before', () => {
    const t = respContinue.createTracker();
    t.clientData(cmd('INCR', 'k'), { ms: 1, late: false });
    expect(t.answeredClientBytes()).toBe(0);
  });
  it('classifies commands: verbatim always-propagated writes are matchable, SET only without options', () => {
    expect(respWriteKind('incr', 2)).toBe('matchable');
    expect(respWriteKind('set', 3)).toBe('matchable');
    expect(respWriteKind('set', 5)).toBe('unmatchable');
    expect(respWriteKind('sadd', 3)).toBe('unmatchable'); // a no-op SADD is not propagated
    expect(respWriteKind('get', 2)).toBe('read');
    expect(respWriteKind('flushall', 1)).toBe('unmatchable');
    expect(respWriteKey('x', 'd')).toBeNull();
  });
});

describe('the request framer\'s digest', () => {
  it('equals argumentsDigest of the words (name case ignored), split at every byte; an inline request has none; others are not digested', () => {
    const bytes = Buffer.concat([cmd('HSET', 'h', 'f', 'v'.repeat(300)), cmd('GET', 'h'), Buffer.from('INCR k\r\n')]);
    const want = argumentsDigest(['hset', 'h', 'f', 'v'.repeat(300)].map((w) => Buffer.from(w)));
    for (let cut = 0; cut <= bytes.length; cut++) {
      const f = new RespRequestFramer(() => false, (name) => name === 'hset' || name === 'incr');
      const reqs = [...f.push(bytes.subarray(0, cut)), ...f.push(bytes.subarray(cut))];
      expect(reqs.map((r) => [r.name, r.argc, r.digest])).toEqual([['hset', 4, want], ['get', 2, undefined], ['incr', 2, null]]);
    }
    // A name outside ASCII is lowercased by both the same way (every latin1 byte, as the framer's toLowerCase).
    const name = Buffer.from('HSÉT\xd7\xdf', 'latin1');
    const framed = new RespRequestFramer(() => false, () => true).push(Buffer.concat([Buffer.from(`*2\r\n$${name.length}\r\n`), name, Buffer.from('\r\n$1\r\nh\r\n')]));
    expect(framed.map((r) => r.digest)).toEqual([argumentsDigest([name, Buffer.from('h')])]);
  });
  it('skipLost(): bytes a capture lost inside an argument\'s payload leave the request framed, truncated and without a digest; elsewhere nothing changes', () => {
    const bytes = Buffer.concat([cmd('SET', 'k', 'v'.repeat(100)), cmd('INCR', 'n')]);
    const payload = bytes.indexOf('vvv');
    for (const digested of [true, false]) {
      const f = new RespRequestFramer(() => true, () => digested);
      expect(f.push(bytes.subarray(0, payload + 10))).toEqual([]);
      expect(f.skipLost(91)).toBe(false); // past the payload (into its CRLF)
      expect(f.skipLost(90)).toBe(true);
      const reqs = f.push(bytes.subarray(payload + 100));
      expect(reqs.map((r) => [r.name, r.argc, r.truncated, r.digest, r.end])).toEqual([
        ['set', 3, true, digested ? null : undefined, payload + 102],
        ['incr', 2, false, digested ? argumentsDigest([Buffer.from('incr'), Buffer.from('n')]) : undefined, bytes.length],
      ]);
    }
    // Not inside an argument's payload: in the name, a header, between requests.
    for (const at of [bytes.indexOf('SET') + 1, 2, 0, bytes.indexOf('*2')]) {
      const f = new RespRequestFramer(() => true, () => true);
      f.push(bytes.subarray(0, at));
      expect(f.skipLost(1), `at ${at}`).toBe(false);
      expect(f.offset).toBe(at);
    }
  });
  it('is the same for a request whose arguments are too many or too large to keep (digested as they pass, from what was kept)', () => {
    const many = ['MSET', ...Array.from({ length: 1100 }, (_, i) => `k${i}`)];
    const large = ['SET', 'k', 'x'.repeat(40_000), 'y'.repeat(40_000), 'z'];
    for (const words of [many, large]) {
      const bytes = cmd(...words);
      const want = argumentsDigest(words.map((w, i) => Buffer.from(i === 0 ? w.toLowerCase() : w)));
      for (const step of [bytes.length, 7, 1000]) {
        const f = new RespRequestFramer(() => false, () => true);
        const reqs: RespRequest[] = [];
        for (let i = 0; i < bytes.length; i += step) reqs.push(...f.push(bytes.subarray(i, i + step)));
        expect(reqs.map((r) => [r.truncated, r.digest]), `${words[0]} by ${step}`).toEqual([[true, want]]);
      }
    }
  });
});

describe('RequestLog', () => {
  it('keeps what a write needs to run again within maxRerunBytes, and frees it with the write', () => {
    const log = new RequestLog({ retainMs: 10, maxRerunBytes: 10 });
    const argv = (n: number) => ({ db: 0, argv: [Buffer.alloc(n)] });
    const a = log.record({ connection: 'c', command: 'set', key: 'k', sentMs: 0, sentExact: true, rerun: argv(8) });
    const b = log.record({ connection: 'c', command: 'set', key: 'k', sentMs: 1, sentExact: true, rerun: argv(8) });
    expect([a.rerun !== undefined, b.rerun !== undefined]).toEqual([true, false]);
    a.answeredMs = 2;
    const c = log.record({ connection: 'c', command: 'set', key: 'k', sentMs: 100, sentExact: true, rerun: argv(8) });
    expect(c.rerun).toBeDefined(); // a's bytes went with it
  });
  it('forgets answered writes older than retainMs, keeps unanswered ones, and moves `since` past what it dropped', () => {
    const log = new RequestLog({ retainMs: 100, maxEntries: 3 });
    const a = log.record({ connection: 'c', command: 'incr', key: 'k', sentMs: 0, sentExact: true });
    a.answeredMs = 1;
    log.record({ connection: 'c', command: 'incr', key: 'k', sentMs: 50, sentExact: true });
    log.record({ connection: 'c', command: 'incr', key: 'k', sentMs: 200, sentExact: true });
    expect(log.snapshot().writes.map((w) => w.sentMs)).toEqual([50, 200]);
    // Its reply's time: a probe sent between its request (0) and its reply (1) is straddled by it.
    expect(log.snapshot().since).toBe(1);
    for (let i = 0; i < 3; i++) log.record({ connection: 'c', command: 'incr', key: 'k', sentMs: 300 + i, sentExact: true });
    expect(log.snapshot().writes.map((w) => w.sentMs)).toEqual([300, 301, 302]);
    expect(log.snapshot().since).toBe(200);
  });
  it('counts the writes it dropped that may be acknowledged, per 100 ms of their replies, failed ones not, and folds what is older than 10 minutes', () => {
    const log = new RequestLog({ retainMs: 100 });
    const answered = (sentMs: number, answeredMs: number, failed = false) => {
      const w = log.record({ connection: 'c', command: 'incr', key: 'k', sentMs, sentExact: true });
      w.answeredMs = answeredMs;
      w.failed = failed;
    };
    answered(0, 5);
    answered(10, 150);
    answered(20, 160, true); // an error reply: not acknowledged
    answered(30, 250);
    const open = log.record({ connection: 'c', command: 'incr', key: 'k', sentMs: 1000, sentExact: true }); // drops the four
    const snap = log.snapshot();
    open.answeredMs = 1001;
    expect(snap.since).toBe(250);
    expect([snap.droppedAcknowledgedSince(-Infinity), snap.droppedAcknowledgedSince(0), snap.droppedAcknowledgedSince(120), snap.droppedAcknowledgedSince(200), snap.droppedAcknowledgedSince(300)]).toEqual([3, 3, 2, 1, 0]);
    // A snapshot does not change with later drops.
    answered(1001, 1002);
    answered(11 * 60_000, 11 * 60_000 + 1);
    log.record({ connection: 'c', command: 'incr', key: 'k', sentMs: 12 * 60_000, sentExact: true });
    expect(snap.droppedAcknowledgedSince(-Infinity)).toBe(3);
    // A drop 11 minutes on folds the buckets older than 10 minutes before it: still counted, from before it.
    const later = log.snapshot();
    expect([later.droppedAcknowledgedSince(-Infinity), later.droppedAcknowledgedSince(200), later.droppedAcknowledgedSince(11 * 60_000), later.droppedAcknowledgedSince(11 * 60_000 + 100)]).toEqual([6, 6, 1, 0]);
  });
  it('a probe a dropped write straddled is not used: the key is judged from a later one, or not at all', async () => {
    // Sent at 10, answered at 150 (a slow reply), dropped by age at 300: it straddles a probe at [100, 101].
    const log = new RequestLog({ retainMs: 100 });
    const slow = log.record({ connection: 'c', command: 'incr', key: 'k', sentMs: 10, sentExact: true });
    slow.answeredMs = 150;
    const next = log.record({ connection: 'c', command: 'incr', key: 'k', sentMs: 300, sentExact: true });
    expect(log.snapshot().writes).toEqual([next]);
    const early = { offset: 5, sentMs: 100, receivedMs: 101 };
    const late = { offset: 9, sentMs: 200, receivedMs: 201 };
    expect((await planMatch(log.snapshot(), [early], ['c'])).probes.get('k')).toMatch(/no probe of the stream recent enough/);
    expect((await planMatch(log.snapshot(), [early, late], ['c'])).probes.get('k')).toEqual(late);
  });
});

/** A log of writes built by hand: [connection, key, sentMs, answeredMs | null]. */
function logOf(rows: Array<[string, string | null, number, number | null]>): { since: number; writes: LoggedWrite[] } {
  return { since: 0, writes: rows.map(([connection, key, sentMs, answeredMs]) => ({ connection, command: 'incr', key, sentMs, sentExact: true, answeredMs, failed: false })) };
}
const probe = (offset: number, sentMs: number, receivedMs = sentMs + 0.3): StreamProbe => ({ offset, sentMs, receivedMs });
const streamOf = (...rows: Array<[number, string]>): StreamWrite[] => rows.map(([offset, key]) => ({ offset, key }));

async function judge(log: ReturnType<typeof logOf>, probes: StreamProbe[], stream: StreamWrite[], connections: string[]) {
  const plan = await planMatch(log, probes, connections);
  return { plan, verdicts: await decideReplays(log, plan, stream, connections) };
}

describe('replay matching', () => {
  const K = 'k1';
  it('replays an unanswered write the stream does not hold after the probe (the primary never ran it)', async () => {
    // c answered twice after the probe at 100 (offset 500), then sent a third never answered.
    const log = logOf([['c', K, 90, 95], ['c', K, 110, 111], ['c', K, 112, 113], ['c', K, 114, null]]);
    const { plan, verdicts } = await judge(log, [probe(400, 50), probe(500, 100)], streamOf([450, K], [510, K], [520, K]), ['c']);
    expect(plan.from).toBe(501);
    expect(verdicts.get('c')).toEqual({ verdict: 'replay', ranUnanswered: 0, ranWrites: [], lostAcknowledged: 0, lostWrites: [] });
  });
  it('resets a connection whose unanswered write is in the stream (ran; its reply was lost)', async () => {
    const log = logOf([['c', K, 110, 111], ['c', K, 114, null]]);
    const { verdicts } = await judge(log, [probe(500, 100)], streamOf([510, K], [530, K]), ['c']);
    expect(verdicts.get('c')).toMatchObject({ verdict: 'reset', ranUnanswered: 1, lostAcknowledged: 0, ranWrites: [log.writes[1]] });
    expect(verdicts.get('c')!.reason).toMatch(/ran 1 of its unanswered writes/);
  });
  it('names the unanswered writes that ran, in the order the connection sent them: each key\'s first ones', async () => {
    // c pipelined k1, k2, k1, k2 unanswered (k1's first two in one segment: the same time); the stream holds k1 twice and k2 once after the probe.
    const log = logOf([['c', K, 110, 111], ['c', K, 114, null], ['c', 'k2', 114, null], ['c', K, 114.5, null], ['c', 'k2', 115, null]]);
    const { verdicts } = await judge(log, [probe(500, 100)], streamOf([510, K], [520, K], [530, 'k2'], [540, K]), ['c']);
    expect(verdicts.get('c')).toMatchObject({ verdict: 'reset', ranUnanswered: 3, ranWrites: [log.writes[1], log.writes[2], log.writes[3]] });
  });
  it('counts acknowledged writes the replica never got (the last ones: the stream is a prefix), and then replays (the unanswered one ran after them)', async () => {
    const log = logOf([['c', K, 110, 111], ['c', K, 112, 113], ['c', K, 114, null]]);
    const { verdicts } = await judge(log, [probe(500, 100)], streamOf([510, K]), ['c']);
    expect(verdicts.get('c')).toEqual({ verdict: 'replay', ranUnanswered: 0, ranWrites: [], lostAcknowledged: 1, lostWrites: [log.writes[1]] });
  });
  it('a probe the replica never got: nothing after it ran there', async () => {
    const log = logOf([['c', K, 110, 111], ['c', K, 114, null]]);
    const { verdicts } = await judge(log, [probe(900, 100)], streamOf([510, K]), ['c']);
    expect(verdicts.get('c')).toEqual({ verdict: 'replay', ranUnanswered: 0, ranWrites: [], lostAcknowledged: 1, lostWrites: [log.writes[0]] });
  });
  it('counts the lost writes of a connection with nothing unanswered (it may have ended), several keys in the order they were sent', async () => {
    const log = logOf([['c', K, 110, 111], ['c', 'k2', 111.5, 112], ['c', K, 113, 114], ['c', 'k2', 115, 116]]);
    const { verdicts } = await judge(log, [probe(500, 100)], streamOf([510, K], [520, 'k2']), ['c']);
    expect(verdicts.get('c')).toEqual({ verdict: 'replay', ranUnanswered: 0, ranWrites: [], lostAcknowledged: 2, lostWrites: [log.writes[2], log.writes[3]] });
  });
  it('judges from an earlier probe when the latest is straddled by a write of the key', async () => {
    // The write sent at 99.5 and answered at 100.5 straddles the probe at 100; the one at 80 is clean.
    const log = logOf([['c', K, 70, 71], ['c', K, 99.5, 100.5], ['c', K, 101, null]]);
    const { plan, verdicts } = await judge(log, [probe(300, 80), probe(500, 100)], streamOf([250, K], [505, K]), ['c']);
    expect(plan.probes.get(K)).toEqual(probe(300, 80));
    // After 300: the straddler (answered) is in the stream; the unanswered one is not.
    expect(verdicts.get('c')!.verdict).toBe('replay');
  });
  it('resets when another connection sent the same write since the probe, when no probe is clean, and when a write has no key', async () => {
    const shared = logOf([['c', K, 110, 111], ['d', K, 112, 113], ['c', K, 114, null]]);
    expect((await judge(shared, [probe(500, 100)], streamOf([510, K], [520, K]), ['c'])).verdicts.get('c')!.reason).toMatch(/1 other connection/);
    const straddled = logOf([['c', K, 99, null]]);
    expect((await judge(straddled, [probe(500, 100)], [], ['c'])).verdicts.get('c')!.reason).toMatch(/overlaps/);
    expect((await judge(logOf([['c', K, 110, null]]), [], [], ['c'])).verdicts.get('c')!.reason).toMatch(/no probe/);
    expect((await judge(logOf([['c', null, 110, null]]), [probe(500, 100)], [], ['c'])).verdicts.get('c')!.reason).toMatch(/cannot be looked up/);
  });
  it('a late first byte straddles every probe (its time may be earlier than the capture says)', async () => {
    const log = { since: 0, writes: [{ connection: 'c', command: 'incr', key: K, sentMs: 200, sentExact: false, answeredMs: null, failed: false }] };
    expect((await judge(log, [probe(500, 100)], [], ['c'])).verdicts.get('c')!.verdict).toBe('reset');
  });
  it('ignores failed writes in the count, and refuses a stream that holds more than the capture saw', async () => {
    const log = logOf([['c', K, 110, 111], ['c', K, 114, null]]);
    log.writes[0]!.failed = true;
    expect((await judge(log, [probe(500, 100)], streamOf([520, K]), ['c'])).verdicts.get('c')).toMatchObject({ verdict: 'reset', ranUnanswered: 1 });
    expect((await judge(log, [probe(500, 100)], streamOf([510, K], [520, K]), ['c'])).verdicts.get('c')!.reason).toMatch(/more than the 1/);
  });
  it('a connection with nothing unanswered is replayed as it is; probes older than the log are not used', async () => {
    const log = logOf([['c', K, 110, 111]]);
    expect((await judge(log, [], [], ['c'])).verdicts.get('c')!.verdict).toBe('replay');
    const young = { ...logOf([['c', K, 110, null]]), since: 105 };
    expect((await judge(young, [probe(500, 100)], [], ['c'])).verdicts.get('c')!.reason).toMatch(/no probe/);
  });
  it('picks the same probe as checking every write against every probe, on random logs (seeded)', async () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let round = 0; round < 200; round++) {
      const rows: Array<[string, string | null, number, number | null]> = [];
      for (let i = 0, t = 0; i < 40; i++) {
        t += rand() * 3;
        const answered = rand() < 0.8 ? t + rand() * 2 : null;
        rows.push([`c${Math.floor(rand() * 4)}`, rand() < 0.1 ? null : `k${Math.floor(rand() * 5)}`, t, answered]);
      }
      const log = logOf(rows);
      log.writes.forEach((w) => (w.sentExact = rand() < 0.9));
      // Probes one at a time: each sent after the previous one's reply.
      const probes: StreamProbe[] = [];
      for (let k = 0, t = rand() * 5; k < 12; k++, t += 1 + rand() * 8) probes.push(probe(100 * (k + 1), t, t + rand() * 0.8));
      const connections = ['c0', 'c1', 'c2', 'c3'];
      const plan = await planMatch(log, [...probes].reverse(), connections);
      for (const [key, chosen] of plan.probes) {
        const ofKey = log.writes.filter((w) => w.key === key);
        const clean = probes.filter((p) => p.sentMs - 0.5 > log.since && !ofKey.some((w) => straddlesByHand(w, p))).at(-1);
        expect(typeof chosen === 'string' ? undefined : chosen, `round ${round} key ${key}`).toEqual(clean);
      }
    }
  });
  it('decides 200,000 logged writes in slices: the event loop turns while it works', async () => {
    const writes: LoggedWrite[] = [];
    for (let i = 0; i < 200_000; i++) writes.push({ connection: `c${i % 1000}`, command: 'incr', key: i % 3 === 0 ? 'hot' : `k${i % 1000}`, sentMs: i * 0.01, sentExact: true, answeredMs: i % 997 === 0 ? null : i * 0.01 + 0.005, failed: false });
    const log = { since: -1, writes };
    const probes = Array.from({ length: 60 }, (_, k) => probe(1000 + k * 100, k * 33 + 0.5, k * 33 + 0.51));
    const connections = Array.from({ length: 1000 }, (_, c) => `c${c}`);
    let turns = 0;
    const spin = setInterval(() => turns++, 0);
    try {
      const plan = await planMatch(log, probes, connections);
      const turnsInPlan = turns;
      const verdicts = await decideReplays(log, plan, [], connections);
      expect(verdicts.size).toBe(1000);
      expect(turnsInPlan).toBeGreaterThan(0);
      expect(turns).toBeGreaterThan(turnsInPlan);
    } finally {
      clearInterval(spin);
    }
  });
});

/** The matcher's straddle rule, written out: neither answered before the probe went out nor sent after its reply came (0.5 ms margin). */
function straddlesByHand(w: LoggedWrite, p: StreamProbe): boolean {
  const answeredBefore = w.answeredMs !== null && w.answeredMs + 0.5 < p.sentMs;
  const sentAfter = w.sentExact && w.sentMs - 0.5 > p.receivedMs;
  return !answeredBefore && !sentAfter;
}
