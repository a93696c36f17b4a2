// Hang detection: a real server process is stopped (SIGSTOP); its protocol probe misses, the
// monitor declares it down, the failure plan closes its peers, and SIGCONT brings it back up.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { execProbe, HealthMonitor, requestProbe, tcpConnectProbe, type HealthEvent } from '../../src/monitor/health-probe.js';
import { closePeers } from '../../src/net/close-peers.js';

const SERVER = `
const net = require('net');
const s = net.createServer((c) => { c.on('data', (d) => { if (String(d).includes('PING')) c.write('PONG'); }); c.on('error', () => {}); });
s.listen(0, '127.0.0.1', () => console.log(s.address().port));`;

let child: ChildProcess | undefined;
afterEach(() => {
  if (child && child.exitCode === null) {
    child.kill('SIGCONT');
    child.kill('SIGKILL');
  }
  child = undefined;
});

function next(m: HealthMonitor, timeoutMs = 5000): Promise<HealthEvent> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no health event')), timeoutMs);
    m.once('event', (e) => {
      clearTimeout(t);
      resolve(e);
    });
  });
}

describe('HealthMonitor', () => {
  it('a SIGSTOPped server: probe misses, down, its peers closed; SIGCONT: up again', async () => {
    child = spawn(process.execPath, ['-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    const port = Number(await new Promise<string>((r) => child!.stdout!.once('data', (d) => r(String(d)))));
    const client = net.connect(port, '127.0.0.1');
    await new Promise((r) => client.once('connect', r));
    const clientError = new Promise<string>((r) => client.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? '')));
    const monitor = new HealthMonitor({ probe: requestProbe('127.0.0.1', port, Buffer.from('PING'), (b) => b.toString() === 'PONG'), intervalMs: 100, timeoutMs: 100, misses: 3 });
    const events: HealthEvent[] = [];
    monitor.on('event', (e) => events.push(e));
    monitor.start();
    await new Promise((r) => setTimeout(r, 350));
    expect(events).toEqual([]); // healthy: nothing to say

    const stoppedAt = performance.timeOrigin + performance.now();
    child.kill('SIGSTOP');
    const down = await next(monitor);
    expect(down).toMatchObject({ kind: 'down', misses: 3, lastError: expect.stringMatching(/timed out/) });
    expect(down.at - stoppedAt).toBeLessThan(3 * 100 + 100 + 250); // 3 misses of (interval|timeout) + slack
    // The failure plan for a hung local process: close its peers through its own sockets.
    const report = await closePeers({ pid: child.pid! }, { method: 'rst' });
    expect(report.results.some((r) => r.outcome === 'reset')).toBe(true);
    expect(await clientError).toBe('ECONNRESET');

    child.kill('SIGCONT');
    expect(await next(monitor)).toMatchObject({ kind: 'up' });
    monitor.stop();
  });

  it('tcp connect and executable probes; bad options are refused', async () => {
    const closedPort = await new Promise<number>((r) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => r(p));
      });
    });
    const tcp = new HealthMonitor({ probe: tcpConnectProbe('127.0.0.1', closedPort), intervalMs: 20, timeoutMs: 50, misses: 2 });
    tcp.start();
    expect(await next(tcp)).toMatchObject({ kind: 'down', lastError: expect.stringMatching(/ECONNREFUSED/) });
    tcp.stop();
    const failing = new HealthMonitor({ probe: execProbe('false'), intervalMs: 20, timeoutMs: 1000, misses: 2 });
    failing.start();
    expect(await next(failing)).toMatchObject({ kind: 'down', misses: 2 });
    failing.stop();
    const fine = new HealthMonitor({ probe: execProbe('true'), intervalMs: 20, timeoutMs: 1000, misses: 1 });
    const seen: HealthEvent[] = [];
    fine.on('event', (e) => seen.push(e));
    fine.start();
    await new Promise((r) => setTimeout(r, 200));
    fine.stop();
    expect(seen).toEqual([]);
    expect(() => new HealthMonitor({ probe: execProbe('true'), intervalMs: 0, timeoutMs: 1, misses: 1 })).toThrow(RangeError);
  });

  it('startDown: a process just started is up at its first passing probe; failures before it say nothing', async () => {
    let calls = 0;
    const m = new HealthMonitor({ probe: async () => { if (++calls <= 4) throw new Error(`not listening yet (${calls})`); }, intervalMs: 10, timeoutMs: 100, misses: 2, startDown: true });
    const seen: HealthEvent[] = [];
    m.on('event', (e) => seen.push(e));
    m.start();
    await new Promise((r) => setTimeout(r, 30));
    expect(m.lastError).toMatch(/not listening yet/);
    const up = await next(m);
    m.stop();
    expect(up.kind).toBe('up');
    expect(seen).toEqual([up]); // four failures (two misses' worth, twice) and no down
    expect(calls).toBe(5);
    expect(m.lastError).toBeUndefined();
  });
});
