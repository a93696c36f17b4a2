// TCP_REPAIR dump and restore on the real kernel, one host (loopback): a connection with bytes
// in flight both ways is frozen, dumped, closed (silently: it is in repair mode), rebuilt on a new
// socket, adopted as a net.Socket, and the client sees one unbroken stream each way with no RST.
// Then the errors: what cannot be dumped, where a state cannot be restored, a nonsense state.
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { openSync, closeSync } from 'node:fs';
import net from 'node:net';
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { native, TCP_RST, type ParsedSegment } from '../../src/native.js';
import { FlowTracker } from '../../src/net/flow-tracker.js';
import { adoptSocket } from '../../src/net/adopt-socket.js';
import { dumpConnection, restoreConnection, restoreConnections, tcpInfo } from '../../src/net/tcp-repair.js';
import { TcpRepairStateError, parseTcpRepairState, serializeTcpRepairState } from '../../src/net/tcp-repair-state.js';
import { seqAdd } from '../../src/net/seq.js';
import { fdOf, openFdCount } from './socket-fixtures.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Collects every byte a socket delivers, from now on. */
function collect(sock: net.Socket): { bytes: () => Buffer; length: () => number } {
  const parts: Buffer[] = [];
  let n = 0;
  sock.on('data', (d: Buffer) => {
    parts.push(d);
    n += d.length;
  });
  return { bytes: () => Buffer.concat(parts), length: () => n };
}

