// ReplicationStreamProbe and readOldHistory against real redis-server processes on
// loopback (Debian package redis-server, 7.0): a primary and its replica; the probe marks the
// primary's stream while a writer (SELECT 2, INCR on its own keys) writes; the replica is
// promoted (REPLICAOF NO ONE) and the old history read back from it with PSYNC, parsed with
// parseReplicationStream, and compared with what the writer knows it sent and in which order.
import { once } from 'node:events';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OldHistoryError, readOldHistory } from '../../src/agent/redis-backlog.js';
import { PROBE_PUBLISH_BYTES, ReplicationStreamProbe, type StreamProbe } from '../../src/agent/redis-stream-probe.js';
import { RespFramer } from '../../src/net/resp-framer.js';
import { findProbe, parseReplicationStream, type ReplicatedCommand } from '../../src/net/shadow/replication-stream.js';
import { encodeCommand } from '../../src/net/shadow/resp-continue.js';
import { freePort } from '../free-port.js';
import { native } from '../../src/native.js';
import { startLocalRedis, type LocalRedis } from '../redis-local.js';

const servers: LocalRedis[] = [];
const probes: ReplicationStreamProbe[] = [];

afterAll(async () => {
  for (const p of probes) p.close();
  for (const s of servers) await s.stop();
});

async function start(replicaOf?: LocalRedis, args?: string[]): Promise<LocalRedis> {
  const s = await startLocalRedis({ ...(replicaOf ? { replicaOf: { host: replicaOf.host, port: replicaOf.port } } : {}), ...(args ? { args } : {}) });
  servers.push(s);
  if (replicaOf) await s.waitLinkUp();
  return s;
}

