// The address lease's rules, without privileges: the owner's claims and renewals against a fake
// host (AddressLeases), the taker's verdict and wait (PeerLeases), and the deadline. (The leased
// claim on the wire: address-holding.test.ts.)
import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  AddressLeases,
  kernelExpirySlackMs,
  LEASE_MARGIN_MS,
  leaseDeadline,
  PeerLeases,
  renewCutoffMs,
  renewEveryMs,
  type LeaseEvent,
} from '../../src/agent/address-lease.js';
import type { AddressClaim } from '../../src/monitor/heartbeat-packet.js';
import type { AddressEntry } from '../../src/native.js';

const VIP = '10.0.0.100';

/** A host holding addresses with lifetimes (seconds left at `now`), and an owner of one lease. */
function owner(options: { seconds?: number; intervalMs?: number; found?: { prefixLength?: number; validLifetime: number } | undefined } = {}) {
  let t = 1_000_000;
  const seconds = options.seconds ?? 5;
  const host = new Map<string, { prefixLength: number; expiresAt: number }>();
  if (options.found) host.set(VIP, { prefixLength: options.found.prefixLength ?? 24, expiresAt: options.found.validLifetime < 0 ? Infinity : t + options.found.validLifetime * 1000 });
  const sets: Array<{ at: number; seconds: number | 'forever' }> = [];
  let failing: string | undefined;
  const entries = (_ifname: string, address: string): AddressEntry[] => {
    const e = host.get(address);
    if (!e || e.expiresAt <= t) return [];
    const left = e.expiresAt === Infinity ? -1 : Math.ceil((e.expiresAt - t) / 1000);
    return [{ prefixLength: e.prefixLength, flags: 0, scope: 0, preferredLifetime: left, validLifetime: left }];
  };
  const leases = new AddressLeases({
    addresses: [{ address: VIP, interface: 'eth0', prefixLength: 24 }],
    seconds,
    intervalMs: options.intervalMs ?? 100,
    entries,
    setLifetime: (_ifname, address, prefixLength, s) => {
      if (failing) throw new Error(failing);
      const e = host.get(address);
      if (!e || e.expiresAt <= t || e.prefixLength !== prefixLength) throw Object.assign(new Error('not there'), { code: 'EADDRNOTAVAIL' });
      e.expiresAt = s === 'forever' ? Infinity : t + s * 1000;
      sets.push({ at: t, seconds: s });
    },
    now: () => t,
  });
  const events: LeaseEvent[] = [];
  leases.on('lease', (e) => events.push(e));
  /** One heartbeat: its claims, then the renewal once it is sent. */
  const beat = () => {
    const claims = leases.claims();
    leases.renew();
    return claims;
  };
  return {
    leases, host, sets, events, beat,
    advance: (ms: number) => void (t += ms),
    now: () => t,
    fail: (msg: string | undefined) => void (failing = msg),
  };
}

describe('the deadline', () => {
  it('a taker waits the lease, the kernel\'s slack and a margin after its decision; the slack covers 1 s checks and the timer wheel', () => {
    expect(kernelExpirySlackMs(2)).toBe(1375);
    expect(kernelExpirySlackMs(5)).toBe(1375);
    // Long leases: the timer wheel's 1/8 dominates.
    expect(kernelExpirySlackMs(60)).toBe(250 + Math.ceil(60_250 / 8) + 250);
    for (const s of [1, 2, 5, 30, 3600]) {
      expect(leaseDeadline(1000, s)).toBe(1000 + s * 1000 + kernelExpirySlackMs(s) + LEASE_MARGIN_MS);
      expect(renewCutoffMs(s)).toBeLessThan(s * 1000);
    }
    expect(renewEveryMs(5, 100)).toBe(1250);
    expect(renewEveryMs(2, 1000)).toBe(1000); // never more often than the heartbeats
  });
});

