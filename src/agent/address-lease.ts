// The address lease (config `addressLease`): a dead man's switch on this node's own service
// addresses, so that a peer never answers for one while this node still does.
//
// Without it, a node whose agent dies (SIGKILL, a crash) while the node and its service live on
// keeps the address for good, and the peer that takes it over when the heartbeats stop makes two
// holders. With it:
//   - the owner (this node's agent) gives each leased address a finite kernel lifetime (valid =
//     preferred = `seconds`) and renews it while it runs, right after a heartbeat that claims the
//     address with the lease's length has been handed to the kernel. An agent that dies stops
//     renewing, and the kernel removes the address by itself within the lease;
//   - the taker (a peer with `peers[].takeover` of the address) learns the lease from those
//     claims, and adds the address only once the lease has certainly run out: `seconds`, the
//     kernel's expiry slack and a margin after it declared the owner dead (leaseDeadline). Every
//     renewal follows a claim the owner sent, so the last renewal is no later than the owner's
//     last heartbeat, and the decision comes after that (the detector waits a whole timeout after
//     the last heartbeat heard; heartbeats it missed were sent before its decision, or the owner
//     was alive and unheard: a partition, which quorum and fencing settle, not the lease);
//   - a taker that hears the owner claim the address again after its decision (an agent
//     restarted in time, a loop that was held) or leave in a planned way gives the takeover up:
//     the owner is alive and holds the address;
//   - the kernel may remove an expired address later than the slack allows (a CI run saw an
//     IPv6 address go 4737 ms after its lifetime). So once the deadline has passed, the taker
//     asks the link before it adds the address (probeLeaseRanOut: an ARP probe, or a DAD
//     Neighbour Solicitation): while the old holder answers, it does not add it, and probes again
//     every 100 ms, up to 10 s, then fails naming who answered. The kernel lifetime stays the
//     mechanism; the probe is the check against its lateness.
// Decisions are pure here (leaseDeadline, PeerLeases.verdict, the owner's rules in
// AddressLeases, probeLeaseRanOut over an injected probe); the syscalls come in through options
// (net/address.ts, net/address-probe.ts).
import { EventEmitter } from 'node:events';
import type { AddressClaim } from '../monitor/heartbeat-packet.js';
import type { AddressEntry } from '../native.js';
import { probeUntilGone, type ProbeAnswer, type ProbeOnce, type UntilGoneOptions } from '../net/address-probe.js';
import { canonicalAddress } from '../net/endpoint.js';

/**
 * How late after its lifetime the kernel may remove an address, ms. The kernel checks lifetimes
 * from one delayed work per namespace and family (IPv4 check_lifetime, IPv6 addrconf_verify),
 * scheduled at the next expiry: rounded up to a whole second when that costs less than HZ/4
 * (250 ms), and never sooner than HZ (1 s) after the check that schedules it (a check that
 * another address's change runs just before the expiry puts it off by up to 1 s). The timer
 * itself fires up to 1/8 of its delay late (the timer wheel's granularity). So: the larger of
 * 1 s + 1/8 s and 250 ms + (lifetime + 250 ms) / 8, plus 250 ms for the work to run (a
 * workqueue on a busy 2-core machine ran it 128 ms after the rest of the bound). (It may also
 * remove it up to 20 ms early: ADDRCONF_TIMER_FUZZ_MINUS.) Measured in test/lab/address.test.ts.
 */
export function kernelExpirySlackMs(seconds: number): number {
  return Math.max(1000 + 125, 250 + Math.ceil((seconds * 1000 + 250) / 8)) + 250;
}

/** What a taker adds on top of the lease and the kernel's slack: clocks and scheduling, ms. */
export const LEASE_MARGIN_MS = 500;

/**
 * The earliest time (ms, the decider's clock) a taker may add an address whose owner claimed it
 * with a lease of `seconds`, counted from the decision that the owner is dead.
 */
export function leaseDeadline(decidedAt: number, seconds: number): number {
  return decidedAt + seconds * 1000 + kernelExpirySlackMs(seconds) + LEASE_MARGIN_MS;
}

