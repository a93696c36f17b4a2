// The addon's SpliceRelay (native/splice_relay.cc) on loopback pairs: `left` and `right` play the
// two peers, the relay joins the far ends of their connections (x and y) in the kernel. And
// relayConnection handing its steady state over to it (stats.spliced) without losing or
// reordering a byte Node had already read.
import { createHash } from 'node:crypto';
import { openSync, closeSync } from 'node:fs';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { native, type NativeError, type SpliceEnd } from '../../src/native.js';
import { relayConnection } from '../../src/net/shadow/connection-relay.js';
import { respContinue } from '../../src/net/shadow/resp-continue.js';
import { caught, fdOf, openFdCount, tcpPair, type TcpPair } from './socket-fixtures.js';

const pairs: TcpPair[] = [];
afterEach(async () => {
  for (const p of pairs.splice(0)) await p.close();
});

/** left <-> x  [SpliceRelay]  y <-> right; x and y are handed to the relay and destroyed. */
async function joined(init: Parameters<InstanceType<typeof native.SpliceRelay>['start']>[0] = {}) {
  const p1 = await tcpPair('127.0.0.1');
  const p2 = await tcpPair('127.0.0.1');
  pairs.push(p1, p2);
  const left = p1.client;
  const right = p2.client;
  const relay = new native.SpliceRelay(fdOf(p1.accepted), fdOf(p2.accepted));
  p1.accepted.destroy();
  p2.accepted.destroy();
  const ended = new Promise<{ err: NativeError | null; end: SpliceEnd }>((resolve) => relay.start(init, (err, end) => resolve({ err, end })));
  return { left, right, relay, ended };
}

/** A deterministic byte pattern (differs per seed), so order and content are checked. */
function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed + (i >> 12)) & 0xff;
  return b;
}

