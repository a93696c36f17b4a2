import { describe, expect, it } from 'vitest';
import { goodbyePlugin } from '../../src/net/goodbye/index.js';
import { postgresErrorResponse } from '../../src/net/goodbye/postgres.js';

function pgMsg(type: string, body: Buffer | string): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const h = Buffer.alloc(5);
  h.write(type, 0, 'latin1');
  h.writeInt32BE(b.length + 4, 1);
  return Buffer.concat([h, b]);
}
function startup(): Buffer {
  const body = Buffer.from('\0\x03\0\0user\0postgres\0\0', 'latin1');
  const h = Buffer.alloc(4);
  h.writeInt32BE(body.length + 4);
  return Buffer.concat([h, body]);
}
/** Feeds a buffer byte by byte-groups to show framing is independent of segment boundaries. */
function feed(fn: (c: Buffer) => void, data: Buffer, step = 3) {
  for (let i = 0; i < data.length; i += step) fn(data.subarray(i, i + step));
}

describe('postgres goodbye', () => {
  const plugin = goodbyePlugin('postgres');

  it('is the FATAL 57P01 ErrorResponse a backend sends on termination', () => {
    const m = plugin.message();
    expect(m[0]).toBe('E'.charCodeAt(0));
    expect(m.readInt32BE(1)).toBe(m.length - 1);
    expect(m.toString('latin1')).toContain('C57P01\0');
    expect(m.toString('latin1')).toContain('Mterminating connection due to administrator command\0');
    expect(m).toEqual(postgresErrorResponse({ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' }));
  });

  it('follows a session: boundary between messages, not inside one, in any segmentation', () => {
    const t = plugin.createTracker();
    feed((c) => t.clientData(c), startup());
    const ready = Buffer.concat([pgMsg('R', Buffer.alloc(4)), pgMsg('S', 'a\0b\0'), pgMsg('K', Buffer.alloc(8)), pgMsg('Z', 'I')]);
    feed((c) => t.serverData(c), ready);
    expect(t.atBoundary()).toBe(true);
    feed((c) => t.clientData(c), pgMsg('Q', 'SELECT pg_sleep(600)\0'));
    expect(t.atBoundary()).toBe(true);
    const row = pgMsg('D', Buffer.alloc(100, 1));
    t.serverData(row.subarray(0, 50));
    expect(t.atBoundary()).toBe(false);
    expect(t.reason()).toMatch(/middle of a message/);
    t.serverData(row.subarray(50));
    expect(t.atBoundary()).toBe(true);
  });

  it('handles the SSL refusal byte, and gives up on an encrypted session', () => {
    const ssl = Buffer.alloc(8);
    ssl.writeInt32BE(8);
    ssl.writeInt32BE(80877103, 4);
    const t = plugin.createTracker();
    t.clientData(ssl);
    expect(t.atBoundary()).toBe(false);
    t.serverData(Buffer.from('N'));
    t.clientData(startup());
    t.serverData(pgMsg('Z', 'I'));
    expect(t.atBoundary()).toBe(true);
    const enc = plugin.createTracker();
    enc.clientData(ssl);
    enc.serverData(Buffer.from('S'));
    expect(enc.atBoundary()).toBe(false);
    expect(enc.reason()).toMatch(/encrypted/);
  });

  it('rejects a stream that is not PostgreSQL', () => {
    const t = plugin.createTracker();
    t.clientData(startup());
    t.serverData(Buffer.from('HTTP/1.1 200 OK\r\n'));
    expect(t.atBoundary()).toBe(false);
    expect(t.reason()).toMatch(/not PostgreSQL/);
  });
});

describe('http goodbye', () => {
  const plugin = goodbyePlugin('http');
  it('is a 503 with Connection: close and a correct Content-Length', () => {
    const m = plugin.message().toString('latin1');
    expect(m.startsWith('HTTP/1.1 503 Service Unavailable\r\n')).toBe(true);
    expect(m).toContain('\r\nConnection: close\r\n');
    const [head, body] = m.split('\r\n\r\n');
    expect(Number(/Content-Length: (\d+)/.exec(head!)![1])).toBe(Buffer.byteLength(body!));
  });

  it('is at a boundary only between responses (content-length, chunked, HEAD, 204, 1xx)', () => {
    const t = plugin.createTracker();
    expect(t.atBoundary()).toBe(true);
    feed((c) => t.clientData(c), Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /h HTTP/1.1\r\nHost: x\r\n\r\n'));
    t.serverData(Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234'));
    expect(t.atBoundary()).toBe(false);
    t.serverData(Buffer.from('56789'));
    expect(t.atBoundary()).toBe(true);
    t.serverData(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n'));
    expect(t.atBoundary()).toBe(true); // HEAD: no body follows
    t.clientData(Buffer.from('POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc'));
    feed((c) => t.serverData(c), Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'), 4);
    expect(t.atBoundary()).toBe(true);
    t.clientData(Buffer.from('GET /x HTTP/1.1\r\n\r\n'));
    t.serverData(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel'));
    expect(t.atBoundary()).toBe(false);
  });

  it('cannot place a goodbye in a close-delimited body or a non-HTTP stream', () => {
    const t = plugin.createTracker();
    t.clientData(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
    t.serverData(Buffer.from('HTTP/1.0 200 OK\r\n\r\nstreaming'));
    expect(t.atBoundary()).toBe(false);
    expect(t.reason()).toMatch(/until the connection closes/);
    const u = plugin.createTracker();
    u.serverData(Buffer.from('SSH-2.0-OpenSSH\r\n\r\n'));
    expect(u.atBoundary()).toBe(false);
  });
});

describe('resp goodbye', () => {
  const plugin = goodbyePlugin('redis');
  it('frames nested RESP2/RESP3 replies', () => {
    const t = plugin.createTracker();
    const replies = ['*3\r\n$3\r\nfoo\r\n%1\r\n+k\r\n:1\r\n*-1\r\n', '+OK\r\n', '$-1\r\n', '_\r\n', '>2\r\n$7\r\nmessage\r\n$2\r\nhi\r\n'];
    const reply = Buffer.from(replies.join(''));
    const ends = new Set<number>();
    let at = 0;
    for (const r of replies) ends.add((at += r.length));
    for (let i = 1; i <= reply.length; i++) {
      t.serverData(reply.subarray(i - 1, i));
      expect(t.atBoundary(), `after byte ${i}`).toBe(ends.has(i));
    }
    expect(plugin.message().toString()).toMatch(/^-ERR .*\r\n$/);
  });
  it('rejects garbage', () => {
    const t = plugin.createTracker();
    t.serverData(Buffer.from('hello\r\n'));
    expect(t.atBoundary()).toBe(false);
    expect(t.reason()).toMatch(/not RESP/);
  });
});
