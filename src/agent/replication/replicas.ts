// The receiving side of connection replication: this node's copy of each peer's connections,
// for the services it would take over when that peer dies (issue 9). It subscribes when the
// peer comes up (the heartbeats tell its incarnation), applies the peer's SYNC and deltas in
// sequence, and subscribes again on any sign that its copy went wrong: a gap in the sequence,
// a sync cut short, a summary whose count differs, or silence while the peer's heartbeats go
// on. When the peer dies, the copy is frozen: it is what the takeover closes.
// The services asked of a peer may change at run time (setServices: a clustered application
// registered or removed): a new SUBSCRIBE replaces the last one, and since a record names its
// service by its index in the list, what the peer streamed for an earlier list (an epoch older
// than the first SUBSCRIBE of the current list, see wire.ts) is not applied.
// Every datagram must be addressed to this node in its current life, come from a configured
// peer in its current life, and carry the next sequence number; anything else is dropped and
// counted (replayed, stale incarnation, ...), never applied.
import type { DeadConnection, TrackedState } from '../../net/close-engine.js';
import { canonicalAddress, canonicalConnectionKey, type Endpoint } from '../../net/endpoint.js';
import { peerWindowKnowledge } from '../../net/flow-knowledge.js';
import type { ReplicationTransport } from './publisher.js';
import net from 'node:net';
import { encodeReplication, epochOf, GOODBYE_NAME, MAX_SERVICES, type ConnectionRecord, type Envelope, type ReplicatedService, type ReplicatedState } from './wire.js';

export interface ReplicaEntry {
  service: number;
  peer: Endpoint;
  state?: ReplicatedState;
  boundary?: { atBoundary: boolean; reason: string };
  /** When the state was current, on this node's clock (arrival minus the age the sender gave). */
  observedAt: number;
}

export interface ReplicaSetOptions {
  node: string;
  incarnation: bigint;
  key: Buffer;
  transport: ReplicationTransport;
  /** Per peer: the services this node would take over from it (an empty list: none yet, see setServices). */
  subscriptions: Map<string, ReplicatedService[]>;
  /** The peer's heartbeat interval: a copy with no datagram for 10 of them (at least 3 s) is asked for again. */
  intervalMs: number;
  /** ms since the epoch. */
  now?: () => number;
  /** Entries per peer at most; past it an upsert is refused and counted. */
  maxConnections?: number;
}

export type ReplicaRejection = 'wrong-receiver' | 'unknown-peer' | 'stale-incarnation' | 'replayed' | 'overflow';

interface Replica {
  node: string;
  services: ReplicatedService[];
  /**
   * The epoch (see wire.ts) of the first SUBSCRIBE of the current list: older epochs answered
   * another list, and their records' service indexes point into it. 0: the list never changed.
   */
  listSince: number;
  /** When the peer last streamed something for a list this node no longer asks for. */
  staleAt: number | undefined;
  up: boolean;
  /** The peer's incarnation: from its heartbeats, or from its datagrams once they are newer. */
  incarnation: bigint | undefined;
  seq: bigint;
  /** Our own sequence for SUBSCRIBE datagrams to it. */
  sent: bigint;
  subscribedAt: number | undefined;
  lastSubscribeReason: string | undefined;
  /** Ask again at the next tick (a gap, a cut sync, a count that differs). */
  resync: string | undefined;
  epoch: number | undefined;
  table: Map<string, ReplicaEntry>;
  staging: { epoch: number; nextPart: number; table: Map<string, ReplicaEntry> } | undefined;
  syncedAt: number | undefined;
  lastDatagramAt: number | undefined;
  lastSummary: { connections: number; pending: number; at: number } | undefined;
  counters: { datagrams: number; syncs: number; subscribes: number; gaps: number; mismatches: number };
}

export interface ReplicaStatus {
  node: string;
  up: boolean;
  services: ReplicatedService[];
  /** Connections known (the synced table, plus a sync under way). */
  connections: number;
  synced: boolean;
  epoch: number | undefined;
  /** ms since the last datagram from the peer (undefined: none yet). */
  lastUpdateAgeMs: number | undefined;
  /** What the peer's last summary said it had, and had not sent yet. */
  peerCount: number | undefined;
  peerPending: number | undefined;
  /** Why this node last subscribed (the peer came up, a gap, a count that differs...). */
  lastSubscribeReason: string | undefined;
  counters: Replica['counters'];
}

/** How often at most a subscription is repeated while its answer is awaited. */
const RESUBSCRIBE_MS = 1000;

export class ReplicaSet {
  private readonly replicas = new Map<string, Replica>();
  private readonly now: () => number;
  private readonly max: number;
  readonly rejected: Record<ReplicaRejection, number> = { 'wrong-receiver': 0, 'unknown-peer': 0, 'stale-incarnation': 0, replayed: 0, overflow: 0 };

