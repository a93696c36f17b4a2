// greetingProbe (src/reliable/greeting-probe.ts), MirrorWatch's third path: true only when a
// ReliableServer's process greets, false for a refused port, a listener that never answers (as a
// stopped process's backlog), another node, within its timeout.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { greetingProbe } from '../../src/reliable/greeting-probe.js';
import { ReliableServer } from '../../src/reliable/reliable-server.js';
import { ReliableState } from '../../src/reliable/reliable-state.js';
import { orderMatchingApp } from '../../docs/examples/order-matching/order-book.js';
import { freePort } from '../free-port.js';

const open: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c();
});

describe('greetingProbe', () => {
  it('true for a greeting server (of the node asked for), false otherwise, within the timeout', async () => {
    let appended = 0;
    const server = await ReliableServer.listen({ log: { append: async () => appended++ }, state: new ReliableState(orderMatchingApp), host: '127.0.0.1', port: 0, node: 'node-a', incarnation: 7n });
    open.push(() => server.close());
    expect(await greetingProbe({ host: '127.0.0.1', port: server.port })()).toBe(true);
    expect(await greetingProbe({ host: '127.0.0.1', port: server.port, node: 'node-a' })()).toBe(true);
    expect(await greetingProbe({ host: '127.0.0.1', port: server.port, node: 'node-b' })()).toBe(false);
    expect(appended).toBe(0); // nothing applied or logged

    // A listener that accepts and says nothing (a stopped process's backlog completes the handshake).
    const mute = net.createServer(() => {});
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', () => r()));
    const sockets = new Set<net.Socket>();
    mute.on('connection', (s) => sockets.add(s));
    open.push(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => mute.close(() => r()));
    });
    const t0 = performance.now();
    expect(await greetingProbe({ host: '127.0.0.1', port: (mute.address() as net.AddressInfo).port, timeoutMs: 150 })()).toBe(false);
    const waited = performance.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(140);
    expect(waited).toBeLessThan(1000);

    // Nothing listening: refused at once.
    expect(await greetingProbe({ host: '127.0.0.1', port: await freePort(), timeoutMs: 2000 })()).toBe(false);
  });
});
