// The connections this node serves, as its agent follows them to replicate them to its peers
// (issue 9) and to say goodbye on them itself. Three sources, each for what it is best at:
// - the capture's SYN-ACK, FIN and RST segments, handed over per packet: a connection is known
//   (and replicated) a fraction of a millisecond after the server accepted it, and forgotten when
//   it ends;
// - the capture's flow table, polled for what changed: sequence numbers, windows, timestamps;
// - sock_diag, dumped on a libuv worker every scan: the authoritative list, which adds what the
//   capture never saw (connections older than the agent) and removes what it missed.
// A scope with a goodbye also has its byte streams followed (BoundaryWatch), so each connection
// says whether the server stream sits between two messages, and where.
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { FlowRecord, FlowSide, ParsedSegment } from '../../native.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../native.js';
import { BoundaryWatch, type BoundaryState } from '../../net/boundary-watch.js';
import type { LocalBoundary } from '../../net/close-local.js';
import type { SegmentSource } from '../../net/close-remote.js';
import { Slices } from '../../event-loop.js';
import { canonicalAddress, canonicalConnectionKey, canonicalizer, wireAddress, type Endpoint } from '../../net/endpoint.js';
import { boundaryAt, rawWindow, sidesSeen, trackedFromSides } from '../../net/flow-knowledge.js';
import type { CaptureScope } from '../../net/flow-tracker.js';
import type { GoodbyePlugin } from '../../net/goodbye/types.js';
import { seqDiff } from '../../net/seq.js';
import type { DiagSocket } from '../../net/sockdiag.js';
import type { ReplicatedState } from './wire.js';

/** Connections on this local port (and address, when given): a service peers may take over, or an instance's port. */
export interface ServiceScope {
  address?: string;
  port: number;
  /** Follow the byte streams with this plugin's framer, for goodbyes. */
  goodbye?: GoodbyePlugin;
}

export interface LocalConnection {
  readonly key: string;
  /** The server side: this node's address and the service port. */
  readonly local: Endpoint;
  readonly peer: Endpoint;
  /** The server's initial sequence number, from its SYN-ACK (when the capture saw it). */
  readonly isn?: number;
  /** When this table learned of it (ms since the epoch). */
  openedAt: number;
  /** What the capture saw of it, and when it last saw a segment (ms since the epoch). */
  state?: ReplicatedState;
  stateAt?: number;
  /** For scopes with a goodbye: whether the server stream sits between messages. */
  boundary?: { atBoundary: boolean; reason: string };
  /** Scans in a row (each started after it was opened) that did not list it. */
  missedScans: number;
}

export type LocalChange = { kind: 'open' | 'update' | 'close'; conn: LocalConnection };

/** What LocalConnections needs of a capture: OwnCapture, or a fake in tests. */
export interface CaptureSource extends SegmentSource {
  /** SYN, FIN and RST segments as they arrive: opens and closes. (onSegments: what stream followers need.) */
  onControl(listener: (segments: ParsedSegment[]) => void): () => void;
  /** Flows updated after `generation`, and the generation to ask from next (FlowTracker.changedFlows). */
  changedFlows(generation: number): { flows: FlowRecord[]; generation: number };
  /** One flow, its sides named from `local`'s point of view (FlowTracker.findFlow). */
  findFlow(local: Endpoint, remote: Endpoint): { local: FlowSide; remote: FlowSide } | undefined;
  setScope(scope: CaptureScope): void;
  /** Segments the kernel dropped because the capture fell behind (a scan then finds what they said). */
  stats(): { drops: number };
  close(): void;
}