async function until<T>(what: string, f: () => T | Promise<T>, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`${what}: not in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const num = async (s: LocalRedis, section: string, field: string) => Number((await s.info(section)).get(field));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const words = (c: ReplicatedCommand) => c.argv.map((a) => a.toString('latin1'));

/** One command the writer sent: its key, Date.now() before the write and after the reply. */
interface Sent {
  key: string;
  sentMs: number;
  repliedMs: number;
}

/**
 * A client that sends SELECT 2, then INCR writer:<n> one at a time (each reply awaited, so the
 * order is known), until `enough()` says so, maxCount commands or maxMs, whichever comes first.
 */
async function runWriter(port: number, enough: () => boolean, maxCount: number, maxMs: number): Promise<Sent[]> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const framer = new RespFramer();
  const replies: string[] = [];
  let wake: (() => void) | null = null;
  let buffered = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    buffered = Buffer.concat([buffered, d]);
    framer.push(d);
    // One reply outstanding at a time: whatever arrived is that reply once the framer is between.
    if (framer.between) {
      replies.push(buffered.toString('latin1'));
      buffered = Buffer.alloc(0);
      wake?.();
    }
  });
  const ask = async (args: string[]) => {
    const got = new Promise<void>((r) => (wake = r));
    socket.write(encodeCommand(args));
    await got;
    return replies.at(-1)!;
  };
  const sent: Sent[] = [];
  try {
    expect(await ask(['SELECT', '2'])).toBe('+OK\r\n');
    const t0 = Date.now();
    for (let n = 0; n < maxCount && Date.now() - t0 < maxMs && !enough(); n++) {
      const key = `writer:${n}`;
      // The probes' clock (the wall clock to a µs), read before the write and after the reply.
      const sentMs = native.realtimeMs();
      expect(await ask(['INCR', key])).toBe(':1\r\n');
      sent.push({ key, sentMs, repliedMs: native.realtimeMs() });
    }
  } finally {
    socket.destroy();
  }
  return sent;
}

describe('stream probe and the old history, primary + replica', () => {
  let primary: LocalRedis;
  let replica: LocalRedis;
  let recorded: StreamProbe[] = [];
  let sent: Sent[] = [];
  let replid = '';
  let end = 0;
  let first = 0;
  const stats = { fullBefore: 0 };

  beforeAll(async () => {
    primary = await start();
    replica = await start(primary);
    // 1.3 MB of SETs in db 5 first, so the replica's 1 MiB backlog no longer starts at offset 1
    // and a read of the whole backlog is ~1 MiB.
    const big = 'v'.repeat(1000);
    const conn = net.connect(primary.port, '127.0.0.1');
    await once(conn, 'connect');
    const framer = new RespFramer();
    for (let batch = 0; batch < 13; batch++) {
      let n = 0;
      const done = new Promise<void>((r) => conn.on('data', function onData(d: Buffer) {
        n += framer.push(d).length;
        if (n === 101) {
          conn.off('data', onData);
          r();
        }
      }));
      conn.write(Buffer.concat([encodeCommand(['SELECT', '5']), ...Array.from({ length: 100 }, (_, i) => encodeCommand(['SET', `bulk:${batch}:${i}`, big]))]));
      await done;
    }
    conn.destroy();

    const probe = new ReplicationStreamProbe({ host: '127.0.0.1', port: primary.port });
    probes.push(probe);
    await until('a first probe', () => probe.probes().length > 0);
    // The writer runs until 12 more probes were recorded (bounded: 30,000 commands, 5 s). 6,000
    // commands were once the bound: a fast writer sent them in less than 12 probe intervals.
    sent = await runWriter(primary.port, () => probe.probes().length >= 13, 30_000, 5000);
    // One more probe after the writer stopped, so the last writes are before a probe too.
    const n = probe.probes().length;
    await until('a probe after the writer', () => probe.probes().length > n);
    probe.close();
    recorded = probe.probes();
    expect(probe.stats()).toMatchObject({ errors: 0, reconnects: 0, connected: false });

    const primaryOffset = await num(primary, 'replication', 'master_repl_offset');
    await until('the replica caught up', async () => (await num(replica, 'replication', 'slave_repl_offset')) >= primaryOffset);
    replid = (await primary.info('replication')).get('master_replid')!;
    expect(await replica.command(['REPLICAOF', 'NO', 'ONE'])).toBe('OK');
    const info = await replica.info('replication');
    expect(info.get('master_replid2')).toBe(replid);
    end = Number(info.get('second_repl_offset')) - 1;
    first = Number(info.get('repl_backlog_first_byte_offset'));
    expect(end).toBe(primaryOffset);
    stats.fullBefore = await num(replica, 'stats', 'sync_full');
  });

  it('records probes while the writer writes: one history, offsets growing, times around each', () => {
    expect(recorded.length).toBeGreaterThanOrEqual(14);
    expect(sent.length).toBeGreaterThan(100);
    expect(new Set(recorded.map((p) => p.nonce)).size).toBe(recorded.length);
    for (const [i, p] of recorded.entries()) {
      expect(p.nonce).toMatch(/^[0-9a-f]{32}$/);
      expect(p.replid).toBe(replid);
      expect(p.db).toBe(0);
      expect(p.receivedMs).toBeGreaterThan(p.sentMs);
      expect(p.rttMs).toBeLessThanOrEqual(p.receivedMs - p.sentMs + 1);
      if (i > 0) expect(p.offset).toBeGreaterThan(recorded[i - 1]!.offset);
      expect(p.offset).toBeLessThanOrEqual(end);
    }
    const rtts = recorded.map((p) => p.rttMs);
    console.log(`probe round trip (PUBLISH + INFO replication, loopback, writer running): p50 ${median(rtts).toFixed(3)} ms, max ${Math.max(...rtts).toFixed(3)} ms over ${rtts.length} probes; writer ${sent.length} INCRs`);
  });

  /** The whole history from the first probe's PUBLISH on (its first byte: offset - 77 + 1; the stream is in db 0 there). */
  async function fromFirstProbe(): Promise<ReplicatedCommand[]> {
    const at = recorded[0]!.offset - PROBE_PUBLISH_BYTES + 1;
    expect(at).toBeGreaterThanOrEqual(first);
    const h = await readOldHistory(replica, { replid, offset: at });
    expect(h).toMatchObject({ startOffset: at, end });
    expect(h.bytes.length).toBe(end - at + 1);
    return parseReplicationStream(h.bytes, at, 0);
  }

  it("verifies the claim: each probe's offset is the stream offset of its PUBLISH's last byte, in db 0", async () => {
    const all = await fromFirstProbe();
    expect(findProbe(all, recorded[0]!.nonce)).toBe(0);
    for (const p of recorded) {
      const i = findProbe(all, p.nonce);
      expect(i, p.nonce).toBeGreaterThanOrEqual(0);
      expect(all[i]!.end).toBe(p.offset);
      expect(all[i]!.db).toBe(0);
    }
    // Nothing else in the stream: the probes' PUBLISHes and every INCR of the writer, in its order, in db 2.
    const others = all.filter((c) => words(c)[0] !== 'PUBLISH');
    expect(all.length - others.length).toBe(recorded.length);
    expect(others.every((c) => c.db === 2 && c.argv.length === 2 && words(c)[0] === 'INCR')).toBe(true);
    expect(others.map((c) => words(c)[1])).toEqual(sent.map((s) => s.key));
  });

  it("from a probe's offset + 1: exactly the writer's INCRs after that PUBLISH, in order; the times agree", async () => {
    const all = await fromFirstProbe();
    // The last probe came after the writer stopped (at most the INCR in flight then follows it).
    for (const p of [recorded[3]!, recorded[Math.floor(recorded.length / 2)]!, recorded.at(-3)!, recorded.at(-1)!]) {
      const h = await readOldHistory(replica, { replid, offset: p.offset + 1 });
      const cmds = parseReplicationStream(h.bytes, p.offset + 1, p.db);
      // The same commands as the whole history's tail after that PUBLISH.
      const tail = all.slice(findProbe(all, p.nonce) + 1);
      expect(cmds.map((c) => [c.offset, c.end, c.db, words(c)])).toEqual(tail.map((c) => [c.offset, c.end, c.db, words(c)]));
      const incrs = cmds.filter((c) => words(c)[0] === 'INCR').map((c) => words(c)[1]);
      if (p !== recorded.at(-1)) expect(incrs.length).toBeGreaterThan(0);
      else expect(incrs.length).toBeLessThanOrEqual(1);
      const k = sent.length - incrs.length;
      expect(incrs).toEqual(sent.slice(k).map((s) => s.key));
      // The writer's clock agrees: answered before the probe was sent -> before its PUBLISH;
      // sent after its reply came -> after.
      for (const [i, s] of sent.entries()) {
        if (s.repliedMs < p.sentMs) expect(i, s.key).toBeLessThan(k);
        if (s.sentMs > p.receivedMs) expect(i, s.key).toBeGreaterThanOrEqual(k);
      }
    }
  });

  it("from an earlier probe's offset + 1: contains the later probe's PUBLISH, ending at its offset", async () => {
    for (let i = 1; i < recorded.length; i += 4) {
      const from = recorded[i - 1]!.offset + 1;
      const cmds = parseReplicationStream((await readOldHistory(replica, { replid, offset: from })).bytes, from, 0);
      const j = findProbe(cmds, recorded[i]!.nonce);
      expect(j).toBeGreaterThanOrEqual(0);
      expect(cmds[j]!.end).toBe(recorded[i]!.offset);
      expect(findProbe(cmds, recorded[i - 1]!.nonce)).toBe(-1);
    }
  });

  it('at the end: empty without a PSYNC; outside the backlog or past the end, too large: rejected without a full resync', async () => {
    const partialBefore = await num(replica, 'stats', 'sync_partial_ok');
    expect(await readOldHistory(replica, { replid, offset: end + 1 })).toEqual({ bytes: Buffer.alloc(0), startOffset: end + 1, end });
    const reject = async (offset: number, failure: string, message: RegExp, maxBytes?: number) => {
      const err = await readOldHistory(replica, { replid, offset }, maxBytes === undefined ? {} : { maxBytes }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OldHistoryError);
      expect((err as OldHistoryError).failure).toBe(failure);
      expect((err as Error).message).toMatch(message);
    };
    expect(first).toBeGreaterThan(1);
    await reject(first - 1, 'outside-backlog', new RegExp(`no longer in the backlog .* starts at ${first}`));
    await reject(1, 'outside-backlog', /no longer in the backlog/);
    await reject(end + 2, 'after-end', new RegExp(`after the old history's end ${end}`));
    await reject(end - 99, 'too-large', /100 bytes, more than maxBytes 99/, 99);
    await reject(0, 'bad-argument', /not a stream offset/);
    // No PSYNC reached the server, none was a full resync, no replica is left connected.
    expect(await num(replica, 'stats', 'sync_partial_ok')).toBe(partialBefore);
    expect(await num(replica, 'stats', 'sync_full')).toBe(stats.fullBefore);
    expect(await num(replica, 'persistence', 'rdb_bgsave_in_progress')).toBe(0);
    await until('no replica left', async () => (await num(replica, 'replication', 'connected_slaves')) === 0);
  });

  it('another replid: rejected, naming the history the server holds', async () => {
    const own = (await replica.info('replication')).get('master_replid')!;
    for (const other of ['0123456789abcdef0123456789abcdef01234567', own]) {
      const err = await readOldHistory(replica, { replid: other, offset: end }).catch((e: unknown) => e);
      expect((err as OldHistoryError).failure).toBe('other-history');
      expect((err as Error).message).toContain(`its master_replid2 is ${replid}`);
    }
    // The old primary itself was never promoted from anything.
    expect(((await readOldHistory(primary, { replid, offset: end }).catch((e: unknown) => e)) as OldHistoryError).failure).toBe('other-history');
    expect(((await readOldHistory(replica, { replid: 'XYZ', offset: end }).catch((e: unknown) => e)) as OldHistoryError).failure).toBe('bad-argument');
    expect(await num(replica, 'stats', 'sync_full')).toBe(stats.fullBefore);
  });

  it('measures: the whole backlog (~1 MiB) and 100 KiB of history on loopback', async () => {
    const partialBefore = await num(replica, 'stats', 'sync_partial_ok');
    const time = async (from: number) => {
      const ms: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        const h = await readOldHistory(replica, { replid, offset: from });
        ms.push(performance.now() - t0);
        expect(h.bytes.length).toBe(end - from + 1);
      }
      return median(ms);
    };
    const whole = await time(first);
    const small = await time(end - 100 * 1024 + 1);
    console.log(`readOldHistory median of 5: ${end - first + 1} bytes (whole backlog) ${whole.toFixed(2)} ms; 102400 bytes ${small.toFixed(2)} ms`);
    expect(end - first + 1).toBeGreaterThanOrEqual(1 << 20);
    expect(whole).toBeLessThan(2000);
    expect(small).toBeLessThan(1000);
    expect(await num(replica, 'stats', 'sync_partial_ok')).toBe(partialBefore + 10);
    expect(await num(replica, 'stats', 'sync_full')).toBe(stats.fullBefore);
  });
});

