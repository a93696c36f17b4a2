// The Redis replay check end to end against real redis-server processes on loopback (issue 12,
// seed 003 [0055], [0059]): real probes of a primary's stream, a replica promoted while the
// primary goes on acknowledging writes it will never get, and a request log written as a capture
// would (each write's first byte before it is sent, its reply after it is read: the wall clock
// the probes use). The check reads the old stream back from the promoted replica, finds the
// acknowledged writes it lacks and runs them again there (each key ends at the value its client
// last saw), tells an unanswered write that ran (reset) from one that did not (replay), and
// counts what it found.
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { redisReplayCheck } from '../../src/agent/redis-replay-check.js';
import { ReplicationStreamProbe } from '../../src/agent/redis-stream-probe.js';
import { native } from '../../src/native.js';
import type { RestorePlan } from '../../src/net/shadow/continue-connections.js';
import { RequestLog, type RequestLogOptions } from '../../src/net/shadow/request-log.js';
import { encodeCommand } from '../../src/net/shadow/resp-continue.js';
import { argumentsDigest } from '../../src/net/shadow/resp-request.js';
import { respWriteKey } from '../../src/net/shadow/resp-write-kinds.js';
import { startLocalRedis, type LocalRedis } from '../redis-local.js';

const servers: LocalRedis[] = [];
const closers: Array<() => void> = [];
afterAll(async () => {
  for (const c of closers) c();
  for (const s of servers) await s.stop();
});

/** One client connection that INCRs its own key, logging each write as a capture would. */
async function counter(redis: LocalRedis, log: RequestLog, key: string, port: number) {
  const socket = net.connect(redis.port, redis.host);
  closers.push(() => socket.destroy());
  await new Promise((r) => socket.once('connect', r));
  const connection = `127.0.0.1|${port}`;
  const argv = ['incr', key].map((w) => Buffer.from(w));
  const logKey = respWriteKey('0', argumentsDigest(argv))!;
  let last = 0;
  /** Sends one INCR; with answer false, the reply is read but the log never sees it (it was lost on its way). */
  const incr = (answer = true) =>
    new Promise<number>((resolve) => {
      const w = log.record({ connection, command: 'incr', key: logKey, sentMs: native.realtimeMs(), sentExact: true, rerun: { db: 0, argv } });
      socket.once('data', (d: Buffer) => {
        const value = Number(d.toString('latin1').slice(1, -2));
        if (answer) {
          w.answeredMs = native.realtimeMs();
          last = value;
        }
        resolve(value);
      });
      socket.write(encodeCommand(argv));
    });
  return { incr, connection, last: () => last };
}

/** Waits (2 s at most) until the replica has what the primary had when called. */
async function caughtUp(primary: LocalRedis, replica: LocalRedis): Promise<void> {
  const offset = Number((await primary.info('replication')).get('master_repl_offset'));
  const has = async () => Number((await replica.info('replication')).get('master_repl_offset')) >= offset;
  for (const end = Date.now() + 2000; Date.now() < end && !(await has()); ) await new Promise((r) => setTimeout(r, 5));
  expect(await has(), `the replica reached offset ${offset}`).toBe(true);
}

/** A primary, its replica (linked), a probe of the primary's stream every 10 ms, an empty log. */
async function pair(replicaArgs: string[] = [], keep?: number, logOptions?: RequestLogOptions) {
  const primary = await startLocalRedis();
  servers.push(primary);
  const replica = await startLocalRedis({ replicaOf: { host: primary.host, port: primary.port }, args: replicaArgs });
  servers.push(replica);
  await replica.waitLinkUp();
  const probe = new ReplicationStreamProbe({ host: primary.host, port: primary.port }, { intervalMs: 10, ...(keep ? { keep } : {}) });
  closers.push(() => probe.close());
  return { primary, replica, probe, log: new RequestLog(logOptions) };
}

/**
 * A pair whose primary ran one INCR more than the log saw answered (its reply never reached the
 * capture), all of it replicated; the probe stopped, the replica promoted.
 */
async function ranAndReplicated(key: string, port: number) {
  const { primary, replica, probe, log } = await pair();
  const c = await counter(primary, log, key, port);
  for (let i = 0; i < 100; i++) await c.incr();
  await new Promise((r) => setTimeout(r, 60));
  await c.incr(false);
  probe.close();
  await caughtUp(primary, replica);
  await replica.command(['REPLICAOF', 'NO', 'ONE']);
  return { replica, probe, log, c };
}

const plan = (connection: string): RestorePlan => {
  const [address, port] = connection.split('|');
  return { client: { address: address!, port: Number(port) }, replay: Buffer.from('x') } as unknown as RestorePlan;
};

