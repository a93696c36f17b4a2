// Every native path, success and failure, many times over in one process: the number of open
// fds must come back to where it was (every fd the addon opens is owned by a UniqueFd).
import { runSpawned } from '../../src/monitor/spawned-command.js';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/agent/config.js';
import { native, TCP_ACK, TCP_RST } from '../../src/native.js';
import { FlowTracker } from '../../src/net/flow-tracker.js';
import { SegmentForge, buildSegment } from '../../src/net/forge.js';
import { listTcpSockets } from '../../src/net/sockdiag.js';
import { dumpConnection, restoreConnection, restoreConnections } from '../../src/net/tcp-repair.js';

const openFds = () => readdirSync('/proc/self/fd').length;
const attempt = (fn: () => unknown) => {
  try {
    fn();
  } catch {
    // failures are part of what is exercised
  }
};

describe('no fd leaks', () => {
  it('capture, forge, sock_diag, pidfd, spawned commands, socket ops, netlink and announce', async () => {
    // The announce socket lives for the whole process by design (closing a packet socket waits
    // for an RCU grace period); open it before counting.
    attempt(() => native.announceAddress('lo', '127.0.0.1'));
    const server = net.createServer((s) => s.on('error', () => {}));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const before = openFds();
    const released: Array<Promise<void>> = [];
    for (let i = 0; i < 100; i++) {
      const t = new FlowTracker({ interface: 'lo', ports: [port], ...(i % 2 ? { background: true } : {}) });
      t.start();
      const off = t.onSegments(() => {});
      off();
      t.flows();
      t.close();
      t.close();
      released.push(t.whenReleased());
      const any = new FlowTracker({ interface: 'any', ports: [port], wakeup: 'packet' });
      any.start();
      any.setScope({ ports: [port, port + 1], payloadBytes: 100 });
      any.changedFlows(0);
      any.close();
      released.push(any.whenReleased());
      attempt(() => new FlowTracker({ interface: 'no-such-if0' }));
      const f = new SegmentForge(i % 2 ? 4 : 6);
      f.send({ src: i % 2 ? '127.0.0.1' : '::1', dst: i % 2 ? '127.0.0.1' : '::1', sport: 9, dport: port, seq: i, ack: 0, flags: TCP_RST | TCP_ACK });
      f.close();
      attempt(() => new SegmentForge(4, { interface: 'no-such-if0' }));
      attempt(() => buildSegment({ src: '1.2.3.4', dst: '::1', sport: 1, dport: 2, seq: 0, ack: 0, flags: TCP_ACK }));
      listTcpSockets();
      attempt(() => native.destroySocket({ family: 4, src: '127.0.0.1', sport: 1, dst: '127.0.0.1', dport: 2, cookie: '1' }));
      attempt(() => native.borrowFd(0x3fffff, 0));
      attempt(() => native.borrowFd(process.pid, 9999));
      attempt(() => native.tcpRepairSeq(0));
      attempt(() => native.addAddress('no-such-if0', '198.18.0.1', 24));
      attempt(() => native.removeAddress('lo', '198.18.255.254', 32));
      native.addressEntries('lo', i % 2 ? '127.0.0.1' : '::1');
      attempt(() => native.addressEntries('no-such-if0', '::1'));
      attempt(() => native.setAddressLifetime('no-such-if0', '198.18.0.1', 24, 5, 0));
      attempt(() => native.announceAddress('lo', '127.0.0.1'));
      if (i % 10 === 0) {
        await runSpawned('true', []);
        await runSpawned('sh', ['-c', 'exit 1']).catch(() => {});
        await runSpawned('/nonexistent/probe', []).catch(() => {});
      }
    }
    // Capture sockets are closed on libuv workers; poll handles go through uv_close.
    await Promise.all(released);
    await new Promise((r) => setTimeout(r, 50));
    expect(openFds()).toBe(before);
    server.close();
  }, 60_000);

  it('tcp repair: dump (kept frozen or not), restore and batch restore, successes and failures', async () => {
    const server = net.createServer((s) => s.on('error', () => {}));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const fdOfSocket = (s: net.Socket | net.Server) => (s as unknown as { _handle: { fd: number } })._handle.fd;
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const client = net.connect(port, '127.0.0.1');
    client.on('error', () => {});
    await new Promise((r) => client.once('connect', r));
    const srv = await accepted;
    const state = dumpConnection(fdOfSocket(srv), { leaveInRepair: false });
    const elsewhere = { ...state, local: { ...state.local, address: '198.18.254.254' } };
    await new Promise((r) => setTimeout(r, 50));
    const before = openFds();
    for (let i = 0; i < 100; i++) {
      dumpConnection(fdOfSocket(srv), { leaveInRepair: false });
      attempt(() => dumpConnection(fdOfSocket(server), { leaveInRepair: true }));
      attempt(() => dumpConnection(9999, { leaveInRepair: true }));
      attempt(() => restoreConnection(elsewhere));
      attempt(() => restoreConnection({ ...state, mss: 0 }));
      // A restored socket (repair off) is a live copy of the connection: close it at once, in
      // a batch with one that fails.
      const [ok, failed] = await restoreConnections([{ ...elsewhere }, elsewhere], { transparent: i % 2 === 0 });
      for (const o of [ok, failed]) if (o?.ok) native.closeFd(o.fd);
    }
    expect(openFds()).toBe(before);
    client.destroy();
    srv.destroy();
    server.close();
  }, 60_000);

  it('the agent: start, an instance exit, a planned change, stop, many times over', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tko-fd-'));
    const config = (port: number) =>
      validateConfig({
        cluster: 'fd', node: 'a', database: 'd', key: '0123456789abcdef', control: path.join(dir, 'a.sock'),
        heartbeat: { links: [{ id: 0, address: '127.0.0.1', port }] }, notify: { host: '127.0.0.1', port: 0 },
        instances: [{ name: 'i1', node: 'a', command: ['sleep', '600'], restart: { maxFailures: 5, windowMs: 60_000, backoffMs: 0 } }],
        services: [{ name: 's', members: ['i1'] }],
      });
    const cycle = async (i: number) => {
      const agent = await Agent.create(config(30_000 + i));
      const published: string[] = [];
      agent.on('published', (e) => published.push(`${e.type}:${e.status}`));
      await agent.start();
      while (!published.includes('service_member:UP')) await new Promise((r) => setTimeout(r, 5));
      process.kill(agent.status().instances[0]!.pid!, 'SIGKILL');
      while (published.filter((p) => p === 'instance:UP').length < 2) await new Promise((r) => setTimeout(r, 5));
      await agent.serviceChange('s', 'stop');
      await agent.stop();
    };
    try {
      await cycle(0); // first use loads modules and the addon
      const before = openFds();
      for (let i = 1; i <= 15; i++) await cycle(i);
      await new Promise((r) => setTimeout(r, 50));
      expect(openFds()).toBe(before);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