  constructor(private readonly options: ReplicaSetOptions) {
    this.now = options.now ?? Date.now;
    this.max = options.maxConnections ?? 1 << 18;
    for (const [node, subscribed] of options.subscriptions) {
      checkServices(node, subscribed);
      this.replicas.set(node, {
        node,
        services: canonicalServices(subscribed),
        listSince: 0,
        staleAt: undefined,
        up: false,
        incarnation: undefined,
        seq: 0n,
        sent: 0n,
        subscribedAt: undefined,
        lastSubscribeReason: undefined,
        resync: undefined,
        epoch: undefined,
        table: new Map(),
        staging: undefined,
        syncedAt: undefined,
        lastDatagramAt: undefined,
        lastSummary: undefined,
        counters: { datagrams: 0, syncs: 0, subscribes: 0, gaps: 0, mismatches: 0 },
      });
    }
  }

  /** The peer is up in this life (heartbeats): subscribe. A new life starts its stream over. */
  peerUp(node: string, incarnation: bigint): void {
    const r = this.replicas.get(node);
    if (!r) return;
    r.up = true;
    if (r.incarnation !== incarnation) newLife(r, incarnation);
    if (r.services.length > 0) this.subscribe(r, 'the peer came up');
  }

  /**
   * The services this node asks `node` for from now on (all of them; [] for none), e.g. a
   * clustered application registered or removed. A list that differs is asked for at once when
   * the peer is up (else when it comes up); the copy keeps what it holds for the services still
   * asked for until the new sync replaces it, and drops the rest. Returns whether it changed.
   * Throws a RangeError, changing nothing, for a peer this set was not made with, more than
   * MAX_SERVICES services, or a service that is not an IP address, a port (1-65535) and an
   * optional goodbye name.
   */
  setServices(node: string, services: ReplicatedService[]): boolean {
    const r = this.replicas.get(node);
    if (!r) throw new RangeError(`replication: ${node} is not a configured peer`);
    checkServices(node, services);
    const next = canonicalServices(services);
    if (sameServices(r.services, next)) return false;
    // Where each old index went (-1: not asked for any more).
    const moved = r.services.map((old) => next.findIndex((svc) => svc.address === old.address && svc.port === old.port));
    const table = new Map<string, ReplicaEntry>();
    for (const [key, e] of copyOf(r)) {
      const to = moved[e.service] ?? -1;
      if (to >= 0) table.set(key, { ...e, service: to });
    }
    r.services = next;
    r.table = table;
    // Not synced for the new list: no delta or summary of an earlier epoch applies to it.
    r.epoch = undefined;
    r.staging = undefined;
    r.lastSummary = undefined;
    r.listSince = epochOf(r.sent + 1n);
    if (r.up && r.incarnation !== undefined && (next.length > 0 || r.sent > 0n)) this.subscribe(r, next.length > 0 ? 'the services asked for changed' : 'no service is asked for any more');
    return true;
  }

  /** The peer is down: its copy is frozen as it is (the takeover closes what it lists). */
  peerDown(node: string): void {
    const r = this.replicas.get(node);
    if (r) r.up = false;
  }

