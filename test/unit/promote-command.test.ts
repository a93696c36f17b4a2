// The promote step of a takeover's `continue` section: a command's outcomes (exit 0, a failure
// with its stderr, a missing program, a hang past its timeout), and the `{ resp }` form against a
// real redis-server replica. The section itself: agent-config.test.ts.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { continueSetup, runPromote } from '../../src/agent/continue-setup.js';
import { parseInfo, respCommand } from '../../src/agent/redis-catch-up.js';
import { freePort } from '../free-port.js';

describe('runPromote', () => {
  it('resolves when the command exits 0', async () => {
    await expect(runPromote(['true'], 5000)).resolves.toBeUndefined();
  });

  it('rejects with the exit code and the end of stderr', async () => {
    await expect(runPromote(['sh', '-c', 'echo first >&2; echo "READONLY no" >&2; exit 3'], 5000)).rejects.toThrow(/"sh -c .*" exited with 3: first \| READONLY no/);
  });

  it('rejects a command that does not exist, and one that hangs past its timeout (killed)', async () => {
    await expect(runPromote(['/nonexistent/promote'], 5000)).rejects.toThrow(/ENOENT/);
    const t0 = performance.now();
    await expect(runPromote(['sleep', '5'], 200)).rejects.toThrow(/did not finish in 200 ms/);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

describe('continueSetup: promote { resp } (one RESP command the agent sends the upstream)', () => {
  const section = (port: number, resp: string[], promoteTimeoutMs = 2000) =>
    continueSetup({ protocol: 'resp', mirror: 'lo', upstream: { host: '127.0.0.1', port }, promote: { resp }, promoteTimeoutMs }, { address: '10.0.0.100', port: 6379 }, { node: 'b', key: Buffer.alloc(32) });

  it('makes a real redis-server replica a primary; an error reply, a refused connection and silence reject, naming the command', async () => {
    const port = await freePort();
    // A replica of a master that is not there: the state of a backup's replica after the death.
    const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--replicaof', '127.0.0.1', '1'], { stdio: 'ignore' });
    try {
      await until(async () => (await respCommand({ host: '127.0.0.1', port }, ['PING']).catch(() => '')) === 'PONG');
      expect(parseInfo(await respCommand({ host: '127.0.0.1', port }, ['INFO', 'replication'])).get('role')).toBe('slave');
      await section(port, ['REPLICAOF', 'NO', 'ONE']).promote!();
      expect(parseInfo(await respCommand({ host: '127.0.0.1', port }, ['INFO', 'replication'])).get('role')).toBe('master');
      await expect(section(port, ['REPLICAOF', 'NO']).promote!()).rejects.toThrow(/REPLICAOF NO on 127\.0\.0\.1:\d+: .*wrong number of arguments/i);
    } finally {
      redis.kill('SIGKILL');
    }
    await expect(section(await freePort(), ['REPLICAOF', 'NO', 'ONE']).promote!()).rejects.toThrow(/ECONNREFUSED/);
    const silent = net.createServer(() => undefined).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    try {
      await expect(section((silent.address() as net.AddressInfo).port, ['REPLICAOF', 'NO', 'ONE'], 300).promote!()).rejects.toThrow(/no reply in 300 ms/);
    } finally {
      silent.close();
    }
  });
});

async function until(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
