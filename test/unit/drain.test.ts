// The drain of a planned stop: connections on the instance's ports counted until none is left,
// bounded by the drain time; and the count itself against real sockets on loopback.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { countConnections, drain } from '../../src/agent/drain.js';

describe('drain', () => {
  it('waits for the last client, and no longer than the bound', async () => {
    const counts = [2, 1, 0];
    const done = await drain([8080], { timeoutMs: 5000, intervalMs: 10, count: async () => counts.shift()! });
    expect(done).toMatchObject({ ports: [8080], left: 0, timedOut: false });
    expect(counts).toEqual([]);
    const stuck = await drain([8080], { timeoutMs: 80, intervalMs: 10, count: async () => 3 });
    expect(stuck).toMatchObject({ left: 3, timedOut: true });
    expect(stuck.waitedMs).toBeGreaterThanOrEqual(79);
    expect(stuck.waitedMs).toBeLessThan(1000);
    const now = await drain([8080], { timeoutMs: 0, count: async () => 1 });
    expect(now).toMatchObject({ left: 1, timedOut: true });
    expect(await drain([], { timeoutMs: 5000, count: async () => 9 })).toEqual({ ports: [], left: 0, waitedMs: expect.any(Number), timedOut: false });
    const ac = new AbortController();
    const cut = drain([8080], { timeoutMs: 60_000, intervalMs: 1000, count: async () => 2, signal: ac.signal });
    setTimeout(() => ac.abort(), 30);
    const t0 = performance.now();
    expect(await cut).toMatchObject({ left: 2, timedOut: false, aborted: true });
    expect(performance.now() - t0).toBeLessThan(1000); // not the next count, not the bound
  });

  it('counts the established connections on a port (sock_diag), not its listener', async () => {
    const server = net.createServer((c) => c.on('error', () => {}));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      expect(await countConnections([port])).toBe(0);
      const clients = await Promise.all([1, 2].map(() => new Promise<net.Socket>((r) => {
        const c = net.connect(port, '127.0.0.1', () => r(c));
      })));
      await new Promise((r) => setTimeout(r, 20));
      expect(await countConnections([port])).toBe(2);
      const drained = drain([port], { timeoutMs: 5000, intervalMs: 20 });
      for (const c of clients) c.destroy();
      expect(await drained).toMatchObject({ left: 0, timedOut: false });
    } finally {
      server.close();
    }
  });
});
