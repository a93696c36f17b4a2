// The address probe's logic, without privileges: which frames are answers (parseProbeAnswer),
// what the socket's filter lets through (run in a classic-BPF interpreter), the loop that probes
// until an address is gone (probeUntilGone) and the lease's check on the link
// (probeLeaseRanOut), with the probe and the clock injected. The native probe on a real link:
// test/lab/address-probe.test.ts.
import { describe, expect, it } from 'vitest';
import { probeLeaseRanOut, type LeaseHeld } from '../../src/agent/address-lease.js';
import {
  AddressHeldError,
  parseProbeAnswer,
  PROBE_EVERY_MS,
  PROBE_GIVE_UP_MS,
  PROBE_WINDOW_MS,
  probeUntilGone,
  type ProbeRound,
} from '../../src/net/address-probe.js';
import { buildProbeAnswerFilter, PROBE_ANSWER_SNAP } from '../../src/net/bpf-filter.js';
import { addressBytes } from '../../src/net/endpoint.js';
import { runBpf } from './bpf-interpreter.js';

const V4 = '198.18.7.100';
const V6 = 'fd7a:6b00:7::100';
const HOLDER = '02:7a:6b:07:00:01';
const ME = '02:7a:6b:07:00:02';
const mac = (m: string) => Buffer.from(m.split(':').map((x) => parseInt(x, 16)));

function ethernet(dst: string, src: string, type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(14);
  mac(dst).copy(h, 0);
  mac(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, body]);
}

function arp(o: { op?: number; sha?: string; spa?: string; tpa?: string; htype?: number; ptype?: number; hlen?: number; ethSrc?: string } = {}): Buffer {
  const b = Buffer.alloc(28 + 18); // padded to the Ethernet minimum
  b.writeUInt16BE(o.htype ?? 1, 0);
  b.writeUInt16BE(o.ptype ?? 0x0800, 2);
  b[4] = o.hlen ?? 6;
  b[5] = 4;
  b.writeUInt16BE(o.op ?? 2, 6);
  mac(o.sha ?? HOLDER).copy(b, 8);
  addressBytes(o.spa ?? V4).copy(b, 14);
  addressBytes(o.tpa ?? '0.0.0.0').copy(b, 24);
  return ethernet(ME, o.ethSrc ?? o.sha ?? HOLDER, 0x0806, b);
}

function na(o: { target?: string; tlla?: string | null; hopLimit?: number; type?: number; code?: number; ethSrc?: string; nextHeader?: number } = {}): Buffer {
  const opt = o.tlla === null ? Buffer.alloc(0) : Buffer.concat([Buffer.from([2, 1]), mac(o.tlla ?? HOLDER)]);
  const icmp = Buffer.concat([Buffer.alloc(8), addressBytes(o.target ?? V6), opt]);
  icmp[0] = o.type ?? 136;
  icmp[1] = o.code ?? 0;
  icmp[4] = 0x20; // O
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(icmp.length, 4);
  ip[6] = o.nextHeader ?? 58;
  ip[7] = o.hopLimit ?? 255;
  addressBytes(o.target ?? V6).copy(ip, 8);
  addressBytes('ff02::1').copy(ip, 24);
  return ethernet('33:33:00:00:00:01', o.ethSrc ?? HOLDER, 0x86dd, Buffer.concat([ip, icmp]));
}