  /** A datagram from the wire, authenticated (HMAC) but not yet checked for who and when. */
  receive(env: Envelope): void {
    if (env.to !== this.options.node) return void this.rejected['wrong-receiver']++;
    const r = this.replicas.get(env.from);
    if (!r) return void this.rejected['unknown-peer']++;
    // Meant for an earlier life of this node, or sent by an earlier life of the peer.
    if (env.toIncarnation !== this.options.incarnation) return void this.rejected['stale-incarnation']++;
    if (r.incarnation !== undefined && env.fromIncarnation < r.incarnation) return void this.rejected['stale-incarnation']++;
    if (r.incarnation === undefined || env.fromIncarnation > r.incarnation) newLife(r, env.fromIncarnation);
    if (env.seq <= r.seq) return void this.rejected.replayed++;
    const m = env.message;
    const now = this.now();
    // Streamed for a list this node asked for before (in flight when it changed, or the peer did
    // not get the new SUBSCRIBE yet: tick() asks again): in order, but nothing to apply.
    const stale = m.type !== 'subscribe' && (r.services.length === 0 || m.epoch < r.listSince);
    if (r.seq !== 0n && env.seq !== r.seq + 1n && !stale) {
      r.counters.gaps++;
      r.resync = `datagrams ${r.seq + 1n}..${env.seq - 1n} were lost`;
    }
    r.seq = env.seq;
    if (stale) {
      r.staleAt = now;
      return;
    }
    r.lastDatagramAt = now;
    r.counters.datagrams++;
    switch (m.type) {
      case 'sync':
        if (m.part === 0) {
          // A full state in answer to a subscription: it supersedes whatever was lost before.
          r.staging = { epoch: m.epoch, nextPart: 0, table: new Map() };
          r.resync = undefined;
        }
        if (!r.staging || r.staging.epoch !== m.epoch || r.staging.nextPart !== m.part) {
          r.staging = undefined;
          r.resync ??= `sync part ${m.part} of epoch ${m.epoch} arrived without the parts before it`;
          return;
        }
        this.apply(r, r.staging.table, m.records, now);
        r.staging.nextPart++;
        if (m.last) {
          r.table = r.staging.table;
          r.epoch = m.epoch;
          r.staging = undefined;
          r.syncedAt = now;
          r.counters.syncs++;
        }
        return;
      case 'delta':
        // Deltas of an epoch whose sync is under way belong to it; of an older one, to nothing.
        if (r.staging?.epoch === m.epoch) this.apply(r, r.staging.table, m.records, now);
        else if (r.epoch === m.epoch) this.apply(r, r.table, m.records, now);
        return;
      case 'summary':
        r.lastSummary = { connections: m.connections, pending: m.pending, at: now };
        if (r.epoch === m.epoch && !r.staging && m.pending === 0 && m.connections !== r.table.size) {
          r.counters.mismatches++;
          r.resync ??= `the peer has ${m.connections} connections, this copy ${r.table.size}`;
        }
        return;
      case 'subscribe':
        return; // the publisher's business, routed there
    }
  }

  /** Subscribes again where the copy needs it. Call every few ms. */
  tick(): void {
    const now = this.now();
    const silentMs = Math.max(3000, 10 * this.options.intervalMs);
    for (const r of this.replicas.values()) {
      if (!r.up || r.incarnation === undefined) continue;
      const since = r.subscribedAt === undefined ? Infinity : now - r.subscribedAt;
      if (since < RESUBSCRIBE_MS) continue;
      if (r.services.length === 0) {
        // Nothing asked for: only a peer that still streams is told again.
        if (r.staleAt !== undefined && (r.subscribedAt === undefined || r.staleAt - r.subscribedAt >= RESUBSCRIBE_MS)) this.subscribe(r, 'the peer still streams services no longer asked for');
        continue;
      }
      if (r.resync) this.subscribe(r, r.resync);
      // A sync under way is answered; a slow one (the rate cap) must not be started over.
      else if (r.epoch === undefined && (r.lastDatagramAt === undefined || r.lastDatagramAt < r.subscribedAt!)) this.subscribe(r, 'no sync arrived');
      else if (r.lastDatagramAt === undefined || now - r.lastDatagramAt > silentMs) this.subscribe(r, 'the peer went silent');
    }
  }

  /**
   * The connections of `node` on `service` (its address and port) as last replicated, for the
   * close engine: the completed sync, and a sync under way on top of it.
   */
  connections(node: string, service: Endpoint): DeadConnection[] {
    const r = this.replicas.get(node);
    if (!r) return [];
    const local = { address: canonicalAddress(service.address), port: service.port };
    const index = r.services.findIndex((s) => s.port === local.port && s.address === local.address);
    if (index < 0) return [];
    const now = this.now();
    const out: DeadConnection[] = [];
    for (const e of copyOf(r).values()) {
      if (e.service !== index) continue;
      const c: DeadConnection = { local, peer: e.peer, observedAt: e.observedAt };
      const s = e.state;
      if (s) {
        const tracked: TrackedState = {
          deadNextSeq: s.deadNextSeq,
          peerNextSeq: s.peerNextSeq,
          peerAck: s.peerAck,
          deadWindow: s.deadWindow,
          ...peerWindowKnowledge(s.peerWindow, s.handshake?.peerWscale),
        };
        if (s.deadTsval !== undefined) {
          tracked.deadTsval = s.deadTsval;
          tracked.deadTsvalAgeMs = Math.max(0, now - e.observedAt);
        }
        if (s.peerTsval !== undefined) tracked.peerTsval = s.peerTsval;
        if (e.boundary) {
          tracked.atBoundary = e.boundary.atBoundary;
          tracked.boundaryReason = e.boundary.reason;
        }
        c.tracked = tracked;
      }
      out.push(c);
    }
    return out;
  }

  /** Every entry of a peer's copy, for `takeover flows --peer`. */
  entries(node: string): Array<ReplicaEntry & { service: number; local: Endpoint }> {
    const r = this.replicas.get(node);
    if (!r) return [];
    return [...copyOf(r).values()].map((e) => ({ ...e, local: { address: r.services[e.service]?.address ?? '?', port: r.services[e.service]?.port ?? 0 } }));
  }

