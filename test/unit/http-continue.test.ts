// The HTTP/1.1 framer (RFC 9112) and the httpContinue plugin (issue 12), pure: message ends split
// at every byte, bodiless responses, chunked with trailers, the limits and refusals, the
// request/response pairing offsets, each blocker, the reply counter, and a bounded seeded
// mutation fuzz of the framer in both roles.
import { describe, expect, it } from 'vitest';
import { Http1Framer, MAX_HEAD, MAX_LINE, type Http1Event } from '../../src/net/http1-framer.js';
import { httpContinue, MAX_PENDING } from '../../src/net/shadow/http-continue.js';
import { TCP_ACK } from '../../src/native.js';
import { ReplyDigest } from '../../src/net/shadow/reply-digest.js';
import { prng } from './frame-builder.js';
import { shadowConversation } from './shadow-plan-conversation.js';

const b = (s: string) => Buffer.from(s, 'latin1');
const ends = (events: Http1Event[]) => events.filter((e) => e.kind === 'end').map((e) => (e.kind === 'end' ? e.message.end : -1));
const cumulative = (parts: string[]) => {
  let at = 0;
  return parts.map((p) => (at += p.length));
};

/** Frames `parts` (one string each message) with one cut at every byte; returns the framer of the last run. */
function everyCut(role: 'request' | 'response', parts: string[], methods: string[] = []): void {
  const all = b(parts.join(''));
  const want = cumulative(parts);
  for (let cut = 0; cut <= all.length; cut++) {
    let finals = 0;
    const f: Http1Framer = new Http1Framer(role, { requestMethod: () => methods[finals], onEvent: (e) => void (e.kind === 'end' && e.message.head.status >= 200 && finals++) });
    const events = [...f.push(all.subarray(0, cut)), ...f.push(all.subarray(cut))];
    expect(f.broken, `cut ${cut}`).toBeNull();
    expect(ends(events), `cut ${cut}`).toEqual(want);
    expect(f.between).toBe(true);
  }
}

