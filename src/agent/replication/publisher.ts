// The serving side of connection replication: for each peer that subscribed (a backup that
// would take this node's service address over), a stream of datagrams that keeps the peer's
// copy of this node's connections true (issue 9).
// - On SUBSCRIBE: a new epoch (numbered after the SUBSCRIBE, see wire.ts); a full SYNC of the
//   matching connections after a fresh sock_diag scan, then deltas. A SUBSCRIBE replaces the
//   peer's last one (the list of services it wants may change at run time); an empty one ends
//   its stream.
// - Opens go out at once (on the next turn of the event loop, batched); closes with the next
//   tick or open (a close that arrives late costs the backup one harmless reset attempt).
// - Changed state (sequence numbers, windows, timestamps, boundaries) at most once per
//   connection per interval (the heartbeat interval).
// - A SUMMARY every interval: the peer sees its copy is current (and its count right).
// - A token bucket caps the bytes per second per subscriber; opens and closes go first, and
//   what is left waits (counted as pending).
// It decides; datagrams leave through `transport`, and time comes from `now` + tick().
import { Slices } from '../../event-loop.js';
import type { Endpoint } from '../../net/endpoint.js';
import { scopeId, type LocalChange, type LocalConnection, type LocalConnections, type ServiceScope } from './local-connections.js';
import { encodeReplication, epochOf, recordBytes, recordRoom, type ConnectionRecord, type Envelope, type ReplicatedService, type ReplicationMessage } from './wire.js';

export interface ReplicationTransport {
  /** The link to send to this peer on (the lowest-numbered one that is up), or undefined when none is. */
  linkFor(peer: string): number | undefined;
  send(peer: string, link: number, datagram: Buffer): void;
}

export interface PublisherOptions {
  node: string;
  incarnation: bigint;
  key: Buffer;
  local: LocalConnections;
  transport: ReplicationTransport;
  /** Refresh period of changed state and of summaries (the heartbeat interval), ms. */
  intervalMs: number;
  /** Per subscriber. */
  maxBytesPerSecond: number;
  /** ms since the epoch. */
  now?: () => number;
  /** Scopes of this node's own (instances' ports followed for their own goodbyes), kept beside the subscribed ones. */
  ownScopes?: ServiceScope[];
  /** Resolves a goodbye plugin name from a subscription (unknown names: the service is followed without boundaries). */
  goodbye?: (name: string) => ServiceScope['goodbye'];
}

interface Pending {
  op: 'upsert' | 'remove';
  service: number;
  peer: Endpoint;
}

interface Stream {
  node: string;
  incarnation: bigint;
  services: ReplicatedService[];
  epoch: number;
  seq: bigint;
  /** Keys still to send in the current SYNC (undefined: the sync is done), and the next part. */
  sync: { keys: string[]; next: number; part: number } | undefined;
  /** The SYNC waits for a fresh scan of sock_diag. */
  awaitingScan: boolean;
  /** Opens and closes to send at once. */
  urgent: Map<string, Pending>;
  /** Connections whose state changed since last sent. */
  dirty: Set<string>;
  /** What the subscriber holds: key -> when its last upsert went out. */
  known: Map<string, number>;
  tokens: number;
  refilledAt: number;
  lastSummaryAt: number;
  datagrams: number;
  bytes: number;
  subscribedAt: number;
}

export interface SubscriberStatus {
  node: string;
  incarnation: string;
  services: ReplicatedService[];
  epoch: number;
  syncing: boolean;
  known: number;
  pending: number;
  datagrams: number;
  bytes: number;
  subscribedAt: number;
}

export class ReplicationPublisher {
  private readonly streams = new Map<string, Stream>();
  /** Every service asked for so far, by scopeId. */
  private asked = new Map<string, ServiceScope>();
  /**
   * The last sequence number sent to each peer, in the peer's life it was sent to: kept when a
   * stream ends (the peer declared down, a partition) so that a stream to the same life goes on
   * from it, and the peer, which refuses what it has seen, takes it.
   */
  private readonly sequences = new Map<string, { incarnation: bigint; seq: bigint }>();
  private readonly now: () => number;
  private flushQueued = false;
  private closed = false;
  private readonly onChange = (c: LocalChange) => this.changed(c);