describe('redisReplayCheck against real Redis', () => {
  it('runs again every acknowledged write the promoted replica lacks, resets a connection whose unanswered write ran, replays one whose did not', async () => {
    const { primary, replica, probe, log } = await pair();
    const a = await counter(primary, log, 'ka', 1);
    const b = await counter(primary, log, 'kb', 2);
    // Both count while probes run (bounded: 200 INCRs each), then a pause long enough for a clean probe.
    for (let i = 0; i < 200; i++) await Promise.all([a.incr(), b.incr()]);
    await new Promise((r) => setTimeout(r, 60));
    // The replica stops following (promoted now, as a takeover would later): every write after this is lost to it.
    await caughtUp(primary, replica);
    await replica.command(['REPLICAOF', 'NO', 'ONE']);
    for (let i = 0; i < 25; i++) await a.incr(); // acknowledged, lost
    await b.incr(false); // b's last write ran on the primary; its reply never reached the capture
    const lostA = 25;
    const check = redisReplayCheck({ log, probes: () => probe.probes(), upstream: { host: replica.host, port: replica.port } }, Promise.resolve());
    // a has nothing unanswered; b's unanswered INCR ran on the primary but the replica lacks it: it did not run there.
    const result = await check([plan(a.connection), plan(b.connection)]);
    expect(result.counts).toMatchObject({ judged: 2, lostAcknowledged: lostA, reapplied: lostA, reapplyFailed: 0, notKept: 0, ranUnanswered: 0, unloggedAcknowledged: 0 });
    expect(result.warnings).toBeUndefined();
    expect(result.refused.size).toBe(0); // b's replay runs: the replica never ran it
    expect(Number(await replica.command(['GET', 'ka']))).toBe(a.last());
    expect(Number(await replica.command(['GET', 'kb']))).toBe(b.last());
    expect(probe.probes().length).toBeGreaterThan(5);
  });

  it('bounds the acknowledged writes a replica cut off for longer than the log keeps lacks (the log dropped them), and warns', async () => {
    const { primary, replica, probe, log } = await pair([], undefined, { retainMs: 100 });
    const f = await counter(primary, log, 'kf', 9);
    for (let i = 0; i < 50; i++) await f.incr();
    // Longer than a 100 ms bucket of dropped writes and the probes' interval, with margin for a
    // loaded machine: none of these falls in the bound below.
    await new Promise((r) => setTimeout(r, 400));
    await caughtUp(primary, replica);
    await replica.command(['REPLICAOF', 'NO', 'ONE']);
    const cutMs = native.realtimeMs();
    // 400 ms of acknowledged writes the replica never gets; the log keeps the last ~100 ms of them.
    let after = 0;
    for (const end = Date.now() + 400; Date.now() < end; after++) await f.incr();
    const kept = log.snapshot().writes.filter((w) => w.answeredMs! > cutMs).length;
    expect(after - kept, 'acknowledged writes the log dropped').toBeGreaterThan(0);
    expect(Number(await replica.command(['GET', 'kf']))).toBe(f.last() - after);
    const result = await redisReplayCheck({ log, probes: () => probe.probes(), upstream: { host: replica.host, port: replica.port } }, Promise.resolve())([plan(f.connection)]);
    // Its latest probe was sent within a probe interval of the cut: exactly the dropped ones.
    expect(result.counts!.unloggedAcknowledged).toBe(after - kept);
    expect(result.warnings).toEqual([expect.stringMatching(new RegExp(`ends at offset \\d+, before the writes acknowledged after its latest probe .*dropped up to ${after - kept} of them`))]);
  });

  it('resets a connection whose unanswered write reached the replica (it ran; its reply is lost)', async () => {
    const { replica, probe, log, c } = await ranAndReplicated('kc', 3);
    const result = await redisReplayCheck({ log, probes: () => probe.probes(), upstream: { host: replica.host, port: replica.port } }, Promise.resolve())([plan(c.connection)]);
    expect(result.counts).toMatchObject({ lostAcknowledged: 0, ranUnanswered: 1, answered: 0 });
    // Its replay ('x' here) is not the INCR that ran: not answered, and the reason says why.
    expect(result.refused.get(c.connection)).toMatch(/ran 1 of its unanswered writes .*\(its replies cannot be rebuilt: its unanswered requests are not whole RESP messages/);
    expect(Number(await replica.command(['GET', 'kc']))).toBe(c.last() + 1);
  });

  it('answers a connection whose only unanswered request is an INCR that ran: the reply is the promoted replica\'s value', async () => {
    const { replica, probe, log, c } = await ranAndReplicated('ke', 5);
    const restore = { ...plan(c.connection), replay: encodeCommand(['INCR', 'ke']) } as RestorePlan;
    const result = await redisReplayCheck({ log, probes: () => probe.probes(), upstream: { host: replica.host, port: replica.port } }, Promise.resolve())([restore]);
    expect(result.counts).toMatchObject({ ranUnanswered: 1, answered: 1, ranAnswered: 1 });
    expect(result.refused.size).toBe(0);
    expect(Buffer.from(result.answered!.get(c.connection)!).toString()).toBe(`:${c.last() + 1}\r\n`);
    expect(Number(await replica.command(['GET', 'ke']))).toBe(c.last() + 1);
  });

  it('a streamed copy (capturedOnly: its times are the primary\'s clock) judges only from probes the primary\'s capture timed', async () => {
    const { replica, probe, log, c } = await ranAndReplicated('kd', 4);
    const upstream = { host: replica.host, port: replica.port };
    // No probe timed by the capture: none is judged by this host's clock, so nothing places the write.
    const blind = await redisReplayCheck({ log, probes: () => probe.probes(), capturedOnly: true, upstream }, Promise.resolve())([plan(c.connection)]);
    expect(blind.counts).toMatchObject({ probes: 0, capturedProbes: 0, ranUnanswered: 0 });
    expect(blind.refused.get(c.connection)).toMatch(/cannot be placed in the replication stream: no probe of the stream recent enough/);
    // The capture timed them (here: the probe's own times, on its own connection): the same decision as from a mirror.
    const byNonce = new Map(probe.probes().map((r) => [r.nonce, { connection: `${r.local.address}|${r.local.port}`, sentMs: r.sentMs, sentExact: true, answeredMs: r.receivedMs }]));
    const timed = await redisReplayCheck({ log, probes: () => probe.probes(), captured: (n) => byNonce.get(n), capturedOnly: true, upstream }, Promise.resolve())([plan(c.connection)]);
    expect(timed.counts!.capturedProbes).toBe(timed.counts!.probes);
    expect(timed.counts).toMatchObject({ lostAcknowledged: 0, ranUnanswered: 1 });
    expect(timed.refused.get(c.connection)).toMatch(/ran 1 of its unanswered writes/);
  });

  /**
   * A 16 KiB backlog (the smallest Redis allows) that wrapped after h's key's last clean probe,
   * the replica promoted. h: a connection the shadow gave up on (a capture hole): its last write
   * stays unanswered in the log, so no probe after it is clean for its key. a: writes, pauses for
   * a clean probe, and goes on.
   */
  async function wrappedBacklog(ports: [number, number]) {
    const { primary, replica, probe, log } = await pair(['--repl-backlog-size', '16kb'], 10_000);
    const h = await counter(primary, log, 'kh', ports[0]);
    await new Promise((r) => setTimeout(r, 30));
    for (let i = 0; i < 20; i++) await h.incr();
    await new Promise((r) => setTimeout(r, 30));
    await h.incr(false);
    const a = await counter(primary, log, 'ka', ports[1]);
    for (let i = 0; i < 200; i++) await a.incr();
    // Another client's large values (no connection the log knows): 256 KiB of stream, the backlog wraps.
    for (let i = 0; i < 4; i++) await primary.command(['SET', 'filler', String(i).repeat(64 * 1024)]);
    for (let i = 0; i < 200; i++) await a.incr();
    await new Promise((r) => setTimeout(r, 60));
    await caughtUp(primary, replica);
    await replica.command(['REPLICAOF', 'NO', 'ONE']);
    const check = (plans: RestorePlan[]) => redisReplayCheck({ log, probes: () => probe.probes(), upstream: { host: replica.host, port: replica.port } }, Promise.resolve())(plans);
    return { replica, probe, log, h, a, check };
  }

  it('decides the keys whose probe the promoted replica\'s backlog still holds, when another key\'s probe is older than it (one old unanswered write)', async () => {
    const { replica, probe, log, h, a, check } = await wrappedBacklog([4, 5]);
    for (let i = 0; i < 10; i++) await a.incr(); // acknowledged, lost
    await a.incr(false); // unanswered: ran on the primary, not on the replica
    // The probe h's key is judged from is older than the backlog's first byte.
    const first = Number((await replica.info('replication')).get('repl_backlog_first_byte_offset'));
    const beforeH = probe.probes().filter((p) => p.receivedMs < log.snapshot().writes.find((w) => w.connection === h.connection && w.answeredMs === null)!.sentMs);
    expect(beforeH.at(-1)!.offset + 1).toBeLessThan(first);
    // h was reset for its hole before the check: only a is restored.
    const result = await check([plan(a.connection)]);
    expect(result.counts).toMatchObject({ judged: 1, lostAcknowledged: 10, reapplied: 10, reapplyFailed: 0, ranUnanswered: 0 });
    expect(result.refused.size).toBe(0); // a's unanswered INCR never reached the replica: replayed
    expect(Number(await replica.command(['GET', 'ka']))).toBe(a.last());
  });

  it('resets a restored connection whose key\'s probe the backlog no longer holds, naming the backlog, and decides the others', async () => {
    const { h, a, check } = await wrappedBacklog([6, 7]);
    await a.incr(false);
    const result = await check([plan(a.connection), plan(h.connection)]);
    expect(result.counts).toMatchObject({ judged: 2, lostAcknowledged: 0, ranUnanswered: 0 });
    // a's unanswered INCR never reached the replica: replayed; h's cannot be placed: reset, saying why.
    expect([...result.refused.keys()]).toEqual([h.connection]);
    expect(result.refused.get(h.connection)).toMatch(/cannot be placed in the replication stream: .*older than the promoted server's backlog/);
  });
});