describe('parseProbeAnswer', () => {
  it('IPv4: an ARP reply or request whose sender IP is the address is an answer, naming the sender MAC', () => {
    expect(parseProbeAnswer(arp(), V4, ME)).toEqual({ mac: HOLDER, kind: 'arp-reply' });
    expect(parseProbeAnswer(arp({ op: 1 }), V4, ME)).toEqual({ mac: HOLDER, kind: 'arp-request' });
    // The MAC in the ARP packet, not the frame's (a proxy or a bridge may forward it).
    expect(parseProbeAnswer(arp({ ethSrc: '02:00:00:00:00:09' }), V4, ME)).toEqual({ mac: HOLDER, kind: 'arp-reply' });
  });

  it('IPv4: not an answer: another sender IP, a probe (sender 0.0.0.0), this host\'s own frame, another operation or format, a frame cut short', () => {
    expect(parseProbeAnswer(arp({ spa: '198.18.7.101' }), V4, ME)).toBeUndefined();
    expect(parseProbeAnswer(arp({ op: 1, spa: '0.0.0.0', tpa: V4 }), V4, ME)).toBeUndefined(); // another host probing
    expect(parseProbeAnswer(arp({ sha: ME }), V4, ME)).toBeUndefined();
    expect(parseProbeAnswer(arp({ ethSrc: ME }), V4, ME.toUpperCase())).toBeUndefined();
    expect(parseProbeAnswer(arp({ op: 3 }), V4, ME)).toBeUndefined();
    expect(parseProbeAnswer(arp({ htype: 6 }), V4, ME)).toBeUndefined();
    expect(parseProbeAnswer(arp({ ptype: 0x86dd }), V4, ME)).toBeUndefined();
    expect(parseProbeAnswer(arp({ hlen: 8 }), V4, ME)).toBeUndefined();
    for (const n of [0, 13, 14, 31, 41]) expect(parseProbeAnswer(arp().subarray(0, n), V4, ME), `cut at ${n}`).toBeUndefined();
    expect(parseProbeAnswer(na(), V4, ME)).toBeUndefined();
  });

  it('IPv6: a Neighbour Advertisement for the address is an answer, naming its target link-layer address (else the Ethernet source)', () => {
    expect(parseProbeAnswer(na(), V6, ME)).toEqual({ mac: HOLDER, kind: 'na' });
    expect(parseProbeAnswer(na({ tlla: '02:00:00:00:00:07' }), V6, ME)).toEqual({ mac: '02:00:00:00:00:07', kind: 'na' });
    expect(parseProbeAnswer(na({ tlla: null }), V6, ME)).toEqual({ mac: HOLDER, kind: 'na' });
    // The address in any text form.
    expect(parseProbeAnswer(na(), 'FD7A:6B00:0007:0:0:0:0:100', ME)).toEqual({ mac: HOLDER, kind: 'na' });
  });

  it('IPv6: not an answer: another target, a solicitation, a hop limit below 255 (RFC 4861 7.1.2), another code or next header, this host\'s own, cut short', () => {
    expect(parseProbeAnswer(na({ target: 'fd7a:6b00:7::101' }), V6, ME)).toBeUndefined();
    expect(parseProbeAnswer(na({ type: 135 }), V6, ME)).toBeUndefined();
    expect(parseProbeAnswer(na({ hopLimit: 254 }), V6, ME)).toBeUndefined();
    expect(parseProbeAnswer(na({ code: 1 }), V6, ME)).toBeUndefined();
    expect(parseProbeAnswer(na({ nextHeader: 0 }), V6, ME)).toBeUndefined();
    expect(parseProbeAnswer(na({ ethSrc: ME, tlla: null }), V6, ME)).toBeUndefined();
    expect(parseProbeAnswer(na({ tlla: ME }), V6, ME)).toBeUndefined();
    for (const n of [0, 14, 53, 77]) expect(parseProbeAnswer(na().subarray(0, n), V6, ME), `cut at ${n}`).toBeUndefined();
    expect(parseProbeAnswer(arp(), V6, ME)).toBeUndefined();
  });
});

describe('buildProbeAnswerFilter', () => {
  it('passes the answers about the address (the first PROBE_ANSWER_SNAP bytes), drops the rest before it reaches the socket', () => {
    const f4 = buildProbeAnswerFilter(V4);
    const f6 = buildProbeAnswerFilter(V6);
    expect(runBpf(f4, arp())).toBe(PROBE_ANSWER_SNAP);
    expect(runBpf(f4, arp({ op: 1 }))).toBe(PROBE_ANSWER_SNAP);
    expect(runBpf(f6, na())).toBe(PROBE_ANSWER_SNAP);
    expect(runBpf(f6, na({ tlla: null }))).toBe(PROBE_ANSWER_SNAP);
    for (const f of [arp({ spa: '198.18.7.101' }), arp({ spa: '0.0.0.0', tpa: V4, op: 1 }), arp({ htype: 6 }), arp({ hlen: 8 }), na(), arp().subarray(0, 31)]) expect(runBpf(f4, f)).toBe(0);
    for (const f of [na({ target: 'fd7a:6b00:7::101' }), na({ type: 135 }), na({ nextHeader: 0 }), arp(), na().subarray(0, 77)]) expect(runBpf(f6, f)).toBe(0);
    expect(() => buildProbeAnswerFilter('nope')).toThrow(TypeError);
  });

  it('lets through nothing parseProbeAnswer would not call an answer about the address, except what only TS checks (operation, hop limit, code, own MAC)', () => {
    const frames = [arp(), arp({ op: 1 }), arp({ op: 3 }), arp({ spa: '198.18.7.101' }), arp({ sha: ME }), na(), na({ hopLimit: 1 }), na({ code: 1 }), na({ target: 'fd7a:6b00:7::101' }), na({ type: 135 })];
    for (const [address, filter] of [[V4, buildProbeAnswerFilter(V4)], [V6, buildProbeAnswerFilter(V6)]] as const) {
      for (const f of frames) {
        if (parseProbeAnswer(f, address, ME)) expect(runBpf(filter, f)).toBe(PROBE_ANSWER_SNAP);
        if (runBpf(filter, f) === 0) expect(parseProbeAnswer(f, address, ME)).toBeUndefined();
      }
    }
  });
});

