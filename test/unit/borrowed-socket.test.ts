// BorrowedSocket: take the accepted socket of a stopped child process and act on its
// connection. The peer is a python3 client, because only it can read urgent data (MSG_OOB).
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { native, type NativeError } from '../../src/native.js';
import { BorrowedSocket } from '../../src/net/borrowed-socket.js';
import { socketsOfPid, TCP_ESTABLISHED } from '../../src/net/sockdiag.js';
import { caught, LineChild, openFdCount, spawnNodeScript } from './socket-fixtures.js';

// Accepts one connection and then does nothing with it (the test stops it anyway).
const SERVER = `
const net = require('net');
const kept = [];
const srv = net.createServer((s) => { kept.push(s); s.pause(); console.log('accepted'); });
srv.listen(0, '127.0.0.1', () => console.log('port ' + srv.address().port));`;

// Prints what arrives: 'OOB <hex>' for urgent data, 'DATA <hex>' for the stream, 'EOF'.
const PEER = `
import select, socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
print('local', s.getsockname()[1], flush=True)
s.setblocking(False)
p = select.poll()
p.register(s, select.POLLIN | select.POLLPRI)
while True:
    for _, ev in p.poll():
        if ev & select.POLLPRI:
            print('OOB', s.recv(1, socket.MSG_OOB).hex(), flush=True)
        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            try:
                d = s.recv(4096)
            except BlockingIOError:
                continue
            if not d:
                print('EOF', flush=True)
                sys.exit(0)
            print('DATA', d.hex(), flush=True)
`;

interface Scene {
  server: LineChild;
  peer: LineChild;
  /** fd number of the accepted socket inside the server process. */
  serverFd: number;
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function scene(): Promise<Scene> {
  const server = spawnNodeScript(SERVER);
  cleanups.push(() => server.kill());
  const port = Number((await server.waitLine(/^port (\d+)/))[1]);
  const peer = LineChild.spawn('python3', ['-c', PEER, String(port)]);
  cleanups.push(() => peer.kill());
  const local = Number((await peer.waitLine(/^local (\d+)/))[1]);
  await server.waitLine(/^accepted/);
  const owned = socketsOfPid(server.pid).filter(
    (o) => o.socket.state === TCP_ESTABLISHED && o.socket.dport === local,
  );
  expect(owned).toHaveLength(1);
  // From here on the owner is frozen, like a hung process: only we can act on its socket.
  server.process.kill('SIGSTOP');
  await waitStopped(server.pid);
  return { server, peer, serverFd: owned[0]!.fd };
}

async function waitStopped(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    // Field 3 of /proc/PID/stat is the state; the comm before it is in parentheses.
    if (/\) T /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`pid ${pid} did not stop`);
}

function borrow(s: Scene): BorrowedSocket {
  const b = BorrowedSocket.borrow(s.server.pid, s.serverFd);
  cleanups.push(() => b.close());
  return b;
}

/** Concatenated DATA payloads up to EOF, as text. */
async function streamUntilEof(peer: LineChild): Promise<string> {
  await peer.waitLine(/^EOF$/);
  return peer.lines
    .filter((l) => l.startsWith('DATA '))
    .map((l) => Buffer.from(l.slice(5), 'hex').toString())
    .join('');
}

describe('BorrowedSocket', () => {
  it('sends an urgent byte the peer reads out of band', async () => {
    const s = await scene();
    const b = borrow(s);
    b.sendUrgent();
    expect((await s.peer.waitLine(/^OOB (\w+)/))[1]).toBe('21');
    b.sendUrgent(0x07);
    await s.peer.waitLine(/^OOB 07/);
    expect(s.peer.lines.filter((l) => l.startsWith('DATA'))).toEqual([]);
    expect(() => b.sendUrgent(256)).toThrow(RangeError);
  });

  it('shutdownWrite gives the peer EOF', async () => {
    const s = await scene();
    const b = borrow(s);
    b.shutdownWrite();
    expect(await streamUntilEof(s.peer)).toBe('');
  });

  it('send then shutdownWrite: the peer gets the data, then EOF', async () => {
    const s = await scene();
    const b = borrow(s);
    expect(b.send('goodbye\n')).toBe(8);
    expect(b.send(Uint8Array.from([0x41, 0x42]))).toBe(2);
    b.shutdownWrite();
    expect(await streamUntilEof(s.peer)).toBe('goodbye\nAB');
  });

  it('closing the copy leaves the owner fd open; close is idempotent; use after close throws', async () => {
    const s = await scene();
    const before = openFdCount();
    const b = BorrowedSocket.borrow(s.server.pid, s.serverFd);
    expect(openFdCount()).toBe(before + 1);
    expect(b.fd).toBeGreaterThanOrEqual(0);
    b.close();
    b.close();
    expect(b.closed).toBe(true);
    expect(openFdCount()).toBe(before);
    expect(existsSync(`/proc/${s.server.pid}/fd/${s.serverFd}`)).toBe(true);
    expect(() => b.send('x')).toThrow(/closed/);
    // Disposal closes as well.
    {
      using d = BorrowedSocket.borrow(s.server.pid, s.serverFd);
      expect(d.closed).toBe(false);
    }
    expect(openFdCount()).toBe(before);
  });
});

describe('borrowFd errors', () => {

  it('nonexistent pid: ESRCH from pidfd_open', () => {
    const e = caught(() => native.borrowFd(0x7fffffff, 0));
    expect(e).toBeInstanceOf(Error);
    expect(e).toMatchObject({ code: 'ESRCH', errno: -3, syscall: 'pidfd_open' });
    expect(e.message).toBe('ESRCH: No such process, pidfd_open');
  });

  it('fd not open in the target: EBADF from pidfd_getfd', () => {
    const e = caught(() => BorrowedSocket.borrow(process.pid, 1_000_000));
    expect(e).toMatchObject({ code: 'EBADF', errno: -9, syscall: 'pidfd_getfd' });
  });

  it('rejects non-integer and negative arguments', () => {
    for (const [pid, fd] of [
      [0, 1],
      [-1, 1],
      [1.5, 1],
      [process.pid, -1],
      [process.pid, 2.5],
      [process.pid, Number.NaN],
      [process.pid, 2 ** 31],
    ] as const) {
      expect(() => native.borrowFd(pid, fd), `${pid} ${fd}`).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
      );
    }
    expect(() => native.borrowFd('1' as unknown as number, 1)).toThrow(TypeError);
  });

  it('leaks no pidfd on failure', () => {
    const before = openFdCount();
    for (let i = 0; i < 200; i++) expect(() => native.borrowFd(process.pid, 1_000_000)).toThrow();
    expect(openFdCount()).toBe(before);
  });
});