export interface LocalConnectionsOptions {
  /**
   * Whether an address is this host's own (default: os.networkInterfaces(), reread with each
   * scope change and scan): a scope without an address follows its port on these only, and a
   * connection from one of them is the host talking to itself.
   */
  isLocalAddress?: (address: string) => boolean;
  /** Opens the capture (OwnCapture: every interface) when the first scope is set, with that scope. */
  openCapture: (scope: CaptureScope) => CaptureSource;
  /** The connected sockets (established or half-closed) on these local ports. */
  listSockets: (ports: number[]) => Promise<DiagSocket[]>;
  /** ms since the epoch. */
  now?: () => number;
  /** At most this many connections are held; further ones are refused and counted. */
  maxConnections?: number;
}

/** The BPF filter takes at most 16 ports. */
export const MAX_SCOPE_PORTS = 16;
/** Payload captured per segment when a scope follows streams: a whole segment, GSO ones included. */
const FOLLOW_PAYLOAD = 65535;
const TOMBSTONE_MS = 30_000;
/** How long a new connection's flow is looked for (the capture's ring hands blocks over within ms). */
const STATELESS_LOOKUP_MS = 2000;
/**
 * Connections known from the server's SYN-ACK alone, before the client acked it, held at most at
 * once: a SYN flood (syncookies included) draws a SYN-ACK per spoofed SYN and must not fill the
 * table or the peers' copies. Past it, a new connection waits for the next scan to be known.
 */
export const MAX_UNCONFIRMED = 16384;
/** An unconfirmed connection whose client never acked the SYN-ACK is forgotten after this (ms). */
export const UNCONFIRMED_MS = 3000;

export class LocalConnections extends EventEmitter<{ change: [LocalChange] }> {
  private readonly entries = new Map<string, LocalConnection>();
  /** Connections the capture saw end, by key: when. A scan that began earlier must not bring them back. */
  private readonly tombstones = new Map<string, number>();
  private scopeList: ServiceScope[] = [];
  /** Stream followers, by scopeId. */
  private watches = new Map<string, BoundaryWatch>();
  /** The flow table's generation at the last refresh. */
  private generation = 0;
  /** Connections added without state yet: looked up in the flow table at each refresh. */
  private readonly stateless = new Set<string>();
  /** A refresh cut at its slice: the flows taken from the table, then the stateless lookups. */
  private pendingRefresh: { flows: FlowRecord[]; next: number; stateless: { keys: string[]; next: number } | undefined } | undefined;
  /** Connections known from a SYN-ACK only, not yet acked by their client nor listed by a scan. */
  private readonly unconfirmed = new Set<string>();
  private closed = false;
  /** The scan under way, and the scopes it was asked for. */
  private scanning: { scopes: readonly ServiceScope[]; done: Promise<void> } | undefined;
  private readonly now: () => number;
  private readonly max: number;
  private capture: { source: CaptureSource; unsubscribe: () => void } | undefined;
  /** refused: past maxConnections; deferred: SYN-ACKs past MAX_UNCONFIRMED (left to the next scan). */
  readonly counters = { opened: 0, closed: 0, refused: 0, deferred: 0, scans: 0, lastScanMs: 0 };
  /** Addresses as on the wire: sock_diag names a dual-stack socket's IPv4 peers ::ffff:a.b.c.d. */
  private readonly canon = canonicalizer(wireAddress);
  /** This host's own addresses: a connection from one of them is the host talking to itself. */
  private ownAddresses = new Set<string>();
  private readonly isLocal: (address: string) => boolean;

  constructor(private readonly options: LocalConnectionsOptions) {
    super();
    this.now = options.now ?? Date.now;
    this.max = options.maxConnections ?? 1 << 18;
    this.isLocal = options.isLocalAddress ?? ((a) => this.ownAddresses.has(a));
  }

  /** This host's addresses, as the wire writes them (reread with each scope change and scan). */
  private readOwnAddresses(): void {
    this.ownAddresses = new Set(Object.values(os.networkInterfaces()).flatMap((l) => (l ?? []).map((a) => this.canon(a.address.split('%')[0]!))));
  }

