// The reliable server and client in one process: a reply only after its record's commit is
// acknowledged; a resent duplicate answered from the table with the same reply, never applied
// twice (also while the first commit is pending); a message below the client's acknowledgement
// answered stale, not applied; bad bytes and out-of-order frames rejected with ERROR, the
// connection closed, nothing applied; a client moving to the second server on RECOVERED resends
// in ID order and gets one reply per message; no fd left open.
import { readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { readLog } from '../../src/log/log-reader.js';
import { ReliableClient } from '../../src/reliable/reliable-client.js';
import { decodeRecord } from '../../src/reliable/reliable-record.js';
import { ReliableServer } from '../../src/reliable/reliable-server.js';
import { ReliableState, type ReliableApp } from '../../src/reliable/reliable-state.js';
import { CLIENT_ACCEPTS, ReliableFrameReader, SERVER_ACCEPTS, encodeReliable, type ReliableMessage } from '../../src/reliable/reliable-wire.js';
import { KEY, mutateStream, perTestScratch, seededRandom, sleep, until } from './mirror-helpers.js';

const scratch = perTestScratch('reliable-server-');
const { open } = scratch;

/** A counter: each request adds its number; the reply is the new total. Applications counted. */
function counter() {
  const app: ReliableApp<{ total: number; applied: number }> & { calls: number } = {
    calls: 0,
    init: () => ({ total: 0, applied: 0 }),
    apply(s, req) {
      app.calls++;
      const total = s.total + Number(req.toString());
      return { state: { total, applied: s.applied + 1 }, reply: Buffer.from(String(total)) };
    },
  };
  return app;
}

/** A log whose commits the test acknowledges by hand. */
function handLog() {
  const waiting: Array<() => void> = [];
  const records: Buffer[] = [];
  return {
    records,
    waiting,
    append(b: Uint8Array) {
      records.push(Buffer.from(b));
      return new Promise<number>((r) => waiting.push(() => r(records.length - 1)));
    },
    release() {
      for (const w of waiting.splice(0)) w();
    },
  };
}

/** A raw client connection: send frames, read the server's messages. */
async function raw(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const got: ReliableMessage[] = [];
  const reader = new ReliableFrameReader(CLIENT_ACCEPTS);
  socket.on('data', (d: Buffer) => {
    for (const r of reader.push(d)) if (r.ok) got.push(r.message);
  });
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  await new Promise<void>((r) => socket.once('connect', () => r()));
  return { socket, got, closed, send: (m: ReliableMessage) => socket.write(encodeReliable(m)) };
}

describe('reliable server', () => {
  it('replies only once the commit is acknowledged; a duplicate (pending or committed) gets the same reply and is applied once; below the acknowledgement: stale', async () => {
    const app = counter();
    const log = handLog();
    const server = await ReliableServer.listen({ log, state: new ReliableState(app), host: '127.0.0.1', port: 0, node: 'n1', incarnation: 7n });
    open.push(server);
    const c = await raw(server.port);
    c.send({ type: 'hello', clientId: 'alice' });
    await until(() => c.got.length === 1, 2000, 'READY');
    expect(c.got[0]).toEqual({ type: 'ready', incarnation: 7n, node: 'n1' });
    c.send({ type: 'request', msgId: 1, ackBelow: 1, body: Buffer.from('5') });
    c.send({ type: 'request', msgId: 1, ackBelow: 1, body: Buffer.from('5') }); // resent while pending
    await until(() => log.records.length === 1 && server.state.stats.duplicates === 1, 2000, 'applied once, one duplicate');
    await sleep(30);
    expect(c.got.length).toBe(1); // nothing before the commit
    log.release();
    await until(() => c.got.length === 3, 2000, 'two replies');
    expect(c.got.slice(1)).toEqual([
      { type: 'reply', msgId: 1, status: 'ok', body: Buffer.from('5') },
      { type: 'reply', msgId: 1, status: 'ok', body: Buffer.from('5') },
    ]);
    // Committed: a resend is answered at once from the table.
    c.send({ type: 'request', msgId: 2, ackBelow: 1, body: Buffer.from('3') });
    await until(() => log.waiting.length === 1, 2000, 'the second record');
    log.release();
    await until(() => c.got.length === 4, 2000, 'reply 2');
    c.send({ type: 'request', msgId: 2, ackBelow: 2, body: Buffer.from('3') });
    await until(() => c.got.length === 5, 2000, 'reply 2 again');
    expect(c.got[4]).toEqual({ type: 'reply', msgId: 2, status: 'ok', body: Buffer.from('8') });
    expect(app.calls).toBe(2);
    // The client acknowledged below 2: message 1 is gone from the table; resent, it is stale.
    expect(server.state.table.entriesOf('alice')).toBe(1);
    c.send({ type: 'request', msgId: 1, ackBelow: 1, body: Buffer.from('5') });
    await until(() => c.got.length === 6, 2000, 'stale');
    expect(c.got[5]).toMatchObject({ type: 'reply', msgId: 1, status: 'stale' });
    expect(app.calls).toBe(2);
    expect(server.state.state.total).toBe(8);
    // Records hold client, ID, acknowledgement, request and reply.
    expect(log.records.map(decodeRecord)).toEqual([
      { clientId: 'alice', msgId: 1, ackBelow: 1, request: Buffer.from('5'), reply: Buffer.from('5') },
      { clientId: 'alice', msgId: 2, ackBelow: 1, request: Buffer.from('3'), reply: Buffer.from('8') },
    ]);
    c.socket.destroy();
  });

  it('bad bytes, a REQUEST before HELLO, a second HELLO: ERROR protocol, closed, nothing applied; the server goes on', async () => {
    const app = counter();
    const log = handLog();
    const server = await ReliableServer.listen({ log, state: new ReliableState(app), host: '127.0.0.1', port: 0, node: 'n1', incarnation: 1n });
    open.push(server);
    const rejected: string[] = [];
    server.on('rejected', ({ error }) => rejected.push(error.reason));
    const cases: Array<(c: Awaited<ReturnType<typeof raw>>) => void> = [
      (c) => c.socket.write(Buffer.from('GET / HTTP/1.1\r\n\r\n')), // 'GET ' read as a length: too long
      (c) => c.send({ type: 'request', msgId: 1, ackBelow: 0, body: Buffer.from('1') }),
      (c) => {
        c.send({ type: 'hello', clientId: 'x' });
        c.send({ type: 'hello', clientId: 'x' });
      },
      (c) => {
        // A valid request followed, in the same write, by a frame with a bad version: the first is applied, not the second.
        const good = encodeReliable({ type: 'request', msgId: 1, ackBelow: 0, body: Buffer.from('4') });
        const bad = Buffer.from(encodeReliable({ type: 'request', msgId: 2, ackBelow: 0, body: Buffer.from('9') }));
        bad[8] = 9;
        c.send({ type: 'hello', clientId: 'y' });
        c.socket.write(Buffer.concat([good, bad]));
      },
      (c) => c.socket.end(encodeReliable({ type: 'hello', clientId: 'z' }).subarray(0, 7)),
    ];
    for (const k of cases) {
      const c = await raw(server.port);
      k(c);
      await c.closed;
      expect(c.got.at(-1)).toMatchObject({ type: 'error', code: 'protocol' });
    }
    expect(rejected).toEqual(['length', 'unexpected', 'unexpected', 'version', 'short']);
    expect(app.calls).toBe(1);
    expect(log.records.length).toBe(1);
    // Still serving.
    const c = await raw(server.port);
    c.send({ type: 'hello', clientId: 'w' });
    await until(() => c.got.length === 1, 2000, 'READY after the rejections');
    c.socket.destroy();
    await c.closed;
  });

  it('ReliableClient: one reply per message; the server lost, it moves to the next on RECOVERED and resends in ID order; the log failing stops the server', async () => {
    const dir = path.join(scratch.root, 'log');
    const log = await MirroredLog.open({ dir, key: KEY, node: 'n1', state: 'backup-only' });
    open.push(log);
    const app = counter();
    const state = new ReliableState(app);
    const first = await ReliableServer.listen({ log, state, host: '127.0.0.1', port: 0, node: 'n1', incarnation: 1n });
    // A second server on the same state stands for the backup after its takeover (same records).
    const secondPort = await (async () => {
      const s = net.createServer();
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
      const p = (s.address() as net.AddressInfo).port;
      await new Promise<void>((r) => s.close(() => r()));
      return p;
    })();
    const client = await ReliableClient.connect({ servers: [{ host: '127.0.0.1', port: first.port }, { host: '127.0.0.1', port: secondPort }], clientId: 'bob', backoff: { minMs: 5, maxMs: 20 } });
    open.push(client);
    const connected: Array<number | null> = [];
    client.on('connected', (i) => connected.push(i.recoveredLsn));
    const replies = await Promise.all(Array.from({ length: 50 }, () => client.request(Buffer.from('1'))));
    expect(replies.map(String)).toEqual(Array.from({ length: 50 }, (_, i) => String(i + 1)));
    // Requests go out, the first server dies before answering some of them.
    const later = Array.from({ length: 20 }, () => client.request(Buffer.from('2')));
    await first.close();
    await sleep(50);
    const recoveredAt = log.nextLsn;
    const second = await ReliableServer.listen({ log, state, host: '127.0.0.1', port: secondPort, node: 'n2', incarnation: 2n, recoveredLsn: recoveredAt });
    open.push(second);
    const r2 = await Promise.all(later);
    // Whatever server applied them, each got its own reply, in order, applied once.
    expect(r2.map(String)).toEqual(Array.from({ length: 20 }, (_, i) => String(50 + 2 * (i + 1))));
    expect(app.calls).toBe(70);
    // Connected to the first server before the listener was set; then RECOVERED from the second.
    expect(connected.at(-1)).toBe(recoveredAt);
    expect(client.stats.recoveredSignals).toBe(1);
    expect(client.stats.replies).toBe(70);
    expect(client.outstandingCount).toBe(0);
    // The log holds each message once.
    const ids = (await readLog(dir, { toLsn: log.durableLsn })).records.map((r) => decodeRecord(r).msgId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(70);

    // The log closes under the server: the next request's append fails, the server stops and
    // tells its clients (ERROR unavailable), the request stays outstanding.
    const failed = new Promise<Error>((r) => second.once('failed', r));
    await log.close();
    const pending = client.request(Buffer.from('1'));
    expect((await failed).message).toMatch(/closed/);
    await sleep(50);
    expect(client.outstandingCount).toBe(1);
    await client.close();
    await expect(pending).rejects.toMatchObject({ code: 'ERELIABLECLOSED' });
  });

  it('150 seeded mutations of valid streams into a live server: it applies exactly the requests a reference decoder finds before the first bad frame, and rejects once when there is one', async () => {
    const { int } = seededRandom(29);
    const valid = [
      encodeReliable({ type: 'hello', clientId: 'fuzz' }),
      ...Array.from({ length: 6 }, (_, i) => encodeReliable({ type: 'request', msgId: i + 1, ackBelow: Math.max(0, i - 1), body: Buffer.from(String(i + 1)) })),
    ];
    const t0 = performance.now();
    let rejectedStreams = 0;
    for (let k = 0; k < 150; k++) {
      const { bytes, how } = mutateStream(valid, int);
      // The reference: the decoder, then the protocol's order and the table, as the server should apply them.
      const model = new ReliableState(counter());
      const ref = new ReliableFrameReader(SERVER_ACCEPTS);
      let hello = false;
      let bad = false;
      for (const r of ref.push(bytes)) {
        if (!r.ok) { bad = true; break; }
        const m = r.message;
        if (m.type === 'hello') { if (hello) { bad = true; break; } hello = true; continue; }
        if (m.type !== 'request' || !hello) { bad = true; break; }
        const h = model.handle('x', m.msgId, m.ackBelow, m.body);
        if (h.kind === 'applied') h.store(Promise.resolve());
      }
      if (!bad && ref.finish()) bad = true;
      const app = counter();
      const log = handLog();
      const server = await ReliableServer.listen({ log: { append: (b: Uint8Array) => { const p = log.append(b); log.release(); return p; } }, state: new ReliableState(app), host: '127.0.0.1', port: 0, node: 'n', incarnation: 1n });
      const c = await raw(server.port);
      c.socket.end(bytes);
      await c.closed;
      expect(app.calls, how).toBe(model.stats.applied);
      const rejections = Object.values(server.stats.rejected).reduce((a, n) => a + n, 0);
      expect(rejections, how).toBe(bad ? 1 : 0);
      if (bad) {
        rejectedStreams++;
        expect(c.got.at(-1), how).toMatchObject({ type: 'error', code: 'protocol' });
      }
      await server.close();
    }
    expect(rejectedStreams).toBeGreaterThan(50);
    expect(performance.now() - t0).toBeLessThan(20_000);
  }, 30_000);

  it('a server gone silent with its connection open: with replyTimeoutMs the client leaves it and gets its reply from the next', async () => {
    // The silent one greets (READY) and then never answers.
    const silentConns = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      silentConns.add(s);
      s.on('error', () => {});
      s.once('data', () => s.write(encodeReliable({ type: 'ready', incarnation: 9n, node: 'silent' })));
      s.once('close', () => silentConns.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    open.push({ close: () => new Promise<void>((r) => { for (const s of silentConns) s.destroy(); silent.close(() => r()); }) });
    const log = handLog();
    const server = await ReliableServer.listen({ log: { append: (b: Uint8Array) => { const p = log.append(b); log.release(); return p; } }, state: new ReliableState(counter()), host: '127.0.0.1', port: 0, node: 'real', incarnation: 1n });
    open.push(server);
    const client = await ReliableClient.connect({ servers: [{ host: '127.0.0.1', port: (silent.address() as net.AddressInfo).port }, { host: '127.0.0.1', port: server.port }], clientId: 'carol', backoff: { minMs: 5, maxMs: 20 }, replyTimeoutMs: 200 });
    open.push(client);
    const lost: string[] = [];
    client.on('lost', (l) => lost.push(l.error));
    const t0 = performance.now();
    expect(String(await client.request(Buffer.from('4')))).toBe('4');
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(200);
    expect(ms).toBeLessThan(1000);
    expect(client.stats.replyTimeouts).toBe(1);
    expect(lost).toEqual(['no reply to message 1 within 200 ms']);
  });

  it('an application that throws stops the server (ERROR unavailable to every client), nothing logged', async () => {
    const log = handLog();
    const app: ReliableApp<number> = { init: () => 0, apply: (n, req) => { if (req.toString() === 'boom') throw new Error('app bug'); return { state: n + 1, reply: Buffer.from('ok') }; } };
    const server = await ReliableServer.listen({ log, state: new ReliableState(app), host: '127.0.0.1', port: 0, node: 'n', incarnation: 1n });
    open.push(server);
    const failed = new Promise<Error>((r) => server.once('failed', r));
    const c = await raw(server.port);
    c.send({ type: 'hello', clientId: 'dave' });
    c.send({ type: 'request', msgId: 1, ackBelow: 1, body: Buffer.from('boom') });
    expect((await failed).message).toBe('app bug');
    await c.closed;
    expect(c.got.at(-1)).toMatchObject({ type: 'error', code: 'unavailable' });
    expect(log.records.length).toBe(0);
    const late = await raw(server.port);
    await late.closed;
    expect(late.got).toEqual([{ type: 'error', code: 'unavailable', reason: 'the server stopped: app bug' }]);
  });

  it('no fd left open: servers, clients, failovers and rejections, many times', async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 4; i++) {
      const log = handLog();
      const state = new ReliableState(counter());
      const server = await ReliableServer.listen({ log, state, host: '127.0.0.1', port: 0, node: 'n', incarnation: 1n });
      const client = await ReliableClient.connect({ servers: [{ host: '127.0.0.1', port: server.port }, { host: '127.0.0.1', port: 1 }], clientId: `c${i}`, backoff: { minMs: 1, maxMs: 5 } });
      const p = client.request(Buffer.from('1'));
      await until(() => log.waiting.length === 1, 2000, 'appended');
      log.release();
      await p;
      const bad = await raw(server.port);
      bad.socket.write(Buffer.from('garbage!garbage!'));
      await bad.closed;
      await server.close(); // the client now cycles over a closed port and port 1
      await sleep(20);
      await client.close();
    }
    await until(() => fds() <= before, 2000, 'fds back').catch(() => {});
    expect(fds()).toBeLessThanOrEqual(before);
  });
});