describe('the owner (AddressLeases)', () => {
  it('leases an address found permanent at the first heartbeat: claimed with its lease, then renewed after the heartbeat went out', () => {
    const o = owner({ found: { validLifetime: -1 } });
    expect(o.beat()).toEqual([{ address: VIP, taken: false, leaseSeconds: 5 }]);
    expect(o.sets).toEqual([{ at: o.now(), seconds: 5 }]);
    expect(o.events).toEqual([{ kind: 'adopted', address: VIP, interface: 'eth0', found: 'permanent' }]);
    expect(o.leases.status()).toEqual([{ address: VIP, interface: 'eth0', prefixLength: 24, held: true, renewedAt: o.now(), expiresAt: o.now() + 5000 }]);
  });

  it('claims at every heartbeat but renews every quarter of the lease; a renewal never comes without a claim before it', () => {
    const o = owner({ found: { validLifetime: -1 } });
    o.beat();
    for (let i = 0; i < 30; i++) {
      o.advance(100);
      expect(o.beat()).toEqual([{ address: VIP, taken: false, leaseSeconds: 5 }]);
    }
    // 3 s of heartbeats: renewed at 1.25 s and 2.5 s after the first.
    expect(o.sets.map((s) => s.at - o.sets[0]!.at)).toEqual([0, 1300, 2600]);
    o.advance(1000);
    o.leases.renew(); // no heartbeat claimed it since the last renewal: nothing
    expect(o.sets).toHaveLength(3);
  });

  it('never adds an address that is not there, nor leases one under another prefix length or with too little left', () => {
    const none = owner({ found: undefined });
    for (let i = 0; i < 5; i++) expect(none.beat()).toEqual([]);
    expect(none.sets).toEqual([]);
    const prefix = owner({ found: { prefixLength: 32, validLifetime: -1 } });
    expect(prefix.beat()).toEqual([]);
    prefix.beat();
    expect(prefix.events).toEqual([{ kind: 'not-adopted', address: VIP, interface: 'eth0', why: 'it is on eth0 as /32, the lease is for /24' }]);
    const late = owner({ found: { validLifetime: 1 } });
    expect(late.beat()).toEqual([]);
    expect(late.sets).toEqual([]);
    expect(late.events).toEqual([expect.objectContaining({ kind: 'not-adopted', why: expect.stringMatching(/1 s left: too little/) })]);
  });

  it('a restarted agent leases again an address whose lease still runs (2 s or more left)', () => {
    const o = owner({ found: { validLifetime: 3 } });
    expect(o.beat()).toEqual([{ address: VIP, taken: false, leaseSeconds: 5 }]);
    expect(o.events).toEqual([{ kind: 'adopted', address: VIP, interface: 'eth0', found: '3 s left' }]);
    expect(o.host.get(VIP)!.expiresAt).toBe(o.now() + 5000);
  });

  it('held past the cutoff (a second before it runs out), it gives the lease up: no claim, no renewal, even while the address is still there', () => {
    const o = owner({ found: { validLifetime: -1 } });
    o.beat();
    o.advance(renewCutoffMs(5));
    expect(o.host.get(VIP)!.expiresAt).toBeGreaterThan(o.now()); // still there for a second
    expect(o.beat()).toEqual([]);
    expect(o.events.at(-1)).toEqual({ kind: 'lost', address: VIP, why: expect.stringMatching(/not renewed for 4000 ms/) });
    expect(o.sets).toHaveLength(1);
    o.advance(100);
    expect(o.beat()).toEqual([]); // too little left to lease it again
    o.advance(1000);
    expect(o.beat()).toEqual([]); // gone: never added back
    expect(o.sets).toHaveLength(1);
  });

  it('a held loop between the claim and its renewal does not renew past the cutoff', () => {
    const o = owner({ found: { validLifetime: -1 } });
    o.beat();
    o.advance(3900);
    expect(o.leases.claims()).toHaveLength(1);
    o.advance(200); // the sends' callbacks came late
    o.leases.renew();
    expect(o.sets).toHaveLength(1);
  });

  it('an address removed by someone else is lost at the next heartbeat; failed renewals are said, and the lease is lost at the cutoff', () => {
    const gone = owner({ found: { validLifetime: -1 } });
    gone.beat();
    gone.host.delete(VIP);
    gone.advance(100);
    expect(gone.beat()).toEqual([]);
    expect(gone.events.at(-1)).toEqual({ kind: 'lost', address: VIP, why: 'gone from eth0' });

    const o = owner({ found: { validLifetime: -1 } });
    o.beat();
    o.fail('EPERM');
    for (let i = 0; i < 45; i++) {
      o.advance(100);
      o.beat();
    }
    expect(o.events.filter((e) => e.kind === 'renew-failed').length).toBeGreaterThanOrEqual(2);
    const lost = o.events.findIndex((e) => e.kind === 'lost');
    expect(o.events[lost]).toEqual({ kind: 'lost', address: VIP, why: expect.stringMatching(/not renewed for 4000 ms/) });
    // Then nothing is tried any more: too little is left to lease it again.
    expect(o.events.slice(lost + 1).map((e) => e.kind)).toEqual(['not-adopted']);
  });

  it('a planned stop makes a live lease permanent again; a stop that is not planned, or a fence, leaves it to run out', () => {
    const planned = owner({ found: { validLifetime: -1 } });
    planned.beat();
    planned.advance(500);
    planned.leases.release();
    expect(planned.sets.at(-1)).toEqual({ at: planned.now(), seconds: 'forever' });
    expect(planned.events.at(-1)).toEqual({ kind: 'released', address: VIP });
    expect(planned.beat()).toEqual([]);

    const expired = owner({ found: { validLifetime: -1 } });
    expired.beat();
    expired.advance(4500); // past the cutoff: a peer may be taking it over
    expired.leases.release();
    expect(expired.sets).toHaveLength(1);

    const stopped = owner({ found: { validLifetime: -1 } });
    stopped.beat();
    stopped.leases.claims();
    stopped.leases.stop();
    stopped.advance(2000);
    stopped.leases.renew();
    expect(stopped.beat()).toEqual([]);
    expect(stopped.sets).toHaveLength(1);

    const fenced = owner({ found: { validLifetime: -1 } });
    fenced.beat();
    fenced.leases.fenced();
    expect(fenced.events.at(-1)).toEqual({ kind: 'lost', address: VIP, why: expect.stringMatching(/fenced/) });
    fenced.advance(2000);
    expect(fenced.beat()).toEqual([]);
    fenced.leases.release();
    expect(fenced.sets).toHaveLength(1);
  });
});

