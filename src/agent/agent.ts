// The takeover agent (`takeover agent --config FILE`): one per node. It watches this node's
// instances (pidfd exits, health probes, a supervisor for the ones it starts) and the peer nodes
// (authenticated heartbeats on every link), decides, publishes FAN events out of band, and runs
// the failure plan: close the failed process's peers, take a dead peer's address over and close
// its peers. Every published event also goes to the callouts and the uptime log.
import { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { IncarnationFilter, sourceKey } from '../events/incarnation-filter.js';
import { NotificationServer } from '../events/notification-server.js';
import { instanceFailure, notRestarting, type Placement } from '../events/scenarios.js';
import { validateEvent, type EventStatus, type ServiceEvent } from '../events/service-event.js';
import type { DetectorEvent, PeerStatus } from '../monitor/failure-detector.js';
import { HeartbeatAgent, type HeartbeatHeld, type HeartbeatRejected, type RejectionCounters } from '../monitor/heartbeat-agent.js';
import { QuorumGate, type Suppressed } from '../monitor/quorum-gate.js';
import { WitnessedNodeEvents, type Disputed, type NodeEventSource, type Witness } from '../monitor/witnessed-node-events.js';
import { DiskHeartbeatWatcher, DiskHeartbeatWriter, type DiskSample, type DiskVerdict } from '../monitor/disk-heartbeat.js';
import { testUnitReady } from '../scsi/cdb.js';
import { PersistentReservations } from '../scsi/reservations.js';
import { DeviceTransport, ReservationConflictError, ScsiDevice } from '../scsi/transport.js';
import { closePeers, type ClosePeersReport } from '../net/close-peers.js';
import { parseCloseMethod } from '../net/close-method.js';
import { canonicalAddress, formatEndpoint, wireAddress } from '../net/endpoint.js';
import { captureHears } from '../net/answer-sources.js';
import { FlowTracker } from '../net/flow-tracker.js';
import type { PeerShadowEvent } from '../net/shadow/peer-shadow.js';
import type { WalWatchEvent } from '../net/shadow/wal-arrivals.js';
import { HeldTraffic } from '../net/held-traffic.js';
import { SegmentStreamSource, type SegmentSourceEvent, type SegmentSourceStats } from '../net/shadow/segment-stream-source.js';
import { sweepStaleGuards } from '../net/rst-guard.js';
import { ConnectionReplication, type ReplicationStatus } from './replication/connection-replication.js';
import type { ServiceScope } from './replication/local-connections.js';
import type { ReplicaEntry } from './replication/replicas.js';
import type { ReplicatedService } from './replication/wire.js';
import { subscriptions } from './replication/subscriptions.js';
import { CalloutRunner, type CalloutResult } from './callouts.js';
import { configKey, type AgentConfig, type InstanceConfig, type TakeoverConfig } from './config.js';
import { ControlServer, defaultControlPath, type ControlRequest } from './control.js';
import { relayKeeperSocket, stateDirOf } from './config-checks.js';
import { RelayKeeperClient } from '../net/relay-keeper/keeper-client.js';
import { InstanceMonitor, type InstanceEvent, type InstanceInfo, type LastExit } from './instance-monitor.js';
import { PlannedChanges, type ChangeReport, type StartOptions, type StopOptions } from './planned-change.js';
import { NodeEventPublisher } from './node-events.js';
import { NodeFencing, type FenceDone } from './node-fencing.js';
import { continueSetup, pgPassword } from './continue-setup.js';
import { pgCatchUp } from './pg-catch-up.js';
import { pgTerminateGoodbye } from '../net/shadow/pg-continue.js';
import { redisCatchUp, redisSessions } from './redis-catch-up.js';
import { SwitchoverError, type SwitchoverReport } from './switchover-backup.js';
import { servePrimarySwitchover, type PrimarySwitchoverEvent } from './switchover-primary.js';
import { isSwitchoverFrameStart } from '../net/switchover-wire.js';
import { PeerTakeover, type ContinuedEnded, type PeerTakeoverOptions, type ShadowHealth, type TakeoverAbandoned, type TakeoverDone, type TakeoverHeld, type TakeoverWaiting } from './peer-takeover.js';
import { stateSnapshot } from './state-snapshot.js';
import type { DeviceReport, ReservationDevice } from '../fence/fencer.js';
import { formatKey } from '../fence/fence-keys.js';
import { UptimeLog } from './uptime-log.js';
import { defaultIncarnationFile, nextIncarnation } from './incarnation.js';
import { AddressHolding, type AddressReclaimed, type AddressReleased } from './address-holding.js';
import { addressEntries, announceAddress, removeAddress, setAddressLifetime } from '../net/address.js';
import { AddressLeases, PeerLeases, probeLeaseRanOut, type LeaseEvent, type LeaseStatus } from './address-lease.js';
import { AddressProbe } from '../net/address-probe.js';
import { MAX_CLAIMS, type AddressClaim } from '../monitor/heartbeat-packet.js';
import { changedFields, RELOADABLE, ReloadRefusedError } from './reload.js';
import { AgentHistory, type PeerHistory } from './agent-history.js';
import { AgentMetrics } from './metrics.js';
import { AppManager, type AppActivity, type AppView } from '../cluster/app-manager.js';
import { newApp, type AppObject } from '../cluster/app-object.js';
import { clusterNodes, openClusterStore } from '../cluster/open-store.js';
import type { ClusterStore } from '../cluster/cluster-store.js';
import { openFilesLimit } from './fd-limit.js';
import { niceOf, raiseAgentPriority, setProcessNice } from '../monitor/cpu-priority.js';

export interface PlanDone {
  instance: string;
  cause: 'failure' | 'hang';
  report?: ClosePeersReport;
  error?: string;
  startedAt: number;
  doneAt: number;
}

export type AgentEvents = {
  published: [ServiceEvent];
  plan: [PlanDone];
  takeover: [TakeoverDone];
  'takeover-failed': [Error];
  /** Planned switchover, this node taking a peer's service: started, done (with its numbers), failed. */
  'switchover-started': [{ peer: string; address: string; port: number }];
  switchover: [SwitchoverReport & { peer: string }];
  'switchover-failed': [{ address: string; error: string; phase?: string }];
  /** Planned switchover, this node giving its service to a peer: what happened. */
  'switchover-primary': [PrimarySwitchoverEvent];
  /** A takeover waits out the peer's address lease before it adds the address. */
  'takeover-waiting': [TakeoverWaiting];
  /** A takeover ended without taking anything over: the peer holds the address (alive) or left. */
  'takeover-abandoned': [TakeoverAbandoned];
  /** After the lease, the peer's kernel still answered for the address: not added until it stops. */
  'takeover-held': [TakeoverHeld];
  /** A connection continued here ended (its relay): clientReset when the relay reset it for a reason of its own (RelayEnd). */
  'continued-ended': [ContinuedEnded & { peer: string }];
  /**
   * The relay keeper (config `relayKeeper`): found at start holding relays of a previous life
   * (`attached`), started by this agent (`started`), left holding relays at this agent's stop
   * (`left`), lost (its connection ended: the relays it held are gone with it), a handover it
   * refused or that could not be made (`refused`: that relay stays in this process), a handover
   * whose answer never came (`dropped`: that connection ended), a keeper found that cannot be used
   * (`unusable`), one that would be started inside this agent's systemd unit (`start-in-unit`),
   * or a relay of a previous life ended (`ended`).
   */
  'relay-keeper': [RelayKeeperEvent];
  /** A takeover's shadow started: the peer's connections to the service are followed (source: `mirror IF` or `stream HOST:PORT`). */
  shadowing: [{ peer: string; address: string; port: number; source: string }];
  /** A shadow's stream from the peer's agent: connected, refused, broken, resumed. */
  'shadow-stream': [PeerShadowEvent & { peer: string }];
  /** A `walCheck` shadow's watch of the standby's replication connection: unseen for WAL_SEEN_WITHIN_MS, or seen again. */
  'wal-watch': [WalWatchEvent & { peer: string }];
  /** This agent's own connection stream (`connectionStream`): a backup subscribed, refused, rejected, ended. */
  'connection-stream': [SegmentSourceEvent];
  /** This node's address leases (config `addressLease`): adopted, lost, renewals failed, released at stop. */
  lease: [LeaseEvent];
  detector: [DetectorEvent];
  /** A node the heartbeats call dead but a witness does not (yet): no event, no takeover. */
  disputed: [Disputed];
  callout: [CalloutResult];
  /** A callout run dropped unrun: more than 1000 were queued. */
  'callout-dropped': [{ file: string; event: ServiceEvent }];
  /** The disk heartbeat's verdicts on the watched peer (alive, dead). */
  disk: [DiskVerdict];
  /** A dead peer fenced off the shared devices (or not: see ok and each device's error). */
  fence: [FenceDone];
  /** This node's own key is gone from a device: it was fenced, and its instances are stopped. */
  fenced: [{ device: string; at: number }];
  /** A peer's death this node may not act on (no quorum): nothing published, nothing taken over. */
  suppressed: [Suppressed];
  /**
   * A configured peer is heard, but every datagram from it is rejected (e.g. HMAC: the keys
   * differ) and it is not up: said at most once per 10 s per peer and reason.
   */
  'peer-rejected': [HeartbeatRejected & { count: number }];
  /**
   * This agent was held (its process not run, or its whole host stalled) past a heartbeat
   * interval: its own heartbeat was overdue that long, and no peer is declared dead until an
   * interval and the skew later (FailureDetector.localPause). Said at most once per 10 s;
   * `count`: holds since the start.
   */
  'heartbeat-held': [HeartbeatHeld & { count: number }];
  /** A taken-over address given back to its live owner, or given up by a fenced node. */
  'address-released': [AddressReleased];
  /** An own address announced again after the peer that had taken it over gave it back. */
  'address-reclaimed': [AddressReclaimed];
  /** What an instance monitor saw (for the log): processes started, adopted, exited, and more. */
  instance: [{ instance: string; event: InstanceEvent }];
  /**
   * At start, only when there was something to say: the RST guards (nftables tables) that
   * processes killed before they could remove them left behind, now removed; guards of another
   * pid namespace's processes, left alone; or why the sweep failed (the agent starts anyway).
   */
  /** removed/foreign: RST guard tables; holdRules: output-commit rules (their owners' comments) removed. */
  'stale-guards': [{ removed: string[]; foreign: string[]; holdRules?: string[]; error?: string }];
  /** What the cluster manager did with the clustered applications (config `store`). */
  app: [AppActivity];
  /**
   * The services this node asks a peer to replicate changed (the applications in the store did),
   * or could not (`error`: more than a subscription holds; the last list stays asked for).
   */
  subscriptions: [{ peer: string; services: ReplicatedService[] } | { error: string }];
};

const RECENT = 100;
const now = () => performance.timeOrigin + performance.now();

export class Agent extends EventEmitter<AgentEvents> {
  readonly heartbeat: HeartbeatAgent;
  /** This node's connections to the peers that would take them over, and theirs to it. */
  readonly replication: ConnectionReplication;
  readonly server: NotificationServer;
  readonly monitors = new Map<string, InstanceMonitor>();
  readonly incarnation: number;
  /** This process's open-files limit, read once at start (status: what a continue can hold). */
  private readonly openFilesLimit = openFilesLimit();
  /** The nice value this process was started with: what the agent's children (instances, callouts) run at (cpu-priority.ts). */
  private readonly startedNice = niceOf();
  private readonly publisher: NodeEventPublisher;
  /** Node events as the decisions use them: the heartbeats', confirmed by the witnesses if any. */
  private readonly nodeEvents: NodeEventSource;
  private readonly witnessed: WitnessedNodeEvents | undefined;
  readonly quorum: QuorumGate;
  /** The service addresses this node holds and their one-holder settlement with the peers. */
  readonly addresses: AddressHolding;
  /** This node's own service addresses under a lease (config `addressLease`). */
  readonly leases: AddressLeases | undefined;
  /** The leases the peers claim, which the takeovers here wait out. */
  private readonly peerLeases: PeerLeases;
  private readonly rejectionSaid = new Map<string, number>();
  /** When 'heartbeat-held' was last said (ms since the epoch). */
  private heldSaidAt = -Infinity;
  private readonly takeovers: PeerTakeover[] = [];
  /** With `relayKeeper`: the connection to the process that holds continued connections' relays. */
  private readonly keeper: { socket: string; client: RelayKeeperClient } | undefined;
  /** Looks for the keeper again while none is connected (attachKeeper). */
  private keeperWatch: NodeJS.Timeout | undefined;
  /** Failure plans of this node's instances still running (stop() lets them finish). */
  private readonly plans = new Set<Promise<void>>();
  private readonly trackers: FlowTracker[] = [];
  /** This node's connections streamed to the peers that continue them (config connectionStream). */
  private connectionStream: SegmentStreamSource | undefined;
  /** With connectionStream.outputCommit: the services' traffic through netfilter queues. */
  private heldTraffic: HeldTraffic | undefined;
  /** The last planned switchover this node took (status). */
  private lastSwitchover: (SwitchoverReport & { peer: string; at: string }) | undefined;
  /** The last planned switchover this node served as the primary (given, refused or aborted). */
  private lastGiven: (PrimarySwitchoverEvent & { at: string }) | undefined;
  private readonly control: ControlServer;
  private callouts: CalloutRunner | undefined;
  private uptime: UptimeLog | undefined;
  private readonly dedup = new IncarnationFilter();
  private readonly recent: ServiceEvent[] = [];
  /** The last event published per source (sourceKey): what a snapshot repeats when it still holds. */
  private readonly lastBySource = new Map<string, ServiceEvent>();
  private readonly followers = new Set<(e: ServiceEvent) => void>();
  /** service -> instances of this node taken out of it by `service stop` (planned). */
  private readonly offline = new Map<string, Set<string>>();
  /**
   * Services last shown DOWN to subscribers: by a service DOWN this agent published, or from its
   * start (a state snapshot shows a service with no member up as DOWN, so a subscriber that
   * connected before the first member came up must then hear the service UP). Their next member
   * up brings a service UP.
   */
  private readonly servicesDown = new Set<string>();
  /** The reason the next UP of an instance is published with, when not `boot` (an operator's start). */
  private readonly upReason = new Map<string, string>();
  private readonly planned: PlannedChanges;
  /** Where the records and stderr files of the instances this agent runs are kept. */
  readonly stateDir: string;
  private readonly links: DetectorEvent[] = [];
  private disk: { transport: DeviceTransport; device: ScsiDevice } | undefined;
  private fencing: NodeFencing | undefined;
  private readonly fenceDevices: FenceDeviceHandle[] = [];
  private readonly openFenceDevice: (path: string) => FenceDeviceHandle;
  private diskWriter: DiskHeartbeatWriter | undefined;
  readonly diskWatcher: DiskHeartbeatWatcher | undefined;
  private lastIncarnation = 0;
  /** Set once start() completed: only a started agent announces its departure. */
  private started = false;
  notifyPort = 0;
  /** What happened to peers and instances (down since, why, what was taken over): status shows it. */
  readonly history: AgentHistory;
  private readonly metrics: AgentMetrics | undefined;
  /** The metrics endpoint's port, once listening (config `metrics`). */
  metricsPort: number | undefined;
  /** The cluster manager (seed 002), with a `store` in the config. */
  readonly apps: AppManager | undefined;

  /** `witnesses`: seed 002's second opinion (e.g. a disk heartbeat) that must agree a node is dead. */
  /**
   * Reads the key and takes the next incarnation (persisted in `incarnationFile`: it grows at every
   * start, whatever the clock does; `incarnation` in the config is a floor). Throws ConfigError
   * for an unreadable key, Error when the incarnation cannot be persisted.
   */
  static async create(config: AgentConfig, options: AgentOptions = {}): Promise<Agent> {
    const key = await configKey(config);
    const incarnation = await nextIncarnation(config.incarnationFile ?? defaultIncarnationFile(config.cluster, config.node), config.incarnation ?? 0);
    return new Agent(config, key, incarnation, options, config.store ? await (options.openStore ?? openClusterStore)(config) : undefined);
  }

  private constructor(
    public config: AgentConfig,
    private readonly key: Buffer,
    incarnation: number,
    options: AgentOptions,
    store: ClusterStore | undefined,
  ) {
    super();
    this.incarnation = incarnation;
    for (const svc of config.services) this.servicesDown.add(svc.name);
    this.openFenceDevice = options.openFenceDevice ?? openScsiFenceDevice;
    this.heartbeat = new HeartbeatAgent({
      node: config.node,
      incarnation: BigInt(this.incarnation),
      key,
      intervalMs: config.heartbeat.intervalMs,
      misses: config.heartbeat.misses,
      links: config.heartbeat.links,
      peers: config.peers.map((p) => ({ node: p.node, links: p.links })),
      claims: () => this.claims(),
      // A lease is renewed only after a heartbeat that claimed it is with the kernel.
      sent: () => this.leases?.renew(),
    });
    this.heartbeat.on('event', (e) => this.onDetector(e));
    this.stateDir = stateDirOf(config);
    const keeperSocket = relayKeeperSocket(config);
    this.keeper = keeperSocket === undefined ? undefined : { socket: keeperSocket, client: new RelayKeeperClient({ socket: keeperSocket, logFile: path.join(this.stateDir, 'relay-keeper.log'), start: config.relayKeeper!.start, nice: this.startedNice }) };
    this.addresses = new AddressHolding({
      takeovers: config.peers.flatMap((p) => p.takeover.map((t) => ({ peer: p.node, address: t.address }))),
      heartbeat: this.heartbeat,
      isFenced: () => this.fencing?.fencedAt !== undefined,
      freshMs: this.heartbeat.detector.timeoutMs,
      stateFile: path.join(this.stateDir, 'taken-addresses.json'),
      remove: removeAddress,
      announce: (ifname, address) => announceAddress(ifname, address, { count: 3 }),
    });
    this.addresses.on('released', (r) => this.emit('address-released', r));
    this.addresses.on('reclaimed', (r) => this.emit('address-reclaimed', r));
    const lease = config.addressLease;
    if (lease) {
      this.leases = new AddressLeases({ addresses: lease.addresses, seconds: lease.seconds, intervalMs: config.heartbeat.intervalMs, entries: addressEntries, setLifetime: setAddressLifetime });
      this.leases.on('lease', (e) => this.emit('lease', e));
    }
    this.peerLeases = new PeerLeases({ heartbeat: this.heartbeat, timeoutMs: this.heartbeat.detector.timeoutMs });
    this.heartbeat.on('rejected', (r) => this.onRejected(r));
    this.heartbeat.on('held', (h) => {
      if (h.at - this.heldSaidAt < 10_000) return;
      this.heldSaidAt = h.at;
      this.emit('heartbeat-held', { ...h, count: this.heartbeat.held.count });
    });
    this.replication = new ConnectionReplication({
      heartbeat: this.heartbeat,
      node: config.node,
      incarnation: BigInt(this.incarnation),
      key,
      peers: config.peers.map((p) => p.node),
      intervalMs: config.heartbeat.intervalMs,
      // The config's applications now; the store's once the cluster manager reads them (followApps).
      subscriptions: subscriptions(config, config.apps),
      ownScopes: ownGoodbyeScopes(config),
      maxBytesPerSecond: config.replication.maxBytesPerSecond,
      scanMs: config.replication.scanMs,
    });
    this.server = new NotificationServer({
      host: config.notify.host,
      port: config.notify.port,
      ...(config.notify.maxBufferedBytes ? { maxBufferedBytes: config.notify.maxBufferedBytes } : {}),
      snapshot: () => this.snapshot(),
    });
    const d = config.disk;
    if (d?.watch !== undefined) {
      this.diskWatcher = new DiskHeartbeatWatcher(() => this.sampleDisk(), { intervalMs: d.intervalMs, timeoutMs: d.timeoutMs }, d.watch);
      this.diskWatcher.on('verdict', (v) => this.emit('disk', v));
      this.diskWatcher.on('error', () => {}); // counted in failures; an error is no verdict
    }
    const witnesses = [...(options.witnesses ?? []), ...(this.diskWatcher ? [this.diskWatcher] : [])];
    if (witnesses.length) {
      this.witnessed = new WitnessedNodeEvents(this.heartbeat, witnesses);
      this.witnessed.on('disputed', (d) => this.emit('disputed', d));
    }
    const tieBreaker = config.fencing ? 'fencing' : witnesses.length ? 'witness' : config.quorum.twoNode ? 'operator' : undefined;
    this.quorum = new QuorumGate(this.witnessed ?? this.heartbeat, { nodes: [config.node, ...config.peers.map((p) => p.node)], self: config.node, twoNodeTieBreaker: tieBreaker });
    this.quorum.on('suppressed', (s) => this.emit('suppressed', s));
    this.nodeEvents = this.quorum;
    this.publisher = new NodeEventPublisher(config.node, this.nodeEvents, { publish: (e) => this.publish([e]) });
    this.control = new ControlServer(config.control ?? defaultControlPath(config.node), (req, reply, onClose) => this.onControl(req, reply, onClose));
    this.useCallouts(config);
    for (const inst of config.instances.filter((i) => i.node === config.node)) {
      const m = new InstanceMonitor(inst, { stateDir: this.stateDir, childNice: this.startedNice });
      m.on('event', (e) => this.onInstance(inst, e));
      this.monitors.set(inst.name, m);
    }
    this.history = new AgentHistory({ heartbeat: this.heartbeat, ...(this.witnessed ? { witnessed: this.witnessed } : {}), links: config.heartbeat.links.map((l) => l.id), witnesses: witnesses.map((w) => w.name) });
    if (config.metrics) this.metrics = new AgentMetrics(this, config.metrics);
    if (config.store && store) this.apps = this.appManager(config, config.store, store);
    this.planned = new PlannedChanges({
      config,
      monitors: this.monitors,
      offline: (service) => this.offlineOf(service),
      servicesOf: (i) => this.servicesOf(i),
      memberUp: (s, i) => this.memberUp(s, i),
      upMembers: (s) => this.upMembers(s),
      serviceDown: (s) => this.servicesDown.has(s),
      memberEvent: (s, i, status, reason) => this.memberEvent(s, i, status, reason),
      serviceEvent: (s, status, reason) => this.serviceEvent(s, status, reason),
      instanceDown: (i, reason, exit) => this.instanceDown(i, reason, exit),
      membersUp: (i, services, reason) => this.membersUp(i, services, reason),
      publish: (events) => this.publish(events),
      expectUp: (i, reason) => void this.upReason.set(i, reason),
      follow: (fn) => {
        this.followers.add(fn);
        return () => this.followers.delete(fn);
      },
      startRefusal: () => (this.fencing?.fencedAt !== undefined ? `this node was fenced off the shared devices at ${new Date(this.fencing.fencedAt).toISOString()}: restart the agent to join them again` : undefined),
    });
  }

  /** Opens the endpoints, starts heartbeats and monitors; on failure, stops what it started. */
  async start(): Promise<void> {
    try {
      // The control socket first: a second agent for this node stops here, touching nothing.
      await mkdir(path.dirname(this.control.path), { recursive: true, mode: 0o700 });
      await this.control.listen();
      // Before anything that sends heartbeats or starts threads (they inherit it).
      raiseAgentPriority(this.config.nice);
      this.notifyPort = await this.server.listen();
      if (this.metrics) this.metricsPort = await this.metrics.listen();
      if (this.config.fencing) await this.startFencing(this.config.fencing);
      await this.sweepGuards();
      await this.attachKeeper();
      const stream = this.config.connectionStream;
      if (stream) {
        const commit = stream.outputCommit;
        if (commit) {
          this.heldTraffic = await HeldTraffic.open({ services: commit.services, queue: commit.queue });
          const holdRules = this.heldTraffic.swept;
          if (holdRules.length > 0) this.emit('stale-guards', { removed: [], foreign: [], holdRules });
        }
        this.connectionStream = new SegmentStreamSource({
          node: this.config.node, key: this.key, listen: { host: stream.address, port: stream.port }, onEvent: (e) => this.emit('connection-stream', e),
          ...(this.heldTraffic && commit ? { hold: this.heldTraffic, maxHoldMs: commit.maxHoldMs } : {}),
          // The same listener takes a backup's planned switchover (agent/switchover-primary.ts).
          other: {
            claims: isSwitchoverFrameStart,
            serve: (socket, first) => {
              const peers = new Set(this.config.peers.map((p) => p.node));
              void servePrimarySwitchover(socket, first, { node: this.config.node, key: this.key, peers }).then((e) => {
                if (!e) return;
                this.lastGiven = { ...e, at: new Date().toISOString() };
                this.emit('switchover-primary', e);
              });
            },
          },
        });
        await this.connectionStream.ready();
      }
      for (const p of this.config.peers) {
        for (const t of p.takeover) await this.prepareTakeover(p.node, t);
      }
      if (this.config.disk) {
        const transport = new DeviceTransport(this.config.disk.device);
        this.disk = { transport, device: new ScsiDevice(transport, this.config.disk.intervalMs * 2) };
        if (this.config.disk.pulse) {
          const pr = new PersistentReservations(this.disk.device);
          this.diskWriter = new DiskHeartbeatWriter({ reserve: () => pr.reserveLegacy(6), release: () => pr.releaseLegacy(6) }, { intervalMs: this.config.disk.intervalMs });
          this.diskWriter.on('error', () => {}); // counted in failures, shown by status
          this.diskWriter.start();
        }
        this.diskWatcher?.start();
      }
      this.replication.start();
      await this.heartbeat.start();
      if (this.apps || [...this.monitors.values()].some((m) => m.runsCommand)) await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
      for (const m of this.monitors.values()) await m.start();
      await this.apps?.start();
      this.started = true;
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * Connects to a relay keeper that answers (one a previous life started keeps its relays) and
   * follows it; starts none: the first handover does.
   */
  private async attachKeeper(): Promise<void> {
    if (!this.keeper) return;
    const { socket, client } = this.keeper;
    await mkdir(path.dirname(socket), { recursive: true, mode: 0o700 });
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    client.on('started', (e) => this.emit('relay-keeper', { kind: 'started', socket, ...e }));
    client.on('lost', (e) => this.emit('relay-keeper', { kind: 'lost', socket, ...e }));
    client.on('replaced', (e) => this.emit('relay-keeper', { kind: 'replaced', socket, ...e }));
    client.on('refused', (e) => this.emit('relay-keeper', { kind: 'refused', socket, ...e }));
    client.on('dropped', (e) => this.emit('relay-keeper', { kind: 'dropped', socket, ...e }));
    client.on('unusable', (e) => this.emit('relay-keeper', { kind: 'unusable', socket, ...e }));
    // A keeper the agent would start is in the agent's unit under systemd (INVOCATION_ID is set
    // for a unit's processes), and dies with it: said at start, not only at the first handover.
    if (this.config.relayKeeper!.start && process.env.INVOCATION_ID !== undefined) this.emit('relay-keeper', { kind: 'start-in-unit', socket });
    client.on('ended', (e) => {
      // This life's own relays end through their PeerTakeover ('continued-ended').
      if (!e.mine) this.emit('relay-keeper', { kind: 'ended', socket, client: e.client, peer: e.peer, service: e.service, reason: e.reason, clientBytes: e.clientBytes, upstreamBytes: e.upstreamBytes });
    });
    const attach = async () => {
      if (await client.attach()) this.emit('relay-keeper', { kind: 'attached', socket, pid: client.held!.pid, connections: client.held!.relays.length });
    };
    await attach();
    // Looked for again while none is connected (a keeper unit restarting, one lost): its
    // relays must be known, for status and for a takeover's exclusion of what this node relays.
    this.keeperWatch = setInterval(() => void (client.held || attach()), KEEPER_REATTACH_MS);
    this.keeperWatch.unref();
  }

  /** A takeover's continue setup with its relays going to the relay keeper (config `relayKeeper`). */
  private withKeeper(c: NonNullable<PeerTakeoverOptions['continue']>): NonNullable<PeerTakeoverOptions['continue']> {
    const keeper = this.keeper?.client;
    return keeper ? { ...c, keeper: (r) => keeper.handOff(r), kept: (e) => keeper.holds(formatEndpoint({ address: wireAddress(e.address), port: e.port })) } : c;
  }

  /**
   * A previous life of this agent killed with SIGKILL (or any process of this project killed
   * during a close) left its RST guard: while it stays, this host drops its own RSTs from that
   * address for good. Removed before this life installs its own, whatever the config says now.
   */
  private async sweepGuards(): Promise<void> {
    try {
      const sweep = await sweepStaleGuards();
      if (sweep.removed.length > 0 || sweep.foreign.length > 0) this.emit('stale-guards', sweep);
    } catch (err) {
      this.emit('stale-guards', { removed: [], foreign: [], error: (err as Error).message });
    }
  }

  /** One `peers[].takeover` entry: a tracker for its address and port, and the plan run when the peer dies. */
  private async prepareTakeover(peer: string, t: TakeoverConfig): Promise<void> {
    const goodbye = parseCloseMethod(t.method).kind === 'goodbye';
    // On `capture` (a port mirror of the peer's port) it sees the peer's traffic before the
    // takeover (with payload for a goodbye, whose streams it then follows); on `interface` alone
    // it hears the answers after it (closePeers listens there itself for a capture elsewhere).
    const tracker = new FlowTracker({ interface: t.capture ?? t.interface, hosts: [t.address], ports: [t.port], ...(goodbye ? { payloadBytes: 65535 } : {}) });
    tracker.start();
    this.trackers.push(tracker);
    // With the capture elsewhere, the answers' capture is set up now, not at the takeover (a
    // ring's setup waits for an RCU grace period: tens of ms on the loop at the worst moment).
    const answers = t.capture !== undefined && !captureHears(t.capture, t.interface) ? new FlowTracker({ interface: t.interface, hosts: [t.address], ports: [t.port] }) : undefined;
    if (answers) {
      answers.start();
      this.trackers.push(answers);
    }
    const fencing = this.fencing;
    const service = { address: t.address, port: t.port };
    const plan = new PeerTakeover({
      heartbeat: this.nodeEvents, peer, service, tracker, ...(answers ? { answers } : {}), interface: t.interface, prefixLength: t.prefixLength, method: t.method,
      ...(t.continue ? { continue: this.withKeeper(continueSetup(t.continue, service, { node: this.config.node, key: this.key, onEvent: (e) => this.emit('shadow-stream', { ...e, peer }), onWalWatch: (e) => this.emit('wal-watch', { ...e, peer }) })) } : {}),
      known: () => this.replication.replicas.connections(peer, service),
      ...(fencing ? { before: (down) => fencing.fenced(down.node) } : {}),
      leases: this.peerLeases,
      // A leased address is added only once the link says the peer's kernel removed it.
      probe: (request) => probeLeaseRanOut(request, { open: (ifname, address) => AddressProbe.open(ifname, address) }),
    });
    plan.on('done', (d) => {
      this.addresses.tookOver(peer, t.address);
      this.emit('takeover', d);
    });
    plan.on('failed', (err) => this.emit('takeover-failed', err));
    plan.on('waiting', (w) => this.emit('takeover-waiting', w));
    plan.on('abandoned', (a) => this.emit('takeover-abandoned', a));
    plan.on('held', (h) => this.emit('takeover-held', h));
    plan.on('relay-ended', (e) => this.emit('continued-ended', { ...e, peer }));
    this.history.watchTakeover(peer, service, plan);
    const c = t.continue;
    if (c) this.emit('shadowing', { peer, ...service, source: c.stream ? `stream ${formatEndpoint({ address: c.stream.host, port: c.stream.port })}` : `mirror ${c.mirror!}` });
    await plan.prepare();
    this.takeovers.push(plan);
  }

  /**
   * Stops everything it started, in a bounded time (docs/AGENT.md, "Stopping"): the instances it
   * runs all at once (SIGTERM to their process groups, SIGKILL past their grace time) while a
   * failure plan or takeover already running finishes (each is bounded by its closePeers deadline,
   * 5 s; cut short, it would leave clients half released and lose its tracker and RST guard,
   * closed below); then the rest, and the callouts still running get at most their own timeout
   * (then they are killed, with everything they started).
   * Peers are told it is a planned departure (their last heartbeats from here say `leaving`), so
   * they take nothing over; `serving` tells them whether instances here still run without an
   * agent (those watched by pid or pid file: this agent did not start them and does not stop them).
   */
  async stop(): Promise<void> {
    const serving = [...this.monitors.values()].some((m) => !m.config.command && m.state === 'up');
    // A takeover waiting out a peer's address lease ends here (abandoned): it would hold the stop
    // for up to the lease.
    this.peerLeases.close();
    this.planned.close();
    // First, while the peers still hear this node: its applications are handed over to them.
    await this.apps?.stop();
    await Promise.all([
      ...[...this.monitors.values()].map((m) => m.stop().catch(() => {})),
      this.plansSettled(),
    ]);
    this.replication.stop();
    // An agent whose start failed (a second one for this node, say) must not speak for the node.
    // A planned departure keeps this node's leased addresses (permanent again: the peers take
    // nothing over, and the instances may go on serving); after the peers were told, so a stop
    // cut short leaves the lease to run out instead. Any other stop leaves it to run out.
    if (this.started) {
      await this.heartbeat.leave(serving);
      this.leases?.release();
    } else {
      this.heartbeat.stop();
      this.leases?.stop();
    }
    this.started = false;
    this.diskWatcher?.stop();
    await this.diskWriter?.stop();
    this.disk?.transport.close();
    this.fencing?.stop();
    for (const d of this.fenceDevices.splice(0)) d.close();
    this.publisher.close();
    this.addresses.close();
    this.quorum.close();
    this.witnessed?.close();
    for (const t of this.takeovers) await t.close();
    // After the takeovers. A handover whose answer has not come: the keeper relays it on if it
    // took it (listed for the next life), else it ends with this process.
    clearInterval(this.keeperWatch);
    const held = this.keeper?.client.held;
    if (held && held.relays.length > 0) this.emit('relay-keeper', { kind: 'left', socket: this.keeper!.socket, pid: held.pid, connections: held.relays.length });
    this.keeper?.client.close();
    for (const t of this.trackers) t.close();
    await this.connectionStream?.close();
    await this.heldTraffic?.close();
    this.followers.clear();
    await this.control.close().catch(() => {});
    await this.server.close().catch(() => {});
    await this.metrics?.close().catch(() => {});
    this.history.close();
    if (this.callouts) await boundedWait(this.callouts.idle(), this.config.callouts!.timeoutMs);
    // A process that imported the agent gets its own priority back (raising a nice value needs no privilege).
    setProcessNice(process.pid, this.startedNice);
  }

  /**
   * What this node's heartbeats claim: its leased addresses (with the lease) first, so that a
   * full list never drops one, then the addresses it took over and those it answers for.
   */
  private claims(): AddressClaim[] {
    const leased = this.leases?.claims() ?? [];
    const rest = this.addresses.claims().filter((c) => !leased.some((l) => l.address === c.address));
    return [...leased, ...rest].slice(0, MAX_CLAIMS);
  }

  /** Resolves once no failure plan or takeover is running (one may start while it waits). */
  private async plansSettled(): Promise<void> {
    while (this.plans.size > 0 || this.takeovers.some((t) => t.busy)) {
      await Promise.allSettled([...this.plans, ...this.takeovers.map((t) => t.settled())]);
    }
  }

  private useCallouts(config: AgentConfig): void {
    this.callouts = undefined;
    if (config.callouts) {
      const runner = new CalloutRunner({ ...config.callouts, childNice: this.startedNice });
      runner.on('result', (r) => this.emit('callout', r));
      runner.on('dropped', (d) => this.emit('callout-dropped', d));
      this.callouts = runner;
    }
    this.uptime = config.uptimeLog ? new UptimeLog(config.uptimeLog) : undefined;
  }

  /**
   * Applies a new, validated configuration without a restart: only the RELOADABLE fields
   * (callouts, uptime log, log settings) may differ; returns the fields that changed. Throws
   * ReloadRefusedError naming any other changed field, and then changes nothing. Callouts
   * already running finish under the old settings.
   */
  reload(next: AgentConfig): string[] {
    const changed = changedFields(this.config, next);
    const refused = changed.filter((f) => !RELOADABLE.has(f));
    if (refused.length > 0) throw new ReloadRefusedError(refused);
    const old = this.callouts;
    this.config = next;
    this.useCallouts(next);
    void old?.idle();
    return changed;
  }

  /** Publishes events: to subscribers, followers, callouts and the uptime log. */
  publish(events: ServiceEvent[]): void {
    for (const raw of events) {
      const e = validateEvent(raw);
      if (!this.dedup.accept(e)) continue;
      this.lastBySource.set(sourceKey(e), e);
      if (e.type === 'service' && e.status === 'DOWN') this.servicesDown.add(e.service!);
      else if (e.type === 'service' && e.status === 'UP') this.servicesDown.delete(e.service!);
      this.server.publish(e);
      this.recent.push(e);
      if (this.recent.length > RECENT) this.recent.shift();
      for (const f of this.followers) f(e);
      void this.uptime?.append(e);
      void this.callouts?.run(e);
      this.emit('published', e);
    }
  }

  /**
   * A planned change (`takeover service stop|start`): stop drains the members' clients and stops
   * the instances the agent runs (GOING_DOWN, instance DOWN, DOWN); start starts them again
   * (COMING_UP, instance UP, UP). See planned-change.ts. Rejects, publishing nothing, for an
   * unknown service, one without a member here, or a member that cannot be started.
   */
  serviceChange(name: string, action: 'stop' | 'start', options: StopOptions & StartOptions = {}): Promise<ChangeReport> {
    return action === 'stop' ? this.planned.stopService(name, options) : this.planned.startService(name, options);
  }

  /**
   * `takeover instance cleanup NAME`: resets an instance's failure count and starts it again (the
   * way out of NOT_RESTARTING; a hung one is stopped first). Rejects for an instance not on this
   * node or watched by pid and gone.
   */
  cleanup(instance: string, options: StartOptions = {}): Promise<ChangeReport> {
    return this.planned.cleanup(instance, options);
  }

  status(): AgentStatus {
    return {
      cluster: this.config.cluster,
      node: this.config.node,
      incarnation: this.incarnation,
      notifyPort: this.notifyPort,
      ...(this.metricsPort !== undefined ? { metricsPort: this.metricsPort } : {}),
      subscribers: this.server.subscriberCount,
      peers: this.heartbeat.detector.status().map((p) => ({ ...p, incarnation: String(p.incarnation), ...this.history.peerHistory(p.node), ...(this.heartbeat.rejectedFrom.has(p.node) ? { rejected: { ...this.heartbeat.rejectedFrom.get(p.node) } } : {}) })),
      quorum: this.quorum.quorum(),
      taken: this.addresses.holding(),
      ...(this.leases ? { leases: { seconds: this.leases.seconds, addresses: this.leases.status() } } : {}),
      heartbeat: { rejected: { ...this.heartbeat.rejected }, ...this.heartbeat.detector.counters, held: { ...this.heartbeat.held } },
      instances: [...this.monitors.values()].map((m) => m.info()),
      services: this.config.services.map((s) => ({ name: s.name, members: s.members.map((i) => ({ instance: i, node: this.nodeOf(i), up: this.memberUp(s.name, i) })) })),
      links: this.links.slice(-20),
      replication: this.replication.status(),
      shadows: this.takeovers.flatMap((t) => {
        const health = t.shadowHealth();
        return health ? [{ peer: t.peer, ...t.service, ...health }] : [];
      }),
      ...relayingNow(this.takeovers),
      ...(this.keeper ? { keeper: keeperStatus(this.keeper.socket, this.config.relayKeeper!.start, this.keeper.client) } : {}),
      ...(this.openFilesLimit !== undefined ? { openFilesLimit: this.openFilesLimit } : {}),
      nice: niceOf(),
      ...(this.connectionStream ? { connectionStream: this.connectionStream.stats() } : {}),
      ...(this.lastSwitchover || this.lastGiven ? { switchovers: { ...(this.lastSwitchover ? { took: this.lastSwitchover } : {}), ...(this.lastGiven ? { gave: this.lastGiven } : {}) } } : {}),
      ...(this.apps ? { apps: this.apps.views() } : {}),
      recentEvents: this.recent.slice(-20),
      callouts: this.callouts ? { dropped: this.callouts.dropped } : undefined,
      disk: this.config.disk
        ? {
            device: this.config.disk.device,
            ...(this.diskWriter ? { pulses: this.diskWriter.pulses, pulseFailures: this.diskWriter.failures } : {}),
            ...(this.diskWatcher ? { watching: this.config.disk.watch!, verdict: this.diskWatcher.judge.state, changes: this.diskWatcher.judge.changes, sampleFailures: this.diskWatcher.failures } : {}),
          }
        : undefined,
      fencing: this.config.fencing
        ? {
            devices: this.config.fencing.devices,
            ...(this.fencing ? { key: formatKey(this.fencing.fencer.myKey) } : {}),
            ...(this.fencing?.fencedAt !== undefined ? { fencedAt: this.fencing.fencedAt } : {}),
            ...(this.fencing?.lastFence ? { lastFence: { node: this.fencing.lastFence.node, ok: this.fencing.lastFence.ok, at: this.fencing.lastFence.doneAt, devices: this.fencing.lastFence.devices } } : {}),
          }
        : undefined,
    };
  }

  /**
   * The current state as events marked `snapshot: true` (see state-snapshot.ts): what a
   * subscriber gets when it connects, before live events; the same picture as `status()`.
   */
  snapshot(): ServiceEvent[] {
    const s = this.status();
    return stateSnapshot({
      node: s.node,
      database: this.config.database,
      // A node whose agent left in a planned way while its instances run still serves them.
      peers: s.peers.map((p) => ({ node: p.node, up: p.up || p.left?.serving === true })),
      instances: s.instances,
      services: s.services,
      placement: this.config.instances,
      lastPublished: (key) => this.lastBySource.get(key),
      lastNodeChange: (node) => this.publisher.lastChange(node),
      freshIncarnation: () => this.stamp('unknown').incarnation,
      now: new Date().toISOString(),
    });
  }

  /** TEST UNIT READY: RESERVATION CONFLICT means the peer holds its RESERVE (seed 002). */
  private async sampleDisk(): Promise<DiskSample> {
    if (!this.disk) throw new Error('the disk is not open');
    try {
      await this.disk.device.execute({ cdb: testUnitReady() });
      return 'free';
    } catch (err) {
      if (err instanceof ReservationConflictError) return 'reserved';
      throw err;
    }
  }

  /** The cluster manager over the configured store, acting on the node events this agent acts on. */
  private appManager(config: AgentConfig, settings: NonNullable<AgentConfig['store']>, store: ClusterStore): AppManager {
    const nodes = clusterNodes(config);
    const apps = new AppManager({
      node: config.node,
      database: config.database,
      store,
      nodeEvents: this.nodeEvents,
      peers: () => this.heartbeat.detector.status(),
      // A peer not heard yet is not taken for dead before the detector could have heard it.
      startGraceMs: 2 * this.heartbeat.detector.timeoutMs,
      hearsMajority: () => this.quorum.hearsMajority(),
      leaseTtlMs: settings.leaseMs,
      stateDir: this.stateDir,
      childNice: this.startedNice,
      fence: (node) => this.fencing?.fenced(node) ?? Promise.resolve(),
      known: (node, service) => this.replication.replicas.connections(node, service),
      publish: (events) => this.publish(events),
      stamp: (reason) => this.stamp(reason),
      register: config.apps.map((a) => newApp(a, nodes, Date.now())),
      onApps: (known) => this.followApps(known),
    });
    apps.on('activity', (a) => this.emit('app', a));
    return apps;
  }

  /**
   * The clustered applications in the store changed (one registered by `takeover app register`,
   * one removed): the connections this node has replicated follow them, so that a peer's clients
   * of an application registered after the start are released when that peer dies too. The
   * config's applications stay asked for (they are in the store once registered).
   */
  private followApps(known: readonly AppObject[]): void {
    try {
      for (const c of this.replication.setSubscriptions(subscriptions(this.config, [...this.config.apps, ...known]))) this.emit('subscriptions', c);
    } catch (err) {
      this.emit('subscriptions', { error: (err as Error).message });
    }
  }

  private async startFencing(f: NonNullable<AgentConfig['fencing']>): Promise<void> {
    for (const path of f.devices) this.fenceDevices.push(this.openFenceDevice(path));
    const nodes = [this.config.node, ...this.config.peers.map((p) => p.node)];
    this.fencing = new NodeFencing({ cluster: this.config.cluster, node: this.config.node, nodes, devices: this.fenceDevices.map((d) => d.device), abort: f.abort, checkMs: f.checkMs, events: this.nodeEvents });
    this.fencing.on('fence', (d) => this.emit('fence', d));
    this.fencing.on('fenced', (d) => void this.onFenced(d));
    await this.fencing.start();
  }

  // ---- decisions ----

  /**
   * This node was fenced: another node decided it was dead and took its disks. It must stop
   * writing: the instances it runs are stopped, and their DOWN published. (Instances watched by
   * pid are not this agent's to kill; the device refuses their writes anyway.)
   */
  private async onFenced(f: { device: string; at: number }): Promise<void> {
    this.emit('fenced', f);
    this.leases?.fenced();
    for (const inst of this.config.instances.filter((i) => i.node === this.config.node && i.command)) {
      const m = this.monitors.get(inst.name);
      if (!m || m.state === 'stopped') continue;
      await m.stop().catch(() => {});
      this.publish(instanceFailure(this.placement(inst.name), inst.name, this.stamp('failure', f.at)));
    }
  }

  /** A configured peer heard only with rejected datagrams (keys that differ, say) is said out loud. */
  private onRejected(r: HeartbeatRejected): void {
    if (r.peer === undefined || this.heartbeat.detector.status().some((p) => p.node === r.peer && p.up)) return;
    const key = `${r.peer}|${r.reason}`;
    const t = now();
    if (t - (this.rejectionSaid.get(key) ?? -Infinity) < 10_000) return;
    this.rejectionSaid.set(key, t);
    this.emit('peer-rejected', { ...r, count: this.heartbeat.rejectedFrom.get(r.peer)?.[r.reason] ?? 1 });
  }

  private onDetector(e: DetectorEvent): void {
    this.emit('detector', e);
    if (e.kind === 'link-down' || e.kind === 'link-up') {
      this.links.push(e);
      if (this.links.length > RECENT) this.links.shift();
    }
  }

  private onInstance(inst: InstanceConfig, e: InstanceEvent): void {
    this.emit('instance', { instance: inst.name, event: e });
    if (e.kind === 'down') {
      const exit = { ...(e.exitCode !== undefined ? { exitCode: e.exitCode } : {}), ...(e.signal !== undefined ? { signal: e.signal } : {}) };
      const services = this.servicesOf(inst.name);
      if (e.cause === 'failure' && services.length > 0 && services.every((s) => this.offlineOf(s).has(inst.name))) {
        // Taken out of all its services by `service stop` (a process watched by pid, which the
        // operator stops after the drain): its end is the planned one.
        this.publish([{ ...this.instanceDown(inst.name, 'user'), ...exit }]);
        return;
      }
      // Cardinality counts the members up before this failure, minus this one.
      const events = instanceFailure(this.placement(inst.name), inst.name, this.stamp(e.cause, e.at));
      for (const ev of events) {
        if (inst.role && (ev.type === 'instance' || ev.type === 'service_member')) ev.role = inst.role;
        if (ev.type === 'instance') Object.assign(ev, exit);
      }
      this.publish(events);
      const plan = this.runPlan(inst, e);
      this.plans.add(plan);
      void plan.finally(() => this.plans.delete(plan));
    } else if (e.kind === 'up') {
      const reason = this.upReason.get(inst.name) ?? 'boot';
      this.upReason.delete(inst.name);
      const s = this.stamp(reason, e.at);
      const events: ServiceEvent[] = [{ type: 'instance', status: 'UP', service: this.config.database, database: this.config.database, instance: inst.name, node: inst.node, cardinality: this.upInstances().length, ...(inst.role ? { role: inst.role } : {}), ...s }];
      this.publish([...events, ...this.membersUp(inst.name, this.servicesOf(inst.name), reason, e.at)]);
    } else if (e.kind === 'not-restarting') {
      this.upReason.delete(inst.name);
      const p = this.placement(inst.name);
      this.publish(this.servicesOf(inst.name).filter((svc) => !this.offlineOf(svc).has(inst.name)).flatMap((svc) => notRestarting(p, svc, inst.name, this.stamp('failure', e.at))));
    }
  }

  /** The failure plan for a failed instance: close its clients' connections. */
  private async runPlan(inst: InstanceConfig, e: Extract<InstanceEvent, { kind: 'down' }>): Promise<void> {
    const startedAt = now();
    try {
      // The service's ports, whoever holds their connections: a server's workers (PostgreSQL
      // backends) hold them, and outlive a dead or stopped parent. Without ports, a hung
      // process's own connections; a dead one without ports has none left to close.
      // Goodbyes go where this agent's own stream following saw a message boundary.
      const local = this.replication.local;
      const options = { method: inst.method, localBoundary: local.boundaryOf.bind(local) };
      let report: ClosePeersReport | undefined;
      if (inst.ports.length > 0) report = await closePeers({ ports: inst.ports }, options);
      else if (e.cause === 'hang') report = await closePeers({ pid: e.pid }, options);
      this.emit('plan', { instance: inst.name, cause: e.cause, ...(report ? { report } : {}), startedAt, doneAt: now() });
    } catch (err) {
      this.emit('plan', { instance: inst.name, cause: e.cause, error: (err as Error).message, startedAt, doneAt: now() });
    }
  }

  // ---- where things run ----

  private nodeOf(instance: string): string {
    return this.config.instances.find((i) => i.name === instance)!.node;
  }

  private servicesOf(instance: string): string[] {
    return this.config.services.filter((s) => s.members.includes(instance)).map((s) => s.name);
  }

  /** Up as far as this agent knows: its own instances by their monitor, others by their node. */
  private instanceUp(instance: string): boolean {
    const m = this.monitors.get(instance);
    if (m) return m.state === 'up';
    const node = this.nodeOf(instance);
    // A node whose agent left in a planned way while its instances run still serves them.
    return this.heartbeat.detector.status().some((p) => p.node === node && (p.up || p.left?.serving === true));
  }

  private memberUp(service: string, instance: string): boolean {
    return this.instanceUp(instance) && !this.offline.get(service)?.has(instance);
  }

  private upInstances(): string[] {
    return this.config.instances.map((i) => i.name).filter((i) => this.instanceUp(i));
  }

  private upMembers(service: string): string[] {
    return this.config.services.find((s) => s.name === service)!.members.filter((i) => this.memberUp(service, i));
  }

  /** The placement the scenarios compute from: members up now, plus `failing` (about to go) where it was not taken out. */
  private placement(failing: string): Placement {
    const keep = (i: string) => i === failing || this.instanceUp(i);
    return {
      database: this.config.database,
      instances: Object.fromEntries(this.config.instances.filter((i) => keep(i.name)).map((i) => [i.name, i.node])),
      services: Object.fromEntries(this.config.services.map((s) => [s.name, s.members.filter((m) => (m === failing && !this.offlineOf(s.name).has(m)) || this.memberUp(s.name, m))])),
    };
  }

  private offlineOf(service: string): Set<string> {
    let off = this.offline.get(service);
    if (!off) this.offline.set(service, (off = new Set()));
    return off;
  }

  private serviceEvent(service: string, status: EventStatus, reason: string, at?: number): ServiceEvent {
    return { type: 'service', status, service, database: this.config.database, ...this.stamp(reason, at) };
  }

  /** The instance DOWN of a process gone without a failure (stopped by the agent, or by the operator after a drain). */
  private instanceDown(instance: string, reason: string, exit?: LastExit): ServiceEvent {
    const inst = this.config.instances.find((i) => i.name === instance)!;
    return {
      type: 'instance', status: 'DOWN', service: this.config.database, database: this.config.database, instance, node: inst.node, cardinality: this.upInstances().filter((i) => i !== instance).length,
      ...(inst.role ? { role: inst.role } : {}),
      ...(exit?.code != null ? { exitCode: exit.code } : {}),
      ...(exit?.signal != null ? { signal: exit.signal } : {}),
      ...this.stamp(reason, exit?.at),
    };
  }

  /** Member UP for each of `services` the instance now serves, and service UP for those that were DOWN. */
  private membersUp(instance: string, services: string[], reason: string, at?: number): ServiceEvent[] {
    const events: ServiceEvent[] = [];
    for (const svc of services) {
      if (!this.memberUp(svc, instance)) continue;
      events.push(this.memberEvent(svc, instance, 'UP', reason, at));
      if (this.servicesDown.has(svc)) events.push(this.serviceEvent(svc, 'UP', reason, at));
    }
    return events;
  }

  private memberEvent(service: string, instance: string, status: EventStatus, reason: string, at?: number): ServiceEvent {
    const role = this.config.instances.find((i) => i.name === instance)!.role;
    return { type: 'service_member', status, service, database: this.config.database, instance, node: this.nodeOf(instance), cardinality: this.upMembers(service).length, ...(role ? { role } : {}), ...this.stamp(reason, at) };
  }

  /**
   * Incarnations of this agent's events: microseconds since the epoch, strictly increasing, so
   * they order across restarts of the agent too (and stay below 2^53 until the year 2255).
   */
  private stamp(reason: string, at = now()): { incarnation: number; timestamp: string; reason: string } {
    this.lastIncarnation = Math.max(this.lastIncarnation + 1, Math.floor(at * 1000));
    return { incarnation: this.lastIncarnation, timestamp: new Date(at).toISOString(), reason };
  }

  // ---- planned switchover ----

  /**
   * `takeover switchover`: this node takes a peer's service over while the peer lives, with its
   * connections (agent/switchover-backup.ts). Resolves with the report, or `{ error }` (nothing
   * moved, the peer serves on, unless the error says otherwise); logged either way.
   */
  private async switchover(req: Extract<ControlRequest, { cmd: 'switchover' }>): Promise<SwitchoverReport | { error: string; phase?: string }> {
    const fail = (error: string, phase?: string) => {
      this.emit('switchover-failed', { address: req.address, error, ...(phase ? { phase } : {}) });
      return { error, ...(phase ? { phase } : {}) };
    };
    if (req.to !== this.config.node) {
      const known = this.config.peers.some((p) => p.node === req.to);
      return fail(known
        ? `--to ${req.to}: run the switchover on ${req.to}'s agent (the node that takes the service over drives it); this is ${this.config.node}`
        : `--to ${req.to}: no such node (this is ${this.config.node}; its peers: ${this.config.peers.map((p) => p.node).join(', ') || 'none'})`);
    }
    const address = canonicalAddress(req.address);
    const matches = this.config.peers.flatMap((p) => p.takeover.filter((t) => canonicalAddress(t.address) === address && (req.port === undefined || t.port === req.port)).map((t) => ({ peer: p.node, t })));
    if (matches.length === 0) return fail(`no takeover here is for ${req.address}${req.port ? `:${req.port}` : ''}`);
    if (matches.length > 1) return fail(`${req.address} has takeovers on several ports here (${matches.map((m) => m.t.port).join(', ')}): name the port (ADDRESS:PORT)`);
    const { peer, t } = matches[0]!;
    const c = t.continue;
    if (!c) return fail(`the takeover of ${peer}'s ${address}:${t.port} has no continue section: nothing here follows its connections`);
    if (!c.stream) return fail(`the takeover of ${peer}'s ${address}:${t.port} follows a mirror: a switchover talks to ${peer}'s agent over its connection stream (continue.stream)`);
    if (c.protocol === 'http') return fail('a switchover of protocol http is not supported: nothing tells that the new upstream holds what the old one served');
    const pgSwitchover = c.switchover;
    if (c.protocol === 'postgres' && !pgSwitchover) return fail(`the takeover of ${peer}'s ${address}:${t.port} has no continue.switchover section: a PostgreSQL switchover needs the primary's own address and a login to check that the standby replayed its commits`);
    if (c.protocol === 'postgres' && !c.promote) return fail(`the takeover of ${peer}'s ${address}:${t.port} has no continue.promote: a PostgreSQL switchover would move the sessions onto a standby that stays read-only`);
    const plan = this.takeovers.find((p) => p.peer === peer && canonicalAddress(p.service.address) === address && p.service.port === t.port);
    if (!plan) return fail(`the takeover of ${peer}'s ${address}:${t.port} is not running`);
    this.emit('switchover-started', { peer, address, port: t.port });
    try {
      const report = await plan.switchover({
        node: this.config.node,
        key: this.key,
        primary: c.stream,
        ...(pgSwitchover
          ? {
              // PostgreSQL shows no session's settings to another: the sessions come from the shadow.
              barrier: 'pg-idle' as const,
              // Every backend waits for its client: a session that cannot be moved gets 57P01, not a reset.
              goodbye: pgTerminateGoodbye,
              catchUp: async () => {
                const password = pgPassword(c);
                const u = await pgCatchUp({ primary: pgSwitchover.primary, standby: c.upstream, user: pgSwitchover.user, database: pgSwitchover.database ?? pgSwitchover.user, ...(password !== undefined ? { password } : {}) });
                return { detail: `the standby replayed to ${u.replayed}, reaching the locked primary's WAL insert position ${u.insert}${u.target !== u.insert ? ` (less its page header: ${u.target})` : ''}` };
              },
            }
          : {
              barrier: 'resp-ping' as const,
              catchUp: async () => {
                const u = await redisCatchUp(c.upstream);
                // The sessions from the locked primary itself (CLIENT LIST): exact, see redis-catch-up.ts.
                const sessions = await redisSessions(u.primary, { address, port: t.port });
                return { detail: `replica offset ${u.replicaOffset} reached the primary's ${u.primaryOffset}; ${sessions.size} sessions from its CLIENT LIST`, sessions };
              },
            }),
        ...(req.quietWaitMs !== undefined ? { quietWaitMs: req.quietWaitMs } : {}),
      });
      this.addresses.tookOver(peer, t.address);
      this.lastSwitchover = { ...report, peer, at: new Date().toISOString() };
      this.emit('switchover', { ...report, peer });
      return report;
    } catch (err) {
      return fail((err as Error).message, err instanceof SwitchoverError ? err.phase : undefined);
    }
  }

  // ---- control socket ----

  private async onControl(req: ControlRequest, reply: (msg: unknown) => void, onClose: (fn: () => void) => void): Promise<'done' | 'stream'> {
    if (req.cmd === 'status') {
      reply(this.status());
      return 'done';
    }
    if (req.cmd === 'service') {
      reply(await this.serviceChange(req.name, req.action, { ...(req.drainMs !== undefined ? { drainMs: req.drainMs } : {}), ...(req.waitMs !== undefined ? { waitMs: req.waitMs } : {}) }));
      return 'done';
    }
    if (req.cmd === 'instance') {
      reply(await this.cleanup(req.name, req.waitMs !== undefined ? { waitMs: req.waitMs } : {}));
      return 'done';
    }
    if (req.cmd === 'switchover') {
      reply(await this.switchover(req));
      return 'done';
    }
    if (req.cmd === 'flows') {
      if (!this.config.peers.some((p) => p.node === req.peer)) throw new Error(`unknown peer ${req.peer}`);
      reply({ peer: req.peer, status: this.replication.status().peers.find((p) => p.node === req.peer), connections: this.replication.replicas.entries(req.peer) });
      return 'done';
    }
    // Without --follow: the recent events. With it: the state now, then every new event (nothing
    // can be published between the two: this runs in one turn of the loop).
    if (!req.follow) {
      for (const e of this.recent) reply(e);
      return 'done';
    }
    for (const e of this.snapshot()) reply(e);
    const follower = (e: ServiceEvent) => reply(e);
    this.followers.add(follower);
    onClose(() => this.followers.delete(follower));
    return 'stream';
  }
}

/** `takeover flows --peer NODE`: a peer's replicated table as this node holds it. */
export interface PeerFlows {
  peer: string;
  status: ReplicationStatus['peers'][number] | undefined;
  connections: Array<ReplicaEntry & { local: { address: string; port: number } }>;
}

export interface AgentOptions {
  witnesses?: Witness[];
  /** Opens a fencing device by path (default: SG_IO on the device node); a seam for tests. */
  openFenceDevice?: (path: string) => FenceDeviceHandle;
  /** Opens the configured `store` (default: the file or etcd it names); a seam for tests. */
  openStore?: (config: AgentConfig) => Promise<ClusterStore>;
}

export interface FenceDeviceHandle {
  device: ReservationDevice;
  close(): void;
}

/** This node's instance ports whose failure plan says goodbye: their streams are followed here. */
function ownGoodbyeScopes(config: AgentConfig): ServiceScope[] {
  return config.instances.flatMap((i) => {
    if (i.node !== config.node) return [];
    const m = parseCloseMethod(i.method);
    return m.kind === 'goodbye' ? i.ports.map((port) => ({ port, goodbye: m.plugin })) : [];
  });
}

function openScsiFenceDevice(path: string): FenceDeviceHandle {
  const transport = new DeviceTransport(path);
  return { device: new PersistentReservations(new ScsiDevice(transport, 5000)), close: () => transport.close() };
}

export interface AgentStatus {
  cluster: string;
  node: string;
  incarnation: number;
  notifyPort: number;
  /** With `metrics` in the config: the port of `GET /metrics`. */
  metricsPort?: number;
  subscribers: number;
  /**
   * Configured peers (never heard: `heard: false`) and any other heard; `left`: a planned
   * departure; (PeerHistory) since when, why it was declared dead, what was taken over.
   */
  peers: Array<Omit<PeerStatus, 'incarnation'> & { incarnation: string; rejected?: Partial<RejectionCounters> } & PeerHistory>;
  /** Whether this node may act on a peer's death now, and why (see QuorumGate). */
  quorum: { ok: boolean; heard: number; of: number; why: string };
  /** Service addresses this node holds because it took them over, and from whom. */
  taken: Array<{ address: string; from: string }>;
  /** With `addressLease`: the lease's length, and each address (held, renewed when, runs out when). */
  leases?: { seconds: number; addresses: LeaseStatus[] };
  heartbeat: Record<string, unknown>;
  /** Each instance: state and since when, the running pid, failures in its restart window, how it last ended. */
  instances: InstanceInfo[];
  services: Array<{ name: string; members: Array<{ instance: string; node: string; up: boolean }> }>;
  links: DetectorEvent[];
  /** Connections replicated: each peer's copy held here, who holds this node's, and refusals. */
  replication: ReplicationStatus;
  /** Each takeover's shadow (with a `continue` section): what it follows, its losses, its stream. */
  shadows: Array<{ peer: string; address: string; port: number } & ShadowHealth>;
  /**
   * Connections continued here from a peer's takeover (or a switchover) whose relays run now, by
   * service: they live in this process, so stopping or restarting the agent resets them. Absent
   * when there are none.
   */
  relaying?: Array<{ peer: string; address: string; port: number; connections: number }>;
  /**
   * With `relayKeeper`: the continued connections the relay keeper holds (they outlive this
   * agent), by peer and service (ADDRESS:PORT), as last known; `pid` absent while no keeper is
   * connected (none runs yet: one is started at the first handover).
   */
  keeper?: { socket: string; start: boolean; pid?: number; connections: number; services: Array<{ peer: string; service: string; connections: number }> };
  /** This process's open-files limit (fd-limit.ts), read at start; absent when unknown. Each continued connection holds two. */
  openFilesLimit?: number;
  /** The agent's nice value now (its main thread's; config `nice` once started), -20..19. */
  nice: number;
  /** This node's own connection stream (`connectionStream`): its backups and their lag. */
  connectionStream?: SegmentSourceStats;
  /**
   * Planned switchovers (`takeover switchover`): the last one this node took (its report, the
   * peer, when) and the last one it gave, refused or aborted as the peer's primary.
   */
  switchovers?: { took?: SwitchoverReport & { peer: string; at: string }; gave?: PrimarySwitchoverEvent & { at: string } };
  /** The clustered applications in the store and what runs of them here (config `store`). */
  apps?: AppView[];
  recentEvents: ServiceEvent[];
  callouts: { dropped: number } | undefined;
  disk: { device: string; pulses?: number; pulseFailures?: number; watching?: string; verdict?: string; changes?: number; sampleFailures?: number } | undefined;
  /** This node's key; when it found itself fenced; the last fence it carried out. */
  fencing: { devices: string[]; key?: string; fencedAt?: number; lastFence?: { node: string; ok: boolean; at: number; devices: DeviceReport[] } } | undefined;
}

/** Waits for `p`, or `ms` at most (the timer does not hold the process). */
async function boundedWait(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

export type RelayKeeperEvent =
  | { kind: 'attached'; socket: string; pid: number; connections: number }
  | { kind: 'started'; socket: string; pid: number; logFile: string; insideUnit: boolean }
  | { kind: 'left'; socket: string; pid: number; connections: number }
  | { kind: 'lost'; socket: string; reason: string; held: number }
  | { kind: 'replaced'; socket: string; from: number; pid: number; relays: number }
  | { kind: 'refused'; socket: string; client: string; reason: string }
  | { kind: 'dropped'; socket: string; client: string; reason: string }
  | { kind: 'unusable'; socket: string; reason: string }
  | { kind: 'start-in-unit'; socket: string }
  | { kind: 'ended'; socket: string; client: string; peer: string; service: string; reason: string; clientBytes: number; upstreamBytes: number };

/** How often the agent looks for a relay keeper while none is connected, ms. */
const KEEPER_REATTACH_MS = 5000;

/** status' `keeper`: the relay keeper's relays by peer and service, as last known. */
function keeperStatus(socket: string, start: boolean, keeper: RelayKeeperClient): NonNullable<AgentStatus['keeper']> {
  const held = keeper.held;
  if (!held) return { socket, start, connections: 0, services: [] };
  const by = new Map<string, { peer: string; service: string; connections: number }>();
  for (const r of held.relays) {
    const k = `${r.peer} ${r.service}`;
    const e = by.get(k) ?? { peer: r.peer, service: r.service, connections: 0 };
    e.connections++;
    by.set(k, e);
  }
  return { socket, start, pid: held.pid, connections: held.relays.length, services: [...by.values()] };
}

/** status' `relaying`: the takeovers whose continued connections are relayed now (absent: none). */
function relayingNow(takeovers: readonly PeerTakeover[]): Pick<AgentStatus, 'relaying'> {
  const relaying = takeovers.filter((t) => t.relaying > 0).map((t) => ({ peer: t.peer, ...t.service, connections: t.relaying }));
  return relaying.length > 0 ? { relaying } : {};
}
