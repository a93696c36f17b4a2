// Decides, from authenticated heartbeats, when a peer node has failed (seed 004): a node is
// down only when every one of its links has been silent for `misses` intervals plus a small skew
// (see timeoutMs); one silent link while another still carries heartbeats is a link failure,
// reported as such, and no failover. Pure state machine: heartbeats in through observe(), time
// through tick(now), events out; nextDeadline() says when tick() next has something to decide.
import type { Heartbeat } from './heartbeat-packet.js';

// Node events carry the sender's own send time of the heartbeat that showed the change (the
// first one heard for node-up, the newest one heard for node-down): every observer reads the same
// value from the same heartbeat, and within one incarnation it only grows (the sender's
// monotonic clock), so it numbers a node's changes alike on every agent (see node-events.ts).
// Optional for events made elsewhere (tests, other sources): those are numbered by `at`.
export type DetectorEvent =
  | { kind: 'node-up'; node: string; incarnation: bigint; at: number; sentAtMs?: number }
  | { kind: 'node-down'; node: string; incarnation: bigint; at: number; lastHeardAt: number; lastSentAtMs?: number }
  | { kind: 'link-down'; node: string; link: number; at: number }
  | { kind: 'link-up'; node: string; link: number; at: number }
  /**
   * A planned departure: the node's agent said it stops (its last heartbeats carry `leaving`).
   * Not a failure: nothing is taken over. `serving`: its instances still run without an agent.
   */
  | { kind: 'node-left'; node: string; incarnation: bigint; at: number; serving: boolean };

/**
 * The default skew, ms: how late a heartbeat may arrive after its due time and still count. It
 * covers the sender's timer firing late (an event loop held by a slice of work, ~2 ms here, or by
 * the scheduler of a busy host) and the network's jitter (sub-ms on a LAN); at most one interval.
 */
export const DEFAULT_SKEW_MS = 25;

export interface DetectorOptions {
  intervalMs: number;
  misses: number;
  /** Lateness allowed to a heartbeat, ms (default: DEFAULT_SKEW_MS, at most intervalMs). */
  skewMs?: number;
  /** The link ids every peer is expected on (e.g. [0, 1]: main and failsafe). */
  links: number[];
  /** The configured peers: listed by status() even before they are heard (`heard: false`). */
  peers?: string[];
}

export interface DetectorCounters {
  accepted: number;
  replayed: number; // sequence not above the last one seen in the same incarnation
  staleIncarnation: number; // from an incarnation older than the current one
  afterLeave: number; // from an incarnation that announced its departure
}

interface PeerState {
  incarnation: bigint;
  lastSeq: Map<number, bigint>; // per link: replays are judged per link
  lastHeard: Map<number, number>; // per link
  linkUp: Map<number, boolean>;
  up: boolean;
  /** Set when this incarnation announced a planned departure; its later heartbeats are ignored. */
  left?: { at: number; serving: boolean };
  /** When it was last declared down (failure or departure), for status. */
  downAt?: number;
  /** The newest send time (the sender's clock, ms) of a heartbeat accepted in this incarnation. */
  lastSentAtMs: number | undefined;
}

export class FailureDetector {
  private readonly peers = new Map<string, PeerState>();
  readonly counters: DetectorCounters = { accepted: 0, replayed: 0, staleIncarnation: 0, afterLeave: 0 };
  /** No link or node is declared down before this time (ms, the clock of tick()): see localPause. */
  private convictNotBefore = -Infinity;

  constructor(private readonly options: DetectorOptions) {
    if (!(options.intervalMs > 0) || !Number.isInteger(options.misses) || options.misses < 1 || options.links.length === 0) {
      throw new RangeError('FailureDetector needs intervalMs > 0, misses >= 1 and at least one link');
    }
    if (options.skewMs !== undefined && !(options.skewMs >= 0 && options.skewMs <= options.intervalMs)) {
      throw new RangeError('FailureDetector needs 0 <= skewMs <= intervalMs');
    }
    this.skewMs = options.skewMs ?? Math.min(DEFAULT_SKEW_MS, options.intervalMs);
  }

  /** The lateness allowed to a heartbeat, ms (see DEFAULT_SKEW_MS). */
  readonly skewMs: number;

