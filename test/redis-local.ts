// A real redis-server (Debian package redis-server) on loopback for unit tests: started on a free
// port in a temporary directory, optionally as a replica; stopped (SIGKILL, the directory
// removed) by stop(), which tests call in afterAll/finally so a failed test leaves nothing;
// restart() brings it back on the same port (no persistence: a new replid, offset 0).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseInfo } from '../src/agent/redis-catch-up.js';
import { RespFramer } from '../src/net/resp-framer.js';
import { encodeCommand } from '../src/net/shadow/resp-continue.js';
import { freePort } from './free-port.js';

export interface LocalRedis {
  host: string;
  port: number;
  /** One command on a fresh connection: the reply's text (simple, integer or bulk; null for a null bulk). Rejects on an error reply or after 5 s. */
  command(args: string[]): Promise<string | null>;
  /** INFO <section> as fields. */
  info(section: string): Promise<Map<string, string>>;
  /** A replica: resolves once its link is up, rejects after timeoutMs with the last INFO replication. */
  waitLinkUp(timeoutMs?: number): Promise<void>;
  /** SIGKILL, then the same server again on the same port (a replica stays one). */
  restart(): Promise<void>;
  /** SIGKILL; the directory removed. Idempotent. */
  stop(): Promise<void>;
}

export interface LocalRedisOptions {
  replicaOf?: { host: string; port: number };
  /** Extra redis-server arguments (e.g. ['--repl-backlog-size', '16kb']). */
  args?: string[];
}

/** Sends one command on a fresh connection and reads one whole reply. */
export async function redisCommand(port: number, args: string[], timeoutMs = 5000): Promise<string | null> {
  const socket = net.connect(port, '127.0.0.1');
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const framer = new RespFramer();
      const chunks: Buffer[] = [];
      const timer = setTimeout(() => reject(new Error(`${args.join(' ')} on port ${port}: no reply in ${timeoutMs} ms`)), timeoutMs);
      socket.on('error', (e) => (clearTimeout(timer), reject(e)));
      socket.on('data', (d: Buffer) => {
        chunks.push(d);
        if (framer.push(d).length > 0) {
          clearTimeout(timer);
          resolve(Buffer.concat(chunks));
        }
      });
      socket.write(encodeCommand(args));
    });
    const eol = reply.indexOf('\r\n');
    const head = reply.subarray(0, eol).toString('latin1');
    if (head[0] === '-') throw new Error(`${args.join(' ')} on port ${port}: ${head.slice(1)}`);
    if (head[0] === '$') return head === '$-1' ? null : reply.subarray(eol + 2, reply.length - 2).toString('latin1');
    return head.slice(1);
  } finally {
    socket.destroy();
  }
}

export async function startLocalRedis(options: LocalRedisOptions = {}): Promise<LocalRedis> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-redis-'));
  let child: ChildProcess | undefined;
  let log = '';
  const launch = async () => {
    const p = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning',
        // A primary waits 5 s by default before a diskless full sync, for more replicas to join.
        '--repl-diskless-sync-delay', '0',
        ...(options.replicaOf ? ['--replicaof', options.replicaOf.host, String(options.replicaOf.port)] : []), ...(options.args ?? [])],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = p;
    for (const s of [p.stdout!, p.stderr!]) s.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        if ((await redisCommand(port, ['PING'], 1000)) === 'PONG') return;
      } catch {
        // not listening yet
      }
      if (p.exitCode !== null || Date.now() > deadline) {
        await kill();
        throw new Error(`redis-server did not start on port ${port} (Debian package redis-server): ${log}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const kill = async () => {
    const p = child;
    child = undefined;
    if (p && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
    }
  };
  try {
    await launch();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const info = async (section: string) => parseInfo((await redisCommand(port, ['INFO', section])) ?? '');
  return {
    host: '127.0.0.1',
    port,
    command: (args) => redisCommand(port, args),
    info,
    async waitLinkUp(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const r = await info('replication');
        if (r.get('master_link_status') === 'up') return;
        if (Date.now() > deadline) throw new Error(`replica on ${port}: link not up in ${timeoutMs} ms: ${JSON.stringify(Object.fromEntries(r))}`);
        await new Promise((res) => setTimeout(res, 20));
      }
    },
    async restart() {
      await kill();
      await launch();
    },
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
