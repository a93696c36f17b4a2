// A real PostgreSQL server inside a lab host, started for a test and stopped after it (even on
// failure: the lab's destroy() kills every process left in its namespaces).
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Lab } from '../../src/lab/lab.js';
import { exited, run } from '../../src/lab/exec.js';
import { initdbCopy, pgBinDir as binDir } from '../pg-template.js';

export { pgBinDir as binDir, initdbCopy } from '../pg-template.js';

export interface PgServer {
  host: string;
  port: number;
  dataDir: string;
  process: ChildProcess;
  /** The argv that promotes this server when it is a standby (pg_ctl promote, waiting for it). */
  promoteCommand: string[];
  /** Kills the server and removes its data directory. */
  stop(): Promise<void>;
}

/** max_connections (default 20; a standby needs at least its primary's). */
export interface PgOptions {
  maxConnections?: number;
}

/** initdb + postgres as the `postgres` user inside the host's namespace, listening on all its addresses. */
export async function startPostgres(lab: Lab, host: string, port = 5432, options: PgOptions = {}): Promise<PgServer> {
  const { dataDir } = await initdbCopy('tko-pg-');
  // initdb trusts only loopback; the lab's clients (and standbys' replication) come from the lab's own addresses.
  appendFileSync(path.join(dataDir, 'pg_hba.conf'), 'host all all 198.18.0.0/15 trust\nhost all all fd7a:6b00::/32 trust\nhost replication all 198.18.0.0/15 trust\n');
  return runPostgres(lab, host, dataDir, port, options);
}

/**
 * A streaming replica of `primary` (reachable from `host` at primaryAddress): pg_basebackup -R
 * (standby.signal and primary_conninfo written), then postgres on it, a hot standby (read-only
 * queries). Its promoteCommand makes it a primary.
 */
export async function startPostgresReplica(lab: Lab, host: string, primary: PgServer, primaryAddress: string, port = 5432, options: PgOptions = {}): Promise<PgServer> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'tko-pg-replica-'));
  chownSync(dataDir, Number((await run('id', ['-u', 'postgres'])).stdout), Number((await run('id', ['-g', 'postgres'])).stdout));
  await run('ip', ['netns', 'exec', lab.host(host).ns, 'runuser', '-u', 'postgres', '--', path.join(binDir(), 'pg_basebackup'),
    '-h', primaryAddress, '-p', String(primary.port), '-U', 'postgres', '-D', dataDir, '-R', '-X', 'stream', '--no-sync']);
  return runPostgres(lab, host, dataDir, port, options);
}

/** postgres on dataDir as the postgres user in the host's namespace, waited for (pg_isready). */
async function runPostgres(lab: Lab, host: string, dataDir: string, port: number, options: PgOptions): Promise<PgServer> {
  const bin = binDir();
  const ns = lab.host(host).ns;
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, 'runuser', '-u', 'postgres', '--', path.join(bin, 'postgres'), '-D', dataDir, '-p', String(port),
      '-k', dataDir, '-c', 'listen_addresses=*', '-c', 'fsync=off', '-c', 'shared_buffers=16MB', '-c', `max_connections=${options.maxConnections ?? 20}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await run('ip', ['netns', 'exec', ns, path.join(bin, 'pg_isready'), '-q', '-h', '127.0.0.1', '-p', String(port)]);
      break;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        rmSync(dataDir, { recursive: true, force: true });
        throw new Error(`PostgreSQL did not start in ${host}: ${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    host,
    port,
    dataDir,
    process: child,
    promoteCommand: ['runuser', '-u', 'postgres', '--', path.join(bin, 'pg_ctl'), 'promote', '-w', '-t', '10', '-D', dataDir],
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited(child);
      // Backends outlive a SIGKILLed postmaster briefly; the lab's destroy() kills the rest.
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
