import { describe, expect, it } from 'vitest';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, type ParsedSegment } from '../../src/native.js';
import { BoundaryWatch, StreamFollower } from '../../src/net/boundary-watch.js';
import { goodbyePlugin } from '../../src/net/goodbye/index.js';

function source() {
  const listeners: Array<(s: ParsedSegment[]) => void> = [];
  return {
    onSegments(l: (s: ParsedSegment[]) => void) {
      listeners.push(l);
      return () => listeners.splice(listeners.indexOf(l), 1);
    },
    push(s: Partial<ParsedSegment>) {
      const seg = { family: 4, src: '', dst: '', sport: 0, dport: 0, seq: 0, ack: 0, flags: TCP_ACK, window: 0, urgentPointer: 0, payloadLength: s.payload?.length ?? 0, ...s } as ParsedSegment;
      for (const l of listeners) l([seg]);
    },
    get count() {
      return listeners.length;
    },
  };
}

describe('StreamFollower', () => {
  it('delivers in order, trims retransmissions, and breaks on a gap or truncation', () => {
    const got: string[] = [];
    const f = new StreamFollower((c) => got.push(Buffer.from(c).toString()));
    f.syn(0xffffffff); // next byte wraps to 0
    f.data(0, Buffer.from('abc'), 3);
    f.data(1, Buffer.from('bcde'), 4); // overlap
    f.data(0, Buffer.from('abc'), 3); // full retransmission
    expect(got.join('')).toBe('abcde');
    f.data(10, Buffer.from('x'), 1);
    expect(f.broken).toMatch(/gap of 5 bytes/);
    const t = new StreamFollower(() => {});
    t.syn(0);
    t.data(1, Buffer.from('ab'), 10);
    expect(t.broken).toMatch(/truncated/);
    const m = new StreamFollower(() => {});
    m.data(5, Buffer.from('a'), 1);
    expect(m.broken).toMatch(/mid-stream/);
  });
});

describe('BoundaryWatch', () => {
  it('answers per connection whether a postgres goodbye lands between messages', () => {
    const src = source();
    const server = { address: '198.18.1.2', port: 5432 };
    const w = new BoundaryWatch(src, server, goodbyePlugin('postgres'));
    const c = { address: '198.18.1.1', port: 40000 };
    const up = { src: c.address, sport: c.port, dst: server.address, dport: server.port };
    const down = { src: server.address, sport: server.port, dst: c.address, dport: c.port };
    src.push({ ...up, flags: TCP_SYN, seq: 100 });
    src.push({ ...down, flags: TCP_SYN | TCP_ACK, seq: 900 });
    const startup = Buffer.from([0, 0, 0, 8, 0, 3, 0, 0]);
    src.push({ ...up, seq: 101, flags: TCP_ACK | TCP_PSH, payload: startup });
    const z = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);
    src.push({ ...down, seq: 901, flags: TCP_ACK | TCP_PSH, payload: z.subarray(0, 3) });
    expect(w.state(c)).toMatchObject({ atBoundary: false });
    src.push({ ...down, seq: 904, flags: TCP_ACK | TCP_PSH, payload: z.subarray(3) });
    expect(w.state(c)).toEqual({ atBoundary: true, reason: 'at a message boundary', serverNext: 907, clientNext: 109 });
    expect(w.state({ address: '198.18.1.1', port: 1 }).atBoundary).toBe(false);
    // A connection joined mid-stream is never at a known boundary.
    const late = { address: '198.18.1.9', port: 41000 };
    src.push({ src: server.address, sport: server.port, dst: late.address, dport: late.port, seq: 5, payload: z });
    expect(w.state(late)).toMatchObject({ atBoundary: false, reason: expect.stringMatching(/mid-stream/) });
    w.close();
    expect(src.count).toBe(0);
  });

  it('follows a port on this host\'s addresses; forgets a connection the server closed or reset, one it is told about, and the quietest when full', () => {
    const src = source();
    const local = new Set(['198.18.1.2', '198.18.1.3']);
    const w = new BoundaryWatch(src, { port: 6379, isLocalAddress: (a) => local.has(a) }, goodbyePlugin('resp'), 2);
    const open = (server: string, port: number) => {
      src.push({ src: '198.18.1.1', sport: port, dst: server, dport: 6379, flags: TCP_SYN, seq: 1 });
      src.push({ src: server, sport: 6379, dst: '198.18.1.1', dport: port, flags: TCP_SYN | TCP_ACK, seq: 50 });
    };
    const peer = (port: number) => ({ address: '198.18.1.1', port });
    open('198.18.1.2', 40000);
    open('198.18.1.3', 40001);
    expect(w.state(peer(40000), { address: '198.18.1.2', port: 6379 })).toMatchObject({ atBoundary: true, serverNext: 51, clientNext: 2 });
    expect(w.state(peer(40001), { address: '198.18.1.3', port: 6379 }).atBoundary).toBe(true);
    expect(() => w.state(peer(40000))).toThrow(/name the local endpoint/);
    // Another host's server on the same port (this host its client) is not followed.
    open('198.18.1.9', 40003);
    expect(w.size).toBe(2);
    // 40000 speaks; a third connection then takes the place of the quietest, 40001.
    src.push({ src: '198.18.1.1', sport: 40000, dst: '198.18.1.2', dport: 6379, seq: 2, payload: Buffer.from('*1\r\n$4\r\nPING\r\n') });
    open('198.18.1.2', 40002);
    expect(w.size).toBe(2);
    expect(w.state(peer(40002), { address: '198.18.1.2', port: 6379 }).atBoundary).toBe(true);
    expect(w.state(peer(40001), { address: '198.18.1.3', port: 6379 })).toMatchObject({ atBoundary: false, reason: 'the connection was not followed from its start (or was the quietest of the 2 followed when room was needed)' });
    expect(w.state(peer(40000), { address: '198.18.1.2', port: 6379 })).toMatchObject({ clientNext: 16 }); // still followed
    src.push({ src: '198.18.1.2', sport: 6379, dst: '198.18.1.1', dport: 40000, flags: TCP_FIN | TCP_ACK, seq: 51 });
    expect(w.size).toBe(1);
    w.forget(peer(40002), { address: '198.18.1.2', port: 6379 });
    expect(w.size).toBe(0);
  });
});