function taker(timeoutMs = 325) {
  let t = 50_000;
  const hb = new EventEmitter<{ heard: [{ node: string; claims: AddressClaim[] }]; leaving: [{ node: string; at: number }] }>();
  const leases = new PeerLeases({ heartbeat: hb, timeoutMs, now: () => t });
  return { leases, hb, advance: (ms: number) => void (t += ms), now: () => t, set: (ms: number) => void (t = ms) };
}

describe('the taker (PeerLeases)', () => {
  afterEach(() => void vi.useRealTimers());

  it('no lease heard: go at once (the takeover as without leases)', () => {
    const k = taker();
    k.leases.heard('a', [{ address: VIP, taken: false }], k.now() - 100);
    expect(k.leases.verdict('a', VIP, k.now(), k.now())).toEqual({ kind: 'go' });
    expect(k.leases.verdict('c', VIP, k.now(), k.now())).toEqual({ kind: 'go' });
  });

  it('a lease heard before the decision: wait until the decision + lease + slack + margin, then go', () => {
    const k = taker();
    k.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], k.now() - 325);
    const decided = k.now();
    const until = leaseDeadline(decided, 5);
    expect(k.leases.verdict('a', VIP, decided, k.now())).toEqual({ kind: 'wait', until, seconds: 5 });
    expect(k.leases.verdict('a', VIP, decided, until - 1)).toMatchObject({ kind: 'wait' });
    expect(k.leases.verdict('a', VIP, decided, until)).toEqual({ kind: 'go', waited: { seconds: 5 } });
    // Another address of the same peer, and the same address of another peer, are not leased.
    expect(k.leases.verdict('a', '10.0.0.101', decided, k.now())).toEqual({ kind: 'go' });
    expect(k.leases.verdict('b', VIP, decided, k.now())).toEqual({ kind: 'go' });
  });

  it('a lease claimed long before the decision (it ran out since) does not hold the takeover', () => {
    const k = taker(325);
    const decided = k.now();
    k.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], decided - (5000 + kernelExpirySlackMs(5) + 325) - 1);
    expect(k.leases.verdict('a', VIP, decided, decided)).toEqual({ kind: 'go' });
    k.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], decided - (5000 + kernelExpirySlackMs(5) + 325));
    expect(k.leases.verdict('a', VIP, decided, decided)).toMatchObject({ kind: 'wait' });
  });

  it('the peer heard claiming the address after the decision (restarted in time, or its loop was held), or leaving, ends the takeover', () => {
    const k = taker();
    const decided = k.now();
    k.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], decided - 300);
    k.leases.heard('a', [{ address: VIP, taken: true }], decided + 10); // a taken claim is no owner's
    expect(k.leases.verdict('a', VIP, decided, decided + 20)).toMatchObject({ kind: 'wait' });
    k.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], decided + 30);
    expect(k.leases.verdict('a', VIP, decided, decided + 40)).toEqual({ kind: 'abandon', why: `a is alive and holds ${VIP}: heard claiming it 30 ms after it was declared dead` });

    const left = taker();
    left.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], left.now() - 300);
    // Its `leaving` heartbeat, even one that comes after it was declared dead (a slow stop).
    left.hb.emit('leaving', { node: 'a', at: left.now() + 5 });
    expect(left.leases.verdict('a', VIP, left.now(), left.now() + 10)).toMatchObject({ kind: 'abandon', why: expect.stringMatching(/left in a planned way/) });
    // A departure before the decision (a left, came back, died) is no reason.
    expect(left.leases.verdict('a', VIP, left.now() + 6, left.now() + 10)).toMatchObject({ kind: 'wait' });
  });

  it('waitOut waits until the deadline, tells the wait once, and ends early when the peer claims the address or the agent stops', async () => {
    vi.useFakeTimers();
    const hb = new EventEmitter<{ heard: [{ node: string; claims: AddressClaim[] }]; leaving: [{ node: string; at: number }] }>();
    const leases = new PeerLeases({ heartbeat: hb, timeoutMs: 325, now: () => Date.now() });
    hb.emit('heard', { node: 'a', claims: [{ address: VIP, taken: false, leaseSeconds: 2 }] });
    const decided = Date.now() + 325;
    vi.advanceTimersByTime(325);
    const waits: unknown[] = [];
    let done: unknown;
    void leases.waitOut('a', VIP, decided, (w) => waits.push(w)).then((v) => (done = v));
    await vi.advanceTimersByTimeAsync(leaseDeadline(decided, 2) - Date.now() - 1);
    expect(done).toBeUndefined();
    expect(waits).toEqual([{ kind: 'wait', until: leaseDeadline(decided, 2), seconds: 2 }]);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toEqual({ kind: 'go', waited: { seconds: 2 } });

    const decided2 = Date.now() + 100;
    hb.emit('heard', { node: 'a', claims: [{ address: VIP, taken: false, leaseSeconds: 2 }] });
    await vi.advanceTimersByTimeAsync(100);
    let second: unknown;
    void leases.waitOut('a', VIP, decided2).then((v) => (second = v));
    await vi.advanceTimersByTimeAsync(500);
    expect(second).toBeUndefined();
    hb.emit('heard', { node: 'a', claims: [{ address: VIP, taken: false, leaseSeconds: 2 }] });
    await vi.advanceTimersByTimeAsync(0);
    expect(second).toMatchObject({ kind: 'abandon', why: expect.stringMatching(/alive and holds/) });

    const decided3 = Date.now() + 100;
    await vi.advanceTimersByTimeAsync(100);
    let third: unknown;
    void leases.waitOut('a', VIP, decided3).then((v) => (third = v));
    await vi.advanceTimersByTimeAsync(10);
    leases.close();
    await vi.advanceTimersByTimeAsync(0);
    expect(third).toEqual({ kind: 'abandon', why: 'the agent stops' });
    expect(vi.getTimerCount()).toBe(0);
  });

  it('abandoned(): between the probes after the wait, why the takeover must not go on (the peer claims the address again, left, or the agent stops)', () => {
    const k = taker();
    const decided = k.now();
    k.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], decided - 300);
    k.advance(leaseDeadline(0, 5) + 200);
    expect(k.leases.abandoned('a', VIP, decided)).toBeUndefined();
    k.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], k.now());
    expect(k.leases.abandoned('a', VIP, decided)).toMatch(new RegExp(`^a is alive and holds ${VIP.replace(/\./g, '\\.')}`));
    const stopping = taker();
    stopping.leases.heard('a', [{ address: VIP, taken: false, leaseSeconds: 5 }], stopping.now() - 300);
    stopping.leases.close();
    expect(stopping.leases.abandoned('a', VIP, stopping.now())).toBe('the agent stops');
  });
});
