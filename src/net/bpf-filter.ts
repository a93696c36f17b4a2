// A classic BPF program for the capture socket: TCP over IPv4 or IPv6, optionally only to or
// from some hosts and ports, returning at most `snapLength` bytes of each frame so the kernel
// copies no payload we did not ask for. Built here (a format, not a syscall) and attached by
// the addon with SO_ATTACH_FILTER.
import net from 'node:net';
import { addressBytes } from './endpoint.js';

// Opcodes of struct sock_filter (include/uapi/linux/filter.h).
const LD_H_ABS = 0x28;
const LD_B_ABS = 0x30;
const LD_W_ABS = 0x20;
const LD_H_IND = 0x48;
const LD_B_IND = 0x50;
const LDX_B_MSH = 0xb1;
const JEQ_K = 0x15;
const JSET_K = 0x45;
const RET_K = 0x06;
const JA = 0x05;

export interface BpfFilterOptions {
  hosts?: string[];
  ports?: number[];
  /** Bytes kept per frame; headers of any TCP/IP packet fit in 256. */
  snapLength?: number;
  /** 14 for Ethernet (and loopback), 0 for raw-IP interfaces (tun). */
  linkHeaderLength?: 0 | 14;
  /** Drop packets carrying this skb mark (the agent's own forged segments). */
  excludeMark?: number;
  /** Only segments with at least one of these TCP flags (e.g. SYN | FIN | RST: opens and closes). */
  flagsAny?: number;
}

// Ancillary load of skb->mark (SKF_AD_OFF + SKF_AD_MARK in include/uapi/linux/filter.h).
const SKF_AD_MARK = 0xfffff000 + 20;

// A conditional jump reaches at most 255 instructions ahead; `ja` (an unconditional jump with
// a 32-bit offset) carries the long jumps, so every conditional target below stays near.
type Insn = { code: number; jt: number | string; jf: number | string; k: number | string } | { label: string };

export const MAX_FILTER_HOSTS = 8;
export const MAX_FILTER_PORTS = 16;

export function buildTcpFilter(options: BpfFilterOptions = {}): Buffer {
  const hosts = options.hosts ?? [];
  const ports = options.ports ?? [];
  if (hosts.length > MAX_FILTER_HOSTS) throw new RangeError(`at most ${MAX_FILTER_HOSTS} hosts in a capture filter`);
  if (ports.length > MAX_FILTER_PORTS) throw new RangeError(`at most ${MAX_FILTER_PORTS} ports in a capture filter`);
  for (const p of ports) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new RangeError(`bad port ${p}`);
  for (const h of hosts) if (net.isIP(h) === 0) throw new TypeError(`bad host address ${h}`);
  const snap = options.snapLength ?? 256;
  if (!Number.isInteger(snap) || snap < 64 || snap > 0x40000) throw new RangeError(`bad snap length ${snap}`);
  const l2 = options.linkHeaderLength ?? 14;
  const flags = options.flagsAny;
  if (flags !== undefined && (!Number.isInteger(flags) || flags < 1 || flags > 0xff)) throw new RangeError(`bad TCP flags mask ${flags}`);
  const v4 = hosts.filter((h) => net.isIPv4(h)).map(ipv4Word);
  const v6 = hosts.filter((h) => net.isIPv6(h)).map(ipv6Words);

  const p: Insn[] = [];
  const ins = (code: number, k: number | string, jt: number | string = 0, jf: number | string = 0) => p.push({ code, jt, jf, k });
  const label = (name: string) => p.push({ label: name });

  if (options.excludeMark !== undefined) {
    ins(LD_W_ABS, SKF_AD_MARK);
    ins(JEQ_K, options.excludeMark >>> 0, 0, 1);
    ins(RET_K, 0);
  }
  if (l2 === 14) {
    ins(LD_H_ABS, 12);
    ins(JEQ_K, 0x0800, 0, 1);
    ins(JA, 'v4');
    ins(JEQ_K, 0x86dd, 0, 1);
    ins(JA, 'v6');
  } else {
    ins(LD_B_ABS, 0);
    ins(0x54 /* AND K */, 0xf0);
    ins(JEQ_K, 0x40, 0, 1);
    ins(JA, 'v4');
    ins(JEQ_K, 0x60, 0, 1);
    ins(JA, 'v6');
  }
  ins(RET_K, 0);

  label('v4');
  ins(LD_B_ABS, l2 + 9);
  ins(JEQ_K, 6, 0, 'v4drop');
  ins(LD_H_ABS, l2 + 6);
  ins(JSET_K, 0x1fff, 'v4drop', 0); // a later fragment has no TCP header
  if (hosts.length > 0) {
    for (const w of v4) {
      ins(LD_W_ABS, l2 + 12);
      ins(JEQ_K, w, 'v4host', 0);
      ins(LD_W_ABS, l2 + 16);
      ins(JEQ_K, w, 'v4host', 0);
    }
    ins(RET_K, 0);
    label('v4host');
  }
  if (ports.length > 0) {
    ins(LDX_B_MSH, l2); // X = IPv4 header length
    for (const port of ports) {
      ins(LD_H_IND, l2);
      ins(JEQ_K, port, 'v4accept', 0);
      ins(LD_H_IND, l2 + 2);
      ins(JEQ_K, port, 'v4accept', 0);
    }
  } else {
    ins(JA, 'v4accept');
  }
  label('v4drop');
  ins(RET_K, 0);
  label('v4accept');
  if (flags !== undefined) {
    ins(LDX_B_MSH, l2); // X = IPv4 header length
    ins(LD_B_IND, l2 + 13); // the TCP flags byte
    ins(JSET_K, flags, 0, 1); // (BPF jumps only forward: its own drop below)
    ins(RET_K, snap);
    ins(RET_K, 0);
  } else {
    ins(RET_K, snap);
  }

  label('v6');
  // TCP directly after the fixed header; extension headers before TCP are rare for TCP and
  // are not followed by this filter.
  ins(LD_B_ABS, l2 + 6);
  ins(JEQ_K, 6, 0, 'v6drop');
  if (hosts.length > 0) {
    v6.forEach((words, i) => {
      for (const base of [l2 + 8, l2 + 24]) {
        const next = `v6h${i}_${base}`;
        words.forEach((w, j) => {
          ins(LD_W_ABS, base + 4 * j);
          ins(JEQ_K, w, j === 3 ? 'v6host' : 0, next);
        });
        label(next);
      }
    });
    ins(RET_K, 0);
    label('v6host');
  }
  for (const port of ports) {
    ins(LD_H_ABS, l2 + 40);
    ins(JEQ_K, port, 'v6accept', 0);
    ins(LD_H_ABS, l2 + 42);
    ins(JEQ_K, port, 'v6accept', 0);
  }
  if (ports.length === 0) ins(JA, 'v6accept');
  label('v6drop');
  ins(RET_K, 0);
  label('v6accept');
  if (flags !== undefined) {
    ins(LD_B_ABS, l2 + 40 + 13); // the TCP flags byte
    ins(JSET_K, flags, 0, 1);
    ins(RET_K, snap);
    ins(RET_K, 0);
  } else {
    ins(RET_K, snap);
  }
  return assemble(p);
}

