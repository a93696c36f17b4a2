// `BENCH=takeover`: the reliable order-matching service's primary SIGKILLed under load, on
// loopback: the time from the kill to the takeover done (seed FIG. 13 steps 426-428: promote,
// flush, reopen, replay), to the recovery signal (the first client greeted with RECOVERED,
// step 429-530) and to the first message resent after it answered (step 540). The primary is a
// child process (test/reliable-node-child.ts, the chaos test's node, as primary), the backup and 10
// clients (4 requests in flight each) are this process. The takeover is called as soon as the
// child is reaped and the backup has seen its connection end: no failure detector is in these times (it would add its detection time).
// Bounded: 5 rounds of 4,000 orders, the kill after a random 20-80 % of them.
// Baseline, same run: PostgreSQL's failover (bench/pg-failover.ts, needs root and PostgreSQL): a
// synchronous primary SIGKILLed (every process of its cluster) under 10 clients committing, the
// standby promoted as soon as they are gone, the clients reconnecting to it and resending; 5
// rounds, and the ratio ours / PG per metric. `BENCH_TAKEOVER_PG=0` skips it.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { MirrorBackup } from '../src/log/mirror-backup.js';
import { takeOver } from '../src/log/takeover.js';
import { ReliableClient } from '../src/reliable/reliable-client.js';
import { ReliableServer } from '../src/reliable/reliable-server.js';
import { ReliableState } from '../src/reliable/reliable-state.js';
import { encodeOrder, orderMatchingApp } from '../docs/examples/order-matching/order-book.js';
import { freePort } from '../test/free-port.js';
import { REPLICA_SETTINGS, pgFailover, type PgFailoverTimes } from './pg-failover.js';

const KEY = Buffer.from('mirror-test-key-0123456789abcdef');
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'reliable-node-child.ts');
const ROUNDS = 5;
const CLIENTS = 10;
const PER_CLIENT = 400;
const WINDOW = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// PostgreSQL's closest level to ours: a commit waits for its WAL flushed on the primary and written
// to the standby's OS (not fsynced there); ours is answered once the record is in the backup's
// memory (seed 004), not flushed on either side.
const PG_SYNCHRONOUS_COMMIT = 'remote_write';

function median<T>(runs: T[], f: (t: T) => number): number {
  return runs.map(f).sort((a, b) => a - b)[Math.floor(runs.length / 2)]!;
}

function range<T>(runs: T[], f: (t: T) => number): string {
  return `${Math.min(...runs.map(f)).toFixed(1)}-${Math.max(...runs.map(f)).toFixed(1)}`;
}

interface Times {
  takeover: number;
  signal: number;
  firstAnswer: number;
  records: number;
}

async function round(root: string, i: number): Promise<Times> {
  // A hot standby (as PostgreSQL's standby applies WAL as it comes): the book kept current on
  // the backup, so the takeover has nothing left to replay.
  let state = new ReliableState(orderMatchingApp);
  const backup = await MirrorBackup.listen({
    dir: path.join(root, `b${i}`), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders',
    apply: { reset: () => (state = new ReliableState(orderMatchingApp)), record: (lsn, p) => state.replay(lsn, p) },
  });
  const servicePort = await freePort();
  const primaryPort = await freePort();
  // The primary: the chaos test's node process in its primary role (its own mirror port unused here).
  const config = { node: 'node-a', dir: path.join(root, `p${i}`), role: 'primary', mirrorPort: 0, peerMirrorPort: backup.port, clientPort: primaryPort, keyHex: KEY.toString('hex') };
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let timer: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const e = JSON.parse(line) as { ev: string; state?: string };
      if (e.ev === 'state' && e.state === 'normal') resolve();
    });
    timer = setTimeout(() => reject(new Error('the primary child did not become normal in 20 s')), 20_000);
  }).finally(() => clearTimeout(timer));
  const clients = await Promise.all(Array.from({ length: CLIENTS }, (_, c) => ReliableClient.connect({ servers: [{ host: '127.0.0.1', port: primaryPort }, { host: '127.0.0.1', port: servicePort }], clientId: `b${i}-c${c}`, backoff: { minMs: 5, maxMs: 40 } })));
  let answered = 0;
  let after = 0; // replies after the new server started (not the dead primary's last bytes)
  let serving = false;
  let firstAnswer = 0;
  let signal = 0;
  for (const c of clients) c.on('connected', (x) => { if (x.recoveredLsn !== null && !signal) signal = performance.now(); });
  const load = clients.map(async (c, k) => {
    let n = 0;
    await Promise.all(Array.from({ length: WINDOW }, async () => {
      while (n < PER_CLIENT) {
        n++;
        await c.request(encodeOrder({ side: (n + k) % 2 ? 'buy' : 'sell', price: 100 + ((n * 7 + k) % 5), qty: 1 + (n % 9) }));
        answered++;
        if (serving && !after++) firstAnswer = performance.now();
      }
    }));
  });
  const killAt = Math.floor(CLIENTS * PER_CLIENT * (0.2 + 0.6 * Math.random()));
  while (answered < killAt) await sleep(1);
  child.kill('SIGKILL');
  const killed = performance.now();
  await exited;
  while (backup.attached) await sleep(1); // the backup sees the connection end (promote() refuses before)
  const t = await takeOver(backup, { key: KEY, node: 'node-b', log: 'orders', replay: (lsn, p) => state.replay(lsn, p) });
  const done = performance.now();
  serving = true;
  const server = await ReliableServer.listen({ log: t.log, state, host: '127.0.0.1', port: servicePort, node: 'node-b', incarnation: t.log.incarnation, recoveredLsn: t.promoted.nextLsn });
  await Promise.all(load);
  for (const c of clients) await c.close();
  await server.close();
  await t.log.close();
  await backup.close();
  return { takeover: done - killed, signal: signal - killed, firstAnswer: firstAnswer - killed, records: t.records };
}

