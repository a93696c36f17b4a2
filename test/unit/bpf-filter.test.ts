// buildTcpFilter() programs run in a small classic-BPF interpreter over frames from
// test/unit/frame-builder.ts, compared with what the options say should pass; and attached to
// a packet socket on lo to show the kernel's checker takes them.
import { describe, expect, it } from 'vitest';
import { native, type NativeCapture } from '../../src/native.js';
import { buildTcpFilter, MAX_FILTER_HOSTS, MAX_FILTER_PORTS, type BpfFilterOptions } from '../../src/net/bpf-filter.js';
import { runBpf } from './bpf-interpreter.js';
import { addressBytes, buildFrame, type FrameSpec } from './frame-builder.js';

interface Case {
  spec: FrameSpec;
  link: 0 | 14;
  mark?: number;
}

/** What the options say about a frame: whether it should pass. */
function expected(opts: BpfFilterOptions, c: Case): boolean {
  const s = c.spec;
  if (opts.excludeMark !== undefined && (c.mark ?? 0) === opts.excludeMark >>> 0) return false;
  const v6 = s.src.includes(':');
  if (s.ethertype !== undefined && s.ethertype !== (v6 ? 0x86dd : 0x0800)) return false;
  if ((s.protocol ?? 6) !== 6) return false;
  if (v6 && (s.ipv6Ext ?? []).length > 0) return false; // not followed by the filter
  if (!v6 && ((s.fragField ?? 0x4000) & 0x1fff) !== 0) return false;
  const hosts = (opts.hosts ?? []).map((h) => addressBytes(h));
  if (hosts.length > 0) {
    const mine = [addressBytes(s.src), addressBytes(s.dst)];
    if (!hosts.some((h) => mine.some((m) => m.equals(h)))) return false;
  }
  const ports = opts.ports ?? [];
  if (ports.length > 0 && !ports.includes(s.sport ?? 40000) && !ports.includes(s.dport ?? 7000)) return false;
  if (opts.flagsAny !== undefined && ((s.flags ?? 0x10) & opts.flagsAny) === 0) return false;
  return true;
}

function frameOf(c: Case): Buffer {
  return buildFrame({ ...c.spec, link: c.link === 0 ? 'raw' : 'ethernet' });
}

const A4 = ['198.18.0.1', '198.18.0.2', '198.19.7.9'];
const A6 = ['fd7a:6b00::1', 'fd7a:6b00::2', 'fd7a:6b00:ffff::198.18.0.1'];
const PORTS = [22, 443, 7000, 40000, 65535];

/** TCP frames over every pair of addresses (both families) and ports, plus some non-TCP and odd ones. */
function cases(link: 0 | 14): Case[] {
  const out: Case[] = [];
  for (const addrs of [A4, A6]) {
    for (const src of addrs) {
      for (const dst of addrs) {
        if (src === dst) continue;
        for (const sport of PORTS) for (const dport of [443, 7000, 1]) out.push({ link, spec: { src, dst, sport, dport } });
        for (const flags of [0x02, 0x12, 0x11, 0x04, 0x18]) out.push({ link, spec: { src, dst, sport: 443, dport: 40000, flags } });
      }
    }
  }
  for (const [src, dst] of [[A4[0]!, A4[1]!], [A6[0]!, A6[1]!]] as const) {
    const base = { src, dst, sport: 443, dport: 7000 };
    out.push({ link, spec: { ...base, protocol: 17 } }); // UDP
    out.push({ link, spec: { ...base, protocol: 1 } });
    out.push({ link, spec: { ...base, payload: Buffer.alloc(1000, 1) } });
    if (src.includes(':')) {
      out.push({ link, spec: { ...base, ipv6Ext: [{ type: 0 }] } });
      out.push({ link, spec: { ...base, ipv6Ext: [{ type: 44 }] } });
    } else {
      out.push({ link, spec: { ...base, ipOptions: [1, 1, 1, 1, 1, 1, 1, 0] } }); // ports found past IP options
      out.push({ link, spec: { ...base, ipOptions: Array<number>(40).fill(1), sport: 1, dport: 2 } });
      out.push({ link, spec: { ...base, fragField: 0x2000 } }); // first fragment: has the TCP header
      out.push({ link, spec: { ...base, fragField: 0x0001 } }); // later fragments: no TCP header
      out.push({ link, spec: { ...base, fragField: 0x2010 } });
      out.push({ link, spec: { ...base, fragField: 0x1fff } });
    }
  }
  return out;
}