  constructor(private readonly options: PublisherOptions) {
    this.now = options.now ?? Date.now;
    options.local.on('change', this.onChange);
  }

  /** Follows this node's own scopes (opening the capture if there are any); subscriptions add theirs. */
  start(): void {
    this.applyScopes();
  }

  /**
   * A SUBSCRIBE from `node` (already authenticated, addressed to us, from a configured peer in
   * a life not older than the one its heartbeats show), numbered `seq` by the subscriber.
   * Replaces the peer's stream with a new epoch (`epochOf(seq)`) and a full sync; no services:
   * ends its stream. Throws a RangeError, keeping the old subscription, when the services cannot
   * be followed (more ports than a capture filter holds).
   */
  subscribe(node: string, incarnation: bigint, services: ReplicatedService[], seq: bigint): void {
    const had = this.streams.get(node);
    if (services.length === 0) {
      this.streams.delete(node); // what it asked for before stays followed (see applyScopes)
      return;
    }
    const last = this.sequences.get(node);
    const now = this.now();
    const stream: Stream = {
      node,
      incarnation,
      services,
      epoch: epochOf(seq),
      // The sequence runs on across subscriptions of one life of the subscriber.
      seq: last && last.incarnation === incarnation ? last.seq : 0n,
      sync: undefined,
      awaitingScan: true,
      urgent: new Map(),
      dirty: new Set(),
      known: new Map(),
      // The rate is the subscriber's, whatever it asks: a new subscription refills nothing.
      tokens: had?.tokens ?? this.burst(),
      refilledAt: had?.refilledAt ?? now,
      lastSummaryAt: now,
      datagrams: had?.datagrams ?? 0,
      bytes: had?.bytes ?? 0,
      subscribedAt: now,
    };
    this.streams.set(node, stream);
    try {
      this.applyScopes();
    } catch (err) {
      if (had) this.streams.set(node, had);
      else this.streams.delete(node);
      throw err;
    }
    // The scan lists what existed before the capture followed these ports; then the snapshot.
    void this.options.local.scan().then(
      () => this.startSync(stream),
      () => this.startSync(stream), // a failed scan still syncs what the capture knows
    );
  }

  /**
   * The peer is gone (declared dead, or restarted: it will subscribe again). What it asked for
   * stays followed: a backup that restarts must not cost the streams followed meanwhile.
   */
  unsubscribe(node: string): void {
    this.streams.delete(node);
  }

  /** Sends what is due: sync parts, opens and closes, changed state, summaries. Call every few ms. */
  tick(): void {
    if (this.closed) return;
    for (const s of this.streams.values()) this.flush(s, true);
  }

  status(): SubscriberStatus[] {
    return [...this.streams.values()].map((s) => ({
      node: s.node,
      incarnation: String(s.incarnation),
      services: s.services,
      epoch: s.epoch,
      syncing: s.awaitingScan || s.sync !== undefined,
      known: s.known.size,
      pending: this.pending(s),
      datagrams: s.datagrams,
      bytes: s.bytes,
      subscribedAt: s.subscribedAt,
    }));
  }

  close(): void {
    this.closed = true;
    this.options.local.off('change', this.onChange);
    this.streams.clear();
  }

  // ---- scopes ----

  /**
   * The local table follows this node's own scopes and every service a peer has subscribed to
   * since the agent started (they only grow: a peer that goes and comes back finds its
   * connections still followed from their start).
   */
  private applyScopes(): void {
    const asked = new Map(this.asked);
    for (const s of this.streams.values()) {
      for (const svc of s.services) {
        const goodbye = svc.goodbye ? this.options.goodbye?.(svc.goodbye) : undefined;
        const scope: ServiceScope = { address: svc.address, port: svc.port, ...(goodbye ? { goodbye } : {}) };
        asked.set(scopeId(scope), scope);
      }
    }
    this.options.local.setScopes([...(this.options.ownScopes ?? []), ...asked.values()]);
    this.asked = asked; // only once the local table took them
  }