/** How often the owner renews, ms: a quarter of the lease, at heartbeats (at most one per interval). */
export function renewEveryMs(seconds: number, intervalMs: number): number {
  return Math.max(intervalMs, Math.floor((seconds * 1000) / 4));
}

/**
 * Past this long since its last renewal the owner gives a lease up, ms: the address has less
 * than a second left (the kernel may take it 20 ms early), and renewing it so late could race
 * the kernel's removal (a renewal of an address that is gone adds it again).
 */
export function renewCutoffMs(seconds: number): number {
  return seconds * 1000 - 1000;
}

/** The least time a found address must have left to be leased by a (restarted) agent, s. */
export const ADOPT_MIN_SECONDS = 2;

// ---------------------------------------------------------------- the owner

export interface LeasedAddress {
  address: string;
  interface: string;
  prefixLength: number;
}

export type LeaseEvent =
  /** Leased from now on: found permanent (added by hand or at boot) or with a lease still running (a restarted agent). */
  | { kind: 'adopted'; address: string; interface: string; found: string }
  /** Found but not leased: another prefix length, or too little time left. Said once per reason. */
  | { kind: 'not-adopted'; address: string; interface: string; why: string }
  /** No longer renewed: gone from the interface, renewals late past the cutoff, or this node fenced. */
  | { kind: 'lost'; address: string; why: string }
  /** A renewal that failed (the lease runs on until the cutoff, then it is lost). */
  | { kind: 'renew-failed'; address: string; error: string }
  /** Made permanent again at a planned stop (or failed to be). */
  | { kind: 'released'; address: string; error?: string };

export interface AddressLeasesOptions {
  addresses: LeasedAddress[];
  seconds: number;
  /** The heartbeat interval, ms: renewals happen at heartbeats. */
  intervalMs: number;
  /** The kernel's entries of an address on an interface (net/address.ts addressEntries). */
  entries: (ifname: string, address: string) => AddressEntry[];
  /** Sets an address's lifetime (net/address.ts setAddressLifetime: refuses an address not there). */
  setLifetime: (ifname: string, address: string, prefixLength: number, seconds: number | 'forever') => void;
  now?: () => number;
}

export interface LeaseStatus {
  address: string;
  interface: string;
  prefixLength: number;
  held: boolean;
  /** When it was last renewed, and when that renewal runs out (ms since the epoch). */
  renewedAt?: number;
  expiresAt?: number;
}

interface OwnLease {
  spec: LeasedAddress;
  canonical: string;
  renewedAt?: number;
  /** The last not-adopted reason said, so it is said once. */
  said?: string;
}

const clock = () => performance.timeOrigin + performance.now();

/**
 * This node's leased addresses. Per heartbeat: claims() says which ones the heartbeat claims (held
 * under a live lease, or found and adoptable), then renew(), once that heartbeat is with the
 * kernel, renews those due. A lease is held from its first renewal until it is lost or released.
 */
export class AddressLeases extends EventEmitter<{ lease: [LeaseEvent] }> {
  private readonly leases: OwnLease[];
  private readonly now: () => number;
  private readonly renewEvery: number;
  private readonly cutoff: number;
  /** The leases the last heartbeat claimed: renew() renews only those. */
  private claimed: OwnLease[] = [];
  /** Why nothing is claimed or renewed any more ('stopped', 'fenced'). */
  private ended: string | undefined;

  constructor(private readonly options: AddressLeasesOptions) {
    super();
    this.now = options.now ?? clock;
    this.renewEvery = renewEveryMs(options.seconds, options.intervalMs);
    this.cutoff = renewCutoffMs(options.seconds);
    this.leases = options.addresses.map((spec) => ({ spec, canonical: canonicalAddress(spec.address) }));
  }

  get seconds(): number {
    return this.options.seconds;
  }