/** Bytes an address probe's filter keeps per frame: an ARP packet is 42, a Neighbour Advertisement with its option 86. */
export const PROBE_ANSWER_SNAP = 128;

/**
 * The filter of an address probe's socket (native `AddressProbe`, net/address-probe.ts), on an
 * Ethernet interface: only frames that say a host holds `address` pass, the first
 * PROBE_ANSWER_SNAP bytes of each.
 *   - IPv4: an ARP packet (Ethernet/IPv4, any operation) whose sender IP is the address: the
 *     holder's reply to an ARP probe (RFC 5227 section 2.1.1), or its own request or announcement.
 *   - IPv6: an ICMPv6 Neighbour Advertisement (type 136) right after the fixed IPv6 header whose
 *     target is the address: the holder's answer to a DAD solicitation (RFC 4862 section 5.4.3).
 * The frame's other fields (operation, hop limit, who sent it) are checked in TypeScript
 * (parseProbeAnswer). Throws TypeError for a string that is not an IP address.
 */
export function buildProbeAnswerFilter(address: string): Buffer {
  if (net.isIP(address) === 0) throw new TypeError(`bad address ${address}`);
  const p: Insn[] = [];
  const ins = (code: number, k: number | string, jt: number | string = 0, jf: number | string = 0) => p.push({ code, jt, jf, k });
  const label = (name: string) => p.push({ label: name });
  if (net.isIPv4(address)) {
    ins(LD_H_ABS, 12);
    ins(JEQ_K, 0x0806, 0, 'drop'); // ARP
    ins(LD_W_ABS, 14);
    ins(JEQ_K, 0x00010800, 0, 'drop'); // hardware Ethernet, protocol IPv4
    ins(LD_H_ABS, 18);
    ins(JEQ_K, 0x0604, 0, 'drop'); // address lengths 6 and 4
    ins(LD_W_ABS, 28);
    ins(JEQ_K, ipv4Word(address), 0, 'drop'); // sender IP
  } else {
    ins(LD_H_ABS, 12);
    ins(JEQ_K, 0x86dd, 0, 'drop');
    ins(LD_B_ABS, 14 + 6);
    ins(JEQ_K, 58, 0, 'drop'); // ICMPv6 right after the fixed header
    ins(LD_B_ABS, 14 + 40);
    ins(JEQ_K, 136, 0, 'drop'); // Neighbour Advertisement
    ipv6Words(address).forEach((w, j) => {
      ins(LD_W_ABS, 14 + 40 + 8 + 4 * j);
      ins(JEQ_K, w, 0, 'drop'); // target
    });
  }
  ins(RET_K, PROBE_ANSWER_SNAP);
  label('drop');
  ins(RET_K, 0);
  return assemble(p);
}

/** Resolves labels into relative jump offsets and encodes struct sock_filter[]. */
function assemble(program: Insn[]): Buffer {
  const at = new Map<string, number>();
  const code: Array<{ code: number; jt: number | string; jf: number | string; k: number | string }> = [];
  for (const i of program) {
    if ('label' in i) at.set(i.label, code.length);
    else code.push(i);
  }
  const out = Buffer.alloc(code.length * 8);
  code.forEach((i, n) => {
    const rel = (j: number | string) => {
      if (typeof j === 'number') return j;
      const target = at.get(j);
      if (target === undefined) throw new Error(`BPF label ${j} undefined`);
      const d = target - n - 1;
      if (d < 0 || d > 255) throw new Error(`BPF jump to ${j} out of range (${d})`);
      return d;
    };
    const k = typeof i.k === 'number' ? i.k : at.get(i.k)! - n - 1; // a `ja` target
    if (typeof i.k === 'string' && !at.has(i.k)) throw new Error(`BPF label ${i.k} undefined`);
    out.writeUInt16LE(i.code, n * 8);
    out.writeUInt8(rel(i.jt), n * 8 + 2);
    out.writeUInt8(rel(i.jf), n * 8 + 3);
    out.writeUInt32LE(k >>> 0, n * 8 + 4);
  });
  return out;
}

function ipv4Word(a: string): number {
  return addressBytes(a).readUInt32BE(0);
}

function ipv6Words(a: string): number[] {
  const b = addressBytes(a);
  return [0, 4, 8, 12].map((o) => b.readUInt32BE(o));
}
