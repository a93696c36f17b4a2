// A classic BPF interpreter for the programs bpf-filter.ts builds (the subset they emit), for
// bpf-filter.test.ts and address-probe.test.ts.
import { expect } from 'vitest';

const SKF_AD_MARK = 0xfffff000 + 20;

/**
 * Runs a struct sock_filter[] program over a packet as the kernel's classic BPF would: a load
 * past the end of the packet drops it; returns the RET value (bytes to keep, 0 = drop).
 * Throws on an instruction outside the subset buildTcpFilter() emits, a jump past the end, or
 * falling off the end (the kernel's checker refuses both).
 */
export function runBpf(prog: Buffer, pkt: Buffer, mark = 0): number {
  expect(prog.length % 8).toBe(0);
  const n = prog.length / 8;
  let a = 0;
  let x = 0;
  for (let pc = 0; pc < n; pc++) {
    const code = prog.readUInt16LE(pc * 8);
    const jt = prog[pc * 8 + 2]!;
    const jf = prog[pc * 8 + 3]!;
    const k = prog.readUInt32LE(pc * 8 + 4);
    const jump = (d: number) => {
      if (pc + 1 + d >= n) throw new Error(`jump past the end at ${pc}`);
      pc += d;
    };
    switch (code) {
      case 0x20: // ld [k] (word)
        if (k === SKF_AD_MARK) a = mark >>> 0;
        else if (k >= 0xfffff000) throw new Error(`ancillary load ${k.toString(16)} not modelled`);
        else if (k + 4 > pkt.length) return 0;
        else a = pkt.readUInt32BE(k);
        break;
      case 0x28: // ldh [k]
        if (k + 2 > pkt.length) return 0;
        a = pkt.readUInt16BE(k);
        break;
      case 0x30: // ldb [k]
        if (k + 1 > pkt.length) return 0;
        a = pkt[k]!;
        break;
      case 0x48: // ldh [x + k]
        if (x + k + 2 > pkt.length) return 0;
        a = pkt.readUInt16BE(x + k);
        break;
      case 0x50: // ldb [x + k]
        if (x + k + 1 > pkt.length) return 0;
        a = pkt[x + k]!;
        break;
      case 0xb1: // ldx 4 * ([k] & 0xf)
        if (k + 1 > pkt.length) return 0;
        x = (pkt[k]! & 0xf) * 4;
        break;
      case 0x54: // and #k
        a = (a & k) >>> 0;
        break;
      case 0x15: // jeq #k
        jump(a === k ? jt : jf);
        break;
      case 0x45: // jset #k
        jump((a & k) !== 0 ? jt : jf);
        break;
      case 0x05: // ja
        jump(k);
        break;
      case 0x06: // ret #k
        return k;
      default:
        throw new Error(`opcode 0x${code.toString(16)} at ${pc} not modelled`);
    }
  }
  throw new Error('fell off the end of the program');
}