export async function reliableTakeover(out: (s: string) => void): Promise<void> {
  const root = mkdtempSync(path.join(tmpdir(), 'bench-takeover-'));
  const runs: Times[] = [];
  try {
    for (let i = 0; i < ROUNDS; i++) runs.push(await round(root, i));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const line = (what: string, f: (t: Times) => number) => `  ${what} ${median(runs, f).toFixed(1)} (${range(runs, f)})`;
  out(`reliable takeover on loopback, primary SIGKILLed under ${CLIENTS} clients x ${WINDOW} in flight, ${ROUNDS} rounds (${range(runs, (t) => t.records).replace(/\.0/g, '')} records replayed), median (range) ms from the kill:`);
  out(line('takeover done (reaped, promote, flush, reopen, replay):', (t) => t.takeover));
  out(line('recovery signal (first client greeted with RECOVERED):', (t) => t.signal));
  out(line('first resent message answered:                        ', (t) => t.firstAnswer));
  if (process.env.BENCH_TAKEOVER_PG === '0') return;

  const t0 = performance.now();
  const pg = await pgFailover(ROUNDS, PG_SYNCHRONOUS_COMMIT, (what) => process.stderr.write(`takeover: ${((performance.now() - t0) / 1000).toFixed(1)} s: ${what}\n`));
  const pgRuns = pg.rounds;
  const pgLine = (what: string, f: (t: PgFailoverTimes) => number) => `  ${what} ${median(pgRuns, f).toFixed(1)} (${range(pgRuns, f)})`;
  const sum = (f: (t: PgFailoverTimes) => number) => pgRuns.reduce((n, t) => n + f(t), 0);
  out(`PostgreSQL ${pg.version} failover, synchronous_commit=${pg.synchronousCommit}, primary on lab host a, standby (${REPLICA_SETTINGS.join(', ')}) and ${CLIENTS} clients (1 commit in flight each) on host b, ${ROUNDS} rounds, median (range) ms from the kill:`);
  out(pgLine(`primary's processes all exited (${range(pgRuns, (t) => t.killedProcesses).replace(/\.0/g, '')}, pidfd):`, (t) => t.gone));
  out(pgLine('first client saw its commit fail (connection lost):     ', (t) => t.lost));
  out(pgLine('promotion done (pg_promote(false), pg_is_in_recovery() false):', (t) => t.promoted));
  out(pgLine('first client reconnected (hot standby: read-only until then):', (t) => t.reconnected));
  out(pgLine('first resent commit acknowledged:                          ', (t) => t.firstResent));
  out(`  resends ${sum((t) => t.resends)}, of which already committed before the kill (the acknowledgement lost): ${sum((t) => t.resentFound)}; every round: all ${CLIENTS * PER_CLIENT} messages on the promoted standby, once`);
  const ratio = (what: string, ours: (t: Times) => number, theirs: (t: PgFailoverTimes) => number) =>
    `  ${what}: ${(median(runs, ours) / median(pgRuns, theirs)).toFixed(2)}`;
  out('ratio ours / PG of the medians (below 1: ours sooner):');
  out(ratio('takeover done / promotion done', (t) => t.takeover, (t) => t.promoted));
  out(ratio('recovery signal / first reconnected', (t) => t.signal, (t) => t.reconnected));
  out(ratio('first resent answered / first resent acknowledged', (t) => t.firstAnswer, (t) => t.firstResent));
  out('  (ours on loopback in one namespace, PG across a bridge between two: a hop of tens of us, below these ms. Both sides: no failure detection, backoff 5 ms doubling to 40 ms,');
  out('   but ours\' clients dial their two addresses in turn (the backup every other attempt, up to 80 ms apart at the cap) where PG\'s dial only the standby and keep that session: this favours PG.');
  out('   PG\'s reconnect needs no promotion (a hot standby takes sessions, read-only), ours\' RECOVERED needs the takeover. Both standbys are hot: PG\'s applied the WAL as it came, ours (MirrorBackup apply) each record as it was taken.');
  out('   Ours answers a message once the backup holds its record in memory; PG remote_write once its WAL is flushed on the primary and in the standby\'s OS.)');
}

// Run alone: node --import tsx bench/reliable-takeover.ts
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await reliableTakeover((s) => process.stdout.write(`${s}\n`));