  /** The claims of the heartbeat about to go out (and what renew() may renew after it). */
  claims(): AddressClaim[] {
    this.claimed = [];
    if (this.ended) return [];
    const now = this.now();
    for (const l of this.leases) {
      const entry = this.entry(l);
      if (l.renewedAt !== undefined) {
        if (!entry) this.lose(l, `gone from ${l.spec.interface}`);
        else if (now - l.renewedAt >= this.cutoff) this.lose(l, `not renewed for ${Math.round(now - l.renewedAt)} ms (the agent was held, or its renewals failed): it runs out within a second, and a peer that takes it over may do so`);
        else this.claimed.push(l);
      } else if (entry && this.adoptable(l, entry)) {
        this.claimed.push(l);
      } else if (!entry) {
        const other = this.entries(l)[0];
        if (other) this.notAdopted(l, `it is on ${l.spec.interface} as /${other.prefixLength}, the lease is for /${l.spec.prefixLength}`);
      }
    }
    return this.claimed.map((l) => ({ address: l.canonical, taken: false, leaseSeconds: this.options.seconds }));
  }

  /** After the heartbeat of claims() is with the kernel: renews (or first leases) what it claimed and is due. */
  renew(): void {
    const claimed = this.claimed;
    this.claimed = [];
    if (this.ended) return;
    for (const l of claimed) {
      const t = this.now(); // before the request: the kernel's lifetime starts no earlier
      if (l.renewedAt !== undefined) {
        if (t - l.renewedAt < this.renewEvery) continue;
        if (t - l.renewedAt >= this.cutoff) continue; // held between the claim and now: claims() says it at the next heartbeat
      } else {
        const entry = this.entry(l);
        if (!entry || !this.adoptable(l, entry)) continue;
      }
      const first = l.renewedAt === undefined;
      const found = first ? describeEntry(this.entry(l)) : '';
      try {
        this.options.setLifetime(l.spec.interface, l.spec.address, l.spec.prefixLength, this.options.seconds);
      } catch (err) {
        if (!first) this.emit('lease', { kind: 'renew-failed', address: l.canonical, error: (err as Error).message });
        continue;
      }
      l.renewedAt = t;
      l.said = undefined;
      if (first) this.emit('lease', { kind: 'adopted', address: l.canonical, interface: l.spec.interface, found });
    }
  }

  /**
   * A planned stop, after the peers were told (their takeover will not come): each address held
   * under a live lease is made permanent again, so the node goes on answering for it while its
   * instances run without an agent. A restarted agent leases it again.
   */
  release(): void {
    if (this.ended) return;
    this.ended = 'stopped';
    const now = this.now();
    for (const l of this.leases) {
      if (l.renewedAt === undefined) continue;
      const live = now - l.renewedAt < this.cutoff;
      l.renewedAt = undefined;
      if (!live) continue; // it runs out: a peer may be about to take it over
      try {
        this.options.setLifetime(l.spec.interface, l.spec.address, l.spec.prefixLength, 'forever');
        this.emit('lease', { kind: 'released', address: l.canonical });
      } catch (err) {
        this.emit('lease', { kind: 'released', address: l.canonical, error: (err as Error).message });
      }
    }
  }

  /** Stops renewing without touching anything: the leases run out (a stop that is not a planned departure). */
  stop(): void {
    this.ended ??= 'stopped';
    this.claimed = [];
  }

  /** This node was fenced: it must not serve; its leases are no longer renewed and run out. */
  fenced(): void {
    if (this.ended) return;
    this.ended = 'fenced';
    this.claimed = [];
    for (const l of this.leases) if (l.renewedAt !== undefined) this.lose(l, 'this node was fenced: the lease runs out, the peer takes the address over');
  }

  status(): LeaseStatus[] {
    return this.leases.map((l) => ({
      address: l.canonical,
      interface: l.spec.interface,
      prefixLength: l.spec.prefixLength,
      held: l.renewedAt !== undefined,
      ...(l.renewedAt !== undefined ? { renewedAt: l.renewedAt, expiresAt: l.renewedAt + this.options.seconds * 1000 } : {}),
    }));
  }

  private entries(l: OwnLease): AddressEntry[] {
    try {
      return this.options.entries(l.spec.interface, l.spec.address);
    } catch {
      return []; // the interface is gone: so is the address
    }
  }

  private entry(l: OwnLease): AddressEntry | undefined {
    return this.entries(l).find((e) => e.prefixLength === l.spec.prefixLength);
  }