  /**
   * Silence, in ms since the last heartbeat heard, past which a link (or, on every link, a node)
   * is declared down: `misses` × intervalMs + skewMs. The `misses` heartbeats due after the last
   * one heard are all missing, the last of them later than the skew allows; a heartbeat late by
   * up to the skew, even after `misses` - 1 lost ones, is never taken for a death. With a 100 ms
   * interval and 3 misses: 325 ms after the last heartbeat, so 225-325 ms after the death.
   */
  get timeoutMs(): number {
    return this.options.intervalMs * this.options.misses + this.skewMs;
  }

  /**
   * This node itself did not run until `now` for longer than an interval (its own timer fired
   * that late). When the whole host was held (a VM paused or migrated, a host stalled: every
   * agent of a lab on one kernel), its peers sent nothing meanwhile either, and their silence
   * over that time is this node's, not theirs: declaring them dead at the resume, before they
   * could send again, made every node of a held host declare the others dead. So nothing is
   * declared down until one interval and the skew after `now`: each peer's first heartbeat due
   * after the resume has time to arrive. A peer that died meanwhile is declared then, at most
   * intervalMs + skewMs after the resume. (Cassandra's failure detector likewise convicts no
   * one after a local pause: max_local_pause_in_ms.)
   */
  localPause(now: number): void {
    this.convictNotBefore = Math.max(this.convictNotBefore, now + this.options.intervalMs + this.skewMs);
  }

  /** Until when convictions wait after a local pause (ms), or undefined when they do not. */
  convictionsWaitUntil(now: number): number | undefined {
    return this.convictNotBefore > now ? this.convictNotBefore : undefined;
  }

  /** Takes an authenticated heartbeat that arrived on `link`; returns the events it causes. */
  observe(hb: Heartbeat, link: number, now: number): DetectorEvent[] {
    const events: DetectorEvent[] = [];
    let p = this.peers.get(hb.node);
    if (p && hb.incarnation < p.incarnation) {
      this.counters.staleIncarnation++;
      return events;
    }
    if (!p || hb.incarnation > p.incarnation) {
      // A new node, or one that restarted: its sequence numbers start over.
      const old = p;
      p = { incarnation: hb.incarnation, lastSeq: new Map(), lastHeard: new Map(), linkUp: new Map(), up: false, lastSentAtMs: undefined };
      this.peers.set(hb.node, p);
      if (old?.up) events.push({ kind: 'node-down', node: hb.node, incarnation: hb.incarnation - 1n, at: now, lastHeardAt: now, ...sentAt('lastSentAtMs', old.lastSentAtMs) });
    }
    const last = p.lastSeq.get(link);
    if (last !== undefined && hb.seq <= last) {
      this.counters.replayed++;
      return events;
    }
    if (p.left) {
      // A late heartbeat of a life that said goodbye (the links reorder): it stays gone.
      this.counters.afterLeave++;
      return events;
    }
    if (hb.leaving) {
      this.counters.accepted++;
      p.lastSeq.set(link, hb.seq);
      p.left = { at: now, serving: hb.leaving.serving };
      p.downAt = now;
      const wasUp = p.up;
      p.up = false;
      if (wasUp) events.push({ kind: 'node-left', node: hb.node, incarnation: hb.incarnation, at: now, serving: hb.leaving.serving });
      return events;
    }
    this.counters.accepted++;
    p.lastSeq.set(link, hb.seq);
    p.lastHeard.set(link, now);
    if (Number.isFinite(hb.sentAtMs) && !(hb.sentAtMs <= (p.lastSentAtMs ?? -Infinity))) p.lastSentAtMs = hb.sentAtMs;
    if (p.up && p.linkUp.get(link) === false) events.push({ kind: 'link-up', node: hb.node, link, at: now });
    p.linkUp.set(link, true);
    if (!p.up) {
      p.up = true;
      for (const l of this.options.links) if (!p.linkUp.has(l)) p.linkUp.set(l, true);
      // Links not heard yet get a full timeout from now before they count as down.
      for (const l of this.options.links) if (!p.lastHeard.has(l)) p.lastHeard.set(l, now);
      events.push({ kind: 'node-up', node: hb.node, incarnation: hb.incarnation, at: now, ...sentAt('sentAtMs', Number.isFinite(hb.sentAtMs) ? hb.sentAtMs : undefined) });
    }
    return events;
  }