function check(opts: BpfFilterOptions): { accepted: number; dropped: number } {
  const snap = opts.snapLength ?? 256;
  let accepted = 0;
  let dropped = 0;
  for (const link of [14, 0] as const) {
    const prog = buildTcpFilter({ ...opts, linkHeaderLength: link });
    for (const c of cases(link)) {
      const want = expected(opts, c);
      const got = runBpf(prog, frameOf(c));
      expect(got, `${JSON.stringify({ ...c.spec, payload: undefined })} link ${link}`).toBe(want ? snap : 0);
      if (want) accepted++;
      else dropped++;
    }
  }
  return { accepted, dropped };
}

describe('buildTcpFilter in a BPF interpreter', () => {
  it('no hosts, no ports: every whole or first-fragment TCP segment, nothing else', () => {
    const r = check({});
    expect(r.accepted).toBeGreaterThan(100);
    expect(r.dropped).toBeGreaterThan(5);
  });

  it('hosts of both families, either direction', () => {
    const r = check({ hosts: ['198.18.0.1', 'fd7a:6b00::2'] });
    expect(r.accepted).toBeGreaterThan(50);
    expect(r.dropped).toBeGreaterThan(50);
    check({ hosts: ['fd7a:6b00:ffff::198.18.0.1'] }); // the v6 host spelled with a dotted tail
    check({ hosts: ['fd7a:6b00:0000:0000:0000:0000:0000:0002'] });
  });

  it('hosts of one family drop the other family entirely', () => {
    const prog = buildTcpFilter({ hosts: ['198.18.0.1'] });
    expect(runBpf(prog, buildFrame({ src: A6[0]!, dst: A6[1]! }))).toBe(0);
    expect(runBpf(prog, buildFrame({ src: A4[1]!, dst: A4[0]! }))).toBe(256);
    const prog6 = buildTcpFilter({ hosts: ['fd7a:6b00::1'] });
    expect(runBpf(prog6, buildFrame({ src: A4[0]!, dst: A4[1]! }))).toBe(0);
    expect(runBpf(prog6, buildFrame({ src: A6[1]!, dst: A6[0]! }))).toBe(256);
  });

  it('ports, either direction, with and without hosts; IPv4 header options are skipped', () => {
    check({ ports: [443] });
    check({ ports: [22, 65535] });
    check({ ports: [7000], hosts: ['198.19.7.9', 'fd7a:6b00::1'] });
    check({ ports: [40000, 1], hosts: ['fd7a:6b00:ffff::198.18.0.1'] });
  });

  it('only some TCP flags (SYN, FIN, RST: opens and closes), with and without ports, past IPv4 options', () => {
    const r = check({ flagsAny: 0x02 | 0x01 | 0x04 });
    expect(r.accepted).toBeGreaterThan(50);
    check({ flagsAny: 0x07, ports: [443] });
    check({ flagsAny: 0x04, ports: [40000], hosts: ['fd7a:6b00::1', '198.18.0.2'] });
    const opts = buildTcpFilter({ flagsAny: 0x02, ports: [443] });
    const withOptions = buildFrame({ src: A4[0]!, dst: A4[1]!, sport: 443, flags: 0x12, ipOptions: [1, 1, 1, 0] });
    expect(runBpf(opts, withOptions)).toBe(256);
    expect(runBpf(opts, buildFrame({ src: A4[0]!, dst: A4[1]!, sport: 443, flags: 0x10, ipOptions: [1, 1, 1, 0] }))).toBe(0);
    for (const bad of [0, 256, 1.5]) expect(() => buildTcpFilter({ flagsAny: bad }), String(bad)).toThrow(RangeError);
  });

  it('the largest filter (8 hosts, 16 ports), snap lengths, excluded mark', () => {
    const hosts = [...A4, ...A6, '198.18.200.1', 'fd7a:6b00::99'];
    const ports = [...PORTS, ...Array.from({ length: 11 }, (_, i) => 1000 + i)];
    expect(hosts.length).toBe(MAX_FILTER_HOSTS);
    expect(ports.length).toBe(MAX_FILTER_PORTS);
    check({ hosts, ports });
    check({ hosts: hosts.slice(0, 4), ports: [1], snapLength: 64 });
    check({ snapLength: 0x40000 });
    check({ ports: [443], snapLength: 1500 });

    const prog = buildTcpFilter({ excludeMark: 0x7a6b, ports: [443] });
    const f = buildFrame({ src: A4[0]!, dst: A4[1]!, sport: 443 });
    expect(runBpf(prog, f, 0x7a6b)).toBe(0);
    expect(runBpf(prog, f, 0x7a6c)).toBe(256);
    expect(runBpf(prog, f)).toBe(256);
    // A mark with the top bit set is compared as the kernel's u32.
    const hi = buildTcpFilter({ excludeMark: 0xfffffffe });
    expect(runBpf(hi, f, 0xfffffffe)).toBe(0);
    expect(runBpf(hi, f, 1)).toBe(256);
  });

  it('ARP, other ethertypes, and frames too short for the loads are dropped', () => {
    const prog = buildTcpFilter({ ports: [443] });
    const arp = Buffer.alloc(42);
    arp.writeUInt16BE(0x0806, 12);
    arp.writeUInt16BE(1, 14);
    arp.writeUInt16BE(0x0800, 16);
    expect(runBpf(prog, arp)).toBe(0);
    expect(runBpf(buildTcpFilter(), arp)).toBe(0);
    for (const ethertype of [0x8100, 0x88cc, 0x8847]) expect(runBpf(buildTcpFilter(), buildFrame({ src: A4[0]!, dst: A4[1]!, ethertype }))).toBe(0);
    const good = buildFrame({ src: A6[0]!, dst: A6[1]!, sport: 443 });
    expect(runBpf(prog, good)).toBe(256);
    for (const n of [0, 12, 13, 14, 20, 54, 55]) expect(runBpf(prog, good.subarray(0, n)), `cut at ${n}`).toBe(0);
    // Raw IP: a version nibble other than 4 or 6.
    const raw = buildFrame({ src: A4[0]!, dst: A4[1]!, link: 'raw', ipVersion: 5 });
    expect(runBpf(buildTcpFilter({ linkHeaderLength: 0 }), raw)).toBe(0);
  });

  it('invalid options throw', () => {
    const nine = Array.from({ length: MAX_FILTER_HOSTS + 1 }, (_, i) => `198.18.1.${i + 1}`);
    expect(() => buildTcpFilter({ hosts: nine })).toThrow(RangeError);
    expect(() => buildTcpFilter({ ports: Array.from({ length: MAX_FILTER_PORTS + 1 }, (_, i) => i + 1) })).toThrow(RangeError);
    for (const port of [0, -1, 65536, 1.5, Number.NaN]) expect(() => buildTcpFilter({ ports: [port] }), String(port)).toThrow(RangeError);
    for (const host of ['', 'fd7a:6b00::g', '198.18.0.256', '198.18.0', 'localhost', 'fd7a:6b00::1/64']) {
      expect(() => buildTcpFilter({ hosts: [host] }), host).toThrow(TypeError);
    }
    for (const snapLength of [0, 63, 0x40001, 100.5]) expect(() => buildTcpFilter({ snapLength }), String(snapLength)).toThrow(RangeError);
    expect(() => buildTcpFilter({ snapLength: 64 })).not.toThrow();
  });
});

