// relayConnection against a real redis-server on loopback (Debian package redis-server): the
// preamble's replies are swallowed, the replayed and the client's own requests are answered in
// order, and the session (the database) is the one the preamble set; and, against a canned HTTP
// server, a resumed reply's filter (the 206's head dropped; another representation resets the
// client). The "restored" client socket is the accepted end of a loopback pair; the other end
// plays the application.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareUpstream, relayConnection } from '../../src/net/shadow/connection-relay.js';
import { httpContinue } from '../../src/net/shadow/http-continue.js';
import { RangeResumeFilter } from '../../src/net/shadow/http-range-resume.js';
import { ReplyDigest } from '../../src/net/shadow/reply-digest.js';
import { encodeCommand, respContinue } from '../../src/net/shadow/resp-continue.js';
import { freePort } from '../free-port.js';
import { socketPair } from '../socket-pair.js';

const cmd = (...w: string[]) => encodeCommand(w);
let redis: ChildProcess | undefined;
let port = 0;

/** Sends raw bytes on a fresh connection and collects the reply bytes until `replies` are complete. */
async function ask(bytes: Buffer, replies: number): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  const counter = respContinue.createReplyCounter();
  let n = 0;
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${replies} replies in 5 s: ${JSON.stringify(out)}`)), 5000);
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      n += counter.push(d).length;
      if (n >= replies) {
        clearTimeout(timer);
        resolve();
      }
    });
    s.write(bytes);
  });
  s.destroy();
  return out;
}

beforeAll(async () => {
  port = await freePort();
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  redis.stdout!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-2000)));
  redis.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-2000)));
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await ask(cmd('PING'), 1)) === '+PONG\r\n') break;
    } catch {
      // not listening yet
    }
    if (redis.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start on port ${port} (Debian package redis-server): ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

afterAll(async () => {
  if (redis && redis.exitCode === null && redis.signalCode === null) {
    redis.kill('SIGKILL');
    await new Promise((r) => redis!.once('exit', r));
  }
});

/** Reads from the app socket until `replies` complete replies arrived (5 s bound). */
function readReplies(app: net.Socket, replies: number): Promise<string> {
  const counter = respContinue.createReplyCounter();
  let n = 0;
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${replies} replies in 5 s: ${JSON.stringify(out)}`)), 5000);
    app.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      n += counter.push(d).length;
      if (n >= replies) {
        clearTimeout(timer);
        resolve(out);
      }
    });
  });
}

