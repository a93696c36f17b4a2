// Connection replication between agents (issue 9), wired to the heartbeat links: this node's
// own connections (LocalConnections) streamed to the peers that subscribed (ReplicationPublisher),
// and this node's copy of the connections of the peers it would take over (ReplicaSet).
// Datagrams share the heartbeat sockets and key; each is authenticated, checked against the
// link it came in on, the node it is for, both ends' lives and its sequence number, and
// counted when refused. Timers: a tick for sends and retries, a refresh of the flow table's
// state once per heartbeat interval, and a sock_diag scan every scanMs (on a libuv worker).
import type { HeartbeatAgent } from '../../monitor/heartbeat-agent.js';
import type { DetectorEvent } from '../../monitor/failure-detector.js';
import type { CaptureScope } from '../../net/flow-tracker.js';
import { goodbyePlugin } from '../../net/goodbye/index.js';
import { CONNECTED_STATES, listTcpSocketsAsync } from '../../net/sockdiag.js';
import { LocalConnections, type CaptureSource, type ServiceScope } from './local-connections.js';
import { OwnCapture } from './own-capture.js';
import { ReplicationPublisher, type ReplicationTransport, type SubscriberStatus } from './publisher.js';
import { checkServices, ReplicaSet, type ReplicaStatus } from './replicas.js';
import { DEFAULT_REPLICATION_RATE, DEFAULT_SCAN_MS } from './defaults.js';
import { decodeReplication, REPLICATION_MAGIC, type ReplicatedService, type WireRejection } from './wire.js';

export interface ConnectionReplicationOptions {
  heartbeat: HeartbeatAgent;
  node: string;
  incarnation: bigint;
  key: Buffer;
  /** The configured peers: only they may subscribe. */
  peers: string[];
  /** The heartbeat interval: state refresh and summaries run at this period. */
  intervalMs: number;
  /** Per peer: the services this node takes over when that peer dies (at the start; see setSubscriptions). */
  subscriptions: Map<string, ReplicatedService[]>;
  /** This node's own ports whose streams it follows for its own goodbyes (instances with a goodbye method). */
  ownScopes?: ServiceScope[];
  /** Per subscriber (default 4 MiB/s). */
  maxBytesPerSecond?: number;
  /** sock_diag scan period (default 1000 ms). */
  scanMs?: number;
  /** Opens the capture of this node's own traffic; default: every interface, a wake-up per packet. */
  openCapture?: (scope: CaptureScope) => CaptureSource;
}

export type ReplicationRejection = WireRejection | 'wrong-link' | 'wrong-receiver' | 'unknown-peer' | 'stale-incarnation' | 'replayed' | 'overflow' | 'refused';

export interface ReplicationStatus {
  /** Peers whose connections this node holds a copy of. */
  peers: ReplicaStatus[];
  /** Peers that hold a copy of this node's connections. */
  subscribers: SubscriberStatus[];
  /**
   * This node's own connections followed (all scopes), how many with their sequence numbers
   * known, segments the capture lost, how the last scan went, and counts since the start: opened,
   * closed, refused (the table full), deferred (SYN-ACKs past MAX_UNCONFIRMED: a SYN flood).
   */
  local: { connections: number; withState: number; captureDrops: number; scans: number; lastScanMs: number; opened: number; closed: number; refused: number; deferred: number };
  rejected: Record<ReplicationRejection, number>;
}


export class ConnectionReplication {
  readonly local: LocalConnections;
  readonly publisher: ReplicationPublisher;
  readonly replicas: ReplicaSet;
  private readonly rejected: Record<'wrong-link' | 'wrong-receiver' | 'unknown-peer' | 'stale-incarnation' | 'replayed' | 'refused' | WireRejection, number> = {
    short: 0, magic: 0, version: 0, type: 0, node: 0, length: 0, hmac: 0, body: 0,
    'wrong-link': 0, 'wrong-receiver': 0, 'unknown-peer': 0, 'stale-incarnation': 0, replayed: 0, refused: 0,
  };
  /** Last SUBSCRIBE sequence accepted per peer, in the peer's life it came from. */
  private readonly subscribeSeq = new Map<string, { incarnation: bigint; seq: bigint }>();
  private timer: NodeJS.Timeout | undefined;
  private removeReceiver: (() => void) | undefined;
  private lastRefresh = 0;
  private refreshing = false;
  private refreshTimer: NodeJS.Immediate | undefined;
  private lastScan = 0;
  private dropsAtScan = 0;
  private readonly onHeartbeat = (e: DetectorEvent) => {
    if (e.kind === 'node-up') this.replicas.peerUp(e.node, e.incarnation);
    if (e.kind === 'node-down') {
      this.replicas.peerDown(e.node);
      this.publisher.unsubscribe(e.node);
    }
  };

  constructor(private readonly options: ConnectionReplicationOptions) {
    const transport: ReplicationTransport = {
      linkFor: (peer) => options.heartbeat.detector.firstLinkUp(peer),
      send: (peer, link, datagram) => options.heartbeat.send(peer, link, datagram),
    };
    this.local = new LocalConnections({
      openCapture: options.openCapture ?? ((scope) => new OwnCapture(scope)),
      listSockets: (ports) => listTcpSocketsAsync({ states: CONNECTED_STATES, localPorts: ports }),
    });
    this.publisher = new ReplicationPublisher({
      node: options.node,
      incarnation: options.incarnation,
      key: options.key,
      local: this.local,
      transport,
      intervalMs: options.intervalMs,
      maxBytesPerSecond: options.maxBytesPerSecond ?? DEFAULT_REPLICATION_RATE,
      ...(options.ownScopes ? { ownScopes: options.ownScopes } : {}),
      goodbye: (name) => {
        try {
          return goodbyePlugin(name);
        } catch {
          return undefined; // a plugin this node lacks: the service is replicated without boundaries
        }
      },
    });
    this.replicas = new ReplicaSet({
      node: options.node,
      incarnation: options.incarnation,
      key: options.key,
      transport,
      // Every configured peer, so that one may be asked for services later (setSubscriptions).
      subscriptions: new Map(options.peers.map((p) => [p, options.subscriptions.get(p) ?? []])),
      intervalMs: options.intervalMs,
    });
  }

