// The TCP repair state's wire form: round trip, each rule with the field it names, and a bounded
// fuzz: any input either parses into a state that passes the checks or throws
// TcpRepairStateError, and the input is never changed.
import { describe, expect, it } from 'vitest';
import {
  MAX_QUEUE_BYTES,
  TcpRepairStateError,
  checkTcpRepairState,
  parseTcpRepairState,
  serializeTcpRepairState,
  type TcpRepairStateWire,
} from '../../src/net/tcp-repair-state.js';

function valid(): TcpRepairStateWire {
  return {
    version: 1,
    family: 4,
    local: { address: '198.18.7.200', port: 7000 },
    remote: { address: '198.18.7.3', port: 40000 },
    send: { seq: 4294967000, queue: Buffer.from('hello world').toString('base64'), unsent: 5 },
    recv: { seq: 100, queue: Buffer.from('abc').toString('base64') },
    mss: 1448,
    options: { sack: true, timestamps: true, windowScale: { send: 7, recv: 9 } },
    timestamp: 3_000_000_000,
    window: { sndWl1: 103, sndWnd: 64240, maxWindow: 65535, rcvWnd: 65536, rcvWup: 103 },
    buffers: { send: 87040, recv: 131072 },
  };
}

function rejects(mutate: (w: Record<string, any>) => void, field: string): void {
  const w = valid() as unknown as Record<string, any>;
  mutate(w);
  const before = structuredClone(w);
  let err: unknown;
  try {
    parseTcpRepairState(w);
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${field} to be rejected`).toBeInstanceOf(TcpRepairStateError);
  expect((err as TcpRepairStateError).field).toBe(field);
  expect((err as TcpRepairStateError).code).toBe('ERR_TCP_REPAIR_STATE');
  expect(w).toEqual(before);
}

describe('TcpRepairState wire form', () => {
  it('round-trips (queues as bytes, seq as uint32)', () => {
    const s = parseTcpRepairState(valid());
    expect(s.send.queue.toString()).toBe('hello world');
    expect(s.recv.queue.toString()).toBe('abc');
    expect(s.send.seq).toBe(4294967000);
    expect(serializeTcpRepairState(s)).toEqual(valid());
    expect(parseTcpRepairState(JSON.parse(JSON.stringify(serializeTcpRepairState(s))))).toEqual(s);
  });

  it('accepts IPv6 with a scope id, no options at all, empty queues, a receive window wrapping sequence space', () => {
    const w = valid();
    w.family = 6;
    w.local = { address: 'fe80::1', port: 1, scopeId: 3 };
    w.remote = { address: 'fd7a:6b00:1::2', port: 65535 };
    w.options = { sack: false, timestamps: false, windowScale: null };
    w.timestamp = 0;
    w.send = { seq: 0, queue: '', unsent: 0 };
    w.recv = { seq: 0xfffffff0, queue: '' };
    w.window = { sndWl1: 0xfffffff0, sndWnd: 0, maxWindow: 0, rcvWnd: 100, rcvWup: 0xfffffff0 };
    expect(parseTcpRepairState(w).recv.seq).toBe(0xfffffff0);
  });

  it('names the field of each bad value and changes nothing', () => {
    rejects((w) => (w.version = 2), 'version');
    rejects((w) => (w.family = 5), 'family');
    rejects((w) => (w.local.address = '198.18.7'), 'local.address');
    rejects((w) => (w.remote.port = 0), 'remote.port');
    rejects((w) => (w.local.port = 70000), 'local.port');
    rejects((w) => (w.remote.address = '::1'), 'remote.address'); // family 4
    rejects((w) => (w.local.scopeId = 2), 'local.scopeId'); // IPv4
    rejects((w) => (w.send.seq = -1), 'send.seq');
    rejects((w) => (w.send.seq = 2 ** 32), 'send.seq');
    rejects((w) => (w.send.seq = 1.5), 'send.seq');
    rejects((w) => (w.recv.seq = '100'), 'recv.seq');
    rejects((w) => (w.send.queue = 'not base64!'), 'send.queue');
    rejects((w) => (w.send.unsent = 12), 'send.unsent');
    rejects((w) => (w.mss = 0), 'mss');
    rejects((w) => (w.mss = 65536), 'mss');
    rejects((w) => (w.options.windowScale.send = 15), 'options.windowScale.send');
    rejects((w) => (w.options.sack = 'yes'), 'options.sack');
    rejects((w) => ((w.options.timestamps = false), (w.timestamp = 5)), 'timestamp');
    rejects((w) => (w.window.maxWindow = 100), 'window.maxWindow');
    rejects((w) => (w.window.rcvWup = 104), 'window.rcvWup'); // after RCV.NXT (100 + 3)
    rejects((w) => (w.window.sndWl1 = 103 + 65536 + 1), 'window.sndWl1');
    rejects((w) => ((w.window.rcvWnd = 2 ** 31), (w.window.sndWl1 = 103)), 'window.rcvWnd');
    rejects((w) => (w.buffers.recv = -1), 'buffers.recv');
    rejects((w) => (w.extra = 1), 'extra');
    rejects((w) => (w.window.extra = 1), 'window.extra');
    rejects((w) => delete w.recv, 'recv');
  });

  it('refuses a non-object and an oversized queue', () => {
    for (const bad of [null, undefined, 42, 'state', [], true]) expect(() => parseTcpRepairState(bad)).toThrow(TcpRepairStateError);
    const s = parseTcpRepairState(valid());
    s.recv.queue = Buffer.alloc(MAX_QUEUE_BYTES + 1);
    expect(() => checkTcpRepairState(s)).toThrow(/recv.queue/);
    expect(() => serializeTcpRepairState(s)).toThrow(TcpRepairStateError);
  });

  it('fuzz: 3000 mutated states either parse into a checked state or throw TcpRepairStateError; the input is untouched', () => {
    let seed = 0x12345;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const values = [0, -1, 1, 2 ** 32, 2 ** 32 - 1, 0.5, NaN, Infinity, '', 'x', '::1', '198.18.0.1', null, true, false, {}, [], 'AAAA', 65535, 88, 14, 15];
    const paths: string[][] = [];
    const walk = (o: Record<string, unknown>, p: string[]) => {
      for (const [k, v] of Object.entries(o)) {
        paths.push([...p, k]);
        if (v && typeof v === 'object') walk(v as Record<string, unknown>, [...p, k]);
      }
    };
    walk(valid() as unknown as Record<string, unknown>, []);
    const deadline = Date.now() + 20_000;
    let parsed = 0;
    let refused = 0;
    for (let i = 0; i < 3000 && Date.now() < deadline; i++) {
      const w = valid() as unknown as Record<string, any>;
      const n = 1 + Math.floor(rnd() * 3);
      for (let j = 0; j < n; j++) {
        const p = pick(paths);
        let o: any = w;
        for (const k of p.slice(0, -1)) o = o && typeof o === 'object' ? o[k] : undefined;
        if (!o || typeof o !== 'object') continue;
        const r = rnd();
        if (r < 0.1) delete o[p.at(-1)!];
        else if (r < 0.5 && typeof o[p.at(-1)!] === 'number') o[p.at(-1)!] = Math.floor(rnd() * 2 ** 33) - 2 ** 31;
        else o[p.at(-1)!] = pick(values);
      }
      const before = structuredClone(w);
      try {
        const s = parseTcpRepairState(w);
        checkTcpRepairState(s);
        expect(parseTcpRepairState(serializeTcpRepairState(s))).toEqual(s);
        parsed++;
      } catch (e) {
        expect(e).toBeInstanceOf(TcpRepairStateError);
        refused++;
      }
      expect(w).toEqual(before);
    }
    expect(parsed + refused).toBeGreaterThan(500);
    expect(refused).toBeGreaterThan(0);
    expect(parsed).toBeGreaterThan(0);
  });
});
