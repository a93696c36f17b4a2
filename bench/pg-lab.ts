// PostgreSQL synchronous streaming replication between two lab hosts, shared by the benches that
// use it as a baseline (BENCH=mirror-pg, BENCH=takeover): a primary on host a with
// synchronous_standby_names = '*', a streaming replica on host b made by `pg_basebackup -R`, both
// durable as shipped (fsync on) and reachable over TCP only. The servers run as the postgres user
// (initdb refuses root) from the newest version under /usr/lib/postgresql; their processes live in
// the hosts' namespaces, so the lab's destroy() kills them.
import { appendFileSync, chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Lab } from '../src/lab/lab.js';
import type { NodeChild } from '../src/lab/node-child.js';
import { run } from '../src/lab/exec.js';

export const PG_PORT = 5432;

/**
 * Runs `body` with a scratch directory the postgres user can reach and a lab of hosts a and b,
 * and removes both however it ends, SIGINT and SIGTERM included (the lab's destroy kills every
 * process in its namespaces: both postmasters and their backends, the walsender and
 * walreceiver, the bench's children; then the data goes).
 */
export async function withPgLab<T>(name: string, body: (lab: Lab, root: string) => Promise<T>): Promise<T> {
  const root = mkdtempSync(path.join(tmpdir(), `bench-${name}-`));
  chmodSync(root, 0o755); // the postgres user reaches its data directories under it
  let lab: Lab | undefined;
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    (cleaned ??= (async () => {
      await lab?.destroy();
      rmSync(root, { recursive: true, force: true });
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`${name}: ${sig}, cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    lab = await Lab.create({ hosts: ['a', 'b'] });
    return await body(lab, root);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

/** The bin directory of the newest PostgreSQL under /usr/lib/postgresql; throws if none. */
export function pgBin(): string {
  const root = '/usr/lib/postgresql';
  let versions: string[] = [];
  try {
    versions = readdirSync(root).sort((x, y) => Number(y) - Number(x));
  } catch {
    // reported below
  }
  if (versions.length === 0) throw new Error('PostgreSQL is not installed under /usr/lib/postgresql (.ci/setup.sh installs it: Debian package postgresql)');
  return path.join(root, versions[0]!, 'bin');
}

export interface PgPair {
  /** The primary's postmaster on host a (its pid is the postmaster's: `sh -c exec`). */
  primary: NodeChild;
  /** The replica's postmaster on host b. */
  replica: NodeChild;
  /** Runs one SQL string through psql on `host`'s own server; resolves with its unaligned output. */
  psql: (host: 'a' | 'b', sql: string) => Promise<string>;
  /** `SHOW server_version`. */
  version: string;
}

/**
 * Starts a primary on lab host a (data directory `root/NAME-a`, log `root/NAME-a.log`), runs
 * `setupSql` on it with synchronous_commit = local (no standby yet), makes host b's replica from
 * it (`root/NAME-b`, started with `replicaSettings`, each `name=value`) and waits until
 * pg_stat_replication shows it streaming and synchronous (20 s at most). `root` must be
 * traversable by the postgres user. Throws with the server's log tail if a server does not start
 * within 30 s.
 */
export async function startPgPair(lab: Lab, root: string, name: string, setupSql: string, replicaSettings: string[] = []): Promise<PgPair> {
  const bin = pgBin();
  const a = lab.host('a');
  const b = lab.host('b');
  const uid = Number((await run('id', ['-u', 'postgres'])).stdout);
  const gid = Number((await run('id', ['-g', 'postgres'])).stdout);
  const asPg = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--'];
  const pgA = path.join(root, `${name}-a`);
  const pgB = path.join(root, `${name}-b`);
  for (const d of [pgA, pgB]) {
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, uid, gid);
  }
  await run(asPg[0]!, [...asPg.slice(1), path.join(bin, 'initdb'), '-D', pgA, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8']);
  appendFileSync(path.join(pgA, 'pg_hba.conf'), `host all all ${a.ipv4}/32 trust\nhost all all ${b.ipv4}/32 trust\nhost replication all ${b.ipv4}/32 trust\n`);
  // Durable as shipped (fsync on, fdatasync, full_page_writes), only what the lab needs set.
  // TCP only: a Unix socket's lock file in the data directory would be copied to the replica.
  // `exec` twice (ip netns exec, sh) so the child's pid is the postmaster's.
  const server = (host: 'a' | 'b', dataDir: string, extra: string[]) =>
    lab.spawnCommand(host, 'sh', ['-c', `exec ${[
      ...asPg, path.join(bin, 'postgres'), '-D', dataDir, '-p', String(PG_PORT), '-c', 'unix_socket_directories=',
      '-c', 'listen_addresses=*', '-c', 'max_connections=30', ...extra,
    ].map(quote).join(' ')} 2>${quote(`${dataDir}.log`)}`]);
  const primary = server('a', pgA, ['-c', 'synchronous_standby_names=*']);
  await pgReady(lab, 'a', bin, primary.process, `${pgA}.log`);
  const psql = async (host: 'a' | 'b', sql: string) =>
    (await lab.exec(host, path.join(bin, 'psql'), ['-h', '127.0.0.1', '-p', String(PG_PORT), '-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-Atc', sql])).stdout.trim();
  // No standby yet: these commits must not wait for one.
  await psql('a', `SET synchronous_commit = local; ${setupSql}`);
  await lab.exec('b', asPg[0]!, [...asPg.slice(1), path.join(bin, 'pg_basebackup'), '-h', a.ipv4, '-p', String(PG_PORT), '-U', 'postgres', '-D', pgB, '-R', '-X', 'stream', '-c', 'fast']);
  const replica = server('b', pgB, replicaSettings.flatMap((kv) => ['-c', kv]));
  await pgReady(lab, 'b', bin, replica.process, `${pgB}.log`);
  const t1 = Date.now();
  let sync = '';
  while ((sync = await psql('a', "SELECT string_agg(state || '/' || sync_state, ',') FROM pg_stat_replication")) !== 'streaming/sync') {
    if (Date.now() - t1 > 20_000) throw new Error(`the replica is not a synchronous standby after 20 s: pg_stat_replication says '${sync}'`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { primary, replica, psql, version: await psql('a', 'SHOW server_version') };
}

/** Single-quotes `s` for sh unless it needs none. */
export function quote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

async function pgReady(lab: Lab, host: string, bin: string, child: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await lab.exec(host, path.join(bin, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(PG_PORT)]);
      return;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) {
        let log = '';
        try {
          log = readFileSync(logFile, 'utf8').slice(-2000);
        } catch {
          // no log written
        }
        throw new Error(`PostgreSQL did not start on ${host}: ${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
