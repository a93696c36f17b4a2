// A real Redis server (Debian redis-server) inside a lab host, started for a test and stopped
// after it (even on failure: the lab's destroy() kills every process left in its namespaces).
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
  stop(): Promise<void>;
}

export async function startRedis(lab: Lab, host: string, options: { port?: number; maxClients?: number } = {}): Promise<RedisServer> {
  const port = options.port ?? 6379;
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-redis-'));
  const ns = lab.host(host).ns;
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, 'redis-server', '--port', String(port), '--bind', '* -::*', '--protected-mode', 'no', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--maxclients', String(options.maxClients ?? 1000), '--daemonize', 'no', '--loglevel', 'warning'],
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
  return {
    host,
    port,
    process: child,
    cli,
    async clients() {
      const text = await cli(['INFO', 'clients']);
      return Object.fromEntries(text.split('\n').filter((l) => l.includes(':')).map((l) => l.trim().split(':')).map(([k, v]) => [k!, Number(v)]));
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