/** Everything the socket receives until its end (10 s bound). */
function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error(`no end in 10 s (${parts.reduce((n, p) => n + p.length, 0)} bytes)`)), 10_000);
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('SpliceRelay', () => {
  it('relays both ways at once, byte-exact, and ends with both EOFs relayed', async () => {
    const { left, right, ended } = await joined();
    const toRight = pattern(24 << 20, 1);
    const toLeft = pattern(16 << 20, 2);
    left.allowHalfOpen = true;
    right.allowHalfOpen = true;
    const atRight = readAll(right);
    const atLeft = readAll(left);
    left.end(toRight);
    right.end(toLeft);
    expect(sha(await atRight)).toBe(sha(toRight));
    expect(sha(await atLeft)).toBe(sha(toLeft));
    const { err, end } = await ended;
    expect(err).toBeNull();
    expect(end).toMatchObject({ aToB: toRight.length, bToA: toLeft.length });
    expect(end.side).toBeUndefined();
  });

  it('writes the leftovers first, in order, then what the sockets bring', async () => {
    const { left, right, relay, ended } = await joined({ aToB: Buffer.from('<left read by JS>'), bToA: Buffer.from('<right read by JS>') });
    const atRight = readAll(right);
    const atLeft = readAll(left);
    left.end('then the rest');
    right.end('and the reply');
    expect((await atRight).toString()).toBe('<left read by JS>then the rest');
    expect((await atLeft).toString()).toBe('<right read by JS>and the reply');
    expect((await ended).end).toMatchObject({ aToB: 30, bToA: 31, firstEof: expect.stringMatching(/^[ab]$/) });
    expect(relay.bytes()).toEqual({ aToB: 30, bToA: 31 });
  });

  it('half-close: EOF one way is relayed at once, the other way goes on until its own EOF', async () => {
    const { left, right, ended } = await joined();
    right.allowHalfOpen = true;
    const rightEnded = new Promise<void>((r) => right.once('end', () => r()));
    right.resume();
    const atLeft = readAll(left);
    left.allowHalfOpen = true;
    left.end('request');
    await rightEnded;
    // The right peer got the left one's FIN; it still answers, at length, then ends.
    const reply = pattern(4 << 20, 3);
    right.end(reply);
    expect(sha(await atLeft)).toBe(sha(reply));
    const { err, end } = await ended;
    expect(err).toBeNull();
    expect(end.firstEof).toBe('a');
  });

  it('an EOF JS had already read: the leftover, then SHUT_WR on the other side', async () => {
    const { left, right, ended } = await joined({ aToB: Buffer.from('last words'), aEof: true });
    right.allowHalfOpen = true;
    expect((await readAll(right)).toString()).toBe('last words');
    const atLeft = readAll(left);
    right.end('bye');
    expect((await atLeft).toString()).toBe('bye');
    expect((await ended).end).toMatchObject({ aToB: 10, bToA: 3, firstEof: 'a' });
  });

  it('a peer reset ends it with the error, its code and the side; the other peer sees the end', async () => {
    const { left, right, ended } = await joined();
    const rightClosed = new Promise<void>((r) => right.once('close', () => r()));
    right.resume();
    left.write('something');
    await new Promise((r) => setTimeout(r, 20));
    left.resetAndDestroy();
    const { err, end } = await ended;
    expect(err).toMatchObject({ code: 'ECONNRESET', errno: -104 });
    expect(['splice', 'poll']).toContain(err!.syscall);
    expect(end.side).toBe('a');
    expect(end.aToB).toBe(9);
    await rightClosed;
  });

  it('detach() mid-transfer gives back the sockets and the bytes in flight (the pipe\'s): a relay on them goes on byte-exact; the first never ends', async () => {
    const p1 = await tcpPair('127.0.0.1');
    const p2 = await tcpPair('127.0.0.1');
    pairs.push(p1, p2);
    const before = openFdCount();
    const { client: left } = p1;
    const { client: right } = p2;
    const relay = new native.SpliceRelay(fdOf(p1.accepted), fdOf(p2.accepted));
    p1.accepted.destroy();
    p2.accepted.destroy();
    let firstEnded = false;
    relay.start({}, () => (firstEnded = true));
    const toRight = pattern(8 << 20, 3);
    right.pause(); // reads nothing: the relay's pipe fills, and the socket buffers
    const atRight = readAll(right);
    left.allowHalfOpen = true;
    left.end(toRight);
    await new Promise((r) => setTimeout(r, 200));
    const d = relay.detach();
    expect(d.aToB.length).toBeGreaterThan(0);
    expect(d.bToA.length).toBe(0);
    expect(d.bytes.aToB).toBeLessThan(toRight.length);
    expect(() => relay.detach()).toThrow(/not relaying/);
    const again = new native.SpliceRelay(d.fdA, d.fdB);
    native.closeFd(d.fdA);
    native.closeFd(d.fdB);
    const ended = new Promise<{ err: NativeError | null; end: SpliceEnd }>((resolve) => again.start({ aToB: d.aToB, bToA: d.bToA, aEof: d.aEof, bEof: d.bEof }, (err, end) => resolve({ err, end })));
    right.resume();
    right.end();
    expect(sha(await atRight)).toBe(sha(toRight));
    const { err, end } = await ended;
    expect(err).toBeNull();
    expect(d.bytes.aToB + end.aToB).toBe(toRight.length);
    expect(firstEnded).toBe(false);
    expect(openFdCount()).toBeLessThanOrEqual(before);
  });

  it('close() closes both sockets at once and never calls onEnd', async () => {
    const { left, right, relay, ended } = await joined();
    let called = false;
    void ended.then(() => (called = true));
    const closed = Promise.all([left, right].map((s) => new Promise((r) => s.once('close', r).resume())));
    left.write('x');
    await new Promise((r) => setTimeout(r, 20));
    expect(relay.close()).toEqual({ aToB: 1, bToA: 0 });
    expect(relay.close()).toEqual({ aToB: 1, bToA: 0 });
    await closed;
    await new Promise((r) => setTimeout(r, 20));
    expect(called).toBe(false);
    expect(() => relay.start({}, () => undefined)).toThrow(/already started or closed/);
  });

  it('keeps the event loop turning during a large transfer', async () => {
    const { left, right, ended } = await joined();
    let longest = 0;
    let last = performance.now();
    const tick = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    }, 1);
    const total = 256 << 20;
    let got = 0;
    const done = new Promise<void>((r) => right.on('data', (d: Buffer) => (got += d.length) === total && r()));
    const chunk = Buffer.alloc(1 << 20, 5);
    // Write as fast as the relay takes it (backpressure), from this same loop.
    for (let sent = 0; sent < total; sent += chunk.length) if (!left.write(chunk)) await new Promise((r) => left.once('drain', r));
    await done;
    clearInterval(tick);
    left.end();
    right.end();
    await ended;
    // Every callback moves 4 MiB per direction at most; the JS writer and reader share the loop.
    expect(longest).toBeLessThan(200);
  });

  it('refuses bad arguments with a clear error, opening nothing', async () => {
    const p = await tcpPair('127.0.0.1');
    pairs.push(p);
    const before = openFdCount();
    expect(caught(() => new native.SpliceRelay(fdOf(p.client), fdOf(p.client)))).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(caught(() => new native.SpliceRelay(-1, fdOf(p.client)))).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(caught(() => new native.SpliceRelay(fdOf(p.client), 1.5))).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(caught(() => new native.SpliceRelay(fdOf(p.client), 999_999))).toMatchObject({ code: 'EBADF', syscall: 'getsockopt' });
    const file = openSync('/dev/null', 'r');
    expect(caught(() => new native.SpliceRelay(fdOf(p.client), file))).toMatchObject({ code: 'ENOTSOCK', syscall: 'getsockopt' });
    closeSync(file);
    const udp = await import('node:dgram').then((d) => d.createSocket('udp4'));
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    const udpFd = (udp as unknown as { _handle: { fd: number } })._handle.fd;
    expect(caught(() => new native.SpliceRelay(fdOf(p.client), udpFd))).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    udp.close();
    const r = new native.SpliceRelay(fdOf(p.client), fdOf(p.accepted));
    expect(caught(() => r.start({ aToB: 'text' as unknown as Uint8Array }, () => undefined))).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(caught(() => r.start({}, undefined as unknown as () => void))).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    r.close();
    await new Promise((res) => setTimeout(res, 20));
    expect(openFdCount()).toBe(before); // pipes are taken only when bytes pass
  });

  it('leaks no fd: relays run to their end, reset, closed, or never started, many times over', async () => {
    // Warm up: the first pairs open fds that stay (the loop's own, the listener's).
    await (await joined()).relay.close();
    for (const p of pairs.splice(0)) await p.close();
    await new Promise((r) => setTimeout(r, 50));
    // The pool's empty pipes stay open for the next relay (16 at most): counted apart.
    const fds = () => openFdCount() - 2 * native.splicePipesFree();
    const before = fds();
    for (let i = 0; i < 30; i++) {
      const { left, right, relay, ended } = await joined({ aToB: Buffer.from('hi') });
      if (i % 3 === 0) {
        left.end('a');
        right.end('b');
        await ended;
      } else if (i % 3 === 1) {
        left.resetAndDestroy();
        await ended;
      } else relay.close();
      for (const p of pairs.splice(0)) await p.close();
      const unstarted = await tcpPair('127.0.0.1');
      new native.SpliceRelay(fdOf(unstarted.client), fdOf(unstarted.accepted)).close();
      await unstarted.close();
    }
    // Closed sockets' fds go with their handles' close callbacks: one loop turn or two.
    for (let i = 0; i < 50 && fds() !== before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(fds()).toBe(before);
    expect(native.splicePipesFree()).toBeGreaterThan(0);
    expect(native.splicePipesFree()).toBeLessThanOrEqual(16);
  });
});