/** A link whose holder answers while `held()` says so, on a fake clock that the rounds and pauses advance. */
function fakeLink(held: (round: number, t: number) => string | undefined, options: { answerMs?: number } = {}) {
  let t = 10_000;
  const rounds: Array<{ at: number; windowMs: number }> = [];
  const sleeps: number[] = [];
  const probe = async (windowMs: number): Promise<ProbeRound> => {
    rounds.push({ at: t, windowMs });
    const by = held(rounds.length, t);
    if (by) {
      const answerMs = options.answerMs ?? 0.2;
      t += answerMs;
      return { answer: { mac: by, kind: 'arp-reply' }, answerMs };
    }
    t += windowMs;
    return {};
  };
  const sleep = async (ms: number) => {
    sleeps.push(ms);
    t += ms;
  };
  return { probe, sleep, now: () => t, rounds, sleeps, advance: (ms: number) => void (t += ms) };
}

describe('probeUntilGone', () => {
  it('nobody answers: gone after one round of the window', async () => {
    const link = fakeLink(() => undefined);
    const r = await probeUntilGone(link.probe, { address: V4, now: link.now, sleep: link.sleep });
    expect(r).toEqual({ kind: 'gone', probes: 1, startedAt: 10_000, at: 10_000 + PROBE_WINDOW_MS });
    expect(link.rounds).toEqual([{ at: 10_000, windowMs: PROBE_WINDOW_MS }]);
    expect(link.sleeps).toEqual([]);
  });

  it('held, then gone: a round every PROBE_EVERY_MS while answered, the holder said once, the answers counted', async () => {
    const heard: unknown[] = [];
    const link = fakeLink((n) => (n <= 4 ? (n === 3 ? '02:00:00:00:00:03' : HOLDER) : undefined));
    const r = await probeUntilGone(link.probe, { address: V4, now: link.now, sleep: link.sleep, onHeld: (h) => heard.push(h) });
    expect(r).toEqual({ kind: 'gone', probes: 5, startedAt: 10_000, at: 10_000 + 4 * PROBE_EVERY_MS + PROBE_WINDOW_MS, held: { macs: [HOLDER, '02:00:00:00:00:03'], answers: 4, firstAt: 10_000.2, lastAt: 10_000 + 3 * PROBE_EVERY_MS + 0.2 } });
    expect(heard).toEqual([{ answer: { mac: HOLDER, kind: 'arp-reply' }, at: 10_000.2 }]);
    expect(link.rounds.map((x) => x.at - 10_000)).toEqual([0, 100, 200, 300, 400].map((x) => x * (PROBE_EVERY_MS / 100)));
  });

  it('still held after giveUpMs: AddressHeldError naming who answered; the rounds bounded', async () => {
    const link = fakeLink(() => HOLDER);
    const err = await probeUntilGone(link.probe, { address: V6, holder: 'a', now: link.now, sleep: link.sleep }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AddressHeldError);
    const e = err as AddressHeldError;
    expect(e.code).toBe('ERR_ADDRESS_HELD');
    expect(e.message).toMatch(new RegExp(`^${V6} is still held on the link \\(a's\\): answered by ${HOLDER} in \\d+ of \\d+ probe rounds over \\d+ ms; not added`));
    expect(e.held.macs).toEqual([HOLDER]);
    expect(e.ms).toBeGreaterThanOrEqual(PROBE_GIVE_UP_MS);
    expect(e.ms).toBeLessThan(PROBE_GIVE_UP_MS + PROBE_EVERY_MS + 1);
    expect(link.rounds.length).toBe(Math.floor(PROBE_GIVE_UP_MS / PROBE_EVERY_MS) + 1);
  });

  it('a slow round (a window, not an answer) still keeps the pace; a stop() reason ends it before the next round', async () => {
    let stopAfter = Infinity;
    const link = fakeLink((n) => (n <= 2 ? HOLDER : undefined), { answerMs: 150 });
    const stopped = await probeUntilGone(link.probe, { address: V4, now: link.now, sleep: link.sleep, stop: () => (link.rounds.length >= stopAfter ? 'the agent stops' : undefined) });
    expect(stopped.kind).toBe('gone');
    expect(link.sleeps).toEqual([]); // each answered round took longer than PROBE_EVERY_MS: the next at once
    const link2 = fakeLink(() => HOLDER);
    stopAfter = 3;
    const r = await probeUntilGone(link2.probe, { address: V4, now: link2.now, sleep: link2.sleep, stop: () => (link2.rounds.length >= stopAfter ? 'the agent stops' : undefined) });
    expect(r).toEqual({ kind: 'stopped', why: 'the agent stops', probes: 3, held: expect.objectContaining({ answers: 3 }) });
    expect(link2.rounds).toHaveLength(3);
  });

  it('the probe\'s own errors are thrown as they are', async () => {
    const err = Object.assign(new Error('ENETDOWN: Network is down, sendto'), { code: 'ENETDOWN' });
    await expect(probeUntilGone(async () => Promise.reject(err), { address: V4, now: () => 0, sleep: async () => {} })).rejects.toBe(err);
  });
});