describe('readOldHistory: an answer other than +CONTINUE', () => {
  // A full resync cannot be provoked on a real server without racing the check (the backlog moving
  // between the INFO and the PSYNC): a scripted server answers as Redis would then.
  it('closes at once on +FULLRESYNC and rejects, naming it', async () => {
    const port = await freePort();
    const seen: string[] = [];
    let closedAfterMs = -1;
    const server = net.createServer((s) => {
      let got = '';
      let answeredAt = 0;
      s.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        if (got.includes('INFO') && seen.length === 0) {
          seen.push('INFO');
          const text = 'role:master\r\nmaster_replid2:' + 'a'.repeat(40) + '\r\nsecond_repl_offset:5001\r\nrepl_backlog_active:1\r\nrepl_backlog_first_byte_offset:1000\r\n';
          s.write(`$${text.length}\r\n${text}\r\n`);
        } else if (got.includes('PSYNC') && seen.length === 1) {
          seen.push(got.slice(got.indexOf('*3')));
          answeredAt = performance.now();
          s.write('+FULLRESYNC ' + 'b'.repeat(40) + ' 5000\r\n$1000\r\n');
        }
      });
      s.on('close', () => (closedAfterMs = performance.now() - answeredAt));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
    try {
      const err = await readOldHistory({ host: '127.0.0.1', port }, { replid: 'a'.repeat(40), offset: 2000 }).catch((e: unknown) => e);
      expect((err as OldHistoryError).failure).toBe('refused');
      expect((err as Error).message).toMatch(/answered "\+FULLRESYNC b+ 5000", not \+CONTINUE: closed at once \(the backlog moved/);
      expect(seen[1]).toBe(encodeCommand(['PSYNC', 'a'.repeat(40), '2000']).toString('latin1'));
      await until('the server saw the close', () => closedAfterMs >= 0, 2000);
      expect(closedAfterMs).toBeLessThan(100);
    } finally {
      server.close();
    }
  });

  it('rejects within timeoutMs when nothing answers, and when nothing listens', async () => {
    const server = net.createServer(() => {});
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const t0 = performance.now();
      const err = await readOldHistory({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port }, { replid: 'a'.repeat(40), offset: 1 }, { timeoutMs: 200 }).catch((e: unknown) => e);
      expect((err as OldHistoryError).failure).toBe('timeout');
      expect((err as Error).message).toMatch(/not read in 200 ms \(in the info step\)/);
      expect(performance.now() - t0).toBeLessThan(1000);
    } finally {
      server.close();
    }
    const err = await readOldHistory({ host: '127.0.0.1', port: await freePort() }, { replid: 'a'.repeat(40), offset: 1 }).catch((e: unknown) => e);
    expect((err as OldHistoryError).failure).toBe('connection');
    expect((err as Error).message).toMatch(/ECONNREFUSED/);
  });
});