const GET = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
const OK = (body: string, extra = '') => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`;

describe('Http1Framer', () => {
  it('frames requests: no body, Content-Length, chunked with extensions and trailers, leading empty lines; split at every byte', () => {
    everyCut('request', [
      GET('/a'),
      'POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello',
      'PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 15\r\nX-Other: y\r\n\r\n',
      '\r\nDELETE /d HTTP/1.0\r\n\r\n',
      'PATCH /e HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
    ]);
  });

  it('frames responses: 1xx interim, 204 and 304 and HEAD without body, chunked with trailers; split at every byte', () => {
    everyCut(
      'response',
      [
        'HTTP/1.1 100 Continue\r\n\r\n',
        OK('abc'),
        'HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n',
        'HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: "x"\r\n\r\n',
        'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n', // to HEAD
        'HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n',
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nDigest: x\r\n\r\n',
        'HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n',
        'HTTP/1.1 500 \r\nContent-Length: 1\r\n\r\nx',
      ],
      ['PUT', 'GET', 'GET', 'HEAD', 'GET', 'GET', 'GET'],
    );
  });

  it('reports heads with what frames the message and its persistence', () => {
    const f = new Http1Framer('request');
    const [head] = f.push(b('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nExpect: 100-continue\r\n\r\nGET /x HTTP/1.0\r\n\r\nGET /w HTTP/1.1\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n'));
    expect(head).toMatchObject({ kind: 'head', head: { method: 'GET', target: '/', minor: 0, close: false, expectContinue: true, body: 'none', start: 0 } });
    const rest = f.push(b(''));
    expect(rest).toEqual([]);
    const f2 = new Http1Framer('request');
    const heads = f2.push(b('GET /x HTTP/1.0\r\n\r\nGET /w HTTP/1.1\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n')).filter((e) => e.kind === 'head');
    expect(heads.map((e) => (e.kind === 'head' ? [e.head.close, e.head.upgrade, e.head.start] : null))).toEqual([[true, null, 0], [true, 'websocket', 19]]);
  });

  it('ends HTTP at a 101 or a 2xx to CONNECT: later bytes are ignored, not broken', () => {
    const f = new Http1Framer('response');
    const events = f.push(b('HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello'));
    expect(ends(events)).toEqual([77]);
    expect(f.broken).toBeNull();
    expect(f.opaque).toBe('101 Switching Protocols to websocket');
    const c = new Http1Framer('response', { requestMethod: () => 'CONNECT' });
    c.push(b('HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01'));
    expect(c.opaque).toMatch(/tunnel/);
    const r = new Http1Framer('request');
    expect(ends(r.push(b('CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n\x16\x03')))).toEqual([39]);
    expect(r.opaque).toMatch(/tunnel/);
  });

  it('refuses what it cannot frame exactly, with the reason, and never throws', () => {
    const cases: Array<['request' | 'response', string, RegExp]> = [
      ['response', 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close', /delimited by the connection's close/],
      ['response', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n', /delimited by the connection's close/],
      ['request', 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n', /does not end with chunked/],
      ['request', 'POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', /both Transfer-Encoding and Content-Length/],
      ['request', 'POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n', /Content-Length .* invalid/],
      ['request', 'POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n', /Content-Length .* invalid/],
      ['request', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n', /HTTP\/1\.0/],
      ['request', 'GET / HTTP/1.1\nHost: x\n\n', /bare LF/],
      ['request', 'GET / HTTP/1.1\r\nHost : x\r\n\r\n', /no whitespace before the colon/],
      ['request', 'GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n', /line folding/],
      ['request', 'GET / HTTP/2.0\r\n\r\n', /HTTP\/2\.0 is not followed/],
      ['request', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', /HTTP\/2 connection preface/],
      ['request', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n', /TLS/],
      ['request', 'get me a coffee\r\n', /not an HTTP\/1\.x request line/],
      ['request', 'GET / HTTP/1.1\r\nX: a\rb\r\n\r\n', /CR not followed by LF/],
      ['request', 'PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /chunk-size line/],
      ['request', 'PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY', /chunk data not followed by CRLF/],
      ['request', 'PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n', /trailer section/],
      ['response', 'HTTP/1.1 099 Odd\r\n\r\n', /status code/],
      ['response', 'ICY 200 OK\r\n\r\n', /not an HTTP\/1\.x status line/],
    ];
    for (const [role, text, why] of cases) {
      for (const step of [1, 7, text.length]) {
        const f = new Http1Framer(role);
        const all = b(text);
        for (let i = 0; i < all.length; i += step) f.push(all.subarray(i, i + step));
        expect(f.broken, `${JSON.stringify(text)} step ${step}`).toMatch(why);
        expect(f.push(b(GET('/after')))).toEqual([]);
      }
    }
  });

  it('bounds line, head and chunk-line length', () => {
    const long = new Http1Framer('request');
    long.push(b(`GET /${'a'.repeat(MAX_LINE)}`));
    expect(long.broken).toMatch(/line longer than 8192 bytes/);
    const ok = new Http1Framer('request');
    expect(ends(ok.push(b(`GET /${'a'.repeat(MAX_LINE - 20)} HTTP/1.1\r\n\r\n`)))).toHaveLength(1);
    const head = new Http1Framer('request');
    const field = `X-F: ${'v'.repeat(4000)}\r\n`;
    head.push(b(`GET / HTTP/1.1\r\n${field.repeat(Math.ceil(MAX_HEAD / field.length))}`));
    expect(head.broken).toMatch(/head longer than 65536 bytes/);
    const fields = new Http1Framer('request');
    fields.push(b(`GET / HTTP/1.1\r\n${'X: y\r\n'.repeat(300)}`));
    expect(fields.broken).toMatch(/more than 256 field lines/);
    const exactly = new Http1Framer('request');
    expect(ends(exactly.push(b(`GET / HTTP/1.1\r\n${'X: y\r\n'.repeat(256)}\r\nPUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n${'T: y\r\n'.repeat(256)}\r\n`)))).toHaveLength(2);
    const trailers = new Http1Framer('request');
    trailers.push(b(`PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n${'T: y\r\n'.repeat(257)}`));
    expect(trailers.broken).toMatch(/more than 256 field lines/);
    const chunk = new Http1Framer('request');
    chunk.push(b(`PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;${'e'.repeat(5000)}`));
    expect(chunk.broken).toMatch(/chunk-size line longer/);
    const empties = new Http1Framer('request');
    empties.push(b('\r\n'.repeat(9)));
    expect(empties.broken).toMatch(/empty lines/);
  });

  it('skips large bodies without keeping them', () => {
    const f = new Http1Framer('response', { requestMethod: () => 'GET' });
    const body = Buffer.alloc(5_000_000, 0x61);
    const e1 = f.push(b('HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n'));
    expect(e1.map((e) => e.kind)).toEqual(['head']);
    for (let i = 0; i < body.length; i += 65536) expect(ends(f.push(body.subarray(i, i + 65536)))).toHaveLength(i + 65536 >= body.length ? 1 : 0);
    expect(f.offset).toBe(44 + 5_000_000);
  });
  it('skipLost(): bytes a capture lost inside a Content-Length body or a chunk\'s data, and nothing else; the framing after it is unchanged', () => {
    const stream = b(`${OK('0123456789')}HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n${OK('xy')}`);
    const whole = ends(new Http1Framer('response').push(stream));
    const first = OK('0123456789').length;
    const chunkData = first + 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n'.length;
    // [first byte, end) where a skip may lie: the first body, the chunk's data, the last body.
    const bodies = [[first - 10, first], [chunkData, chunkData + 5], [stream.length - 2, stream.length]];
    let skipped = 0;
    for (let from = 0; from < stream.length; from++) {
      for (let length = 1; from + length <= stream.length && length <= 12; length++) {
        const f = new Http1Framer('response');
        const before = ends(f.push(stream.subarray(0, from)));
        const gap = f.skipLost(length);
        expect(gap !== null, `${from}+${length}`).toBe(bodies.some(([start, end]) => from >= start! && from + length <= end!));
        if (gap === null) {
          expect(f.offset).toBe(from);
          continue;
        }
        skipped++;
        expect([...before, ...ends(gap), ...ends(f.push(stream.subarray(from + length)))], `${from}+${length}`).toEqual(whole);
      }
    }
    expect(skipped).toBeGreaterThan(50);
  });
});

/** A tracker fed `client` then `server`, in steps of `step` bytes. */
function tracker(client: string | Buffer, server: string | Buffer, step = 1 << 30) {
  const t = httpContinue.createTracker();
  const c = typeof client === 'string' ? b(client) : client;
  const s = typeof server === 'string' ? b(server) : server;
  for (let i = 0; i < c.length; i += step) t.clientData(c.subarray(i, i + step));
  for (let i = 0; i < s.length; i += step) t.serverData(s.subarray(i, i + step));
  return t;
}

describe('httpContinue tracker', () => {
  it('pairs pipelined requests with final responses, responses split at every byte boundary', () => {
    const reqs = [GET('/1'), 'HEAD /2 HTTP/1.1\r\nHost: x\r\n\r\n', 'PUT /3 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi', GET('/4', 'If-None-Match: "e"\r\n'), 'DELETE /5 HTTP/1.1\r\n\r\n'];
    const reps = [OK('one'), 'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nT: 1\r\n\r\n', 'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n', 'HTTP/1.1 204 No Content\r\n\r\n'];
    const client = b(reqs.join(''));
    const server = b(reps.join(''));
    const reqEnds = cumulative(reqs);
    const repEnds = cumulative(reps);
    const interimEnd = repEnds[1]! + 'HTTP/1.1 100 Continue\r\n\r\n'.length;
    for (let cut = 0; cut <= server.length; cut++) {
      const t = httpContinue.createTracker();
      t.clientData(client);
      t.serverData(server.subarray(0, cut));
      const n = repEnds.filter((e) => e <= cut).length;
      expect(t.answeredClientBytes(), `cut ${cut}`).toBe(n === 0 ? 0 : reqEnds[n - 1]);
      const complete = n === 0 ? 0 : repEnds[n - 1]!;
      expect(t.completeServerBytes(), `cut ${cut}`).toBe(n === 2 && cut >= interimEnd ? interimEnd : complete);
      expect(t.blocker()).toBeNull();
      t.serverData(server.subarray(cut));
      expect(t.answeredClientBytes()).toBe(client.length);
      expect(t.completeServerBytes()).toBe(server.length);
      expect(t.blocker()).toBeNull();
    }
    expect(httpContinue.createTracker().sessionPreamble()).toEqual({ bytes: Buffer.alloc(0), replies: 0 });
  });

  it('splits requests at every byte too; a partial request stays unanswered and replayable', () => {
    const client = b(GET('/a') + 'PUT /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody' + GET('/c'));
    const first = GET('/a').length;
    for (let step = 1; step <= 9; step++) {
      const t = tracker(client.subarray(0, client.length - 3), OK('A'), step);
      expect(t.answeredClientBytes()).toBe(first);
      expect(t.completeServerBytes()).toBe(OK('A').length);
      expect(t.blocker()).toBeNull();
    }
  });

  it('a POST (or PATCH, or an unknown method) not answered blocks, once its head is whole; answered, it does not', () => {
    const post = 'POST /order HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc';
    expect(tracker(GET('/') + post, OK('x')).blocker()).toMatch(/a POST request not answered: not idempotent/);
    expect(tracker(GET('/') + post.slice(0, -2), OK('x')).blocker()).toMatch(/POST request not answered/); // its body still coming
    expect(tracker(GET('/') + 'POST /ord', OK('x')).blocker()).toBeNull(); // no request line yet: the server has nothing to apply
    expect(tracker(GET('/') + post, OK('x') + OK('done')).blocker()).toBeNull();
    expect(tracker('PATCH /p HTTP/1.1\r\n\r\n', '').blocker()).toMatch(/PATCH request not answered/);
    expect(tracker('PURGE /p HTTP/1.1\r\n\r\n', '').blocker()).toMatch(/PURGE request not answered/);
    expect(tracker('get /p HTTP/1.1\r\n\r\n', '').blocker()).toMatch(/get request not answered/); // methods are case-sensitive
    for (const m of ['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']) expect(tracker(`${m} /p HTTP/1.1\r\n\r\n`, '').blocker(), m).toBeNull();
    // A POST behind a GET whose response is cut: blocked too.
    expect(tracker(GET('/') + post, OK('xyz').slice(0, 30)).blocker()).toMatch(/POST/);
  });

  it('Connection: close from either end, or HTTP/1.0, with a request outstanding blocks; answered and idle it does not', () => {
    expect(tracker(GET('/', 'Connection: close\r\n'), '').blocker()).toMatch(/the client said the connection ends/);
    expect(tracker(GET('/', 'Connection: close\r\n'), OK('x')).blocker()).toBeNull(); // the client closes next
    expect(tracker(GET('/') + GET('/2'), OK('x', 'Connection: close\r\n')).blocker()).toMatch(/the server said the connection ends/);
    expect(tracker(GET('/'), OK('xyz', 'Connection: close\r\n').slice(0, -1)).blocker()).toMatch(/the server said/); // its response cut
    expect(tracker(GET('/') + 'GE', OK('x', 'Connection: close\r\n')).blocker()).toMatch(/the server said/); // a partial request after it
    expect(tracker('GET / HTTP/1.0\r\n\r\n', '').blocker()).toMatch(/HTTP\/1\.0/);
    expect(tracker('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', '').blocker()).toBeNull();
    expect(tracker(GET('/'), 'HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n').blocker()).toBeNull(); // an interim response's fields are not the connection's
  });

  it('an upgrade (101), CONNECT, an early answer, a response without a request, and broken streams block', () => {
    const ws = GET('/chat', 'Connection: Upgrade\r\nUpgrade: websocket\r\n');
    expect(tracker(ws, 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00').blocker()).toMatch(/101 Switching Protocols to websocket/);
    expect(tracker(ws, OK('no upgrade here')).blocker()).toBeNull(); // the server declined: still HTTP
    expect(tracker('CONNECT h:443 HTTP/1.1\r\n\r\n', '').blocker()).toMatch(/CONNECT/);
    const early = tracker('PUT /big HTTP/1.1\r\nContent-Length: 100\r\n\r\npart', 'HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n');
    expect(early.blocker()).toMatch(/answered a PUT request before it had received all of it/);
    expect(early.answeredClientBytes()).toBe(0);
    early.clientData(b('x'.repeat(96)));
    expect(early.blocker()).toBeNull(); // the rest arrived: answered and whole
    expect(early.answeredClientBytes()).toBe(42 + 100);
    expect(tracker('', OK('x')).blocker()).toMatch(/200 response without a request/);
    expect(tracker(GET('/'), 'HTTP/1.1 200 OK\r\n\r\nbody until close').blocker()).toMatch(/server stream not HTTP\/1\.1 responses: a response delimited by the connection's close/);
    expect(tracker('\x16\x03\x01', '').blocker()).toMatch(/client stream not HTTP\/1\.1 requests: a TLS handshake/);
  });

  it('frames the response to HEAD by the request it answers', () => {
    const t = tracker('HEAD / HTTP/1.1\r\n\r\n' + GET('/'), 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n' + OK('0123456789'));
    expect(t.blocker()).toBeNull();
    expect(t.answeredClientBytes()).toBe(19 + GET('/').length);
  });

  it(`more than ${MAX_PENDING} requests pending blocks`, () => {
    const t = tracker(GET('/').repeat(MAX_PENDING + 1), '');
    expect(t.blocker()).toMatch(/more than 10000 requests pending/);
    const ok = tracker(GET('/').repeat(MAX_PENDING), OK('').repeat(MAX_PENDING - 1));
    expect(ok.blocker()).toBeNull();
    expect(ok.answeredClientBytes()).toBe(GET('/').length * (MAX_PENDING - 1));
  });
});

describe('httpContinue reply counter', () => {
  it('counts final responses (not interim ones), offsets within each chunk, at any split', () => {
    const reps = ['HTTP/1.1 100 Continue\r\n\r\n' + OK('a'), 'HTTP/1.1 204 No Content\r\n\r\n', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n'];
    const all = b(reps.join(''));
    for (let cut = 0; cut <= all.length; cut++) {
      const c = httpContinue.createReplyCounter();
      const got = [...c.push(all.subarray(0, cut)), ...c.push(all.subarray(cut)).map((e) => e + cut)];
      expect(got).toEqual(cumulative(reps));
      expect(c.broken).toBeNull();
    }
    const bad = httpContinue.createReplyCounter();
    bad.push(b('SSH-2.0-OpenSSH\r\n'));
    expect(bad.broken).toMatch(/not an HTTP\/1\.x status line/);
  });
});

describe('fuzz (seeded, bounded)', () => {
  const seeds = {
    request: b(GET('/a') + 'POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc' + 'PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n' + 'HEAD /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'),
    response: b(OK('xy') + 'HTTP/1.1 100 Continue\r\n\r\n' + 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n' + 'HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n' + 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n'),
  };
  const alphabet = b('\r\n :;,0123456789aAfFzZ-/.HTTP/1.1 chunkedContent-LengthTransfer-Encoding\t\x00\x7f');

  it('random bytes and mutations never throw; ends increase within what was fed; a split never changes the result', () => {
    const rnd = prng(9112);
    const pick = (n: number) => Math.floor(rnd() * n);
    const mutate = (s: Buffer): Buffer => {
      let m = Buffer.from(s);
      for (let k = 1 + pick(4); k > 0; k--) {
        const at = pick(m.length);
        const op = pick(3);
        if (op === 0) m[at] = alphabet[pick(alphabet.length)]!;
        else if (op === 1) m = Buffer.concat([m.subarray(0, at), m.subarray(at + 1 + pick(3))]);
        else m = Buffer.concat([m.subarray(0, at), alphabet.subarray(pick(alphabet.length - 4)).subarray(0, 1 + pick(4)), m.subarray(at)]);
      }
      return rnd() < 0.3 ? m.subarray(0, pick(m.length + 1)) : m;
    };
    const random = () => Buffer.from(Array.from({ length: pick(80) }, () => (rnd() < 0.6 ? alphabet[pick(alphabet.length)]! : pick(256))));
    const run = (role: 'request' | 'response', input: Buffer, step: number) => {
      const f = new Http1Framer(role, { requestMethod: () => (input.length % 5 === 0 ? 'HEAD' : 'GET') });
      const got: number[] = [];
      for (let i = 0; i < input.length; i += step) got.push(...ends(f.push(input.subarray(i, i + step))));
      return { got, broken: f.broken, opaque: f.opaque };
    };
    const tally = { broken: 0, whole: 0, messages: 0 };
    for (let n = 0; n < 4000; n++) {
      const role = rnd() < 0.5 ? 'request' : 'response';
      const input = rnd() < 0.15 ? random() : mutate(seeds[role]);
      const a = run(role, input, input.length || 1);
      const c = run(role, input, 1 + pick(11));
      // The same bytes frame the same way however they are cut (the reason may name a later check, not another outcome).
      expect(c.got, input.toString('latin1')).toEqual(a.got);
      expect(c.broken === null, input.toString('latin1')).toBe(a.broken === null);
      for (let k = 0; k < a.got.length; k++) {
        expect(a.got[k]!).toBeLessThanOrEqual(input.length);
        if (k > 0) expect(a.got[k]!).toBeGreaterThan(a.got[k - 1]!);
      }
      if (a.broken) tally.broken++;
      else tally.whole++;
      tally.messages += a.got.length;
      // The tracker on the same bytes: never throws, offsets within what it was fed.
      const t = role === 'request' ? tracker(input, seeds.response, 1 + pick(7)) : tracker(seeds.request, input, 1 + pick(7));
      const why = t.blocker();
      expect(why === null || why.length > 0).toBe(true);
      expect(t.answeredClientBytes()).toBeLessThanOrEqual(role === 'request' ? input.length : seeds.request.length);
      expect(t.completeServerBytes()).toBeLessThanOrEqual(role === 'response' ? input.length : seeds.response.length);
    }
    console.log(`http1 fuzz: 4000 inputs, ${tally.whole} framed whole, ${tally.broken} broken, ${tally.messages} messages`);
    // The run exercised both outcomes.
    expect(tally.broken).toBeGreaterThan(500);
    expect(tally.whole).toBeGreaterThan(500);
  });
});

describe('httpContinue tracker, a server gap', () => {
  it('follows a response past lost body bytes, to its end; a gap reaching past the body blocks, saying why', () => {
    const body = 'b'.repeat(1000);
    const t = tracker(GET('/a') + GET('/b'), '');
    const response = b(OK(body));
    t.serverData(response.subarray(0, 100));
    expect(t.serverGap!(response.length - 100)).toBeNull();
    expect(t.answeredClientBytes()).toBe(GET('/a').length);
    expect(t.completeServerBytes()).toBe(response.length);
    expect(t.blocker()).toBeNull();
    expect(t.serverGap!(10)).toMatch(/^they reach past a response body's data/);
    expect(t.blocker()).toMatch(/^the capture lost 10 server bytes the client acknowledged: they reach past/);
  });
  it('follows a request past lost body bytes (clientGap): the next request is framed where it starts', () => {
    const post = b(`POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n${'p'.repeat(500)}`);
    const t = httpContinue.createTracker();
    t.clientData(post.subarray(0, post.length - 400));
    expect(t.clientGap!(300)).toBeNull();
    t.clientData(Buffer.concat([post.subarray(post.length - 100), b(GET('/next'))]));
    t.serverData(b(OK('done') + OK('next')));
    expect(t.answeredClientBytes()).toBe(post.length + GET('/next').length);
    expect(t.blocker()).toBeNull();
    expect(t.clientGap!(5)).toMatch(/^they reach past a request body's data/);
  });
});

describe('httpContinue in a ShadowTable plan', () => {
  const SERVER = { address: '198.18.5.10', port: 80 };
  const conversation = () => shadowConversation(httpContinue, SERVER);

  it('replays the unanswered GETs, no preamble; a response cut in the middle: the replay must reproduce its start (expectReply)', () => {
    const { t, seg } = conversation();
    t.segments([seg(false, b(GET('/1') + GET('/2'))), seg(true, b(OK('first'))), seg(false, Buffer.alloc(0), TCP_ACK)], 1_000_000);
    const p = t.plans(1_000_010)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.replay.toString('latin1')).toBe(GET('/2'));
    expect(p.preamble).toEqual({ bytes: Buffer.alloc(0), replies: 0 });
    expect(p.expectReply).toBeUndefined();
    const cut = b(OK('second response'));
    t.segments([seg(true, cut.subarray(0, 30))], 1_000_020);
    const mid = t.plans(1_000_030)[0]!;
    if (mid.kind !== 'restore') throw new Error(mid.reason);
    expect(mid.replay.toString('latin1')).toBe(GET('/2'));
    const digest = new ReplyDigest();
    digest.update(cut.subarray(0, 30));
    expect(mid.expectReply).toEqual(digest.fingerprint());
  });

  it('a GET\'s 200 cut in its body, with a strong ETag: the replay asks for the rest (Range, If-Range), no byte-for-byte check', () => {
    const { t, seg } = conversation();
    const etag = '"5f3a-10000"';
    const body = 'z'.repeat(10_000);
    const whole = b(OK(body, `ETag: ${etag}\r\nDate: Wed, 02 Dec 2026 13:00:00 GMT\r\n`));
    const headLength = whole.length - body.length;
    t.segments([seg(false, b(GET('/big') + GET('/next'))), seg(true, whole.subarray(0, headLength + 1460)), seg(true, whole.subarray(headLength + 1460, headLength + 2920))], 1_000_000);
    const p = t.plans(1_000_010)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.expectReply).toBeUndefined();
    expect(p.resumeReply?.description).toBe(`HTTP range from body byte 2920 of 10000 (If-Range ${etag})`);
    // The fields go into the first replayed request's head; the pipelined one follows unchanged.
    expect(p.replay.toString('latin1')).toBe(GET('/big', `Range: bytes=2920-\r\nIf-Range: ${etag}\r\n`) + GET('/next'));
  });

  it('a cut body that cannot be resumed (no validator, a weak ETag) falls back to the byte-for-byte check; the tracker says why', () => {
    const { t, seg } = conversation();
    const whole = b(OK('q'.repeat(5000)));
    t.segments([seg(false, b(GET('/big'))), seg(true, whole.subarray(0, 1000))], 1_000_000);
    const p = t.plans(1_000_010)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.resumeReply).toBeUndefined();
    expect(p.expectReply?.bytes).toBe(1000);
    const tracker = httpContinue.createTracker();
    tracker.clientData(b(GET('/w')));
    tracker.serverData(b('HTTP/1.1 200 OK\r\nContent-Length: 9\r\nETag: W/"w"\r\n\r\nabc'));
    expect(tracker.resumeReply?.()).toMatch(/weak or malformed/);
  });

  it('a POST in flight: reset with the reason', () => {
    const { t, seg } = conversation();
    t.segments([seg(false, b('POST /pay HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}'))], 1_000_000);
    const p = t.plans(1_000_010)[0]!;
    expect(p.kind === 'reset' && p.reason).toMatch(/a POST request not answered: not idempotent/);
  });
});