describe('probeLeaseRanOut (the taker, after the lease)', () => {
  function opener(link: ReturnType<typeof fakeLink>) {
    const opened: string[] = [];
    let closed = 0;
    const open = (ifname: string, address: string) => {
      opened.push(`${ifname} ${address}`);
      return { round: link.probe, close: async () => void closed++ };
    };
    return { open, opened, closed: () => closed };
  }

  it('free at once: gone, nothing held; the probe opened on the takeover\'s interface for the address, and closed', async () => {
    const link = fakeLink(() => undefined);
    const o = opener(link);
    const r = await probeLeaseRanOut({ peer: 'a', address: 'FD7A:6B00:7::100', interface: 'eth0', decidedAt: 0, seconds: 5 }, { open: o.open, now: link.now, sleep: link.sleep });
    expect(r).toEqual({ kind: 'gone', probes: 1, ms: PROBE_WINDOW_MS });
    expect(o.opened).toEqual([`eth0 ${V6}`]);
    expect(o.closed()).toBe(1);
  });

  it('the old holder\'s kernel late: not gone until it stops answering; how long past its lease it kept it, at least', async () => {
    // Decided at 2000 with a 5 s lease: it ran out by 7000 at the latest. The link is asked at
    // 10_000 (after the deadline) and the holder answers until 12_000.
    const link = fakeLink((_, t) => (t < 12_000 ? HOLDER : undefined));
    const o = opener(link);
    const held: LeaseHeld[] = [];
    const r = await probeLeaseRanOut({ peer: 'a', address: V4, interface: 'eth0', decidedAt: 2000, seconds: 5, onHeld: (h) => held.push(h) }, { open: o.open, now: link.now, sleep: link.sleep });
    expect(held).toEqual([{ peer: 'a', address: V4, mac: HOLDER, kind: 'arp-reply', at: 10_000.2, pastLeaseMs: 3000 }]);
    expect(r).toEqual({ kind: 'gone', probes: 21, ms: 20 * PROBE_EVERY_MS + PROBE_WINDOW_MS, held: { macs: [HOLDER], answers: 20, lastAt: 11_900.2, pastLeaseMs: 4900 } });
    expect(o.closed()).toBe(1);
  });

  it('held past the bound: throws (the takeover fails, nothing added); stopped: says why; the probe closed either way', async () => {
    const link = fakeLink(() => HOLDER);
    const o = opener(link);
    await expect(probeLeaseRanOut({ peer: 'a', address: V4, interface: 'eth0', decidedAt: 0, seconds: 5 }, { open: o.open, now: link.now, sleep: link.sleep, giveUpMs: 1000 })).rejects.toMatchObject({
      code: 'ERR_ADDRESS_HELD',
      message: expect.stringContaining(`answered by ${HOLDER}`),
    });
    expect(link.rounds).toHaveLength(11);
    expect(o.closed()).toBe(1);
    const stopped = await probeLeaseRanOut({ peer: 'a', address: V4, interface: 'eth0', decidedAt: 0, seconds: 5, stop: () => 'a is alive and holds 198.18.7.100' }, { open: o.open, now: link.now, sleep: link.sleep });
    expect(stopped).toEqual({ kind: 'stopped', why: 'a is alive and holds 198.18.7.100' });
    expect(o.closed()).toBe(2);
  });
});