describe('ReplicationStreamProbe: failures', () => {
  it('survives the primary restarting: errors counted, reconnected, probes of the new history', async () => {
    const primary = await start();
    const replica = await start(primary);
    const probe = new ReplicationStreamProbe(primary, { intervalMs: 20, keep: 1000 });
    probes.push(probe);
    await until('3 probes', () => probe.probes().length >= 3);
    const before = probe.probes()[0]!.replid;
    await primary.restart();
    await replica.waitLinkUp();
    await until('3 probes of the new history', () => probe.probes().filter((p) => p.replid !== before).length >= 3);
    const s = probe.stats();
    expect(s.errors).toBeGreaterThanOrEqual(1);
    expect(s.reconnects).toBeGreaterThanOrEqual(1);
    expect(s.connected).toBe(true);
    const after = probe.probes().filter((p) => p.replid !== before);
    expect(after[0]!.replid).toBe((await primary.info('replication')).get('master_replid'));
    for (let i = 1; i < after.length; i++) expect(after[i]!.offset).toBeGreaterThan(after[i - 1]!.offset);
    // Each probe names the connection it went on; the old one and the new are both the probe's own.
    const oldEnd = probe.probes()[0]!.local;
    const newEnd = after.at(-1)!.local;
    expect(oldEnd.address).toBe('127.0.0.1');
    expect(newEnd.port).not.toBe(oldEnd.port);
    expect([probe.isOwnClient(oldEnd), probe.isOwnClient(newEnd), probe.isOwnClient({ address: '127.0.0.1', port: primary.port })]).toEqual([true, true, false]);
    probe.close();
    const n = probe.probes().length;
    await new Promise((r) => setTimeout(r, 100));
    expect(probe.probes().length).toBe(n);
    expect(probe.stats().connected).toBe(false);
  });

  it('keeps the last N; nothing listening: errors and backoff, no throw; close leaves no timer or socket', async () => {
    const resources = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'TCPSocketWrap').length;
    const base = resources();
    const probe = new ReplicationStreamProbe({ host: '127.0.0.1', port: await freePort() }, { intervalMs: 10, backoffMinMs: 10, backoffMaxMs: 80 });
    probes.push(probe);
    await new Promise((r) => setTimeout(r, 400));
    const s = probe.stats();
    expect(s.lastError).toMatch(/ECONNREFUSED/);
    expect(s.probes).toBe(0);
    // Backoff 10, 20, 40, 80, 80 ... ms: a handful of attempts in 400 ms, not one per tick.
    expect(s.reconnects).toBeGreaterThanOrEqual(3);
    expect(s.reconnects).toBeLessThan(12);
    probe.close();
    await new Promise((r) => setTimeout(r, 20));
    // Other tests' handles may have ended meanwhile: none of the probe's is left.
    expect(resources()).toBeLessThanOrEqual(base);

    const primary = await start();
    await start(primary);
    const keep = new ReplicationStreamProbe(primary, { intervalMs: 5, keep: 4 });
    probes.push(keep);
    await until('10 probes', () => keep.stats().probes >= 10);
    const got = keep.probes();
    expect(got.length).toBe(4);
    for (let i = 1; i < got.length; i++) expect(got[i]!.offset).toBeGreaterThan(got[i - 1]!.offset);
    keep.close();
  });

  it('a primary without a replication backlog (no replica ever): error replies counted, nothing recorded', async () => {
    const alone = await start();
    const probe = new ReplicationStreamProbe(alone, { intervalMs: 10 });
    probes.push(probe);
    await until('errors', () => probe.stats().errors >= 3);
    expect(probe.probes()).toEqual([]);
    expect(probe.stats().lastError).toMatch(/master_repl_offset "0": no replication backlog/);
    expect(probe.stats().reconnects).toBe(0);
    probe.close();
  });
});
