// Issue 12's "committed but not acknowledged" for PostgreSQL, through the agents as processes: a
// real primary on a, its streaming replica on b, b's agent continuing a's sessions from the
// mirror with `walCheck` (b captures its replica's replication connection to a). Two INSERTs and
// a SELECT are in flight when a dies silently:
// - a SELECT and an INSERT a ran (the INSERT committed, its WAL reached b's replica) but whose
//   replies never left a (nft drops a's packets to c before the switch: the mirror never sees
//   them). b sees WAL arrive after both requests did: either may have been committed, so both are
//   replayed read-only. The SELECT is answered on the same connection, by the promoted replica
//   (it sees the committed row); the INSERT is refused there (25006), so nothing is applied twice
//   and its session is reset (ECONNRESET, the reason in b's log), and the row is there once.
// - one a never ran (its postgres stopped first: SIGSTOP), so no WAL came after it: b replays it
//   on the promoted replica, the client gets its INSERT 0 1 on the same connection, the row once.
// An idle session goes on too.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { run } from '../../src/lab/exec.js';
import { runCli } from '../cli-process.js';
import { agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { startPostgres, startPostgresReplica } from './postgres.js';
import { until } from './replication-cluster.js';

const fixture = fileURLToPath(new URL('fixtures/pg-inserts.ts', import.meta.url));

it('with walCheck, a write the dead primary committed in WAL the replica holds is reset, not replayed twice; a read beside it is answered; one it never ran is replayed once', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-pg-wal-');
  const { lab, vip } = m;
  const primary = await startPostgres(lab, 'a');
  const psql = (host: string, port: number, sql: string) => run('ip', ['netns', 'exec', lab.host(host).ns, 'psql', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-At', '-c', sql]);
  await psql('a', primary.port, 'CREATE TABLE t (k text)');
  const replica = await startPostgresReplica(lab, 'b', primary, lab.host('a').ipv4, 5433);
  let postmaster: number | undefined;
  const count = async (key: string) => Number((await psql('b', replica.port, `SELECT count(*) FROM t WHERE k = '${key}'`)).stdout.trim());
  try {
    await until('the replica streaming', async () => ((await psql('a', primary.port, 'SELECT count(*) FROM pg_stat_replication')).stdout.trim() === '1' ? true : undefined), 20_000);
    const { ifname } = await lab.mirrorPort('a', 'b');
    const { log: logOf } = startContinueAgents(m, primary.port, {
      protocol: 'postgres', mirror: ifname, upstream: { port: replica.port }, promote: replica.promoteCommand, promoteTimeoutMs: 15_000,
      walCheck: { primary: { host: lab.host('a').ipv4, port: primary.port } },
    });
    const log = () => logOf('b');
    await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
    await shadowFollowing(m, 'b');
    // b's status shows the WAL watch following its standby's replication connection. An idle
    // standby reports every 10 s (wal_receiver_status_interval); a write on a, before any client
    // request, sends WAL down the connection at once.
    await psql('a', primary.port, 'CREATE TABLE wal_nudge ()');
    const status = async () => (await runCli(['status', '--control', path.join(m.dir, 'b.sock')], { netns: lab.host('b').ns })).stdout;
    expect(await status()).toMatch(/WAL watch: (waiting to see the replication connection|replication connection seen \d+ ms ago)/);
    await until('the WAL watch seeing the replication connection', async () => (/WAL watch: replication connection seen \d+ ms ago/.test(await status()) ? true : undefined), 15_000);
    const clients = lab.spawn('c', fixture);
    await clients.waitFor('ready');
    const ports = await clients.request({ cmd: 'open', host: vip, port: primary.port, names: ['committed', 'unrun', 'idle', 'reader'] });

    // a's packets to c end at a (the mirror never sees its reply); its WAL to b still flows.
    await lab.exec('a', 'nft', ['-f', '-'], `table inet tko_reply { chain out { type filter hook output priority 0; ip daddr ${lab.host('c').ipv4} tcp sport ${primary.port} drop; }; }\n`);
    await clients.request({ cmd: 'start', name: 'reader', sql: "SELECT pg_is_in_recovery() AS standby, count(*)::int AS n FROM t WHERE k = 'committed'" });
    await new Promise((r) => setTimeout(r, 100));
    await clients.request({ cmd: 'insert', name: 'committed', key: 'committed' });
    await until('the committed row on the replica', async () => ((await count('committed')) === 1 ? true : undefined), 10_000);
    // a's postgres stops (the postmaster, its backends and its walsender): the next INSERT
    // reaches a's kernel, never its server, and no WAL leaves a after it.
    postmaster = Number(readFileSync(path.join(primary.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    await run('kill', ['-STOP', String(postmaster)]);
    await run('pkill', ['-STOP', '-P', String(postmaster)]);
    await clients.request({ cmd: 'insert', name: 'unrun', key: 'unrun' });
    await new Promise((r) => setTimeout(r, 500));

    await lab.killSilently('a');
    const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 20_000);
    console.log(`continue postgres walCheck: ${JSON.stringify(taken.continued)}; continueError ${taken.continueError ?? 'none'}`);
    expect(taken.continueError).toBeUndefined();
    expect(taken.continued).toMatchObject({ connections: 4, reset: 0, replayCheck: { replays: 3, refused: 0, readOnly: 2 } });

    expect(await clients.request({ cmd: 'result', name: 'committed' }, 20_000)).toEqual({ error: 'ECONNRESET' });
    const resets = await until('the refused write in b\'s log', async () => log().find((e) => e.msg === 'continued connections reset'), 10_000);
    expect(resets.first).toEqual([{ peer: 'a', client: `${lab.host('c').ipv4}:${ports.committed}`, reason: expect.stringMatching(/^the replayed request writes \(cannot execute INSERT in a read-only transaction\), .*; not run as it was: the primary sent WAL to the standby [\d.]+ ms after its unanswered request arrived/) }]);
    expect(await clients.request({ cmd: 'result', name: 'reader' }, 20_000)).toEqual([{ standby: false, n: 1 }]);
    expect(await clients.request({ cmd: 'result', name: 'unrun' }, 20_000)).toEqual({ ok: true });
    expect(await clients.request({ cmd: 'query', name: 'idle', sql: 'SELECT 1 AS one' })).toEqual([{ one: 1 }]);
    expect(await count('committed')).toBe(1);
    expect(await count('unrun')).toBe(1);
  } finally {
    if (postmaster) {
      await run('pkill', ['-CONT', '-P', String(postmaster)]).catch(() => undefined);
      await run('kill', ['-CONT', String(postmaster)]).catch(() => undefined);
    }
    await replica.stop();
    await primary.stop();
  }
}, 120_000);