  /**
   * Whether an address found here, not leased by this agent yet, may be: permanent (added by hand,
   * at boot) or with at least ADOPT_MIN_SECONDS left (the lease of an agent that died and was
   * restarted in time: the peer heard it claimed, and hears it claimed again before its deadline).
   * One with less left runs out; a peer's takeover may be under way.
   */
  private adoptable(l: OwnLease, entry: AddressEntry): boolean {
    if (entry.validLifetime < 0 || entry.validLifetime >= ADOPT_MIN_SECONDS) return true;
    this.notAdopted(l, `it has ${entry.validLifetime} s left: too little to lease it again (it runs out; a peer may take it over)`);
    return false;
  }

  private notAdopted(l: OwnLease, why: string): void {
    if (l.said === why) return;
    l.said = why;
    this.emit('lease', { kind: 'not-adopted', address: l.canonical, interface: l.spec.interface, why });
  }

  private lose(l: OwnLease, why: string): void {
    l.renewedAt = undefined;
    this.emit('lease', { kind: 'lost', address: l.canonical, why });
  }
}

function describeEntry(e: AddressEntry | undefined): string {
  if (!e) return 'gone';
  return e.validLifetime < 0 ? 'permanent' : `${e.validLifetime} s left`;
}

// ---------------------------------------------------------------- the taker

export type LeaseVerdict =
  | { kind: 'go'; waited?: { seconds: number } }
  | { kind: 'wait'; until: number; seconds: number }
  | { kind: 'abandon'; why: string };

export interface PeerLeasesOptions {
  /**
   * The heartbeat agent: what live peers claim ('heard'), and their planned departures
   * ('leaving': every `leaving` heartbeat, also one that comes after the peer was declared dead).
   */
  heartbeat: {
    on(name: 'heard', fn: (h: { node: string; claims: AddressClaim[] }) => void): unknown;
    off(name: 'heard', fn: (h: { node: string; claims: AddressClaim[] }) => void): unknown;
    on(name: 'leaving', fn: (l: { node: string; at: number }) => void): unknown;
    off(name: 'leaving', fn: (l: { node: string; at: number }) => void): unknown;
  };
  /** The detector's timeout, ms: how long a peer may have been unheard before a decision. */
  timeoutMs: number;
  now?: () => number;
}

interface Waiter {
  wake: () => void;
}

/**
 * What the peers claim of their leased addresses, for the takeovers of this node: whether one
 * must wait out a lease (verdict) and the wait itself (waitOut). Times are this node's clock.
 */
export class PeerLeases {
  /** peer|address -> the lease last claimed, and when that was heard. */
  private readonly leases = new Map<string, { seconds: number; heardAt: number }>();
  /** peer|address -> when the peer was last heard claiming the address as its own. */
  private readonly own = new Map<string, number>();
  /** peer -> when it last left in a planned way. */
  private readonly left = new Map<string, number>();
  private readonly waiters = new Set<Waiter>();
  private readonly now: () => number;
  private closed = false;
  private readonly onHeard = (h: { node: string; claims: AddressClaim[] }) => this.heard(h.node, h.claims, this.now());
  private readonly onLeaving = (l: { node: string; at: number }) => this.leftAt(l.node, l.at);

  constructor(private readonly options: PeerLeasesOptions) {
    this.now = options.now ?? clock;
    options.heartbeat.on('heard', this.onHeard);
    options.heartbeat.on('leaving', this.onLeaving);
  }

  /** What a live peer's heartbeat claims (also for tests). */
  heard(peer: string, claims: AddressClaim[], at: number): void {
    for (const c of claims) {
      if (c.taken) continue;
      const key = `${peer}|${c.address}`;
      this.own.set(key, at);
      if (c.leaseSeconds !== undefined) this.leases.set(key, { seconds: c.leaseSeconds, heardAt: at });
    }
    if (claims.some((c) => !c.taken)) this.wakeAll();
  }

  /** A planned departure of `peer` (also for tests). */
  leftAt(peer: string, at: number): void {
    this.left.set(peer, Math.max(at, this.left.get(peer) ?? -Infinity));
    this.wakeAll();
  }

