// Issue 12's PostgreSQL case through the agent: a real PostgreSQL primary on a (the service
// address), a streaming replica on b, b's agent continuing a's sessions (`protocol: postgres`,
// the mirror of a's port on a learning bridge, `pg_ctl promote` as the promotion). a dies
// silently; the idle session and the one between transactions go on against the promoted
// replica with their session state (a SET, a named prepared statement); one inside a transaction
// that had only read is rebuilt there (its reads rerun read-only, then for real) and goes on to
// write and commit; the one inside a transaction that had written gets a clean FATAL 57P01 (its
// work is gone with a), not a RST. Two requests are in flight when a dies (no walCheck: nothing
// tells whether a committed them): a read is replayed read-only and answered by b; a write is
// refused there (25006), its session reset, its row never on b.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { run } from '../../src/lab/exec.js';
import { agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { startPostgres, startPostgresReplica } from './postgres.js';
import { until } from './replication-cluster.js';

const fixture = fileURLToPath(new URL('fixtures/pg-sessions.ts', import.meta.url));

it('the backup\'s agent continues PostgreSQL sessions on the promoted streaming replica; a transaction that only read goes on; one that wrote gets 57P01; an in-flight read is answered, an in-flight write reset', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-pg-');
  const { lab, vip } = m;
  const primary = await startPostgres(lab, 'a');
  const psql = (host: string, port: number, sql: string) => run('ip', ['netns', 'exec', lab.host(host).ns, 'psql', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-At', '-c', sql]);
  await psql('a', primary.port, 'CREATE TABLE t (v int)');
  const replica = await startPostgresReplica(lab, 'b', primary, lab.host('a').ipv4, 5433);
  try {
    await until('the replica streaming', async () => ((await psql('a', primary.port, 'SELECT count(*) FROM pg_stat_replication')).stdout.trim() === '1' ? true : undefined), 20_000);
    const { ifname } = await lab.mirrorPort('a', 'b');
    const { log: logOf } = startContinueAgents(m, primary.port, { protocol: 'postgres', mirror: ifname, upstream: { port: replica.port }, promote: replica.promoteCommand, promoteTimeoutMs: 15_000 });
    const log = () => logOf('b');
    await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
    await shadowFollowing(m, 'b');
    const clients = lab.spawn('c', fixture);
    await clients.waitFor('ready');
    const ports = await clients.request({ cmd: 'open', host: vip, port: primary.port });
    // The committed row reaches the replica before a dies (the test is about sessions, not commit durability).
    await until('the commit on the replica', async () => ((await psql('b', replica.port, 'SELECT count(*) FROM t')).stdout.trim() === '1' ? true : undefined), 10_000);
    const inflight = await clients.request({ cmd: 'inflight', host: vip, port: primary.port });
    await new Promise((r) => setTimeout(r, 300));

    await lab.killSilently('a');
    const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 20_000);
    console.log(`continue postgres: ${JSON.stringify(taken.continued)}; continueError ${taken.continueError ?? 'none'}`);
    expect(taken.continueError).toBeUndefined();
    // Both transactions are to be rebuilt; the one that wrote says its goodbye once that is found.
    // Both in-flight requests are replayed read-only; the write is reset once refused.
    expect(taken.continued).toMatchObject({ connections: 6, goodbyes: 0, transactions: 2, reset: 0, replayCheck: { replays: 2, refused: 0, readOnly: 2 } });
    expect(await clients.request({ cmd: 'inflightResults' }, 20_000)).toEqual({ read: [{ r: 'read', n: 1, standby: false }], write: { error: 'ECONNRESET' } });
    const resets = await until('the refused write in b\'s log', async () => log().find((e) => e.msg === 'continued connections reset'), 5000);
    expect(resets.first).toEqual([{ peer: 'a', client: expect.stringMatching(new RegExp(`:${inflight.slowWrite}$`)), reason: expect.stringMatching(/^the replayed request writes \(cannot execute INSERT in a read-only transaction\).*; not run as it was: nothing here tells whether the dead primary committed it \(no walCheck\)$/) }]);
    const after = await clients.request({ cmd: 'after' });
    console.log(`continue postgres: sessions after ${JSON.stringify(after)} (ports ${JSON.stringify(ports)})`);
    expect(after.got).toEqual({ idle: { workMem: '7MB', n: 42 }, between: { workMem: '7MB', n: 42 }, readTx: { workMem: '7MB', n: 42 } });
    // node-postgres reports a FATAL 57P01 then the end, as for pg_terminate_backend on a live server.
    expect(after.errors).toMatchObject({ idle: [], between: [], readTx: [] });
    expect(after.errors.inTx[0]).toBe('57P01');
    expect(after.ended).toEqual({ idle: false, between: false, inTx: true, readTx: false });
    const goodbyes = await until('the goodbye in b\'s log', async () => log().find((e) => e.msg === 'continued connections said goodbye'), 5000);
    expect(goodbyes.first).toEqual([{ peer: 'a', client: expect.stringMatching(new RegExp(`:${ports.inTx}$`)), reason: expect.stringMatching(/^said goodbye: the transaction was not rebuilt: it had written \(cannot execute INSERT in a read-only transaction\)/) }]);
    // The committed row and the three INSERTs after (readTx's committed on b); inTx's never.
    expect((await psql('b', replica.port, 'SELECT v FROM t ORDER BY v')).stdout.trim().split('\n')).toEqual(['1', '3', '3', '4']);
  } finally {
    await replica.stop();
    await primary.stop();
  }
}, 90_000);
