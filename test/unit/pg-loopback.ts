// A real PostgreSQL server on 127.0.0.1 for unit tests (Debian package postgresql): an empty data
// directory (test/pg-template.ts: a copy of the run's one initdb, owned by `postgres`), then
// postgres as that user on the given port, loopback only.
// Logins: `postgres` is trusted; the extra users get the auth method named in `users` (md5,
// scram-sha-256, password) with the given password.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chownSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { initdbCopy, pgBinDir } from '../pg-template.js';

const exec = promisify(execFile);

export interface LoopbackPg {
  port: number;
  dataDir: string;
  /** Runs SQL through psql as the trusted superuser; returns psql's unaligned output. */
  psql(sql: string): Promise<string>;
  /** Kills the server (SIGKILL; its backends follow) and removes its data directory. */
  stop(): Promise<void>;
}

export interface LoopbackUser {
  name: string;
  password: string;
  method: 'md5' | 'scram-sha-256' | 'password';
}

/** Starts the server (20 s bound); throws with its log when it does not come up. */
export async function startLoopbackPg(port: number, users: LoopbackUser[] = []): Promise<LoopbackPg> {
  const bin = pgBinDir();
  // A copy of the run's one initdb (trust auth, superuser postgres, UTF8, no sync).
  const { dataDir, uid, gid } = await initdbCopy('tko-pg-unit-');
  // First match wins: the password users before initdb's trust lines.
  const hba = path.join(dataDir, 'pg_hba.conf');
  const lines = users.map((u) => `host all ${u.name} 127.0.0.1/32 ${u.method}\n`).join('');
  writeFileSync(hba, lines + 'local all all trust\nhost all all 127.0.0.1/32 trust\n');
  chownSync(hba, uid, gid);
  appendFileSync(path.join(dataDir, 'postgresql.conf'), "password_encryption = 'scram-sha-256'\n");
  const child: ChildProcess = spawn(
    'runuser',
    ['-u', 'postgres', '--', path.join(bin, 'postgres'), '-D', dataDir, '-p', String(port), '-k', dataDir,
      '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'shared_buffers=16MB', '-c', 'max_connections=30'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const psql = async (sql: string) =>
    (await exec(path.join(bin, 'psql'), ['-h', dataDir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-AtX', '-v', 'ON_ERROR_STOP=1', '-c', sql], { timeout: 10_000 })).stdout;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exit = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exit;
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await exec(path.join(bin, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port)]);
      break;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`PostgreSQL did not start on 127.0.0.1:${port}: ${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  for (const u of users) {
    // md5 users need an md5 hash stored: the method's verifier must match what is stored.
    const enc = u.method === 'md5' ? 'md5' : 'scram-sha-256';
    await psql(`SET password_encryption = '${enc}'; CREATE USER ${u.name} PASSWORD '${u.password.replace(/'/g, "''")}'`);
  }
  return { port, dataDir, psql, stop };
}