describe('the kernel takes the programs', () => {
  const variants: BpfFilterOptions[] = [
    {},
    { ports: [443] },
    { hosts: ['198.18.0.1', 'fd7a:6b00::1'], ports: [7000, 40000] },
    { hosts: [...A4, ...A6, '198.18.200.1', 'fd7a:6b00::99'], ports: Array.from({ length: MAX_FILTER_PORTS }, (_, i) => 2000 + i), snapLength: 0x40000 },
    { linkHeaderLength: 0, hosts: ['fd7a:6b00::1'] },
    { excludeMark: 0x7a6b, snapLength: 64 },
    { flagsAny: 0x07, ports: [443], linkHeaderLength: 0 },
  ];

  it('SO_ATTACH_FILTER on a packet socket on lo accepts each variant', () => {
    for (const v of variants) {
      const filter = buildTcpFilter(v);
      let cap: NativeCapture | undefined;
      expect(() => { cap = new native.Capture({ interface: 'lo', filter, blockSize: 4096, blockCount: 1 }); }, JSON.stringify(v)).not.toThrow();
      cap?.close();
    }
  });

  it('and refuses a program its checker rejects (so the check above means something)', () => {
    const bad = Buffer.alloc(8);
    bad.writeUInt16LE(0x05, 0); // ja +5 past the end
    bad.writeUInt32LE(5, 4);
    expect(() => new native.Capture({ interface: 'lo', filter: bad, blockSize: 4096, blockCount: 1 })).toThrow(/EINVAL|setsockopt/);
  });
});
