// The RESP continue plugin (issue 12), pure: request/reply pairing offsets, the session preamble,
// each blocker, the reply counter, and a bounded seeded fuzz of both framers.
import { describe, expect, it } from 'vitest';
import { RespFramer } from '../../src/net/resp-framer.js';
import { encodeCommand, MAX_PENDING, respContinue } from '../../src/net/shadow/resp-continue.js';
import { prng } from './frame-builder.js';

const cmd = (...w: string[]) => encodeCommand(w);
const b = (s: string) => Buffer.from(s, 'latin1');

function tracker(client: Buffer, server: Buffer, step = client.length + server.length) {
  const t = respContinue.createTracker();
  for (let i = 0; i < client.length; i += step) t.clientData(client.subarray(i, i + step));
  for (let i = 0; i < server.length; i += step) t.serverData(server.subarray(i, i + step));
  return t;
}

describe('RespFramer', () => {
  it('reports where each top-level message ends, split at every byte', () => {
    const replies = ['*3\r\n$3\r\nfoo\r\n%1\r\n+k\r\n:1\r\n*-1\r\n', '+OK\r\n', '$-1\r\n', '_\r\n', '$0\r\n\r\n', '|1\r\n+a\r\n:1\r\n:7\r\n', '~0\r\n', '!3\r\nERR\r\n', '=5\r\ntxt:x\r\n'];
    const all = b(replies.join(''));
    const want: number[] = [];
    let at = 0;
    for (const r of replies) want.push((at += r.length));
    for (let cut = 0; cut <= all.length; cut++) {
      const f = new RespFramer();
      const e1 = f.push(all.subarray(0, cut));
      const e2 = f.push(all.subarray(cut)).map((e) => e + cut);
      expect([...e1, ...e2]).toEqual(want);
      expect(f.between).toBe(true);
    }
  });
  it('breaks on garbage, bad lengths, missing CRLF after a blob, and too deep nesting', () => {
    for (const bad of ['hello\r\n', '$x\r\n', '$3\r\nfooXY', '*a\r\n', '+OK\n', '+OK\rX', '$?\r\n']) {
      const f = new RespFramer();
      expect(f.push(b(bad))).toEqual([]);
      expect(f.broken, bad).not.toBeNull();
    }
    const f = new RespFramer({ maxDepth: 3 });
    f.push(b('*1\r\n*1\r\n*1\r\n*1\r\n'));
    expect(f.broken).toMatch(/too deep/);
  });
});

describe('RespFramer.skipLost (bytes a capture lost)', () => {
  const reply = b('*2\r\n$10\r\n0123456789\r\n:5\r\n+OK\r\n');
  // The blob's payload is bytes 9..19 (exclusive), its CRLF 19..21; the array ends after ':5' (25), '+OK' at 30.
  it('passes over bytes inside a blob, to its CRLF at most, and frames on as if it had seen them', () => {
    for (const [from, to] of [[9, 19], [10, 15], [9, 21], [12, 20], [19, 21], [20, 21]] as const) {
      const f = new RespFramer();
      const seen = f.push(reply.subarray(0, from));
      const skipped = f.skipLost(to - from);
      expect(skipped, `${from}..${to}`).toEqual([]);
      expect(f.offset).toBe(to);
      const after = f.push(reply.subarray(to)).map((e) => e + to);
      expect([...seen, ...after], `${from}..${to}`).toEqual([25, 30]);
      expect(f.broken).toBeNull();
    }
  });
  it('returns where a top-level blob ends when the skip ends on its CRLF', () => {
    const f = new RespFramer();
    f.push(b('$5\r\nab'));
    expect(f.skipLost(5)).toEqual([5]);
    expect(f.between).toBe(true);
    expect(f.push(b('+OK\r\n'))).toEqual([5]);
  });
  it('refuses (nothing changes) bytes reaching past the blob, outside a blob, or after a break', () => {
    for (const [from, len] of [[9, 13], [4, 3], [0, 1], [21, 1], [25, 2]] as const) {
      const f = new RespFramer();
      f.push(reply.subarray(0, from));
      const offset = f.offset;
      expect(f.skipLost(len), `${from}+${len}`).toBeNull();
      expect(f.offset).toBe(offset);
      expect(f.push(reply.subarray(from)).map((e) => e + from)).toEqual([25, 30].filter((e) => e > from));
    }
    const broken = new RespFramer();
    broken.push(b('$3\r\nfooXY'));
    expect(broken.skipLost(1)).toBeNull();
  });
});

