// The out-of-band endpoint and subscribe(), on loopback: several agents, duplicates across them
// dropped, the survivors' events still arriving when one agent is gone, filters, and a
// subscriber that stops reading is cut off without ever blocking the agent.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { LISTEN_BUSY_MS, NotificationServer } from '../../src/events/notification-server.js';
import { parseFan } from '../../src/events/fan-line.js';
import { subscribe } from '../../src/events/subscribe.js';
import type { ServiceEvent } from '../../src/events/service-event.js';

const servers: NotificationServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function agent(maxBufferedBytes?: number) {
  const s = new NotificationServer({ host: '127.0.0.1', port: 0, ...(maxBufferedBytes ? { maxBufferedBytes } : {}) });
  servers.push(s);
  return { server: s, port: await s.listen() };
}
const nodeDown = (node: string, incarnation: number): ServiceEvent => ({ type: 'node', status: 'DOWN', reason: 'failure', incarnation, timestamp: new Date().toISOString(), node });
async function until(cond: () => boolean, ms = 3000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('notification endpoint and subscribe()', () => {
  it('events from several agents arrive once each, also after one agent is gone; filters apply', async () => {
    const a = await agent();
    const b = await agent();
    const ac = new AbortController();
    const got: ServiceEvent[] = [];
    const reading = (async () => {
      for await (const e of subscribe({ agents: [{ host: '127.0.0.1', port: a.port }, { host: '127.0.0.1', port: b.port }], filter: { node: 'node1' }, signal: ac.signal })) got.push(e);
    })();
    await until(() => a.server.subscriberCount === 1 && b.server.subscriberCount === 1);
    const sentAt = performance.now();
    a.server.publish(nodeDown('node1', 3));
    b.server.publish(nodeDown('node1', 3)); // the same change, from the other survivor
    await until(() => got.length === 1);
    expect(performance.now() - sentAt).toBeLessThan(250); // a sanity bound on loopback, not the goal
    a.server.publish(nodeDown('node2', 1)); // filtered out
    await a.server.close();
    servers.splice(servers.indexOf(a.server), 1);
    b.server.publish(nodeDown('node1', 4));
    await until(() => got.length === 2);
    await new Promise((r) => setTimeout(r, 50));
    expect(got.map((e) => [e.node, e.incarnation])).toEqual([['node1', 3], ['node1', 4]]);
    ac.abort();
    await reading;
  });

  it('an agent that is down from the start is retried without harm; it is heard once it comes up', async () => {
    const b = await agent();
    const spare = net.createServer();
    await new Promise<void>((r) => spare.listen(0, '127.0.0.1', () => r()));
    const downPort = (spare.address() as net.AddressInfo).port;
    await new Promise<void>((r) => spare.close(() => r())); // nothing listens there now
    const ac = new AbortController();
    const got: ServiceEvent[] = [];
    const reading = (async () => {
      for await (const e of subscribe({ agents: [{ host: '127.0.0.1', port: downPort }, { host: '127.0.0.1', port: b.port }], signal: ac.signal, retryMs: 50 })) got.push(e);
    })();
    await until(() => b.server.subscriberCount === 1);
    await new Promise((r) => setTimeout(r, 200)); // several refused connects
    b.server.publish(nodeDown('node1', 1));
    await until(() => got.length === 1);
    const late = new NotificationServer({ host: '127.0.0.1', port: downPort });
    servers.push(late);
    await late.listen();
    await until(() => late.subscriberCount === 1);
    late.publish(nodeDown('node1', 2));
    await until(() => got.length === 2);
    ac.abort();
    await reading;
  });

  it('a subscriber may ask for FAN text lines (ours or Oracle\'s); one that floods the agent with input is dropped', async () => {
    const { server, port } = await agent();
    const s = net.connect({ host: '127.0.0.1', port });
    let text = '';
    s.on('data', (d) => (text += d));
    await until(() => server.subscriberCount === 1);
    s.write('{"format":"fan"}\n');
    await new Promise((r) => setTimeout(r, 50));
    server.publish(nodeDown('node1', 5));
    await until(() => text.includes('\n'));
    expect(text).toMatch(/^NODE VERSION=1\.0 host=node1 status=down reason=failure incarn=5 timestamp=\S+\n$/);
    // Oracle's form on request: the documented line, read back by parseFan.
    s.write('{"format":"oracle"}\n');
    await new Promise((r) => setTimeout(r, 50));
    text = '';
    server.publish({ ...nodeDown('node1', 6), timestamp: '2026-11-22T10:00:00.000Z' });
    await until(() => text.includes('\n'));
    expect(text).toBe('NODE VERSION=1.0 host=node1 incarn=6 status=nodedown reason=FAILURE timestamp=2026-11-22 10:00:00 timezone=+00:00\n');
    expect(parseFan(text)).toEqual({ ...nodeDown('node1', 6), timestamp: '2026-11-22T10:00:00.000Z' });
    const dropped = new Promise((r) => server.once('dropped', r));
    s.write(Buffer.alloc(70 * 1024, 'x'));
    expect(await dropped).toMatchObject({ reason: 'subscriber sent more than 64 KiB' });
    expect(server.subscriberCount).toBe(0);
    s.destroy();
  });

  it('a subscriber that stops reading is disconnected with a reason and never blocks the agent', async () => {
    const { server, port } = await agent(64 * 1024);
    const slow = net.connect(port, '127.0.0.1');
    await new Promise((r) => slow.once('connect', r));
    slow.pause(); // reads nothing from now on
    await until(() => server.subscriberCount === 1);
    const dropped = new Promise<{ reason: string }>((r) => server.once('dropped', r));
    const started = performance.now();
    let i = 0;
    for (; i < 50_000 && server.subscriberCount > 0; i++) server.publish(nodeDown(`node-${i}`, i));
    const elapsed = performance.now() - started;
    expect((await dropped).reason).toMatch(/fell more than 65536 bytes behind/);
    expect(server.droppedSubscribers).toBe(1);
    expect(i).toBeLessThan(50_000);
    expect(elapsed).toBeLessThan(5000);
    slow.destroy();
  });
});

describe('listen on a port in use', () => {
  const holdPort = async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    return { holder, port: (holder.address() as net.AddressInfo).port };
  };

  it('tries again while it is held for a moment, and listens once it is free', async () => {
    const { holder, port } = await holdPort();
    const s = new NotificationServer({ host: '127.0.0.1', port });
    servers.push(s);
    const t0 = performance.now();
    setTimeout(() => holder.close(), 200);
    expect(await s.listen()).toBe(port);
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(190);
    expect(ms).toBeLessThan(LISTEN_BUSY_MS);
  });

  it('fails with EADDRINUSE once the port stayed held for LISTEN_BUSY_MS', async () => {
    const { holder, port } = await holdPort();
    try {
      const s = new NotificationServer({ host: '127.0.0.1', port });
      const t0 = performance.now();
      await expect(s.listen()).rejects.toMatchObject({ code: 'EADDRINUSE', syscall: 'listen' });
      expect(performance.now() - t0).toBeGreaterThanOrEqual(LISTEN_BUSY_MS - 5);
    } finally {
      holder.close();
    }
  });
});
