// A real Redis server (Debian redis-server) inside a lab host, started for a test and stopped
// after it (even on failure: the lab's destroy() kills every process left in its namespaces);
// optionally a replica of another (replicaOf), with a wait for its link.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Lab } from '../../src/lab/lab.js';
import { exited, run } from '../../src/lab/exec.js';

export interface RedisServer {
  host: string;
  port: number;
  process: ChildProcess;
  /** redis-cli against the server, from inside its host. */
  cli(args: string[]): Promise<string>;
  /** `INFO clients` as numbers (connected_clients, blocked_clients, ...). */
  clients(): Promise<Record<string, number>>;
  /** `INFO replication` as text fields (role, master_link_status, master_repl_offset, ...). */
  replication(): Promise<Record<string, string>>;
  /**
   * A replica: waits until its link to the master is up (`master_link_status:up`, the initial
   * sync done). Throws after timeoutMs (default 10000) with the last INFO replication seen.
   */
  waitReplicaUp(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface RedisOptions {
  port?: number;
  maxClients?: number;
  /** Start as a replica of this master (an address a lab host reaches, and its port). */
  replicaOf?: { host: string; port: number };
}

export async function startRedis(lab: Lab, host: string, options: RedisOptions = {}): Promise<RedisServer> {
  const port = options.port ?? 6379;
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-redis-'));
  const ns = lab.host(host).ns;
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, 'redis-server', '--port', String(port), '--bind', '* -::*', '--protected-mode', 'no', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--maxclients', String(options.maxClients ?? 1000), '--daemonize', 'no', '--loglevel', 'warning',
      // A master waits 5 s by default before a diskless full sync, for more replicas to join.
      '--repl-diskless-sync-delay', '0',
      ...(options.replicaOf ? ['--replicaof', options.replicaOf.host, String(options.replicaOf.port)] : [])],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  for (const s of [child.stdout!, child.stderr!]) s.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const cli = async (args: string[]) => (await run('ip', ['netns', 'exec', ns, 'redis-cli', '-p', String(port), ...args])).stdout.trim();
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await cli(['PING'])) === 'PONG') break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`redis-server did not start in ${host} (Debian package redis-server; \`npm test\` installs it): ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const replication = async () => {
    const text = await cli(['INFO', 'replication']);
    return Object.fromEntries(text.split('\n').filter((l) => l.includes(':')).map((l) => l.trim()).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]));
  };
  return {
    host,
    port,
    process: child,
    cli,
    async clients() {
      const text = await cli(['INFO', 'clients']);
      return Object.fromEntries(text.split('\n').filter((l) => l.includes(':')).map((l) => l.trim().split(':')).map(([k, v]) => [k!, Number(v)]));
    },
    replication,
    async waitReplicaUp(timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      let info: Record<string, string> = {};
      for (;;) {
        info = await replication();
        if (info.role === 'slave' && info.master_link_status === 'up') return;
        if (Date.now() > until) throw new Error(`redis replica in ${host}: link to its master not up after ${timeoutMs} ms: ${JSON.stringify(info)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A primary on host `a` and its replica on host `b`, the replica's link up: what the continue and
 * switchover tests start with. stop() stops both (the replica first); a replica that does not
 * come up stops both and throws.
 */
export async function startRedisPair(lab: Lab, options: Pick<RedisOptions, 'maxClients'> = {}): Promise<{ master: RedisServer; replica: RedisServer; stop(): Promise<void> }> {
  const master = await startRedis(lab, 'a', options);
  const replica = await startRedis(lab, 'b', { ...options, replicaOf: { host: lab.host('a').ipv4, port: master.port } }).catch(async (err: unknown) => {
    await master.stop();
    throw err;
  });
  const stop = async () => {
    await replica.stop();
    await master.stop();
  };
  try {
    await replica.waitReplicaUp();
    // Up on the replica's side is not streaming yet: after a full sync, Redis 7 holds the
    // writes for a replica in its output buffer until the replica's first REPLCONF ACK (sent
    // once a second). A primary killed before that takes them along: a test's writes right
    // after the start would never reach the replica. So: a write, and the replica has it.
    await master.cli(['SET', 'takeover-lab-stream', '1']);
    const target = Number((await master.replication()).master_repl_offset);
    for (const until = Date.now() + 10_000; Number((await replica.replication()).slave_repl_offset ?? 0) < target; ) {
      if (Date.now() > until) throw new Error(`redis replica in b: its stream did not reach offset ${target} in 10 s: ${JSON.stringify(await replica.replication())}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { master, replica, stop };
}