  /**
   * Whether the takeover of `address` from `peer`, decided at `decidedAt` (the detector's
   * node-down), may add the address `now`:
   *   - abandon: the peer was heard claiming it as its own since the decision (alive, holding
   *     it: an agent restarted within its lease, or one whose loop was held), or left in a
   *     planned way since (a planned departure takes nothing over, and makes the address
   *     permanent: its `leaving` heartbeats may come after it looked dead, when its stop was slow);
   *   - wait: it claimed the address with a lease recently enough that the lease may still run
   *     (the last such claim heard no longer ago than the lease, the kernel's slack and the
   *     detector's timeout before the decision): until leaseDeadline;
   *   - go: no such lease, or the deadline has passed.
   */
  verdict(peer: string, address: string, decidedAt: number, now: number): LeaseVerdict {
    const key = `${peer}|${canonicalAddress(address)}`;
    const own = this.own.get(key);
    if (own !== undefined && own >= decidedAt) return { kind: 'abandon', why: `${peer} is alive and holds ${canonicalAddress(address)}: heard claiming it ${Math.round(own - decidedAt)} ms after it was declared dead` };
    const left = this.left.get(peer);
    if (left !== undefined && left >= decidedAt) return { kind: 'abandon', why: `${peer} left in a planned way ${Math.round(left - decidedAt)} ms after it was declared dead: a planned departure takes nothing over` };
    const lease = this.leases.get(key);
    if (!lease) return { kind: 'go' };
    const seconds = lease.seconds;
    if (lease.heardAt < decidedAt - (seconds * 1000 + kernelExpirySlackMs(seconds) + this.options.timeoutMs)) return { kind: 'go' };
    const until = leaseDeadline(decidedAt, seconds);
    return now >= until ? { kind: 'go', waited: { seconds } } : { kind: 'wait', until, seconds };
  }

  /**
   * Waits until verdict() is no longer `wait`; `onWait` is told once when a wait begins. Resolves
   * with the final verdict (abandon when close() ends the wait: the agent stops).
   */
  async waitOut(peer: string, address: string, decidedAt: number, onWait?: (v: Extract<LeaseVerdict, { kind: 'wait' }>) => void): Promise<Exclude<LeaseVerdict, { kind: 'wait' }>> {
    let told = false;
    for (;;) {
      if (this.closed) return { kind: 'abandon', why: 'the agent stops' };
      const v = this.verdict(peer, address, decidedAt, this.now());
      if (v.kind !== 'wait') return v;
      if (!told) onWait?.(v);
      told = true;
      await new Promise<void>((resolve) => {
        const w: Waiter = {
          wake: () => {
            clearTimeout(timer);
            this.waiters.delete(w);
            resolve();
          },
        };
        const timer = setTimeout(w.wake, Math.max(1, Math.ceil(v.until - this.now())));
        this.waiters.add(w);
      });
    }
  }

  /**
   * Why a takeover of `address` from `peer`, decided at `decidedAt`, must not go on now: the
   * agent stops, or verdict() says abandon (the peer holds the address again, or left). Undefined
   * while it may go on (what the probes after the wait ask between rounds).
   */
  abandoned(peer: string, address: string, decidedAt: number): string | undefined {
    if (this.closed) return 'the agent stops';
    const v = this.verdict(peer, address, decidedAt, this.now());
    return v.kind === 'abandon' ? v.why : undefined;
  }

  /** Stops listening and ends every wait (abandoned: the agent stops). */
  close(): void {
    this.closed = true;
    this.options.heartbeat.off('heard', this.onHeard);
    this.options.heartbeat.off('leaving', this.onLeaving);
    this.wakeAll();
  }

  private wakeAll(): void {
    for (const w of [...this.waiters]) w.wake();
  }
}

// ---------------------------------------------------------------- the taker's check on the link

/** A taker's question before it adds a leased address whose lease it has waited out. */
export interface LeaseProbeRequest {
  peer: string;
  address: string;
  /** The interface the address is to be added on: the link that is asked. */
  interface: string;
  /** When the peer was declared dead (ms, this node's clock), and the lease it claimed (s). */
  decidedAt: number;
  seconds: number;
  /** Asked between rounds: a reason to stop (the takeover is abandoned, the agent stops). */
  stop?: () => string | undefined;
  /** Told once, at the first answer: the old holder still has the address past its lease. */
  onHeld?: (h: LeaseHeld) => void;
}