  /** The index of the subscriber's service a connection belongs to, or -1. */
  private serviceOf(s: Stream, local: Endpoint): number {
    return s.services.findIndex((svc) => svc.port === local.port && svc.address === local.address);
  }

  // ---- changes ----

  private startSync(s: Stream): void {
    if (this.streams.get(s.node) !== s || this.closed) return;
    s.awaitingScan = false;
    s.sync = { keys: this.options.local.list().filter((c) => this.serviceOf(s, c.local) >= 0).map((c) => c.key), next: 0, part: 0 };
    // Anything that changed before the snapshot is in it.
    s.urgent.clear();
    s.dirty.clear();
    this.queueFlush();
  }

  private changed({ kind, conn }: LocalChange): void {
    let opened = false;
    for (const s of this.streams.values()) {
      const service = this.serviceOf(s, conn.local);
      if (service < 0) continue;
      if (kind === 'update') {
        if (!s.urgent.has(conn.key)) s.dirty.add(conn.key);
        continue;
      }
      s.dirty.delete(conn.key);
      if (kind === 'open') {
        s.urgent.set(conn.key, { op: 'upsert', service, peer: conn.peer });
        opened = true;
      } else if (s.known.has(conn.key) || s.sync) {
        s.urgent.set(conn.key, { op: 'remove', service, peer: conn.peer });
      } else {
        s.urgent.delete(conn.key); // opened and closed before the subscriber heard of it
      }
    }
    if (opened) this.queueFlush();
  }

