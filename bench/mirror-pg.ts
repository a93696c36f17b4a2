// `BENCH=mirror-pg`: the mirrored log against PostgreSQL synchronous replication, between the same
// two lab hosts (namespaces on a learning bridge), same run, same work: 10 concurrent clients, each
// committing a 100-byte record and waiting for it before the next (bench/commit-loop.ts: 5,000
// commits or 5 s per side, after 50 per client not counted).
//   ours   MirroredLog primary on host a (a child process; its appenders in that process), its
//          MirrorBackup a child process on host b: the normal state (a commit acknowledged on the
//          backup's ACK), then primary-only (the backup gone: each commit fdatasynced on a, group
//          commit).
//   PG     PostgreSQL (the newest under /usr/lib/postgresql) primary on host a, a streaming replica
//          on host b (pg_basebackup -R), synchronous_standby_names = '*'; 10 node-postgres
//          connections from a process on host a (over its loopback), each commit an autocommit
//          INSERT of a 100-byte bytea; synchronous_commit = remote_write, on, local, then off (no
//          wait at all: what the client, the protocol and the executor cost alone).
// Every data directory and log is under one temporary directory on tmpdir's disk (a warning on
// tmpfs, where fdatasync costs nothing). The lab, its processes and that directory are removed at
// the end, on failure, and on SIGINT/SIGTERM.
import { statfsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { APPENDERS, PAYLOAD_BYTES, onTmpfs, type CommitRun } from './commit-loop.js';
import { PG_PORT, startPgPair, withPgLab } from './pg-lab.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = (name: string) => path.join(here, 'fixtures', name);
const KEY_HEX = Buffer.from('bench-mirror-pg-key-0123456789ab').toString('hex');

type Result = CommitRun & { state?: string; synchronousCommit?: string };

function resultOf(e: Record<string, unknown>): Result {
  return e as unknown as Result;
}

export async function mirrorPg(out: (s: string) => void): Promise<void> {
  const t0 = performance.now();
  const step = (what: string) => process.stderr.write(`mirror-pg: ${((performance.now() - t0) / 1000).toFixed(1)} s: ${what}\n`);
  step('lab');
  await withPgLab('mirror-pg', async (lab, root) => {
    const fsType = statfsSync(root).type;
    if (onTmpfs(root)) out(`mirror-pg: WARNING ${root} is on tmpfs, where fdatasync costs nothing: set TMPDIR to a disk`);
    const a = lab.host('a');
    const b = lab.host('b');

    // Ours, normal: the backup on b, the primary and its appenders on a.
    step('ours normal');
    const backup = lab.spawn('b', fx('mirror-backup.ts'), [path.join(root, 'ours-b'), b.ipv4, KEY_HEX]);
    const port = String((await backup.waitFor('listening', 20_000)).port);
    const oursNormal = resultOf(await lab.spawn('a', fx('mirror-primary-loop.ts'), [path.join(root, 'ours-a'), b.ipv4, port, KEY_HEX, 'normal']).waitFor('result', 60_000));
    // Primary-only: the backup gone, nobody listens where it was (a refused dial).
    step('ours primary-only');
    await backup.kill();
    const oursAlone = resultOf(await lab.spawn('a', fx('mirror-primary-loop.ts'), [path.join(root, 'ours-a2'), b.ipv4, port, KEY_HEX, 'primary-only']).waitFor('result', 60_000));

    // PostgreSQL: primary on a, streaming replica on b, synchronous (bench/pg-lab.ts).
    step('PostgreSQL primary and replica');
    const pg = await startPgPair(lab, root, 'pg', 'CREATE TABLE rec (payload bytea)');
    const version = pg.version;
    const pgRun = async (mode: string) => {
      step(`PostgreSQL synchronous_commit=${mode}`);
      const r = resultOf(await lab!.spawn('a', fx('pg-commit-loop.ts'), ['127.0.0.1', String(PG_PORT), mode]).waitFor('result', 60_000));
      if (r.synchronousCommit !== mode) throw new Error(`the session ran with synchronous_commit = ${r.synchronousCommit}, not ${mode}`);
      return r;
    };
    const pgRemoteWrite = await pgRun('remote_write');
    const pgOn = await pgRun('on');
    const pgLocal = await pgRun('local');
    const pgOff = await pgRun('off');
    const stillSync = await pg.psql('a', "SELECT string_agg(state || '/' || sync_state, ',') FROM pg_stat_replication");

    const rate = (r: Result) => r.commits / r.seconds;
    const line = (name: string, r: Result) =>
      `  ${name}: ${rate(r).toFixed(0)} commits/s (${r.commits} in ${r.seconds.toFixed(2)} s), latency p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`;
    const ratio = (ours: Result, theirs: Result, what: string) =>
      `  ${what}: commits/s ${(rate(ours) / rate(theirs)).toFixed(2)}x, p50 ${(theirs.p50 / ours.p50).toFixed(2)}x, p99 ${(theirs.p99 / ours.p99).toFixed(2)}x (above 1: ours better)`;
    out(`mirrored log vs PostgreSQL ${version} synchronous replication, hosts a -> b on a bridge, ${APPENDERS} clients each waiting for its commit, ${PAYLOAD_BYTES}-byte records, on ${root} (fs type 0x${fsType.toString(16)}):`);
    out(line(`ours normal (ended ${oursNormal.state}): acked when the record is in the backup's memory (seed 004; the backup flushes at its checkpoints), not fsynced on a`, oursNormal));
    out(line(`ours primary-only (ended ${oursAlone.state}): fdatasynced on a (group commit), no copy on b`, oursAlone));
    out(line('PG synchronous_commit=remote_write: WAL flushed on a, written to the standby\'s OS (not fsynced there)', pgRemoteWrite));
    out(line('PG synchronous_commit=on: WAL flushed on a and on the standby', pgOn));
    out(line('PG synchronous_commit=local: WAL flushed on a, the standby not waited for', pgLocal));
    out(line('PG synchronous_commit=off: nothing waited for (the floor: client, protocol, executor)', pgOff));
    out(ratio(oursNormal, pgRemoteWrite, 'ours normal / PG remote_write'));
    out(ratio(oursNormal, pgOn, 'ours normal / PG on'));
    out(ratio(oursAlone, pgLocal, 'ours primary-only / PG local'));
    out(`  (ours: appenders in the primary's process; PG: clients in another process on a, over loopback TCP. PG commits on a are fsynced in every mode, ours normal are not; standby after the runs: ${stillSync})`);
  });
}