  /**
   * The services this node asks each configured peer for from now on (a peer not in the map:
   * none), e.g. after a clustered application was registered or removed: each peer whose list
   * changed is asked at once (a SUBSCRIBE replaces its last one). Returns the peers whose list
   * changed, with it. Throws a RangeError, changing nothing, for a peer that is not configured or
   * a list the wire cannot carry (see ReplicaSet.setServices).
   */
  setSubscriptions(subscriptions: Map<string, ReplicatedService[]>): Array<{ peer: string; services: ReplicatedService[] }> {
    for (const peer of subscriptions.keys()) if (!this.options.peers.includes(peer)) throw new RangeError(`replication: ${peer} is not a configured peer`);
    for (const [peer, services] of subscriptions) checkServices(peer, services); // every list before any is applied
    const changed: Array<{ peer: string; services: ReplicatedService[] }> = [];
    for (const peer of this.options.peers) {
      const services = subscriptions.get(peer) ?? [];
      if (this.replicas.setServices(peer, services)) changed.push({ peer, services });
    }
    return changed;
  }

  /** Before the heartbeats start: routes the datagrams, follows node events, starts the timers. */
  start(): void {
    this.publisher.start(); // first: a capture that cannot open leaves nothing else started
    this.removeReceiver = this.options.heartbeat.addReceiver(REPLICATION_MAGIC, (msg, link) => this.receive(msg, link));
    this.options.heartbeat.on('event', this.onHeartbeat);
    const tickMs = Math.min(50, Math.max(5, Math.floor(this.options.intervalMs / 4)));
    this.timer = setInterval(() => this.tick(), tickMs);
    if (this.local.scopes.length > 0) void this.local.scan().catch(() => {});
  }

  stop(): void {
    clearInterval(this.timer);
    clearImmediate(this.refreshTimer);
    this.refreshing = false;
    this.removeReceiver?.();
    this.options.heartbeat.off('event', this.onHeartbeat);
    this.publisher.close();
    this.local.close();
  }

  status(): ReplicationStatus {
    const rejected = { ...this.rejected, overflow: this.replicas.rejected.overflow };
    for (const k of ['wrong-receiver', 'unknown-peer', 'stale-incarnation', 'replayed'] as const) rejected[k] += this.replicas.rejected[k];
    return {
      peers: this.replicas.status(),
      subscribers: this.publisher.status(),
      local: {
        connections: this.local.size,
        withState: this.local.list().filter((c) => c.state !== undefined).length,
        captureDrops: this.local.captureDrops,
        ...this.local.counters,
      },
      rejected,
    };
  }

  /** A refresh runs a slice per turn of the loop until it is done (heartbeats go out between). */
  private refreshSlices(): void {
    this.refreshing = !this.local.refresh();
    if (this.refreshing) this.refreshTimer = setImmediate(() => this.refreshSlices());
  }

  private tick(): void {
    const now = Date.now();
    if (now - this.lastRefresh >= this.options.intervalMs && !this.refreshing) {
      this.lastRefresh = now;
      this.refreshSlices();
    }
    // The authoritative list every scanMs, less often when a scan is costly (a dump of tens of
    // thousands of sockets takes tens of ms: at most 2% of the time), and sooner after the
    // capture lost segments (what they said is then only in the kernel's list), within that 2%.
    const costly = 50 * this.local.counters.lastScanMs;
    const every = Math.max(this.options.scanMs ?? DEFAULT_SCAN_MS, costly);
    const drops = this.local.captureDrops;
    const since = now - this.lastScan;
    if (this.local.scopes.length > 0 && (since >= every || (drops > this.dropsAtScan && since >= costly))) {
      this.lastScan = now;
      this.dropsAtScan = drops;
      void this.local.scan().catch(() => {}); // a failed dump: the next one tries again
    }
    this.publisher.tick();
    this.replicas.tick();
  }

  private receive(msg: Buffer, link: number): void {
    const r = decodeReplication(msg, this.options.key);
    if (!r.ok) return void this.rejected[r.reason]++;
    const env = r.envelope;
    if (env.link !== link) return void this.rejected['wrong-link']++;
    if (env.message.type !== 'subscribe') return this.replicas.receive(env);
    // A subscription: to this node in this life, from a configured peer in its current life
    // (its heartbeats tell which), never one already seen.
    if (env.to !== this.options.node) return void this.rejected['wrong-receiver']++;
    if (!this.options.peers.includes(env.from)) return void this.rejected['unknown-peer']++;
    const heard = this.options.heartbeat.detector.incarnationOf(env.from);
    if (env.toIncarnation !== this.options.incarnation || (heard !== undefined && env.fromIncarnation < heard)) return void this.rejected['stale-incarnation']++;
    const last = this.subscribeSeq.get(env.from);
    if (last && last.incarnation === env.fromIncarnation && env.seq <= last.seq) return void this.rejected.replayed++;
    if (last && env.fromIncarnation < last.incarnation) return void this.rejected['stale-incarnation']++;
    this.subscribeSeq.set(env.from, { incarnation: env.fromIncarnation, seq: env.seq });
    try {
      this.publisher.subscribe(env.from, env.fromIncarnation, env.message.services, env.seq);
    } catch {
      // More service ports than one capture follows, or the capture could not follow them.
      this.rejected.refused++;
    }
  }
}
