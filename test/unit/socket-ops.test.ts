// sendOnFd / shutdownWrite / closeFd / tcpRepairSeq on real sockets.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { native, type NativeError } from '../../src/native.js';
import { caught, fdOf, LineChild, openFdCount, readBytes, tcpPair, type TcpPair } from './socket-fixtures.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function pair(): Promise<TcpPair> {
  const p = await tcpPair('127.0.0.1');
  cleanups.push(() => p.close());
  return p;
}


const u32 = (n: number) => n >>> 0;

describe('tcpRepairSeq', () => {
  it('reads write_seq and rcv_nxt that match the data exchanged, and the socket keeps working', async () => {
    const { client, accepted } = await pair();
    const c0 = native.tcpRepairSeq(fdOf(client));
    const s0 = native.tcpRepairSeq(fdOf(accepted));
    // Idle connection: each side's next byte is what the other expects.
    expect(s0.recvSeq).toBe(c0.sendSeq);
    expect(c0.recvSeq).toBe(s0.sendSeq);
    for (const v of [c0.sendSeq, c0.recvSeq]) expect(v).toBe(u32(v));

    const n = 100_000;
    const received = readBytes(accepted, n);
    client.write(Buffer.alloc(n, 0x61));
    expect((await received).length).toBe(n);
    const c1 = native.tcpRepairSeq(fdOf(client));
    const s1 = native.tcpRepairSeq(fdOf(accepted));
    expect(c1.sendSeq).toBe(u32(c0.sendSeq + n));
    expect(c1.recvSeq).toBe(c0.recvSeq);
    expect(s1.recvSeq).toBe(c1.sendSeq);
    expect(s1.sendSeq).toBe(s0.sendSeq);

    // After the peeks both directions still carry data.
    const there = readBytes(accepted, 5);
    client.write('after');
    expect(String(await there)).toBe('after');
    const back = readBytes(client, 4);
    accepted.write('back');
    expect(String(await back)).toBe('back');
    expect(native.tcpRepairSeq(fdOf(accepted)).sendSeq).toBe(u32(s0.sendSeq + 4));
  });

  it("puts the socket's SO_REUSEADDR back (repair mode overwrites it)", async () => {
    const server = net.createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    // The python peer reports its own SO_REUSEADDR once it receives a byte.
    const py = LineChild.spawn('python3', [
      '-c',
      `import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.connect(('127.0.0.1', int(sys.argv[1])))
print('fd', s.fileno(), flush=True)
s.recv(1)
print('reuse', s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), flush=True)`,
      String((server.address() as net.AddressInfo).port),
    ]);
    cleanups.push(() => py.kill());
    const pyFd = Number((await py.waitLine(/^fd (\d+)/))[1]);
    const [conn] = await accepted;
    cleanups.push(() => void conn.destroy());
    const fd = native.borrowFd(py.pid, pyFd);
    try {
      native.tcpRepairSeq(fd);
    } finally {
      native.closeFd(fd);
    }
    conn.write('x');
    expect((await py.waitLine(/^reuse (\d+)/))[1]).toBe('1');
  });

  it('fails on a listener (EPERM) and on a non-socket (ENOTSOCK)', async () => {
    const { server } = await pair();
    expect(caught(() => native.tcpRepairSeq(fdOf(server)))).toMatchObject({
      code: 'EPERM',
      errno: -1,
      syscall: 'setsockopt',
    });
    const fd = openSync('/dev/null', 'r');
    cleanups.push(() => closeSync(fd));
    expect(caught(() => native.tcpRepairSeq(fd))).toMatchObject({ code: 'ENOTSOCK', syscall: 'getsockopt' });
  });
});

describe('sendOnFd / shutdownWrite / closeFd', () => {
  it('sends exactly the bytes of a Uint8Array view (offset respected)', async () => {
    const { client, accepted } = await pair();
    const got = readBytes(accepted, 5);
    const view = Buffer.from('xxhelloyy').subarray(2, 7);
    expect(native.sendOnFd(fdOf(client), view, false)).toBe(5);
    expect(String(await got)).toBe('hello');
  });

  it('shutdownWrite ends the peer stream', async () => {
    const { client, accepted } = await pair();
    accepted.resume();
    const ended = once(accepted, 'end');
    native.shutdownWrite(fdOf(client));
    await ended;
  });

  it('never blocks, even on a blocking socket whose peer does not read', async () => {
    // python3 holds a blocking socket; we borrow it and fill it while nobody reads.
    const server = net.createServer({ pauseOnConnect: true }).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const conns: net.Socket[] = [];
    server.on('connection', (s) => conns.push(s));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    cleanups.push(() => conns.forEach((s) => s.destroy()));
    const port = (server.address() as net.AddressInfo).port;
    const py = LineChild.spawn('python3', [
      '-c',
      `import socket, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
print('fd', s.fileno(), flush=True)
time.sleep(60)`,
      String(port),
    ]);
    cleanups.push(() => py.kill());
    const pyFd = Number((await py.waitLine(/^fd (\d+)/))[1]);
    const fd = native.borrowFd(py.pid, pyFd);
    cleanups.push(() => native.closeFd(fd));

    const chunk = new Uint8Array(64 * 1024);
    let total = 0;
    let err: NativeError | undefined;
    for (let i = 0; i < 10_000 && !err; i++) {
      try {
        total += native.sendOnFd(fd, chunk, false);
      } catch (e) {
        err = e as NativeError;
      }
    }
    expect(err).toMatchObject({ code: 'EAGAIN', syscall: 'send' });
    expect(total).toBeGreaterThan(0);
  });

  it('report errno errors with the syscall name', async () => {
    const fd = openSync('/dev/null', 'r');
    cleanups.push(() => closeSync(fd));
    expect(caught(() => native.sendOnFd(1_000_000, new Uint8Array(1), false))).toMatchObject({
      code: 'EBADF',
      errno: -9,
      syscall: 'send',
    });
    expect(caught(() => native.sendOnFd(fd, new Uint8Array(1), true))).toMatchObject({ code: 'ENOTSOCK', syscall: 'send' });
    expect(caught(() => native.shutdownWrite(fd))).toMatchObject({ code: 'ENOTSOCK', syscall: 'shutdown' });
    expect(caught(() => native.closeFd(1_000_000))).toMatchObject({ code: 'EBADF', syscall: 'close' });
  });

  it('closeFd closes', () => {
    const fd = openSync('/dev/null', 'r');
    const before = openFdCount();
    native.closeFd(fd);
    expect(openFdCount()).toBe(before - 1);
  });

  it('validates arguments', () => {
    const bad: Array<() => unknown> = [
      () => native.sendOnFd(-1, new Uint8Array(1), false),
      () => native.sendOnFd(1.5, new Uint8Array(1), false),
      () => native.sendOnFd(3, 'text' as unknown as Uint8Array, false),
      () => native.sendOnFd(3, new Uint16Array(1) as unknown as Uint8Array, false),
      () => native.sendOnFd(3, new Uint8Array(1), 1 as unknown as boolean),
      () => native.shutdownWrite(-1),
      () => native.closeFd(-1),
      () => native.closeFd(Number.POSITIVE_INFINITY),
      () => native.tcpRepairSeq(-2),
    ];
    for (const f of bad) expect(f, f.toString()).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });
});