describe('relayConnection over SpliceRelay', () => {
  /**
   * An upstream that answers the preamble `SELECT 1` with +OK (after a delay, so the client's
   * stream is buffered in Node meanwhile), then, 20 ms later, echoes every byte.
   */
  async function echoUpstream(delayMs: number): Promise<{ port: number; server: net.Server }> {
    const preamble = '*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n';
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      let skip = preamble.length;
      s.on('error', () => undefined);
      const echo = (d: Buffer) => {
        if (!s.write(d)) s.pause();
      };
      s.on('drain', () => s.resume());
      const onData = (d: Buffer) => {
        const n = Math.min(skip, d.length);
        skip -= n;
        if (skip > 0) return;
        s.off('data', onData);
        // Paused meanwhile: the client's stream piles up in the kernel and in the relay.
        s.pause();
        setTimeout(() => {
          s.write('+OK\r\n');
          // Apart, so that the relay's reply counter sees +OK alone (the echo is no RESP).
          setTimeout(() => {
            echo(d.subarray(n));
            s.on('data', echo);
            s.resume();
          }, 20);
        }, delayMs);
      };
      s.on('data', onData);
      s.on('end', () => s.end());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { port: (server.address() as net.AddressInfo).port, server };
  }

  for (const splice of [true, false]) {
    it(`relays a stream sent from the first moment, byte-exact, in order (splice ${splice})`, async () => {
      const { port, server } = await echoUpstream(50);
      const p = await tcpPair('127.0.0.1');
      pairs.push(p);
      const relay = relayConnection({
        client: p.accepted,
        upstream: { host: '127.0.0.1', port },
        preamble: { bytes: Buffer.from('*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n'), replies: 1 },
        replay: Buffer.alloc(0),
        replyCounter: respContinue.createReplyCounter(),
        splice,
      });
      const app = p.client;
      app.allowHalfOpen = true;
      const sent = pattern(32 << 20, 7);
      const echoed = readAll(app);
      // Written before the preamble's reply: Node reads some of it into the relay's buffers.
      for (let at = 0; at < sent.length; at += 1 << 20) if (!app.write(sent.subarray(at, at + (1 << 20)))) await new Promise((r) => app.once('drain', r));
      app.end();
      const got = await echoed;
      expect(got.length).toBe(sent.length);
      expect(sha(got)).toBe(sha(sent));
      const end = await relay.done;
      expect(end.reason).toBe('client ended');
      expect(end.stats).toMatchObject({ spliced: splice, swallowedReplies: 1, clientBytes: sent.length, upstreamBytes: sent.length });
      server.close();
    });
  }

  /** A relay of a fresh loopback pair to an echo upstream (after `preamble`), and a wait for its handover to the kernel (1 s at most). */
  async function echoRelay(preamble: Buffer, replies: number) {
    const { port, server } = await echoUpstream(0);
    const p = await tcpPair('127.0.0.1');
    pairs.push(p);
    const relay = relayConnection({ client: p.accepted, upstream: { host: '127.0.0.1', port }, preamble: { bytes: preamble, replies }, replay: Buffer.alloc(0), replyCounter: respContinue.createReplyCounter() });
    const spliced = async () => {
      for (let i = 0; i < 100 && !relay.stats.spliced; i++) await new Promise((r) => setTimeout(r, 10));
      return relay.stats.spliced;
    };
    return { p, server, relay, spliced };
  }

  it('close() after the handover ends it with that reason and closes the client', async () => {
    const { p, server, relay, spliced } = await echoRelay(Buffer.from('*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n'), 1);
    const echo = new Promise<string>((r) => p.client.once('data', (d: Buffer) => r(d.toString())));
    p.client.write('ping');
    expect(await echo).toBe('ping');
    expect(await spliced()).toBe(true);
    expect(relay.upstream?.destroyed).toBe(true);
    const closed = new Promise((r) => p.client.once('close', r));
    relay.close('test done');
    const end = await relay.done;
    expect(end).toMatchObject({ reason: 'test done', stats: { clientBytes: 4, upstreamBytes: 4, spliced: true } });
    await closed;
    server.close();
  });

  it('a client reset after the handover ends it with the client\'s error', async () => {
    const { p, server, relay, spliced } = await echoRelay(Buffer.alloc(0), 0);
    expect(await spliced()).toBe(true);
    p.client.resetAndDestroy();
    expect((await relay.done).reason).toMatch(/^client error: ECONNRESET/);
    server.close();
  });
});