describe('relayConnection with redis-server', () => {
  it('swallows SELECT 3, answers the replay and the pipelined requests in order, in db 3', async () => {
    await ask(Buffer.concat([cmd('SELECT', '3'), cmd('DEL', 'k'), cmd('SELECT', '0'), cmd('DEL', 'k')]), 4);
    const { restored, app } = await socketPair();
    const relay = relayConnection({
      client: restored,
      upstream: { host: '127.0.0.1', port },
      preamble: { bytes: cmd('SELECT', '3'), replies: 1 },
      replay: Buffer.concat([cmd('INCR', 'k'), cmd('INCR', 'k')]),
      replyCounter: respContinue.createReplyCounter(),
    });
    const replies = readReplies(app, 5);
    // Written at once: the upstream is not connected yet; these go after the replay.
    app.write(Buffer.concat([cmd('INCR', 'k'), cmd('GET', 'k')]));
    app.write('PING\r\n');
    const want = ':1\r\n:2\r\n:3\r\n$1\r\n3\r\n+PONG\r\n';
    expect(await replies).toBe(want);
    expect(await ask(Buffer.concat([cmd('SELECT', '3'), cmd('GET', 'k'), cmd('SELECT', '0'), cmd('GET', 'k')]), 4)).toBe('+OK\r\n$1\r\n3\r\n+OK\r\n$-1\r\n');
    app.end();
    const end = await relay.done;
    expect(end.reason).toBe('client ended');
    expect(end.stats).toMatchObject({ swallowedReplies: 1, swallowedBytes: 5, upstreamBytes: want.length });
    expect(end.stats.clientBytes).toBe(Buffer.concat([cmd('INCR', 'k'), cmd('GET', 'k')]).length + 6);
  });

  it('continues from a tracker: HELLO 3 and CLIENT SETNAME in the preamble, a big value through backpressure', async () => {
    const t = respContinue.createTracker();
    const client = Buffer.concat([cmd('HELLO', '3'), cmd('CLIENT', 'SETNAME', 'shadowed'), cmd('SET', 'big', 'x'.repeat(4 << 20)), cmd('STRLEN', 'big')]);
    t.clientData(client);
    t.serverData(Buffer.from('%1\r\n+proto\r\n:3\r\n+OK\r\n'));
    expect(t.blocker()).toBeNull();
    const { restored, app } = await socketPair();
    const relay = relayConnection({
      client: restored,
      upstream: { host: '127.0.0.1', port },
      preamble: t.sessionPreamble(),
      replay: client.subarray(t.answeredClientBytes()),
      replyCounter: respContinue.createReplyCounter(),
    });
    app.on('error', () => undefined);
    const replies = readReplies(app, 4);
    app.write(Buffer.concat([cmd('CLIENT', 'GETNAME'), cmd('GET', 'big')]));
    const out = await replies;
    expect(out.startsWith(`+OK\r\n:${4 << 20}\r\n$8\r\nshadowed\r\n$${4 << 20}\r\n`)).toBe(true);
    expect(relay.stats.swallowedReplies).toBe(2);
    relay.close('test done');
    expect((await relay.done).reason).toBe('test done');
    if (!app.destroyed) await new Promise((r) => app.once('close', r));
    expect(restored.destroyed).toBe(true);
  });

  it('a refused preamble command closes both sides with the reason', async () => {
    const { restored, app } = await socketPair();
    const relay = relayConnection({
      client: restored,
      upstream: { host: '127.0.0.1', port },
      preamble: { bytes: cmd('AUTH', 'wrong'), replies: 1 },
      replay: cmd('PING'),
      replyCounter: respContinue.createReplyCounter(),
    });
    const seen: Buffer[] = [];
    app.on('data', (d: Buffer) => seen.push(d));
    const appClosed = new Promise((r) => app.once('close', r));
    app.on('error', () => undefined);
    expect((await relay.done).reason).toMatch(/refused preamble command 1: -ERR/);
    await appClosed;
    expect(Buffer.concat(seen).length).toBe(0);
  });

  it('an unframeable upstream while swallowing closes both; so does a refused connection', async () => {
    const fake = net.createServer((s) => s.end('+OK\r\nnot resp\r\n'));
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
    const a = await socketPair();
    a.app.on('error', () => undefined);
    const broken = relayConnection({
      client: a.restored,
      upstream: { host: '127.0.0.1', port: (fake.address() as net.AddressInfo).port },
      preamble: { bytes: cmd('SELECT', '1'), replies: 2 },
      replay: Buffer.alloc(0),
      replyCounter: respContinue.createReplyCounter(),
    });
    expect((await broken.done).reason).toMatch(/unframeable while swallowing.*unknown RESP type/);
    fake.close();
    const b = await socketPair();
    b.app.on('error', () => undefined);
    const refused = relayConnection({
      client: b.restored,
      upstream: { host: '127.0.0.1', port: await freePort() },
      preamble: { bytes: Buffer.alloc(0), replies: 0 },
      replay: cmd('PING'),
      replyCounter: respContinue.createReplyCounter(),
    });
    expect((await refused.done).reason).toMatch(/upstream error: .*ECONNREFUSED/);
    expect(b.restored.destroyed).toBe(true);
  });

  it('a preamble reply split across chunks by the upstream is swallowed whole', async () => {
    const fake = net.createServer((s) => {
      s.write('+O');
      setTimeout(() => s.write('K\r\n:4'), 20);
      setTimeout(() => s.end('2\r\n'), 40);
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
    const { restored, app } = await socketPair();
    const relay = relayConnection({
      client: restored,
      upstream: { host: '127.0.0.1', port: (fake.address() as net.AddressInfo).port },
      preamble: { bytes: cmd('SELECT', '1'), replies: 1 },
      replay: cmd('INCR', 'x'),
      replyCounter: respContinue.createReplyCounter(),
    });
    expect(await readReplies(app, 1)).toBe(':42\r\n');
    const end = await relay.done;
    expect(end.reason).toBe('upstream ended');
    expect(end.stats.swallowedBytes).toBe(5);
    fake.close();
  });
});

describe('relayConnection with an upstream prepared ahead (prepareUpstream)', () => {
  it('the preamble is answered before the client is there; the relay swallows it and answers the replay in the session', async () => {
    await ask(Buffer.concat([cmd('SELECT', '4'), cmd('SET', 'p', '10'), cmd('SELECT', '0'), cmd('DEL', 'p')]), 4);
    const preamble = { bytes: cmd('SELECT', '4'), replies: 1 };
    const prepared = prepareUpstream({ host: '127.0.0.1', port }, preamble);
    // Connected and answered while the "promotion" runs: the reply waits in the socket's buffer.
    await new Promise((r) => prepared.socket.once('connect', r));
    await new Promise((r) => setTimeout(r, 50));
    expect(prepared.socket.readableLength).toBe(5); // +OK\r\n
    const { restored, app } = await socketPair();
    const relay = relayConnection({ client: restored, upstream: { host: '127.0.0.1', port }, preamble, prepared, replay: cmd('INCR', 'p'), replyCounter: respContinue.createReplyCounter() });
    expect(relay.upstream).toBe(prepared.socket);
    const replies = readReplies(app, 2);
    app.write(cmd('GET', 'p'));
    expect(await replies).toBe(':11\r\n$2\r\n11\r\n');
    app.end();
    const end = await relay.done;
    expect(end.stats).toMatchObject({ swallowedReplies: 1, swallowedBytes: 5 });
  });

  it('an upstream that refused the prepared connection ends the relay with its error; a goodbye closes the prepared one', async () => {
    const refused = prepareUpstream({ host: '127.0.0.1', port: await freePort() }, { bytes: cmd('PING'), replies: 1 });
    await new Promise((r) => refused.socket.once('close', r));
    expect(refused.error()?.message).toMatch(/ECONNREFUSED/);
    const a = await socketPair();
    a.app.on('error', () => undefined);
    const relay = relayConnection({ client: a.restored, upstream: { host: '127.0.0.1', port }, preamble: { bytes: cmd('PING'), replies: 1 }, prepared: refused, replay: cmd('PING'), replyCounter: respContinue.createReplyCounter() });
    expect((await relay.done).reason).toMatch(/upstream error: .*ECONNREFUSED/);
    expect(a.restored.destroyed).toBe(true);

    const unused = prepareUpstream({ host: '127.0.0.1', port }, { bytes: Buffer.alloc(0), replies: 0 });
    const b = await socketPair();
    const bye = relayConnection({ client: b.restored, upstream: { host: '127.0.0.1', port }, preamble: { bytes: Buffer.alloc(0), replies: 0 }, prepared: unused, replay: Buffer.alloc(0), replyCounter: respContinue.createReplyCounter(), goodbye: Buffer.from('bye') });
    expect(unused.socket.destroyed).toBe(true);
    b.app.resume();
    expect((await bye.done).reason).toBe('said goodbye');
  });
});

describe('relayConnection held until the upstream is promoted (hold)', () => {
  it('the preamble goes at once; the replay and the client\'s bytes only once the hold resolves', async () => {
    await ask(Buffer.concat([cmd('SELECT', '5'), cmd('SET', 'h', '1'), cmd('SELECT', '0')]), 3);
    let promote!: () => void;
    const hold = new Promise<void>((r) => (promote = r));
    const { restored, app } = await socketPair();
    const relay = relayConnection({ client: restored, upstream: { host: '127.0.0.1', port }, preamble: { bytes: cmd('SELECT', '5'), replies: 1 }, hold, replay: cmd('INCR', 'h'), replyCounter: respContinue.createReplyCounter() });
    const replies = readReplies(app, 2);
    app.write(cmd('INCR', 'h'));
    await new Promise((r) => setTimeout(r, 100));
    // Preamble answered and swallowed; nothing of the replay or the client reached the server.
    expect(relay.stats).toMatchObject({ swallowedReplies: 1, upstreamBytes: 0, clientBytes: 0 });
    expect(await ask(Buffer.concat([cmd('SELECT', '5'), cmd('GET', 'h')]), 2)).toBe('+OK\r\n$1\r\n1\r\n');
    promote();
    expect(await replies).toBe(':2\r\n:3\r\n');
    app.end();
    expect((await relay.done).reason).toBe('client ended');
  });

  it('a client that had half-closed (ContinuePlan.clientEnded: its socket reads end-of-file at once): the replay after the hold, then the end, relayed in that order', async () => {
    await ask(Buffer.concat([cmd('SELECT', '6'), cmd('SET', 'e', '1'), cmd('SELECT', '0')]), 3);
    let promote!: () => void;
    const hold = new Promise<void>((r) => (promote = r));
    const { restored, app } = await socketPair(true);
    app.end(); // its FIN, before the relay starts: the restored socket holds nothing but the end
    await new Promise((r) => setTimeout(r, 20));
    const relay = relayConnection({ client: restored, upstream: { host: '127.0.0.1', port }, preamble: { bytes: cmd('SELECT', '6'), replies: 1 }, hold, replay: cmd('INCR', 'e'), replyCounter: respContinue.createReplyCounter() });
    const replies = readReplies(app, 1);
    const ended = new Promise<void>((r) => app.once('end', r));
    await new Promise((r) => setTimeout(r, 50));
    expect(await ask(Buffer.concat([cmd('SELECT', '6'), cmd('GET', 'e')]), 2)).toBe('+OK\r\n$1\r\n1\r\n'); // the end did not go ahead of the replay
    promote();
    expect(await replies).toBe(':2\r\n');
    await ended; // Redis closes a client that ended once its replies are written; the relay passes that on
    expect((await relay.done).reason).toBe('client ended');
  });

  it('a hold that resolves with an answer: the client gets it in place of the replay\'s replies, and nothing is replayed', async () => {
    await ask(Buffer.concat([cmd('SELECT', '7'), cmd('SET', 'a', '5'), cmd('SELECT', '0')]), 3);
    let decide!: (r: { answer: Uint8Array }) => void;
    const hold = new Promise<{ answer: Uint8Array }>((r) => (decide = r));
    const { restored, app } = await socketPair();
    // The dead server ran the client's INCR a (5 -> 5 here: the promoted server has its effect); its reply was lost.
    const relay = relayConnection({ client: restored, upstream: { host: '127.0.0.1', port }, preamble: { bytes: cmd('SELECT', '7'), replies: 1 }, hold, replay: cmd('INCR', 'a'), replyCounter: respContinue.createReplyCounter() });
    const replies = readReplies(app, 2);
    app.write(cmd('INCR', 'a'));
    await new Promise((r) => setTimeout(r, 50));
    decide({ answer: Buffer.from(':5\r\n') });
    // The answer first, then the reply to the client's next request: the INCR was not run again.
    expect(await replies).toBe(':5\r\n:6\r\n');
    expect(relay.stats).toMatchObject({ answeredBytes: 4, swallowedReplies: 1 });
    app.end();
    expect((await relay.done).reason).toBe('client ended');
    expect(await ask(Buffer.concat([cmd('SELECT', '7'), cmd('GET', 'a')]), 2)).toBe('+OK\r\n$1\r\n6\r\n');
  });

  it('a failed promotion resets the client (its own RST) and ends the relay with the reason; nothing was replayed', async () => {
    await ask(Buffer.concat([cmd('SELECT', '6'), cmd('SET', 'f', '1'), cmd('SELECT', '0')]), 3);
    let fail!: (e: Error) => void;
    const hold = new Promise<void>((_, reject) => (fail = reject));
    const { restored, app } = await socketPair();
    const appError = new Promise<NodeJS.ErrnoException>((r) => app.once('error', r));
    const relay = relayConnection({ client: restored, upstream: { host: '127.0.0.1', port }, preamble: { bytes: cmd('SELECT', '6'), replies: 1 }, hold, replay: cmd('INCR', 'f'), replyCounter: respContinue.createReplyCounter() });
    app.write(cmd('INCR', 'f'));
    await new Promise((r) => setTimeout(r, 50));
    fail(new Error('the local service was not promoted: exit 3'));
    expect((await relay.done).reason).toBe('the local service was not promoted: exit 3');
    expect((await appError).code).toBe('ECONNRESET');
    expect(await ask(Buffer.concat([cmd('SELECT', '6'), cmd('GET', 'f')]), 2)).toBe('+OK\r\n$1\r\n1\r\n');
  });
});

describe('relayConnection: the start of a reply the dead server had sent', () => {
  const fingerprint = (s: string) => {
    const d = new ReplyDigest();
    d.update(Buffer.from(s));
    return d.fingerprint();
  };

  it('drops the bytes the client already has when the replay reproduces them, sends the rest', async () => {
    await ask(Buffer.concat([cmd('SET', 'v', 'hello world'), cmd('DEL', 'n')]), 2);
    const { restored, app } = await socketPair();
    // The dead server had sent "$11\r\nhello" of GET v's reply (the refill or the client has it).
    const relay = relayConnection({
      client: restored,
      upstream: { host: '127.0.0.1', port },
      preamble: { bytes: Buffer.alloc(0), replies: 0 },
      replay: Buffer.concat([cmd('GET', 'v'), cmd('INCR', 'n')]),
      replyCounter: respContinue.createReplyCounter(),
      expectReply: fingerprint('$11\r\nhello'),
    });
    let got = '';
    app.on('data', (d: Buffer) => (got += d.toString('latin1')));
    await eventually(() => got === ' world\r\n:1\r\n');
    app.end();
    expect((await relay.done).stats).toMatchObject({ verifiedBytes: 10, upstreamBytes: ' world\r\n:1\r\n'.length });
  });

  it('resets the client when the replayed reply differs (an INCR the dead server had applied, applied again)', async () => {
    await ask(Buffer.concat([cmd('SET', 'n', '301')]), 1);
    const { restored, app } = await socketPair();
    // The dead server had sent ":301" of ":301\r\n"; the new upstream answers ":302".
    const relay = relayConnection({
      client: restored,
      upstream: { host: '127.0.0.1', port },
      preamble: { bytes: Buffer.alloc(0), replies: 0 },
      replay: cmd('INCR', 'n'),
      replyCounter: respContinue.createReplyCounter(),
      expectReply: fingerprint(':301'),
    });
    let got = '';
    app.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const error = new Promise<NodeJS.ErrnoException>((r) => app.once('error', r));
    expect((await error).code).toBe('ECONNRESET');
    const end = await relay.done;
    expect(end.reason).toBe('the reply to the replayed request differs from the 4 bytes the dead server had sent of it');
    expect(got).toBe('');
  });
});

describe('a resumed reply (replyFilter: an HTTP range)', () => {
  const ETAG = '"abc-10"';
  /** An HTTP server on loopback answering every request with `answer`, and what it was asked. */
  async function httpUpstream(answer: string): Promise<{ port: number; asked: () => string; close: () => void }> {
    let asked = '';
    const server = net.createServer((s) => {
      s.on('data', (d: Buffer) => {
        asked += d.toString('latin1');
        if (asked.endsWith('\r\n\r\n')) s.write(answer);
      });
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return { port: (server.address() as net.AddressInfo).port, asked: () => asked, close: () => server.close() };
  }
  const ranged = `GET /f HTTP/1.1\r\nRange: bytes=4-\r\nIf-Range: ${ETAG}\r\n\r\n`;
  /** The relay of a client cut after body byte 4 of a 10-byte representation: the ranged GET replayed. */
  const resumedRelay = (restored: net.Socket, port: number) =>
    relayConnection({
      client: restored,
      upstream: { host: '127.0.0.1', port },
      preamble: { bytes: Buffer.alloc(0), replies: 0 },
      replay: Buffer.from(ranged, 'latin1'),
      replyCounter: httpContinue.createReplyCounter(),
      replyFilter: new RangeResumeFilter(4, 10, { field: 'etag', value: ETAG }),
    });

  it('drops the 206\'s head and relays the rest of the body, then the connection goes on (spliced)', async () => {
    const up = await httpUpstream(`HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 4-9/10\r\nContent-Length: 6\r\nETag: ${ETAG}\r\n\r\n456789`);
    const { restored, app } = await socketPair();
    const relay = resumedRelay(restored, up.port);
    let got = '';
    app.on('data', (d: Buffer) => (got += d.toString('latin1')));
    await eventually(() => got === '456789');
    expect(up.asked()).toBe(ranged);
    await eventually(() => relay.stats.spliced);
    app.end();
    const end = await relay.done;
    expect(end.stats).toMatchObject({ upstreamBytes: 6, spliced: true });
    expect(end.stats.filteredBytes).toBe(`HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 4-9/10\r\nContent-Length: 6\r\nETag: ${ETAG}\r\n\r\n`.length);
    up.close();
  });

  it('resets the client when the new server\'s answer is another representation', async () => {
    const up = await httpUpstream('HTTP/1.1 200 OK\r\nContent-Length: 10\r\nETag: "new"\r\n\r\nABCDEFGHIJ');
    const { restored, app } = await socketPair();
    const relay = resumedRelay(restored, up.port);
    let got = '';
    app.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const error = new Promise<NodeJS.ErrnoException>((r) => app.once('error', r));
    expect((await error).code).toBe('ECONNRESET');
    expect((await relay.done).reason).toMatch(/does not go on from body byte 4: its ETag is "new", was "abc-10"/);
    expect(got).toBe('');
    up.close();
  });
});

async function eventually(ok: () => boolean): Promise<void> {
  for (const until = Date.now() + 5000; !ok(); ) {
    if (Date.now() > until) throw new Error('not in 5 s');
    await new Promise((r) => setTimeout(r, 10));
  }
}
