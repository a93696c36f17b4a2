// subscribe() and `takeover events --follow --agents` say when an agent is connected, lost (with
// the reason the agent gave, or the socket's), or cannot be reached: once per change, not once
// per retry. On loopback, with real notification endpoints and the real CLI.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { NotificationServer } from '../../src/events/notification-server.js';
import type { ServiceEvent } from '../../src/events/service-event.js';
import { subscribe, type AgentConnection } from '../../src/events/subscribe.js';
import { startCli } from '../cli-process.js';
import { freePort } from '../free-port.js';

const servers: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function until(cond: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function endpoint(port: number) {
  const s = new NotificationServer({ host: '127.0.0.1', port });
  servers.push(s);
  await s.listen();
  return s;
}

const nodeUp = (incarnation: number): ServiceEvent => ({ type: 'node', status: 'UP', reason: 'boot', incarnation, timestamp: new Date().toISOString(), node: 'n1' });

describe('agent connections', () => {
  it('connected, lost, unreachable once while it is down, connected again', async () => {
    const port = await freePort();
    const changes: AgentConnection[] = [];
    const ac = new AbortController();
    const got: ServiceEvent[] = [];
    const reading = (async () => {
      for await (const e of subscribe({ agents: [{ host: '127.0.0.1', port }], signal: ac.signal, retryMs: 20, onAgent: (c) => changes.push(c) })) got.push(e);
    })();
    // Nothing listens yet: many refused attempts, one report.
    await new Promise((r) => setTimeout(r, 200));
    expect(changes).toEqual([{ agent: `127.0.0.1:${port}`, state: 'unreachable', reason: 'ECONNREFUSED' }]);
    let s = await endpoint(port);
    await until(() => changes.length === 2 && s.subscriberCount === 1);
    expect(changes[1]).toEqual({ agent: `127.0.0.1:${port}`, state: 'connected' });
    s.publish(nodeUp(1));
    await until(() => got.length === 1);
    await s.close();
    servers.splice(0);
    await until(() => changes.length === 3);
    expect(changes[2]).toEqual({ agent: `127.0.0.1:${port}`, state: 'lost', reason: 'closed by the agent' });
    await new Promise((r) => setTimeout(r, 200)); // refused retries: no more reports
    expect(changes).toHaveLength(3);
    s = await endpoint(port);
    await until(() => changes.length === 4);
    expect(changes[3]).toEqual({ agent: `127.0.0.1:${port}`, state: 'connected' });
    s.publish(nodeUp(2));
    await until(() => got.length === 2);
    ac.abort();
    await reading;
    expect(changes).toHaveLength(4); // nothing after the abort
  });

  it('lost with the reason the agent gave when it cut the subscriber off', async () => {
    const fake = net.createServer((sock) => sock.end(`${JSON.stringify({ disconnected: 'subscriber fell more than 1048576 bytes behind' })}\n`));
    servers.push({ close: () => new Promise<void>((r) => fake.close(() => r())) });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
    const port = (fake.address() as net.AddressInfo).port;
    const changes: AgentConnection[] = [];
    const ac = new AbortController();
    const reading = (async () => {
      for await (const _ of subscribe({ agents: [{ host: '127.0.0.1', port }], signal: ac.signal, retryMs: 1000, onAgent: (c) => changes.push(c) }));
    })();
    await until(() => changes.length === 2);
    expect(changes).toEqual([
      { agent: `127.0.0.1:${port}`, state: 'connected' },
      { agent: `127.0.0.1:${port}`, state: 'lost', reason: 'the agent disconnected it: subscriber fell more than 1048576 bytes behind' },
    ]);
    ac.abort();
    await reading;
  });

  it('a callback that throws ends the subscription with its error', async () => {
    const port = await freePort();
    await endpoint(port);
    const iterate = async () => {
      for await (const _ of subscribe({ agents: [{ host: '127.0.0.1', port }], onAgent: () => { throw new Error('callback failed'); } }));
    };
    await expect(iterate()).rejects.toThrow('callback failed');
  });

  it('takeover events --follow --agents: events on stdout, connected and lost agents on stderr', async () => {
    const port = await freePort();
    const s = await endpoint(port);
    const cli = startCli(['events', '--follow', '--agents', `127.0.0.1:${port}`, '--format', 'oracle']);
    let stderr = '';
    cli.child.stderr.on('data', (d) => (stderr += d));
    try {
      await until(() => s.subscriberCount === 1, 15_000);
      await until(() => stderr.includes('\n'));
      expect(stderr).toBe(`takeover: connected to agent 127.0.0.1:${port}\n`);
      s.publish({ ...nodeUp(3), timestamp: '2026-11-22T10:00:00.000Z' });
      await until(() => cli.stdout().includes('\n'));
      expect(cli.stdout()).toBe('NODE VERSION=1.0 host=n1 incarn=3 status=up reason=BOOT timestamp=2026-11-22 10:00:00 timezone=+00:00\n');
      await s.close();
      servers.splice(0);
      await until(() => stderr.split('\n').length === 3);
      expect(stderr.split('\n')[1]).toBe(`takeover: lost agent 127.0.0.1:${port} (closed by the agent); retrying every 500 ms`);
    } finally {
      cli.child.kill('SIGTERM');
    }
    expect((await cli.done).code).toBe(0);
  });

  it('takeover events --format with an unknown format: one line naming the choices, exit 2', async () => {
    const r = await startCli(['events', '--format', 'xml', '--control', '/nonexistent.sock']).done;
    expect([r.code, r.stderr]).toEqual([2, 'takeover: --format must be json, fan, oracle, got "xml"\n']);
  });
});
