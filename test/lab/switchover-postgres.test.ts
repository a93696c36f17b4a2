// A planned switchover of PostgreSQL (issue 12) through the agents as processes, as operators
// run it: a serves PostgreSQL on the service address and streams its connections
// (`connectionStream`); b runs a streaming standby and follows a's service (`continue.stream`,
// `continue.switchover` for the catch-up); a learning bridge, no mirror. Clients on c: an idle
// session and one between transactions (each with a SET and a named prepared statement), one
// inside a transaction that only read, one inside a transaction that wrote, a slow read and a slow
// write in flight (pg_sleep 1.5 s), a 30 MB result streaming, 40 busy sessions inserting
// 1, 2, 3..., and one session opened before b's agent followed a (its session unknown there). On b,
// `takeover switchover VIP:PORT --to b`: a's agent locks the service inbound only (the clients'
// pure ACKs let in), waits until every backend is idle (the slow statements finish and their
// replies go out, the big result drains), drops the ACKs too, dumps and hands
// the connections over; b's agent checks the standby replayed a's WAL up to its insert position,
// promotes it, takes the address and continues every session: nothing lost, nothing doubled, the
// writing transaction's session told 57P01 (its work is gone with a's backend), and the session
// b cannot rebuild told 57P01 too, not reset.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { run } from '../../src/lab/exec.js';
import { runCli } from '../cli-process.js';
import { agentsLab, startContinueAgents } from './agents-lab.js';
import { startPostgres, startPostgresReplica } from './postgres.js';
import { until } from './replication-cluster.js';

const fixture = fileURLToPath(new URL('fixtures/pg-sessions.ts', import.meta.url));
const STREAM_PORT = 7403;
/** Sessions inserting a row every 20 ms through the switchovers. */
const BUSY = 40;
// A planned switchover needs no fast detection (see switchover.test.ts).
const HEARTBEAT = { intervalMs: 100, misses: 20 };