  get scopes(): readonly ServiceScope[] {
    return this.scopeList;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Segments the capture lost so far (0 without a capture). */
  get captureDrops(): number {
    return this.capture?.source.stats().drops ?? 0;
  }

  /**
   * The scopes to follow (replaces the old ones). The capture opens with the first scope and
   * closes with the last; in between its filter changes on the live socket, keeping what it
   * tracked. Connections outside every scope are dropped (closed). Throws a RangeError past
   * MAX_SCOPE_PORTS distinct ports, changing nothing.
   */
  setScopes(scopes: ServiceScope[]): void {
    const byId = new Map<string, ServiceScope>();
    for (const s of scopes) {
      const scope = { ...s, ...(s.address !== undefined ? { address: canonicalAddress(s.address) } : {}) };
      byId.set(scopeId(scope), scope);
    }
    const ports = [...new Set([...byId.values()].map((s) => s.port))];
    if (ports.length > MAX_SCOPE_PORTS) throw new RangeError(`at most ${MAX_SCOPE_PORTS} service ports can be followed, not ${ports.length}`);
    const captureScope = { ports, payloadBytes: [...byId.values()].some((s) => s.goodbye) ? FOLLOW_PAYLOAD : 0 };
    this.readOwnAddresses();
    if (ports.length === 0) {
      this.closeCapture();
    } else if (!this.capture) {
      const source = this.options.openCapture(captureScope);
      this.capture = { source, unsubscribe: source.onControl((segs) => this.onControl(segs)) };
    } else {
      this.capture.source.setScope(captureScope);
    }
    // Streams already followed stay followed: a scope that is kept keeps its watch.
    const watches = new Map<string, BoundaryWatch>();
    for (const [id, s] of byId) {
      if (!s.goodbye || !this.capture) continue;
      const kept = this.watches.get(id);
      watches.set(id, kept ?? new BoundaryWatch(this.capture.source, s.address !== undefined ? { address: s.address, port: s.port } : { port: s.port, isLocalAddress: (a) => this.isLocal(this.canon(a)) }, s.goodbye));
    }
    for (const [id, w] of this.watches) if (watches.get(id) !== w) w.close();
    this.watches = watches;
    this.scopeList = [...byId.values()];
    for (const c of [...this.entries.values()]) if (!this.scopeOf(c.local)) this.drop(c);
  }

  /** Every connection held now. */
  list(): LocalConnection[] {
    return [...this.entries.values()];
  }

  get(key: string): LocalConnection | undefined {
    return this.entries.get(key);
  }

  /** For a goodbye through the local socket (the instance plan): the followed boundary of a connection. */
  boundaryOf(local: Endpoint, peer: Endpoint): LocalBoundary | undefined {
    const watch = this.watchOf(local);
    if (!watch) return undefined;
    const b = watch.state({ address: this.canon(peer.address), port: peer.port }, { address: this.canon(local.address), port: local.port });
    return { atBoundary: b.atBoundary, reason: b.reason, ...(b.serverNext !== undefined ? { serverNext: b.serverNext } : {}) };
  }

  /**
   * Takes what the flow table saw since the last refresh: new sequence numbers, windows,
   * timestamps and boundaries become 'update' changes. Cheap when little changed. Connections
   * opened since are looked up in the table too: the two sockets of the capture race, and the
   * flow's first segments may have been taken before the open was.
   * Runs one slice (SLICE_MS) at most: returns false when work is left, which the next call
   * continues (10,000 connections opening at once made one refresh hold the loop, and the
   * heartbeats it sends, for ~240 ms).
   */
  refresh(): boolean {
    if (!this.capture) return true;
    const source = this.capture.source;
    const slice = new Slices();
    if (!this.pendingRefresh) {
      const changed = source.changedFlows(this.generation);
      this.generation = changed.generation;
      this.pendingRefresh = { flows: changed.flows, next: 0, stateless: undefined };
    }
    const work = this.pendingRefresh;
    while (work.next < work.flows.length) {
      if (slice.due) return false;
      const f = work.flows[work.next++]!;
      const fromB = this.entries.get(canonicalConnectionKey(f.b, f.a));
      if (fromB) this.applyFlow(fromB, f.b, f.a);
      else {
        const fromA = this.entries.get(canonicalConnectionKey(f.a, f.b));
        if (fromA) this.applyFlow(fromA, f.a, f.b);
      }
    }
    const now = this.now();
    if (!work.stateless) {
      for (const key of this.unconfirmed) {
        const c = this.entries.get(key);
        if (!c) this.unconfirmed.delete(key);
        else if (now - c.openedAt > UNCONFIRMED_MS) this.drop(c); // a SYN-ACK nobody answered
      }
      work.stateless = { keys: [...this.stateless], next: 0 };
    }
    const stateless = work.stateless;
    while (stateless.next < stateless.keys.length) {
      if (slice.due) return false;
      const key = stateless.keys[stateless.next++]!;
      if (!this.stateless.has(key)) continue;
      const c = this.entries.get(key);
      // Found, gone, or never seen on the wire (older than the agent and idle): stop looking.
      if (c && c.state === undefined) {
        const found = source.findFlow(c.local, c.peer);
        if (found) this.applyFlow(c, found.local, found.remote);
        if (c.state === undefined && now - c.openedAt < STATELESS_LOOKUP_MS) continue;
      }
      this.stateless.delete(key);
    }
    this.pendingRefresh = undefined;
    return true;
  }

  /** The state of a connection from its flow's server side (d) and peer side (p). */
  private applyFlow(c: LocalConnection, d: FlowSide, p: FlowSide): void {
    // The client acked the server's SYN-ACK: a connection, not a SYN flood's half-open.
    if (c.isn !== undefined && p.packets >= 2 && p.ack !== 0 && seqDiff(c.isn, p.ack) > 0) this.unconfirmed.delete(c.key);
    // Half a handshake taken so far (the ring is behind the control socket): no state yet.
    if (!sidesSeen(d, p)) return;
    const state = replicatedStateOf(d, p);
    let boundary: LocalConnection['boundary'];
    const watch = this.watchOf(c.local);
    if (watch) {
      const b: BoundaryState = watch.state(c.peer, c.local);
      const at = boundaryAt(b, d.nextSeq);
      boundary = { atBoundary: at.atBoundary === true, reason: at.boundaryReason ?? b.reason };
    }
    // As fresh as what it says of the server side (its sequence numbers, its timestamp), as the
    // backup's own tracking would stamp it (deadConnectionsFromFlows): the two are merged by age.
    c.stateAt = d.lastSeenMs;
    if (sameState(c.state, state) && sameBoundary(c.boundary, boundary)) return;
    c.state = state;
    c.boundary = boundary;
    this.emit('change', { kind: 'update', conn: c });
  }

  /**
   * One sock_diag scan (on a libuv worker): adds the connections the capture did not see open,
   * and removes those missing from two scans in a row. Concurrent calls share one scan, unless
   * the scopes changed since it began: then another follows it, for the ports it did not list.
   */
  scan(): Promise<void> {
    if (this.scanning && this.scanning.scopes === this.scopeList) return this.scanning.done;
    const scopes = this.scopeList;
    const run = this.scanning ? this.scanning.done.catch(() => {}).then(() => this.doScan()) : this.doScan();
    const done: Promise<void> = run.finally(() => {
      if (this.scanning?.done === done) this.scanning = undefined;
    });
    this.scanning = { scopes, done };
    return done;
  }

  /** Closes the capture and forgets everything; a scan under way then changes nothing. */
  close(): void {
    this.closed = true;
    for (const w of this.watches.values()) w.close();
    this.watches.clear();
    this.scopeList = [];
    this.closeCapture();
    this.entries.clear();
    this.tombstones.clear();
  }

  private closeCapture(): void {
    this.capture?.unsubscribe();
    this.capture?.source.close();
    this.capture = undefined;
    // A capture opened later has a table of its own, counting from the start.
    this.generation = 0;
    this.stateless.clear();
    this.pendingRefresh = undefined;
    this.unconfirmed.clear();
  }

  private async doScan(): Promise<void> {
    const ports = [...new Set(this.scopeList.map((s) => s.port))];
    if (ports.length === 0) return;
    const started = this.now();
    const t0 = performance.now();
    this.readOwnAddresses();
    const sockets = await this.options.listSockets(ports);
    if (this.closed) return;
    this.counters.scans++;
    this.counters.lastScanMs = Math.round((performance.now() - t0) * 100) / 100;
    const listed = new Set<string>();
    // In slices: tens of thousands of sockets must not hold the loop that sends heartbeats.
    const slices = new Slices();
    for (const s of sockets) {
      if (slices.due) {
        await slices.next();
        if (this.closed) return;
      }
      const local = { address: this.canon(s.src), port: s.sport };
      if (!this.scopeOf(local)) continue;
      const peer = { address: this.canon(s.dst), port: s.dport };
      const key = canonicalConnectionKey(local, peer);
      listed.add(key);
      const c = this.entries.get(key);
      if (c) {
        c.missedScans = 0;
        this.unconfirmed.delete(key); // the kernel has it connected
        continue;
      }
      const closedAt = this.tombstones.get(key);
      if (closedAt !== undefined && closedAt >= started) continue; // ended while the dump ran
      this.add(key, local, peer);
    }
    for (const c of [...this.entries.values()]) {
      if (listed.has(c.key) || c.openedAt >= started) continue;
      if (++c.missedScans >= 2) this.drop(c);
    }
    for (const [key, at] of this.tombstones) if (this.now() - at > TOMBSTONE_MS) this.tombstones.delete(key);
  }

  private onControl(segs: ParsedSegment[]): void {
    for (const s of segs) {
      if (!(s.flags & (TCP_SYN | TCP_FIN | TCP_RST))) continue;
      const src = { address: s.src, port: s.sport };
      const dst = { address: s.dst, port: s.dport };
      if (s.flags & TCP_SYN) {
        // The server's SYN-ACK: it accepted the connection, and its client will think it open.
        if (s.flags & TCP_ACK && this.scopeOf(src)) this.open(src, dst, s.seq);
        continue;
      }
      // A reset from either side ends it; so does the server's FIN (the client reads EOF).
      // The client's FIN does not: the server may still answer it.
      const fromServer = this.entries.get(canonicalConnectionKey(src, dst));
      if (fromServer) this.drop(fromServer, true);
      else if (s.flags & TCP_RST) {
        const toServer = this.entries.get(canonicalConnectionKey(dst, src));
        if (toServer) this.drop(toServer, true);
      }
    }
  }

  private open(local: Endpoint, peer: Endpoint, isn: number): void {
    const key = canonicalConnectionKey(local, peer);
    this.tombstones.delete(key);
    const had = this.entries.get(key);
    // The same SYN-ACK again (a retransmission) changes nothing; another ISN is a new connection
    // on a reused port, whose state starts over.
    if (had && had.isn === isn) return;
    if (this.unconfirmed.size >= MAX_UNCONFIRMED) {
      this.counters.deferred++;
      return;
    }
    if (had) this.entries.delete(key);
    if (this.add(key, local, peer, isn)) this.unconfirmed.add(key);
  }

  /** Adds a connection; false when it is not held (the host's own, or the table is full). */
  private add(key: string, local: Endpoint, peer: Endpoint, isn?: number): boolean {
    // A connection from this host to itself (its own health probe of the service address) ends
    // with the host: nothing is left to close for it, and nothing would answer a backup's close.
    if (this.isLocal(this.canon(peer.address))) {
      this.watchOf(local)?.forget(peer, local);
      return false;
    }
    if (this.entries.size >= this.max) {
      this.counters.refused++;
      this.watchOf(local)?.forget(peer, local);
      return false;
    }
    const c: LocalConnection = {
      key,
      local: { address: this.canon(local.address), port: local.port },
      peer: { address: this.canon(peer.address), port: peer.port },
      openedAt: this.now(),
      missedScans: 0,
      ...(isn !== undefined ? { isn } : {}),
    };
    this.entries.set(key, c);
    this.stateless.add(key);
    this.counters.opened++;
    this.emit('change', { kind: 'open', conn: c });
    return true;
  }

  private drop(c: LocalConnection, seenEnding = false): void {
    this.entries.delete(c.key);
    this.unconfirmed.delete(c.key);
    if (seenEnding) {
      this.tombstones.delete(c.key); // set anew: the oldest stay first in the map
      this.tombstones.set(c.key, this.now());
      // Bounded by count too (30 s of closes at a high rate): the oldest go first.
      if (this.tombstones.size > this.max) this.tombstones.delete(this.tombstones.keys().next().value!);
    }
    this.watchOf(c.local)?.forget(c.peer, c.local);
    this.counters.closed++;
    this.emit('change', { kind: 'close', conn: c });
  }

  private watchOf(local: Endpoint): BoundaryWatch | undefined {
    const scope = this.scopeOf(local);
    return scope && this.watches.get(scopeId(scope));
  }

  /**
   * The scope a local endpoint belongs to (one that follows streams first, when several do). A
   * scope without an address takes this host's addresses only: this host's connections out to
   * another server's port of the same number are not its service's.
   */
  private scopeOf(local: Endpoint): ServiceScope | undefined {
    const address = this.canon(local.address);
    const matching = this.scopeList.filter((s) => s.port === local.port && (s.address === undefined ? this.isLocal(address) : s.address === address));
    return matching.find((s) => s.goodbye) ?? matching[0];
  }
}

/** One scope per (address, port, goodbye plugin): two subscribers of one service share it. */
export function scopeId(s: ServiceScope): string {
  return `${s.address ?? '*'}|${s.port}|${s.goodbye?.name ?? ''}`;
}

/** What is replicated of a connection, from its flow's server side (d) and peer side (p). */
function replicatedStateOf(d: FlowSide, p: FlowSide): ReplicatedState {
  const t = trackedFromSides(d, p);
  const state: ReplicatedState = {
    deadNextSeq: t.deadNextSeq,
    peerNextSeq: t.peerNextSeq,
    peerAck: t.peerAck,
    deadAck: d.ack,
    deadWindow: t.deadWindow,
    peerWindow: rawWindow(p),
    ...(t.deadTsval !== undefined ? { deadTsval: t.deadTsval } : {}),
    ...(t.peerTsval !== undefined ? { peerTsval: t.peerTsval } : {}),
  };
  // The options of the two SYNs, when both were seen (wscale -1: the shift is not known).
  if (d.wscale >= 0 && p.wscale >= 0) state.handshake = { deadWscale: d.wscale, peerWscale: p.wscale, deadMss: d.mss, peerMss: p.mss, sackPermitted: d.sackPermitted && p.sackPermitted };
  return state;
}

function sameState(a: ReplicatedState | undefined, b: ReplicatedState): boolean {
  return (
    a !== undefined &&
    a.deadNextSeq === b.deadNextSeq &&
    a.peerNextSeq === b.peerNextSeq &&
    a.peerAck === b.peerAck &&
    a.deadAck === b.deadAck &&
    a.deadWindow === b.deadWindow &&
    a.peerWindow === b.peerWindow &&
    a.deadTsval === b.deadTsval &&
    a.peerTsval === b.peerTsval &&
    (a.handshake === undefined) === (b.handshake === undefined)
  );
}

function sameBoundary(a: LocalConnection['boundary'], b: LocalConnection['boundary']): boolean {
  return a === b || (a !== undefined && b !== undefined && a.atBoundary === b.atBoundary && a.reason === b.reason);
}