  /** The peers asked for something. */
  status(): ReplicaStatus[] {
    const now = this.now();
    return [...this.replicas.values()].filter((r) => r.services.length > 0).map((r) => ({
      node: r.node,
      up: r.up,
      services: r.services,
      connections: copyOf(r).size,
      synced: r.epoch !== undefined,
      epoch: r.epoch,
      lastUpdateAgeMs: r.lastDatagramAt === undefined ? undefined : now - r.lastDatagramAt,
      peerCount: r.lastSummary?.connections,
      peerPending: r.lastSummary?.pending,
      lastSubscribeReason: r.lastSubscribeReason,
      counters: { ...r.counters },
    }));
  }

  private apply(r: Replica, table: Map<string, ReplicaEntry>, records: ConnectionRecord[], now: number): void {
    for (const rec of records) {
      const svc = r.services[rec.service];
      if (!svc) continue; // an index beyond what we asked for names nothing of ours
      const key = canonicalConnectionKey(svc, rec.peer);
      if (rec.op === 'remove') {
        table.delete(key);
        continue;
      }
      if (!table.has(key) && table.size >= this.max) {
        this.rejected.overflow++;
        continue;
      }
      table.set(key, {
        service: rec.service,
        peer: rec.peer,
        observedAt: now - (rec.ageMs ?? 0),
        ...(rec.state ? { state: rec.state } : {}),
        ...(rec.boundary ? { boundary: rec.boundary } : {}),
      });
    }
  }

  private subscribe(r: Replica, why: string): void {
    const link = this.options.transport.linkFor(r.node);
    if (link === undefined || r.incarnation === undefined) return;
    r.sent++;
    const env: Envelope = {
      from: this.options.node,
      to: r.node,
      link,
      fromIncarnation: this.options.incarnation,
      toIncarnation: r.incarnation,
      seq: r.sent,
      message: { type: 'subscribe', services: r.services },
    };
    this.options.transport.send(r.node, link, encodeReplication(env, this.options.key));
    r.subscribedAt = this.now();
    r.resync = undefined;
    r.lastSubscribeReason = why;
    r.counters.subscribes++;
  }
}

/** Throws a RangeError naming what is wrong with a list of services asked of `node`. */
export function checkServices(node: string, services: ReplicatedService[]): void {
  const bad = (why: string) => new RangeError(`replication: the services asked of ${node}: ${why}`);
  if (services.length > MAX_SERVICES) throw bad(`${services.length}, at most ${MAX_SERVICES} per peer`);
  services.forEach((svc, i) => {
    if (typeof svc.address !== 'string' || net.isIP(svc.address) === 0) throw bad(`[${i}].address: ${String(svc.address)} is not an IP address`);
    if (!Number.isInteger(svc.port) || svc.port < 1 || svc.port > 65535) throw bad(`[${i}].port: ${String(svc.port)} is not a port (1-65535)`);
    if (svc.goodbye !== undefined && !GOODBYE_NAME.test(svc.goodbye)) throw bad(`[${i}].goodbye: ${svc.goodbye} is not a goodbye name`);
    if (services.findIndex((o) => canonicalAddress(o.address) === canonicalAddress(svc.address) && o.port === svc.port) !== i) throw bad(`[${i}]: ${svc.address} port ${svc.port} is listed twice`);
  });
}

/** Records name their peers in canonical text; the services get the same, once. */
function canonicalServices(services: ReplicatedService[]): ReplicatedService[] {
  return services.map((svc) => ({ ...svc, address: canonicalAddress(svc.address) }));
}

function sameServices(a: ReplicatedService[], b: ReplicatedService[]): boolean {
  return a.length === b.length && a.every((s, i) => s.address === b[i]!.address && s.port === b[i]!.port && s.goodbye === b[i]!.goodbye);
}

/**
 * A new life of the peer: its stream starts over (sequence numbers, epochs counted anew). What
 * its last life replicated stays listed until the new life's sync replaces it, but is no longer
 * synced: no delta of the new life applies to it.
 */
function newLife(r: Replica, incarnation: bigint): void {
  r.incarnation = incarnation;
  r.seq = 0n;
  r.epoch = undefined;
  r.staging = undefined;
  r.lastSummary = undefined;
}

/** The copy: the completed sync, overlaid by a sync under way (no spreads: tens of thousands of entries at a takeover). */
function copyOf(r: Replica): Map<string, ReplicaEntry> {
  if (!r.staging) return r.table;
  const merged = new Map(r.table);
  for (const [k, e] of r.staging.table) merged.set(k, e);
  return merged;
}
