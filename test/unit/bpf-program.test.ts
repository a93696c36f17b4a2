// The capture filter programs, run in a small classic-BPF interpreter over built frames, and
// attached to a real packet socket to show the kernel's verifier takes them.
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native.js';
import { buildTcpFilter, type BpfFilterOptions } from '../../src/net/bpf-filter.js';
import { frame, type FrameSpec } from './packet-frames.js';

/** Runs a sock_filter program over a packet; returns the number of bytes to keep (0 = drop). */
function runBpf(prog: Buffer, pkt: Buffer, mark = 0): number {
  let a = 0;
  let x = 0;
  const ld = (off: number, size: number) => {
    if (off + size > pkt.length) return undefined;
    return size === 4 ? pkt.readUInt32BE(off) : size === 2 ? pkt.readUInt16BE(off) : pkt[off]!;
  };
  for (let pc = 0; pc < prog.length / 8; pc++) {
    const code = prog.readUInt16LE(pc * 8);
    const jt = prog[pc * 8 + 2]!;
    const jf = prog[pc * 8 + 3]!;
    const k = prog.readUInt32LE(pc * 8 + 4);
    const load = (v: number | undefined) => {
      if (v === undefined) return false; // out of bounds: the kernel returns 0
      a = v;
      return true;
    };
    switch (code) {
      case 0x20: if (k === 0xfffff014) a = mark; else if (!load(ld(k, 4))) return 0; break;
      case 0x28: if (!load(ld(k, 2))) return 0; break;
      case 0x30: if (!load(ld(k, 1))) return 0; break;
      case 0x48: if (!load(ld(x + k, 2))) return 0; break;
      case 0xb1: { const v = ld(k, 1); if (v === undefined) return 0; x = (v & 0xf) * 4; break; }
      case 0x54: a = (a & k) >>> 0; break;
      case 0x15: pc += a === k ? jt : jf; break;
      case 0x45: pc += (a & k) !== 0 ? jt : jf; break;
      case 0x05: pc += k; break;
      case 0x06: return k;
      default: throw new Error(`opcode ${code.toString(16)} not in this interpreter`);
    }
  }
  throw new Error('fell off the end of the program');
}

const c4 = '198.18.0.1';
const s4 = '198.18.0.2';
const c6 = 'fd7a:6b00::1';
const s6 = 'fd7a:6b00::2';
const f = (spec: Partial<FrameSpec>) => frame({ src: c4, dst: s4, sport: 40000, dport: 5432, ...spec });

describe('buildTcpFilter', () => {
  it('keeps only headers by default, TCP over IPv4 and IPv6 in both directions', () => {
    const p = buildTcpFilter();
    expect(runBpf(p, f({}))).toBe(256);
    expect(runBpf(p, f({ src: s4, dst: c4, sport: 5432, dport: 40000 }))).toBe(256);
    expect(runBpf(p, frame({ src: c6, dst: s6 }))).toBe(256);
    expect(runBpf(p, f({ protocol: 17 }))).toBe(0);
    expect(runBpf(p, frame({ src: c6, dst: s6, protocol: 17 }))).toBe(0);
    expect(runBpf(p, f({ fragment: { offset: 8 } }))).toBe(0);
    const arp = Buffer.alloc(42);
    arp.writeUInt16BE(0x0806, 12);
    expect(runBpf(p, arp)).toBe(0);
  });

  it('hosts and ports: either direction matches, anything else is dropped', () => {
    const p = buildTcpFilter({ hosts: [s4, s6], ports: [5432, 6379], snapLength: 4096 });
    expect(runBpf(p, f({}))).toBe(4096);
    expect(runBpf(p, f({ src: s4, dst: c4, sport: 6379, dport: 40000 }))).toBe(4096);
    expect(runBpf(p, f({ dport: 5433 }))).toBe(0);
    expect(runBpf(p, f({ dst: '198.18.0.3' }))).toBe(0);
    expect(runBpf(p, frame({ src: c6, dst: s6, sport: 40000, dport: 5432 }))).toBe(4096);
    expect(runBpf(p, frame({ src: s6, dst: c6, sport: 5432, dport: 40000 }))).toBe(4096);
    expect(runBpf(p, frame({ src: c6, dst: 'fd7a:6b00::3', sport: 40000, dport: 5432 }))).toBe(0);
    expect(runBpf(p, f({ ipOptions: [1, 1, 1, 0] }))).toBe(4096); // the port is found past IP options
    const only4 = buildTcpFilter({ hosts: [s4] });
    expect(runBpf(only4, frame({ src: c6, dst: s6 }))).toBe(0);
  });

  it('drops the agent\'s own marked segments when asked', () => {
    const p = buildTcpFilter({ excludeMark: 0x7a6b });
    expect(runBpf(p, f({}), 0)).toBe(256);
    expect(runBpf(p, f({}), 0x7a6b)).toBe(0);
    expect(runBpf(p, f({}), 0x7a6c)).toBe(256);
  });

  it('raw-IP interfaces (no link header)', () => {
    const p = buildTcpFilter({ ports: [5432], linkHeaderLength: 0 });
    expect(runBpf(p, f({ rawIp: true }))).toBe(256);
    expect(runBpf(p, frame({ src: c6, dst: s6, dport: 5432, rawIp: true }))).toBe(256);
    expect(runBpf(p, f({ rawIp: true, dport: 1 }))).toBe(0);
  });

  it.each<[string, BpfFilterOptions, RegExp]>([
    ['too many hosts', { hosts: Array.from({ length: 9 }, (_, i) => `198.18.0.${i + 1}`) }, /at most 8 hosts/],
    ['too many ports', { ports: Array.from({ length: 17 }, (_, i) => i + 1) }, /at most 16 ports/],
    ['a bad port', { ports: [70000] }, /bad port/],
    ['a bad address', { hosts: ['198.18.0'] }, /bad host/],
    ['a bad snap length', { snapLength: 10 }, /bad snap length/],
  ])('rejects %s', (_n, options, message) => {
    expect(() => buildTcpFilter(options)).toThrow(message);
  });

  it('the kernel accepts the programs (SO_ATTACH_FILTER on a real packet socket)', () => {
    for (const options of [{}, { ports: [1, 2, 3], excludeMark: 0x7a6b }, { hosts: [s4, s6, c4, c6], ports: [5432], snapLength: 65535 }, { hosts: Array.from({ length: 8 }, (_, i) => `fd7a:6b00::${i + 1}`), ports: Array.from({ length: 16 }, (_, i) => i + 1) }]) {
      const cap = new native.Capture({ interface: 'lo', filter: buildTcpFilter(options) });
      cap.close();
    }
  });
});