  /** Opens leave on the next turn of the loop: one batch for a burst, no timer wait. */
  private queueFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => {
      this.flushQueued = false;
      if (this.closed) return;
      for (const s of this.streams.values()) this.flush(s, false);
    });
  }

  // ---- sending ----

  private burst(): number {
    // Room for a burst of opens (a pool connecting at once) without waiting for tokens.
    return Math.max(64 * 1024, (this.options.maxBytesPerSecond * this.options.intervalMs) / 1000);
  }

  private refill(s: Stream, now: number): void {
    s.tokens = Math.min(this.burst(), s.tokens + ((now - s.refilledAt) * this.options.maxBytesPerSecond) / 1000);
    s.refilledAt = now;
  }

  private pending(s: Stream): number {
    return s.urgent.size + s.dirty.size + (s.sync ? s.sync.keys.length - s.sync.next : 0);
  }

  /** `periodic`: also the per-interval work (changed state, summary). */
  private flush(s: Stream, periodic: boolean): void {
    const link = this.options.transport.linkFor(s.node);
    if (link === undefined || s.awaitingScan) return;
    const now = this.now();
    this.refill(s, now);
    if (s.sync) {
      this.sendSync(s, link, now);
      if (s.sync) return; // the rest of the sync first
    }
    const records: Array<{ key: string; record: ConnectionRecord }> = [];
    // What the tokens allow (records only: the datagrams' headers make it a little less).
    let budget = s.tokens;
    // One slice of the loop at most (10,000 opens at once held it ~200 ms, heartbeats with it):
    // what is left stays urgent or dirty, and the next turn of the loop takes it.
    const slice = new Slices();
    for (const [key, p] of s.urgent) {
      if (slice.due) {
        this.queueFlush();
        break;
      }
      const record = this.record(s, key, p, now);
      records.push({ key, record });
      budget -= recordBytes(record);
    }
    if (periodic) {
      for (const key of s.dirty) {
        if (budget <= 0 || slice.due) break; // the rest next time: not built now only to wait
        const sentAt = s.known.get(key);
        if (sentAt !== undefined && now - sentAt < this.options.intervalMs) continue;
        const c = this.options.local.get(key);
        if (!c) {
          s.dirty.delete(key);
          continue;
        }
        const record = this.upsert(s, c, now);
        records.push({ key, record });
        budget -= recordBytes(record);
      }
    }
    this.sendRecords(s, link, now, records);
    if (periodic && now - s.lastSummaryAt >= this.options.intervalMs) {
      const msg: ReplicationMessage = { type: 'summary', epoch: s.epoch, connections: s.known.size, pending: this.pending(s) };
      if (this.emit(s, link, msg, true)) s.lastSummaryAt = now;
    }
  }

  private record(s: Stream, key: string, p: Pending, now: number): ConnectionRecord {
    const c = p.op === 'upsert' ? this.options.local.get(key) : undefined;
    return c ? this.upsert(s, c, now) : { op: 'remove', service: p.service, peer: p.peer };
  }

  private upsert(s: Stream, c: LocalConnection, now: number): ConnectionRecord {
    return {
      op: 'upsert',
      service: this.serviceOf(s, c.local),
      peer: c.peer,
      ageMs: c.stateAt !== undefined ? Math.max(0, now - c.stateAt) : 0,
      ...(c.state ? { state: c.state } : {}),
      ...(c.boundary ? { boundary: c.boundary } : {}),
    };
  }

  /** Packs records into DELTA datagrams while tokens last; what is sent leaves the queues. */
  private sendRecords(s: Stream, link: number, now: number, records: Array<{ key: string; record: ConnectionRecord }>): void {
    const room = recordRoom(this.options.node, s.node, 'delta');
    let batch: typeof records = [];
    let size = 0;
    const send = (): boolean => {
      if (batch.length === 0) return true;
      if (!this.emit(s, link, { type: 'delta', epoch: s.epoch, records: batch.map((b) => b.record) })) return false;
      for (const { key, record } of batch) {
        s.urgent.delete(key);
        s.dirty.delete(key);
        if (record.op === 'upsert') s.known.set(key, now);
        else s.known.delete(key);
      }
      batch = [];
      size = 0;
      return true;
    };
    for (const r of records) {
      const n = recordBytes(r.record);
      if (size + n > room && !send()) return;
      batch.push(r);
      size += n;
    }
    send();
  }

  private sendSync(s: Stream, link: number, now: number): void {
    const sync = s.sync!;
    const room = recordRoom(this.options.node, s.node, 'sync');
    const slice = new Slices(); // a sync of 10,000 records goes out over several turns of the loop
    while (sync.next < sync.keys.length || sync.part === 0) {
      if (slice.due) {
        this.queueFlush();
        return;
      }
      const records: ConnectionRecord[] = [];
      const keys: string[] = [];
      let size = 0;
      let i = sync.next;
      for (; i < sync.keys.length; i++) {
        const c = this.options.local.get(sync.keys[i]!);
        if (!c) continue; // closed since the snapshot: nothing to say
        const r = this.upsert(s, c, now);
        const n = recordBytes(r);
        if (size + n > room) break;
        records.push(r);
        keys.push(c.key);
        size += n;
      }
      const last = i >= sync.keys.length;
      if (!this.emit(s, link, { type: 'sync', epoch: s.epoch, part: sync.part, last, records })) return;
      for (const k of keys) s.known.set(k, now);
      sync.next = i;
      sync.part++;
      if (last) {
        s.sync = undefined;
        return;
      }
    }
  }

  /** Encodes, signs and sends one datagram if the tokens allow (summaries always go). */
  private emit(s: Stream, link: number, message: ReplicationMessage, always = false): boolean {
    const env: Envelope = { from: this.options.node, to: s.node, link, fromIncarnation: this.options.incarnation, toIncarnation: s.incarnation, seq: s.seq + 1n, message };
    const datagram = encodeReplication(env, this.options.key);
    if (!always && datagram.length > s.tokens) return false;
    s.seq++;
    this.sequences.set(s.node, { incarnation: s.incarnation, seq: s.seq });
    s.tokens -= datagram.length;
    s.datagrams++;
    s.bytes += datagram.length;
    this.options.transport.send(s.node, link, datagram);
    return true;
  }
}