  /** Declares silent links and nodes down; returns the events. */
  tick(now: number): DetectorEvent[] {
    const events: DetectorEvent[] = [];
    if (now < this.convictNotBefore) return events;
    for (const [node, p] of this.peers) {
      if (!p.up) continue;
      const silent = this.options.links.filter((l) => now - (p.lastHeard.get(l) ?? -Infinity) > this.timeoutMs);
      if (silent.length === this.options.links.length) {
        p.up = false;
        p.downAt = now;
        const lastHeardAt = Math.max(...this.options.links.map((l) => p.lastHeard.get(l) ?? -Infinity));
        events.push({ kind: 'node-down', node, incarnation: p.incarnation, at: now, lastHeardAt, ...sentAt('lastSentAtMs', p.lastSentAtMs) });
        continue;
      }
      // A link is down only while another is plainly alive (heard within two intervals): when a
      // node dies, its links fall silent a few ms apart, and that is a node failure, not a
      // link failure followed by one.
      const aliveElsewhere = this.options.links.some((l) => now - (p.lastHeard.get(l) ?? -Infinity) <= 2 * this.options.intervalMs);
      if (!aliveElsewhere) continue;
      for (const l of silent) {
        if (p.linkUp.get(l) !== false) {
          p.linkUp.set(l, false);
          events.push({ kind: 'link-down', node, link: l, at: now });
        }
      }
    }
    return events;
  }

  /**
   * The earliest time (ms, the clock of observe() and tick()), not before `now`, at which tick()
   * could declare a link or a node down: the first timeout of a link still up. Undefined when
   * nothing is pending. A driver arms one timer just past it instead of ticking; a deadline that
   * passed without a decision (a link silent while no other is alive) can only change through a
   * heartbeat, after which the driver calls tick() again. A deadline that falls while
   * convictions wait after a local pause moves to their end.
   */
  nextDeadline(now: number): number | undefined {
    let at: number | undefined;
    for (const p of this.peers.values()) {
      if (!p.up) continue;
      for (const l of this.options.links) {
        if (p.linkUp.get(l) === false) continue;
        const d = Math.max((p.lastHeard.get(l) ?? -Infinity) + this.timeoutMs, this.convictNotBefore);
        if (d >= now && (at === undefined || d < at)) at = d;
      }
    }
    return at;
  }

  /** The peer's incarnation as last heard, or undefined when never heard. */
  incarnationOf(node: string): bigint | undefined {
    return this.peers.get(node)?.incarnation;
  }

  /**
   * The lowest-numbered link of an up peer not declared down (one not heard yet counts as up
   * until its first timeout, as the detector counts it), or undefined when the peer is not up.
   */
  firstLinkUp(node: string): number | undefined {
    const p = this.peers.get(node);
    if (!p?.up) return undefined;
    let best: number | undefined;
    for (const l of this.options.links) if (p.linkUp.get(l) !== false && (best === undefined || l < best)) best = l;
    return best;
  }

  /**
   * Per peer: up or down, incarnation, each link's state; configured peers never heard are listed
   * with `heard: false` (incarnation 0); `left` for a planned departure, `downAt` (ms since the
   * epoch) when it was last declared down or left.
   */
  status(): PeerStatus[] {
    const heard: PeerStatus[] = [...this.peers].map(([node, p]) => ({
      node,
      heard: true,
      up: p.up,
      incarnation: p.incarnation,
      links: this.options.links.map((link) => ({ link, up: p.up && p.linkUp.get(link) !== false, lastHeardAt: p.lastHeard.get(link) })),
      ...(p.left ? { left: p.left } : {}),
      ...(p.downAt !== undefined && !p.up ? { downAt: p.downAt } : {}),
    }));
    const never = (this.options.peers ?? []).filter((n) => !this.peers.has(n));
    return [...heard, ...never.map((node) => ({ node, heard: false, up: false, incarnation: 0n, links: this.options.links.map((link) => ({ link, up: false, lastHeardAt: undefined })) }))];
  }
}

export interface PeerStatus {
  node: string;
  /** False for a configured peer never heard since this agent started. */
  heard: boolean;
  up: boolean;
  incarnation: bigint;
  links: Array<{ link: number; up: boolean; lastHeardAt: number | undefined }>;
  left?: { at: number; serving: boolean };
  downAt?: number;
}

/** `{ [key]: ms }`, or nothing when the sender's clock gave no usable time. */
function sentAt<K extends string>(key: K, ms: number | undefined): { [k in K]?: number } {
  return ms === undefined ? {} : ({ [key]: ms } as { [k in K]?: number });
}