async function until(cond: () => boolean, ms: number, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Blocks the connection's segments on loopback (both ways) until the returned function runs: a
 * dump must see a quiet connection (CRIU locks the network the same way before it dumps), or an
 * ACK arriving between its reads makes the queues' sequence numbers and contents disagree.
 */
async function lockPort(port: number): Promise<() => Promise<void>> {
  const table = `tko_repair_lock_${port}`;
  const nft = (script: string) => new Promise<void>((resolve, reject) => {
    const p = spawn('nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += String(d)));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`nft: ${err}`))));
    p.stdin.end(script);
  });
  await nft(`table inet ${table} {\n chain in { type filter hook input priority -400; tcp sport ${port} drop; tcp dport ${port} drop; }\n chain out { type filter hook output priority -400; tcp sport ${port} drop; tcp dport ${port} drop; }\n}\n`);
  let unlocked = false;
  const unlock = async () => {
    if (unlocked) return;
    unlocked = true;
    await nft(`delete table inet ${table}\n`);
  };
  cleanups.push(unlock);
  return unlock;
}

/** `ss`'s line for the loopback connection from local port `port` (its state first). */
/**
 * The state of the socket from local port `port` to `peerPort` (both: a client port the kernel
 * handed out again may still have an earlier connection in TIME-WAIT to another server port).
 */
function ssState(port: number, peerPort: number): string {
  return execFileSync('ss', ['-tanH', 'sport', `= :${port}`, 'and', 'dport', `= :${peerPort}`], { encoding: 'utf8' }).trim();
}

/** Every RST on loopback to or from `port` from now on (the capture closed after the test). */
function watchRsts(port: number): ParsedSegment[] {
  const rsts: ParsedSegment[] = [];
  const tracker = new FlowTracker({ interface: 'lo', ports: [port] });
  tracker.start();
  tracker.onSegments((segs) => rsts.push(...segs.filter((s) => s.flags & TCP_RST)));
  cleanups.push(() => tracker.close());
  return rsts;
}

/** A listener and one connection; the server side is not read (pauseOnConnect). */
async function pausedPair() {
  const server = net.createServer({ pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  client.pause(); // the client reads nothing either: its window fills
  const [srv] = await accepted;
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())), () => client.destroy(), () => srv.destroy());
  return { server, port, client, srv };
}

describe('same host: dump, close silently, restore, adopt', () => {
  it('keeps both byte streams whole (unread bytes in the receive queue, unacked and unsent bytes in the send queue), no RST', async () => {
    const { port, client, srv } = await pausedPair();
    const rsts = watchRsts(port);
    const clientErrors: Error[] = [];
    client.on('error', (e) => clientErrors.push(e));
    let clientEnded = false;
    client.on('end', () => (clientEnded = true));

    // Client -> server: bytes the server's application never reads (they stay in its receive queue).
    const c1 = randomBytes(40_000);
    client.write(c1);
    const sfd = fdOf(srv);
    await until(() => tcpInfo(sfd).bytesReceived >= c1.length, 5000, 'the server kernel to take c1');
    // Server -> client: as much as the kernel takes; the paused client's window closes, so part
    // of it is unacknowledged and part never sent.
    const s1parts: Buffer[] = [];
    for (let i = 0; i < 400; i++) {
      const chunk = randomBytes(65536);
      let n: number;
      try {
        n = native.sendOnFd(sfd, chunk, false);
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('EAGAIN');
        break;
      }
      s1parts.push(chunk.subarray(0, n));
      if (n < chunk.length) break;
    }
    const s1 = Buffer.concat(s1parts);

    const unlock = await lockPort(port);
    await new Promise((r) => setTimeout(r, 50)); // segments already on their way land (or are dropped)
    const infoBefore = tcpInfo(sfd);
    const state = dumpConnection(sfd, { leaveInRepair: true });
    expect(state.recv.queue.equals(c1)).toBe(true);
    expect(state.send.queue.length).toBeGreaterThan(0);
    expect(state.send.unsent).toBeGreaterThan(0);
    expect(state.send.queue.equals(s1.subarray(s1.length - state.send.queue.length))).toBe(true);
    expect(state.options).toMatchObject({ sack: true, timestamps: true });
    expect(state.options.windowScale).not.toBeNull();
    // The state survives its wire form.
    const wire = JSON.parse(JSON.stringify(serializeTcpRepairState(state))) as unknown;
    const travelled = parseTcpRepairState(wire);
    // (Compared in wire form: a deep toEqual over megabytes of Buffer takes minutes.)
    expect(serializeTcpRepairState(travelled)).toEqual(wire);

    srv.destroy(); // closes the fd in repair mode: no FIN, no RST
    const restoredConn = restoreConnection(travelled);
    expect(restoredConn.durationUs).toBeGreaterThan(0);
    const infoAfter = tcpInfo(restoredConn.fd);
    expect(infoAfter).toMatchObject({ state: 1, options: infoBefore.options, sndWscale: infoBefore.sndWscale, rcvWscale: infoBefore.rcvWscale });
    // Segments as large as before (the MSS is not the 536-byte default), up to TCP_MAXSEG's 32767.
    expect(infoAfter.sndMss).toBe(Math.min(infoBefore.sndMss, 32767 - 12));

    await unlock(); // the restored socket is in place: the client's segments reach it
    const adopted = adoptSocket(restoredConn);
    cleanups.push(() => adopted.destroy());
    const serverGot = collect(adopted);
    const clientGot = collect(client);
    client.resume();
    const c2 = randomBytes(300_000);
    const s2 = randomBytes(500_000);
    client.write(c2);
    adopted.write(s2);
    const wantClient = Buffer.concat([s1, s2]);
    const wantServer = Buffer.concat([c1, c2]);
    await until(() => clientGot.length() >= wantClient.length && serverGot.length() >= wantServer.length, 10_000,
      () => `streams to complete: client ${clientGot.length()}/${wantClient.length}, server ${serverGot.length()}/${wantServer.length}`);
    expect(clientGot.length()).toBe(wantClient.length);
    expect(sha(clientGot.bytes())).toBe(sha(wantClient));
    expect(sha(serverGot.bytes())).toBe(sha(wantServer));
    expect(clientErrors).toEqual([]);
    expect(clientEnded).toBe(false);
    await new Promise((r) => setTimeout(r, 20)); // the capture hands segments over every 2 ms
    expect(rsts).toEqual([]);
  }, 30_000);

  // RCV.NXT past the FIN (as a plan with clientEnded makes it): the client's FIN is taken as
  // acknowledged and it reaches TIME-WAIT; not counted (the control), it stays in CLOSING,
  // sending its FIN again.
  it.for([
    ['counts its FIN', 1, 'TIME-WAIT'],
    ['does not count its FIN (the control)', 0, 'CLOSING'],
  ] as const)('a client that had half-closed, RCV.NXT %s, the read side shut: the server reads the request and end-of-file, answers and closes; the client ends, no RST, %s', { timeout: 20_000 }, async ([, finCount, finalState]) => {
    const { port, client, srv } = await pausedPair();
    const rsts = watchRsts(port);
    const clientErrors: Error[] = [];
    client.on('error', (e) => clientErrors.push(e));
    const clientGot = collect(client);
    const clientPort = client.localPort!;
    let clientEnded = false;
    client.on('end', () => (clientEnded = true));
    client.resume();
    client.write('REQUEST\n');
    const sfd = fdOf(srv);
    await until(() => tcpInfo(sfd).bytesReceived >= 8, 5000, 'the server kernel to take the request');

    const unlock = await lockPort(port);
    const dumped = dumpConnection(sfd, { leaveInRepair: true });
    expect(dumped.recv.queue.toString()).toBe('REQUEST\n');
    srv.destroy(); // silently (repair mode)
    // The client's FIN never reaches the restored socket (dropped on input, so the client's
    // stack counts it as sent; an output drop would fail the send and leave SND.NXT before it):
    // the socket can only know of it from its state, as a continued one does when the dead
    // server had acknowledged it.
    const finTable = `tko_repair_fin_${port}`;
    execFileSync('nft', ['-f', '-'], { input: `table inet ${finTable} {\n chain in { type filter hook input priority -500; tcp dport ${port} tcp flags & fin == fin drop; }\n}\n` });
    cleanups.push(() => execFileSync('nft', ['delete', 'table', 'inet', finTable]));
    await unlock();
    client.end();
    await new Promise((r) => setTimeout(r, 20));
    // As a takeover plans it (ContinuePlan.clientEnded): the request goes to the new upstream,
    // not into the socket.
    const restoredConn = restoreConnection({ ...dumped, recv: { seq: seqAdd(dumped.recv.seq, dumped.recv.queue.length + finCount), queue: Buffer.alloc(0) } });
    native.shutdownRead(restoredConn.fd);
    const adopted = adoptSocket(restoredConn);
    cleanups.push(() => adopted.destroy());
    adopted.allowHalfOpen = true;
    const serverGot = collect(adopted);
    await once(adopted, 'end'); // the FIN, read after nothing
    expect(serverGot.length()).toBe(0);
    adopted.end('ANSWER\n');
    await until(() => clientEnded, 10_000, () => `the client's end (got ${JSON.stringify(clientGot.bytes().toString())})`);
    expect(clientGot.bytes().toString()).toBe('ANSWER\n');
    expect(clientErrors).toEqual([]);
    await until(() => ssState(clientPort, port).startsWith(finalState), 5000, () => `the client's ${finalState} (ss: ${ssState(clientPort, port)})`);
    await new Promise((r) => setTimeout(r, 20));
    expect(rsts).toEqual([]);
  });

  it('a dump that leaves repair mode lets the connection go on where it was', async () => {
    const { client, srv } = await pausedPair();
    client.resume();
    const got = collect(client);
    srv.write('before ');
    await until(() => got.length() >= 7, 5000, 'before');
    const state = dumpConnection(fdOf(srv), { leaveInRepair: false });
    expect(state.send.queue.length).toBe(0);
    srv.write('after');
    await until(() => got.length() >= 12, 5000, 'after');
    expect(got.bytes().toString()).toBe('before after');
  });
});

describe('errors', () => {
  it('a listening socket: EINVAL; a closed connection (CLOSE_WAIT): ENOTCONN; an unconnected socket: ENOTCONN; not TCP: EOPNOTSUPP / ENOTSOCK', async () => {
    const { server, client, srv } = await pausedPair();
    expect(() => dumpConnection(fdOf(server as unknown as net.Socket), { leaveInRepair: true })).toThrow(
      expect.objectContaining({ code: 'EINVAL', errno: -22, syscall: 'getsockopt', message: expect.stringContaining('LISTEN') }),
    );
    client.end();
    await until(() => tcpInfo(fdOf(srv)).state === 8, 5000, 'CLOSE_WAIT');
    expect(() => dumpConnection(fdOf(srv), { leaveInRepair: true })).toThrow(
      expect.objectContaining({ code: 'ENOTCONN', syscall: 'getsockopt', message: expect.stringContaining('CLOSE_WAIT') }),
    );
    // A socket that was never connected, borrowed from a process that made one (Node makes none).
    const py = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\nprint(s.fileno(), flush=True)\ntime.sleep(30)'], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => py.kill('SIGKILL'));
    const [line] = (await once(py.stdout!, 'data')) as [Buffer];
    const fd = native.borrowFd(py.pid!, Number(line.toString().trim()));
    try {
      expect(() => dumpConnection(fd, { leaveInRepair: true })).toThrow(expect.objectContaining({ code: 'ENOTCONN', message: expect.stringContaining('CLOSE') }));
    } finally {
      native.closeFd(fd);
    }
    const udp = dgram.createSocket('udp4');
    udp.bind(0, '127.0.0.1');
    await once(udp, 'listening');
    cleanups.push(() => udp.close());
    expect(() => dumpConnection((udp as unknown as { _handle: { fd: number } })._handle.fd, { leaveInRepair: true })).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP', syscall: 'getsockopt' }));
    const file = openSync('/proc/self/stat', 'r');
    try {
      expect(() => dumpConnection(file, { leaveInRepair: true })).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
    } finally {
      closeSync(file);
    }
  });

  it('an address that is not local: EADDRNOTAVAIL from bind, restored with IP_TRANSPARENT; nothing leaks', async () => {
    const { client, srv } = await pausedPair();
    client.resume();
    const state = dumpConnection(fdOf(srv), { leaveInRepair: false });
    // 198.18.0.0/15 is the benchmarking range: never on this host's loopback.
    const elsewhere = { ...state, local: { ...state.local, address: '198.18.254.254' } };
    await new Promise((r) => setTimeout(r, 50)); // sockets of earlier tests close through libuv
    const before = openFdCount();
    expect(() => restoreConnection(elsewhere)).toThrow(expect.objectContaining({ code: 'EADDRNOTAVAIL', errno: -99, syscall: 'bind' }));
    expect(openFdCount()).toBe(before);
    const outcomes = await restoreConnections([elsewhere, elsewhere]);
    expect(outcomes.map((o) => o.ok)).toEqual([false, false]);
    expect(outcomes[0]).toMatchObject({ ok: false, error: { code: 'EADDRNOTAVAIL', syscall: 'bind' } });
    expect(openFdCount()).toBe(before);
    const freebound = restoreConnection(elsewhere, { transparent: true });
    expect(tcpInfo(freebound.fd).state).toBe(1);
    native.closeFd(freebound.fd);
  });

  it('a nonsense state is refused by the TS check before any socket exists', async () => {
    const { client, srv } = await pausedPair();
    client.resume();
    const state = dumpConnection(fdOf(srv), { leaveInRepair: false });
    const before = openFdCount();
    const bad = [
      { ...state, send: { ...state.send, unsent: state.send.queue.length + 1 } },
      { ...state, window: { ...state.window, maxWindow: 1, sndWnd: 2 } },
      { ...state, mss: 0 },
      { ...state, recv: { ...state.recv, seq: 2 ** 32 } },
      { ...state, local: { ...state.local, address: '::1' } },
    ];
    for (const s of bad) {
      expect(() => restoreConnection(s)).toThrow(TcpRepairStateError);
      await expect(restoreConnections([state, s])).rejects.toThrow(TcpRepairStateError);
    }
    expect(openFdCount()).toBe(before);
  });
});