it('a planned switchover moves live PostgreSQL sessions to the promoted standby: settings, prepared statements and a reading transaction go on, in-flight statements answered, no insert lost or doubled; a writing transaction gets 57P01', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-switchover-pg-');
  const { lab, dir, vip } = m;
  const primary = await startPostgres(lab, 'a', 5432, { maxConnections: 80 });
  const psql = (host: string, port: number, sql: string) => run('ip', ['netns', 'exec', lab.host(host).ns, 'psql', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-At', '-c', sql]);
  await psql('a', primary.port, 'CREATE TABLE t (v int); CREATE TABLE busy (s int, v int)');
  const aAddress = lab.host('a').ipv4;
  const replica = await startPostgresReplica(lab, 'b', primary, aAddress, 5433, { maxConnections: 80 });
  try {
    await until('the replica streaming', async () => ((await psql('a', primary.port, 'SELECT count(*) FROM pg_stat_replication')).stdout.trim() === '1' ? true : undefined), 20_000);
    // A session opened before b's agent follows a: its session is unknown there.
    const clients = lab.spawn('c', fixture);
    await clients.waitFor('ready');
    await clients.request({ cmd: 'early', host: vip, port: primary.port });
    // A client on a itself, over loopback: the lock does not hold it, and a's agent says so.
    const local = lab.spawn('a', fixture);
    await local.waitFor('ready');
    await local.request({ cmd: 'early', host: '127.0.0.1', port: primary.port });
    const { log: logOf } = startContinueAgents(
      m,
      primary.port,
      { protocol: 'postgres', stream: { host: aAddress, port: STREAM_PORT }, upstream: { port: replica.port }, promote: replica.promoteCommand, promoteTimeoutMs: 15_000, switchover: { primary: { host: aAddress, port: primary.port }, user: 'postgres' } },
      { connectionStream: { address: aAddress, port: STREAM_PORT } },
      HEARTBEAT,
    );
    await until('b follows a\'s stream', async () => (logOf('b').some((e) => e.msg === 'a\'s connection stream is up') ? true : undefined), 15_000);
    const ports = await clients.request({ cmd: 'open', host: vip, port: primary.port });
    await clients.request({ cmd: 'busy', host: vip, port: primary.port, sessions: BUSY, thinkMs: 20 });
    await new Promise((r) => setTimeout(r, 500));
    const cli = (quietWaitMs: number) => runCli(['switchover', `${vip}:${primary.port}`, '--to', 'b', '--quiet-wait-ms', String(quietWaitMs), '--json', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });

    // A statement running longer than the switchover may wait: aborted, a unlocks, every session
    // goes on there (the statements end on a, the busy session's inserts under the lock arrive late).
    await clients.request({ cmd: 'inflight', host: vip, port: primary.port, sleepS: 3 });
    await new Promise((r) => setTimeout(r, 200));
    const aborted = await cli(1000);
    console.log(`postgres switchover, a statement running: exit ${aborted.code}; ${aborted.stderr.trim()}`);
    expect(aborted.code).toBe(2);
    expect(aborted.stderr).toMatch(new RegExp(`^switchover: the primary refused: the server's barrier \\(every PostgreSQL backend idle\\) failed: 2 of ${7 + BUSY} backends still at work after \\d+ ms \\(process \\d+: SELECT\\)`));
    expect(await clients.request({ cmd: 'inflightResults' }, 20_000)).toEqual({ read: [{ r: 'read', n: 1, standby: false }], write: { ok: true } });
    expect((await psql('b', replica.port, 'SELECT pg_is_in_recovery()')).stdout.trim()).toBe('t');

    await clients.request({ cmd: 'inflight', host: vip, port: primary.port });
    // 30 MB streaming for ~1.5 s: more than a send buffer holds, so its backend can finish and go
    // idle under the lock only because the client's ACKs are let in.
    await clients.request({ cmd: 'bigRead', host: vip, port: primary.port, rows: 300, rowBytes: 100_000 });
    await new Promise((r) => setTimeout(r, 200));

    const run_ = await cli(6000);
    console.log(`postgres switchover: exit ${run_.code}; ${run_.stderr.trim()}; report ${run_.stdout.trim()}`);
    if (run_.code !== 1) for (const n of ['a', 'b'] as const) console.log(`${n}'s log: ${logOf(n).filter((e) => e.msg !== 'published').map((e) => `${e.time ?? ''} ${e.msg} ${e.reason ?? e.error ?? ''}`).join('\n')}`);
    // Exit 1: the early session was told goodbye, not moved.
    expect(run_.code, `${run_.stderr} ${run_.stdout}`).toBe(1);
    expect(run_.stderr).toMatch(/^  told goodbye 1: not shadowed here \(opened before the shadow started, or its handshake was not seen\): its session is unknown$/m);
    const report = JSON.parse(run_.stdout) as { connections: number; moved: number; goodbyes: number; reset: number; resetBy: Record<string, number>; catchUp: string };
    // idle, between, inTx, readTx, the busy ones, the two slow reads and the two slow writes (the first pair idle by now), the big read; the early one.
    expect(report, JSON.stringify(report)).toMatchObject({ connections: 10 + BUSY, moved: 9 + BUSY, goodbyes: 1, reset: 0 });
    // It got PostgreSQL's own goodbye (as from pg_terminate_backend), not a reset.
    // (node-postgres reports the FATAL 57P01, then the end, as after pg_terminate_backend on a live server.)
    const earlyAfter = await clients.request({ cmd: 'earlyAfter' });
    expect(earlyAfter.errors[0]).toBe('57P01');
    expect(earlyAfter.ended).toBe(true);
    expect(await clients.request({ cmd: 'bigReadResult' }, 20_000)).toEqual({ rows: 300, bytes: 30_000_000, whole: true, standby: false });
    expect(report.catchUp).toMatch(/^the standby replayed to [0-9A-F]+\/[0-9A-F]+, reaching the locked primary's WAL insert position [0-9A-F]+\/[0-9A-F]+( \(less its page header: [0-9A-F]+\/[0-9A-F]+\))?$/);
    expect((await psql('b', replica.port, 'SELECT pg_is_in_recovery()')).stdout.trim()).toBe('f');

    // The slow statements ran to their end on a, and their replies reached the clients (the read
    // counts between's row and the first slow write's).
    expect(await clients.request({ cmd: 'inflightResults' }, 20_000)).toEqual({ read: [{ r: 'read', n: 2, standby: false }], write: { ok: true } });
    const after = await clients.request({ cmd: 'after' });
    console.log(`postgres switchover: sessions after ${JSON.stringify(after)} (ports ${JSON.stringify(ports)})`);
    expect(after.got).toEqual({ idle: { workMem: '7MB', n: 42 }, between: { workMem: '7MB', n: 42 }, readTx: { workMem: '7MB', n: 42 } });
    expect(after.errors).toMatchObject({ idle: [], between: [], readTx: [] });
    expect(after.errors.inTx[0]).toBe('57P01');
    expect(after.ended).toEqual({ idle: false, between: false, inTx: true, readTx: false });
    await new Promise((r) => setTimeout(r, 300));
    const busy = (await clients.request({ cmd: 'busyStop' })) as { sessions: Array<{ acked: number; errors: string[]; ended: boolean }>; maxWaitMs: number };
    console.log(`postgres switchover: ${BUSY} busy sessions acknowledged ${busy.sessions.reduce((n, b) => n + b.acked, 0)} inserts, the longest wait ${busy.maxWaitMs} ms`);
    expect(busy.sessions.filter((b) => b.errors.length > 0 || b.ended)).toEqual([]);
    // Every acknowledged insert on b once, nothing else: none lost under the lock, none run twice.
    const rows = (await psql('b', replica.port, 'SELECT s, count(*), count(DISTINCT v), max(v) FROM busy GROUP BY s ORDER BY s')).stdout.trim().split('\n');
    expect(rows).toEqual(busy.sessions.map((b, s) => `${s}|${b.acked}|${b.acked}|${b.acked}`));
    expect(Math.min(...busy.sessions.map((b) => b.acked))).toBeGreaterThan(20);
    // between's committed 1, the slow writes' 9s, the three INSERTs after (readTx's committed on b); inTx's 2 never.
    expect((await psql('b', replica.port, 'SELECT v FROM t ORDER BY v')).stdout.trim().split('\n')).toEqual(['1', '3', '3', '4', '9', '9']);
    const given = await until('a\'s log of the switchover', async () => logOf('a').find((e) => e.switchover?.type === 'switchover-given'), 5000);
    console.log(`postgres switchover: a gave ${JSON.stringify(given)}`);
    expect(given.switchover.unlockedSessions).toBe(1);
    expect(logOf('a').find((e) => e.unlockedSessions === 1)?.msg).toMatch(/^1 other client session\(s\) of this PostgreSQL were not locked nor moved \(over loopback, a Unix socket or this host's own address\)/);
  } finally {
    await replica.stop();
    await primary.stop();
  }
}, 120_000);