describe('respContinue tracker, a server gap', () => {
  it('follows a GET reply past lost payload bytes, even to its end; refuses a gap past the bulk, and stays blocked', () => {
    const value = 'v'.repeat(1000);
    const get = cmd('GET', 'big');
    const replyBytes = b(`$1000\r\n${value}\r\n`);
    const t = respContinue.createTracker();
    t.clientData(Buffer.concat([get, get]));
    t.serverData(replyBytes.subarray(0, 100));
    expect(t.serverGap!(500)).toBeNull();
    t.serverData(replyBytes.subarray(600));
    expect(t.answeredClientBytes()).toBe(get.length);
    expect(t.completeServerBytes()).toBe(replyBytes.length);
    // The second reply's payload lost to its very end (CRLF included): it ends at the gap's end.
    t.serverData(replyBytes.subarray(0, 10));
    expect(t.serverGap!(replyBytes.length - 10, { ms: 5, late: true })).toBeNull();
    expect(t.completeServerBytes()).toBe(2 * replyBytes.length);
    expect(t.answeredClientBytes()).toBe(2 * get.length);
    expect(t.blocker()).toBeNull();
    // A gap that is not inside a bulk string: the replies cannot be framed past it.
    t.clientData(cmd('INCR', 'n'));
    expect(t.serverGap!(4)).toMatch(/^they reach past a bulk string's payload/);
    expect(t.blocker()).toMatch(/^the capture lost 4 server bytes the client acknowledged: they reach past/);
  });
});

describe('respContinue tracker', () => {
  it('pairs pipelined requests with replies split at every byte boundary', () => {
    const reqs = [cmd('SET', 'k', 'v'), cmd('GET', 'k'), b('PING\r\n'), cmd('LRANGE', 'l', '0', '-1'), cmd('GET', 'nope')];
    const reps = ['+OK\r\n', '$1\r\nv\r\n', '+PONG\r\n', '*2\r\n$1\r\na\r\n*1\r\n:1\r\n', '$-1\r\n'];
    const client = Buffer.concat(reqs);
    const server = b(reps.join(''));
    const reqEnds: number[] = [];
    let at = 0;
    for (const r of reqs) reqEnds.push((at += r.length));
    const repEnds: number[] = [];
    at = 0;
    for (const r of reps) repEnds.push((at += r.length));
    for (let cut = 0; cut <= server.length; cut++) {
      const t = respContinue.createTracker();
      t.clientData(client);
      t.serverData(server.subarray(0, cut));
      const n = repEnds.filter((e) => e <= cut).length;
      expect(t.completeServerBytes()).toBe(n === 0 ? 0 : repEnds[n - 1]);
      expect(t.answeredClientBytes()).toBe(n === 0 ? 0 : reqEnds[n - 1]);
      t.serverData(server.subarray(cut));
      expect(t.answeredClientBytes()).toBe(client.length);
      expect(t.completeServerBytes()).toBe(server.length);
      expect(t.blocker()).toBeNull();
    }
  });

  it('splits requests at every byte too, and a partial request stays unanswered', () => {
    const client = Buffer.concat([cmd('INCR', 'a'), b('GET a\r\n'), cmd('INCR', 'a')]);
    for (let step = 1; step <= 7; step++) {
      const t = tracker(client.subarray(0, client.length - 3), b(':1\r\n$1\r\n1\r\n'), step);
      expect(t.answeredClientBytes()).toBe(cmd('INCR', 'a').length + 'GET a\r\n'.length);
      expect(t.blocker()).toBeNull();
    }
  });

  it('inline commands: LF or CRLF; an empty line gets no reply and counts as answered', () => {
    const client = b('PING\n\r\n   \r\nECHO hi\r\n\n');
    const t = tracker(client, b('+PONG\r\n$2\r\nhi\r\n'));
    expect(t.answeredClientBytes()).toBe(client.length);
    const u = tracker(b('PING\r\n\r\nECHO hi\r\n'), b('+PONG\r\n'));
    expect(u.answeredClientBytes()).toBe('PING\r\n\r\n'.length);
    const v = tracker(Buffer.concat([b('*0\r\n'), cmd('PING')]), b(''));
    expect(v.answeredClientBytes()).toBe(4);
  });

  it('errors are replies too, and do not change the session', () => {
    const client = Buffer.concat([cmd('SELECT', '99'), cmd('AUTH', 'x'), cmd('SELECT', '2')]);
    const t = tracker(client, b('-ERR DB index is out of range\r\n!5\r\nWRONG\r\n+OK\r\n'));
    expect(t.answeredClientBytes()).toBe(client.length);
    expect(t.sessionPreamble()).toEqual({ bytes: cmd('SELECT', '2'), replies: 1 });
  });

  it('preamble: last AUTH, HELLO protocol/AUTH/SETNAME, CLIENT SETNAME, last SELECT, READONLY; not unanswered ones', () => {
    const client = Buffer.concat([
      cmd('AUTH', 'old'), cmd('hello', '3', 'auth', 'u', 'p', 'setname', 'n1'), cmd('SELECT', '1'), cmd('client', 'SETNAME', 'n2'),
      b('select 3\r\n'), cmd('READONLY'), cmd('GET', 'k'), cmd('SELECT', '5'),
    ]);
    const server = b('+OK\r\n%1\r\n+proto\r\n:3\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n$1\r\nv\r\n');
    const t = tracker(client, server);
    expect(t.blocker()).toBeNull();
    const p = t.sessionPreamble();
    expect(p.replies).toBe(5);
    expect(p.bytes).toEqual(Buffer.concat([cmd('AUTH', 'u', 'p'), cmd('HELLO', '3'), cmd('CLIENT', 'SETNAME', 'n2'), cmd('SELECT', '3'), cmd('READONLY')]));
    expect(t.answeredClientBytes()).toBe(client.length - cmd('SELECT', '5').length);
    expect(respContinue.createTracker().sessionPreamble()).toEqual({ bytes: Buffer.alloc(0), replies: 0 });
  });

  it('session commands inside MULTI count at EXEC, unless their element is an error; RESET clears', () => {
    const client = Buffer.concat([cmd('MULTI'), cmd('SELECT', '4'), cmd('CLIENT', 'SETNAME', 'x'), cmd('EXEC')]);
    const t = tracker(client, b('+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n-ERR bad name\r\n'));
    expect(t.blocker()).toBeNull();
    expect(t.sessionPreamble()).toEqual({ bytes: cmd('SELECT', '4'), replies: 1 });
    t.clientData(cmd('RESET'));
    t.serverData(b('+RESET\r\n'));
    expect(t.sessionPreamble().replies).toBe(0);
    const aborted = tracker(Buffer.concat([cmd('WATCH', 'k'), cmd('MULTI'), cmd('SELECT', '4'), cmd('EXEC')]), b('+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n'));
    expect(aborted.blocker()).toBeNull();
    expect(aborted.sessionPreamble().replies).toBe(0);
  });

  it.each([
    ['SUBSCRIBE', [cmd('SUBSCRIBE', 'c')], '', /subscribe mode/],
    ['PSUBSCRIBE', [cmd('PSUBSCRIBE', 'c*')], '', /subscribe mode/],
    ['SSUBSCRIBE inline', [b('ssubscribe c\r\n')], '', /subscribe mode/],
    ['MONITOR', [cmd('MONITOR')], '', /MONITOR/],
    ['CLIENT REPLY OFF', [cmd('CLIENT', 'REPLY', 'OFF')], '', /CLIENT REPLY OFF/],
    ['CLIENT REPLY SKIP', [cmd('client', 'reply', 'skip')], '', /CLIENT REPLY SKIP/],
    ['RESP3 push', [cmd('PING')], '>2\r\n$7\r\nmessage\r\n$1\r\nx\r\n', /push/],
    ['inside MULTI', [cmd('MULTI'), cmd('INCR', 'a'), cmd('EXEC')], '+OK\r\n+QUEUED\r\n', /transaction/],
    ['WATCH', [cmd('WATCH', 'a')], '+OK\r\n', /WATCH/],
    ['more replies', [cmd('PING')], '+PONG\r\n+PONG\r\n', /more replies than requests/],
    ['client garbage', [b('*2\r\n+x\r\n')], '', /client stream not RESP/],
    ['server garbage', [cmd('PING')], 'PONG\r\n', /server stream not RESP/],
    ['huge session argument', [cmd('AUTH', 'x'.repeat(5000))], '+OK\r\n', /too large/],
  ])('blocks: %s', (_name, reqs, server, reason) => {
    const t = tracker(Buffer.concat(reqs), b(server));
    expect(t.blocker()).toMatch(reason);
  });

  it('a transaction ends the block at EXEC or DISCARD', () => {
    const t = tracker(Buffer.concat([cmd('MULTI'), cmd('INCR', 'a'), cmd('EXEC')]), b('+OK\r\n+QUEUED\r\n'));
    expect(t.blocker()).toMatch(/transaction/);
    t.serverData(b('*1\r\n:1\r\n'));
    expect(t.blocker()).toBeNull();
    const d = tracker(Buffer.concat([cmd('MULTI'), cmd('DISCARD')]), b('+OK\r\n+OK\r\n'));
    expect(d.blocker()).toBeNull();
  });

  it(`blocks beyond ${MAX_PENDING} pending requests`, () => {
    const t = respContinue.createTracker();
    const ping = cmd('PING');
    t.clientData(Buffer.concat(Array.from({ length: MAX_PENDING }, () => ping)));
    t.serverData(b('+PONG\r\n'.repeat(MAX_PENDING - 1)));
    expect(t.blocker()).toBeNull();
    expect(t.answeredClientBytes()).toBe((MAX_PENDING - 1) * ping.length);
    t.clientData(Buffer.concat(Array.from({ length: MAX_PENDING }, () => ping)));
    expect(t.blocker()).toMatch(/pending/);
  });
});

describe('respContinue reply counter', () => {
  it('returns reply ends within each chunk', () => {
    const c = respContinue.createReplyCounter();
    expect(c.push(b('+OK\r\n:1'))).toEqual([5]);
    expect(c.push(b('\r\n$2\r\nhi\r\n+'))).toEqual([2, 10]);
    expect(c.broken).toBeNull();
    c.push(b('x\nzz'));
    expect(c.broken).toMatch(/LF/);
  });
});

describe('fuzz (seeded, bounded)', () => {
  const seeds = {
    client: Buffer.concat([cmd('AUTH', 'p'), cmd('SELECT', '2'), b('GET a\r\n'), cmd('MULTI'), cmd('SET', 'a', 'xyz'), cmd('EXEC'), cmd('HELLO', '3')]),
    server: b('+OK\r\n+OK\r\n$3\r\nxyz\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n%1\r\n+server\r\n+redis\r\n'),
  };
  const alphabet = b('*$+-:_,#(!=~>%|\r\n0123456789-?abc ');
  it('random bytes and mutations never throw; offsets stay within what was fed', () => {
    const rnd = prng(12);
    const pick = (n: number) => Math.floor(rnd() * n);
    const mutate = (s: Buffer): Buffer => {
      const m = Buffer.from(s);
      for (let k = 1 + pick(4); k > 0; k--) m[pick(m.length)] = alphabet[pick(alphabet.length)]!;
      return rnd() < 0.3 ? m.subarray(0, pick(m.length + 1)) : m;
    };
    const random = () => Buffer.from(Array.from({ length: pick(60) }, () => (rnd() < 0.5 ? alphabet[pick(alphabet.length)]! : pick(256))));
    let blocked = 0;
    let clean = 0;
    for (let n = 0; n < 3000; n++) {
      const client = rnd() < 0.2 ? random() : mutate(seeds.client);
      const server = rnd() < 0.2 ? random() : mutate(seeds.server);
      const t = tracker(client, server, 1 + pick(9));
      const why = t.blocker();
      const answered = t.answeredClientBytes();
      const complete = t.completeServerBytes();
      expect(answered).toBeGreaterThanOrEqual(0);
      expect(answered).toBeLessThanOrEqual(client.length);
      expect(complete).toBeLessThanOrEqual(server.length);
      expect(why === null || typeof why === 'string').toBe(true);
      const p = t.sessionPreamble();
      const f = new RespFramer();
      expect(f.push(p.bytes).length).toBe(p.replies);
      if (why) blocked++;
      else clean++;
      const counter = respContinue.createReplyCounter();
      for (const e of counter.push(server)) expect(e).toBeLessThanOrEqual(server.length);
    }
    expect(blocked).toBeGreaterThan(100);
    expect(clean).toBeGreaterThan(10);
  });
  it('a gap anywhere in a reply stream: skipped exactly when it lies inside one blob (to its CRLF), and the framing after it is what the whole stream gives', () => {
    const rnd = prng(13);
    const pick = (n: number) => Math.floor(rnd() * n);
    const stream = b('$10\r\n0123456789\r\n*2\r\n$3\r\nabc\r\n:1\r\n+OK\r\n$0\r\n\r\n=7\r\ntxt:abc\r\n');
    const whole = new RespFramer().push(stream);
    // Where the blobs' payloads and CRLFs lie: [first, end) (the empty blob's is its CRLF alone).
    const blobs = [[5, 17], [25, 30], [43, 45], [49, 58]];
    let skipped = 0;
    for (let n = 0; n < 2000; n++) {
      const from = pick(stream.length);
      const length = 1 + pick(Math.min(20, stream.length - from));
      const f = new RespFramer();
      const before = f.push(stream.subarray(0, from));
      const ends = f.skipLost(length);
      expect(ends !== null, `${from}+${length}`).toBe(blobs.some(([first, end]) => from >= first! && from + length <= end!));
      if (ends === null) {
        expect(f.offset).toBe(from);
        continue;
      }
      skipped++;
      const after = f.push(stream.subarray(from + length)).map((e) => e + from + length);
      expect([...before, ...ends.map((e) => e + from), ...after], `${from}+${length}`).toEqual(whole);
      expect(f.broken).toBeNull();
    }
    expect(skipped).toBeGreaterThan(100);
  });
});