/** The old holder still answered for the address after its lease ran out. */
export interface LeaseHeld {
  peer: string;
  address: string;
  mac: string;
  kind: ProbeAnswer['kind'];
  /** When it answered (ms, this node's clock). */
  at: number;
  /**
   * How long past its lease it answered, ms, at least: the lease ran out by decidedAt + the
   * lease at the latest (the owner's last renewal came before the decision).
   */
  pastLeaseMs: number;
}

export type LeaseProbeOutcome =
  /** Nobody answered: the address may be added. `held` when the old holder answered first (its kernel was late). */
  | {
      kind: 'gone';
      /** Probe rounds, and how long the probing took, ms. */
      probes: number;
      ms: number;
      held?: { macs: string[]; answers: number; lastAt: number; pastLeaseMs: number };
    }
  /** Stopped between rounds for request.stop()'s reason: nothing may be added. */
  | { kind: 'stopped'; why: string };

export interface LeaseProbeOptions {
  /** Opens a probe of `address` on `ifname` (net/address-probe.ts AddressProbe.open). */
  open: (ifname: string, address: string) => { round: ProbeOnce; close(): Promise<void> };
  /** Rounds, ms (net/address-probe.ts: PROBE_WINDOW_MS, PROBE_EVERY_MS, PROBE_GIVE_UP_MS). */
  windowMs?: number;
  everyMs?: number;
  giveUpMs?: number;
  now?: () => number;
  sleep?: UntilGoneOptions['sleep'];
}

/**
 * Before a taker adds an address whose lease it waited out: whether the old holder's kernel has
 * really removed it. Probes the link (IPv4: ARP probe, RFC 5227 section 2.1.1; IPv6: DAD
 * Neighbour Solicitation, RFC 4862 section 5.4) until nobody answers (net/address-probe.ts
 * probeUntilGone): `gone`, with how long past its lease the holder kept it if it answered first;
 * `stopped` when request.stop() says so. Throws AddressHeldError (code ERR_ADDRESS_HELD, the
 * MACs that answered) when it is still held after options.giveUpMs (10 s), and the probe's own
 * errors (opening it: ENODEV, EOPNOTSUPP, EPERM; sending). The probe is closed in every case.
 */
export async function probeLeaseRanOut(request: LeaseProbeRequest, options: LeaseProbeOptions): Promise<LeaseProbeOutcome> {
  const now = options.now ?? clock;
  // The owner renews only after a heartbeat, and its last one came before the decision: its
  // lease ran out by decidedAt + seconds at the latest. Lateness counted from there is a floor.
  const leaseEnd = request.decidedAt + request.seconds * 1000;
  const address = canonicalAddress(request.address);
  const probe = options.open(request.interface, address);
  try {
    const r = await probeUntilGone((w) => probe.round(w), {
      address,
      holder: request.peer,
      ...(options.windowMs !== undefined ? { windowMs: options.windowMs } : {}),
      ...(options.everyMs !== undefined ? { everyMs: options.everyMs } : {}),
      ...(options.giveUpMs !== undefined ? { giveUpMs: options.giveUpMs } : {}),
      ...(options.sleep ? { sleep: options.sleep } : {}),
      ...(request.stop ? { stop: request.stop } : {}),
      now,
      onHeld: ({ answer, at }) => request.onHeld?.({ peer: request.peer, address, mac: answer.mac, kind: answer.kind, at, pastLeaseMs: Math.round(at - leaseEnd) }),
    });
    if (r.kind === 'stopped') return { kind: 'stopped', why: r.why };
    return {
      kind: 'gone',
      probes: r.probes,
      ms: Math.round(r.at - r.startedAt),
      ...(r.held ? { held: { macs: r.held.macs, answers: r.held.answers, lastAt: r.held.lastAt, pastLeaseMs: Math.round(r.held.lastAt - leaseEnd) } } : {}),
    };
  } finally {
    // On a libuv worker (a packet socket's close waits ~10 ms for RCU): the address is not held up by it.
    void probe.close().catch(() => undefined);
  }
}
