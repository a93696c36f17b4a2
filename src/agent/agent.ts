// The takeover agent (`takeover agent --config FILE`): one per node. It watches this node's
// instances (pidfd exits, health probes, a supervisor for the ones it starts) and the peer nodes
// (authenticated heartbeats on every link), decides, publishes FAN events out of band, and runs
// the failure plan: close the failed process's peers, take a dead peer's address over and close
// its peers. Every published event also goes to the callouts and the uptime log.
import { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { IncarnationFilter } from '../events/incarnation-filter.js';
import { NotificationServer } from '../events/notification-server.js';
import { instanceFailure, notRestarting, type Placement } from '../events/scenarios.js';
import { validateEvent, type EventStatus, type ServiceEvent } from '../events/service-event.js';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import { HeartbeatAgent } from '../monitor/heartbeat-agent.js';
import { WitnessedNodeEvents, type Disputed, type NodeEventSource, type Witness } from '../monitor/witnessed-node-events.js';
import { DiskHeartbeatWatcher, DiskHeartbeatWriter, type DiskSample, type DiskVerdict } from '../monitor/disk-heartbeat.js';
import { testUnitReady } from '../scsi/cdb.js';
import { PersistentReservations } from '../scsi/reservations.js';
import { DeviceTransport, ReservationConflictError, ScsiDevice } from '../scsi/transport.js';
import { closePeers, type ClosePeersReport } from '../net/close-peers.js';
import { parseCloseMethod } from '../net/close-method.js';
import { FlowTracker } from '../net/flow-tracker.js';
import { ConnectionReplication, type ReplicationStatus } from './replication/connection-replication.js';
import type { ServiceScope } from './replication/local-connections.js';
import type { ReplicaEntry } from './replication/replicas.js';
import type { ReplicatedService } from './replication/wire.js';
import { CalloutRunner, type CalloutResult } from './callouts.js';
import { configKey, type AgentConfig, type InstanceConfig, type TakeoverConfig } from './config.js';
import { ControlServer, defaultControlPath, type ControlRequest } from './control.js';
import { InstanceMonitor, type InstanceEvent } from './instance-monitor.js';
import { NodeEventPublisher } from './node-events.js';
import { NodeFencing, type FenceDone } from './node-fencing.js';
import { PeerTakeover, type TakeoverDone } from './peer-takeover.js';
import type { DeviceReport, ReservationDevice } from '../fence/fencer.js';
import { formatKey } from '../fence/fence-keys.js';
import { UptimeLog } from './uptime-log.js';

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
  detector: [DetectorEvent];
  /** A node the heartbeats call dead but a witness does not (yet): no event, no takeover. */
  disputed: [Disputed];
  callout: [CalloutResult];
  /** The disk heartbeat's verdicts on the watched peer (alive, dead). */
  disk: [DiskVerdict];
  /** A dead peer fenced off the shared devices (or not: see ok and each device's error). */
  fence: [FenceDone];
  /** This node's own key is gone from a device: it was fenced, and its instances are stopped. */
  fenced: [{ device: string; at: number }];
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
  private readonly publisher: NodeEventPublisher;
  /** Node events as the decisions use them: the heartbeats', confirmed by the witnesses if any. */
  private readonly nodeEvents: NodeEventSource;
  private readonly witnessed: WitnessedNodeEvents | undefined;
  private readonly takeovers: PeerTakeover[] = [];
  private readonly trackers: FlowTracker[] = [];
  private readonly control: ControlServer;
  private readonly callouts: CalloutRunner | undefined;
  private readonly uptime: UptimeLog | undefined;
  private readonly dedup = new IncarnationFilter();
  private readonly recent: ServiceEvent[] = [];
  private readonly followers = new Set<(e: ServiceEvent) => void>();
  /** service -> instances of this node taken out of it by `service stop` (planned). */
  private readonly offline = new Map<string, Set<string>>();
  private readonly links: DetectorEvent[] = [];
  private disk: { transport: DeviceTransport; device: ScsiDevice } | undefined;
  private fencing: NodeFencing | undefined;
  private readonly fenceDevices: FenceDeviceHandle[] = [];
  private readonly openFenceDevice: (path: string) => FenceDeviceHandle;
  private diskWriter: DiskHeartbeatWriter | undefined;
  readonly diskWatcher: DiskHeartbeatWatcher | undefined;
  private lastIncarnation = 0;
  notifyPort = 0;

  /** `witnesses`: seed 002's second opinion (e.g. a disk heartbeat) that must agree a node is dead. */
  static async create(config: AgentConfig, options: AgentOptions = {}): Promise<Agent> {
    return new Agent(config, await configKey(config), options);
  }

  private constructor(
    readonly config: AgentConfig,
    key: Buffer,
    options: AgentOptions,
  ) {
    super();
    this.incarnation = config.incarnation ?? Date.now();
    this.openFenceDevice = options.openFenceDevice ?? openScsiFenceDevice;
    this.heartbeat = new HeartbeatAgent({
      node: config.node,
      incarnation: BigInt(this.incarnation),
      key,
      intervalMs: config.heartbeat.intervalMs,
      misses: config.heartbeat.misses,
      links: config.heartbeat.links,
      peers: config.peers.map((p) => ({ node: p.node, links: p.links })),
    });
    this.heartbeat.on('event', (e) => this.onDetector(e));
    this.replication = new ConnectionReplication({
      heartbeat: this.heartbeat,
      node: config.node,
      incarnation: BigInt(this.incarnation),
      key,
      peers: config.peers.map((p) => p.node),
      intervalMs: config.heartbeat.intervalMs,
      subscriptions: new Map(config.peers.filter((p) => p.takeover.length > 0).map((p) => [p.node, p.takeover.map(replicatedService)])),
      ownScopes: ownGoodbyeScopes(config),
      maxBytesPerSecond: config.replication.maxBytesPerSecond,
      scanMs: config.replication.scanMs,
    });
    this.server = new NotificationServer({ host: config.notify.host, port: config.notify.port, ...(config.notify.maxBufferedBytes ? { maxBufferedBytes: config.notify.maxBufferedBytes } : {}) });
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
    this.nodeEvents = this.witnessed ?? this.heartbeat;
    this.publisher = new NodeEventPublisher(config.node, this.nodeEvents, { publish: (e) => this.publish([e]) });
    this.control = new ControlServer(config.control ?? defaultControlPath(config.node), (req, reply, onClose) => this.onControl(req, reply, onClose));
    if (config.callouts) {
      this.callouts = new CalloutRunner(config.callouts);
      this.callouts.on('result', (r) => this.emit('callout', r));
    }
    if (config.uptimeLog) this.uptime = new UptimeLog(config.uptimeLog);
    for (const inst of config.instances.filter((i) => i.node === config.node)) {
      const m = new InstanceMonitor(inst);
      m.on('event', (e) => this.onInstance(inst, e));
      this.monitors.set(inst.name, m);
    }
  }

  /** Opens the endpoints, starts heartbeats and monitors; on failure, stops what it started. */
  async start(): Promise<void> {
    try {
      this.notifyPort = await this.server.listen();
      await mkdir(path.dirname(this.control.path), { recursive: true, mode: 0o700 });
      await this.control.listen();
      if (this.config.fencing) await this.startFencing(this.config.fencing);
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
      for (const m of this.monitors.values()) await m.start();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** One `peers[].takeover` entry: a tracker for its address and port, and the plan run when the peer dies. */
  private async prepareTakeover(peer: string, t: TakeoverConfig): Promise<void> {
    const goodbye = parseCloseMethod(t.method).kind === 'goodbye';
    // Hears the answers after the takeover; on a hub or a mirror port it also sees the peer's
    // traffic before (with payload for a goodbye, whose streams it then follows).
    const tracker = new FlowTracker({ interface: t.interface, hosts: [t.address], ports: [t.port], ...(goodbye ? { payloadBytes: 65535 } : {}) });
    tracker.start();
    this.trackers.push(tracker);
    const fencing = this.fencing;
    const service = { address: t.address, port: t.port };
    const plan = new PeerTakeover({
      heartbeat: this.nodeEvents, peer, service, tracker, interface: t.interface, prefixLength: t.prefixLength, method: t.method,
      known: () => this.replication.replicas.connections(peer, service),
      ...(fencing ? { before: (down) => fencing.fenced(down.node) } : {}),
    });
    plan.on('done', (d) => this.emit('takeover', d));
    plan.on('failed', (err) => this.emit('takeover-failed', err));
    await plan.prepare();
    this.takeovers.push(plan);
  }

  /**
   * Stops everything it started (processes it runs included); waits for running callouts, each
   * with everything it started, at most the callouts' timeoutMs (then they are killed).
   */
  async stop(): Promise<void> {
    for (const m of this.monitors.values()) await m.stop().catch(() => {});
    this.replication.stop();
    this.heartbeat.stop();
    this.diskWatcher?.stop();
    await this.diskWriter?.stop();
    this.disk?.transport.close();
    this.fencing?.stop();
    for (const d of this.fenceDevices.splice(0)) d.close();
    this.publisher.close();
    this.witnessed?.close();
    for (const t of this.takeovers) t.close();
    for (const t of this.trackers) t.close();
    this.followers.clear();
    await this.control.close().catch(() => {});
    await this.server.close().catch(() => {});
    await this.callouts?.idle();
  }

  /** Publishes events: to subscribers, followers, callouts and the uptime log. */
  publish(events: ServiceEvent[]): void {
    for (const raw of events) {
      const e = validateEvent(raw);
      if (!this.dedup.accept(e)) continue;
      this.server.publish(e);
      this.recent.push(e);
      if (this.recent.length > RECENT) this.recent.shift();
      for (const f of this.followers) f(e);
      void this.uptime?.append(e);
      void this.callouts?.run(e);
      this.emit('published', e);
    }
  }

  /** A planned change (`takeover service stop|start`): GOING_DOWN then DOWN, or COMING_UP then UP. */
  serviceChange(name: string, action: 'stop' | 'start'): ServiceEvent[] {
    const svc = this.config.services.find((s) => s.name === name);
    if (!svc) throw new Error(`unknown service ${name}`);
    const mine = svc.members.filter((m) => this.monitors.has(m));
    if (mine.length === 0) throw new Error(`service ${name} has no member on node ${this.config.node}`);
    const off = this.offline.get(name) ?? new Set<string>();
    this.offline.set(name, off);
    const events: ServiceEvent[] = [];
    for (const instance of mine) {
      if (action === 'stop') {
        if (off.has(instance)) continue;
        events.push(this.memberEvent(name, instance, 'GOING_DOWN', 'user'));
        off.add(instance);
        events.push(this.memberEvent(name, instance, 'DOWN', 'user'));
      } else {
        if (!off.has(instance)) continue;
        if (this.monitors.get(instance)!.state !== 'up') throw new Error(`instance ${instance} is ${this.monitors.get(instance)!.state}: cannot offer ${name}`);
        events.push(this.memberEvent(name, instance, 'COMING_UP', 'user'));
        off.delete(instance);
        events.push(this.memberEvent(name, instance, 'UP', 'user'));
      }
    }
    if (action === 'stop' && events.length > 0 && this.upMembers(name).length === 0) events.push({ type: 'service', status: 'DOWN', service: name, database: this.config.database, ...this.stamp('user') });
    this.publish(events);
    return events;
  }

  status(): AgentStatus {
    return {
      cluster: this.config.cluster,
      node: this.config.node,
      incarnation: this.incarnation,
      notifyPort: this.notifyPort,
      subscribers: this.server.subscriberCount,
      peers: this.heartbeat.detector.status().map((p) => ({ ...p, incarnation: String(p.incarnation) })),
      heartbeat: { rejected: { ...this.heartbeat.rejected }, ...this.heartbeat.detector.counters },
      instances: [...this.monitors.values()].map((m) => ({ name: m.config.name, state: m.state, ...(m.pid !== undefined ? { pid: m.pid } : {}) })),
      services: this.config.services.map((s) => ({ name: s.name, members: s.members.map((i) => ({ instance: i, node: this.nodeOf(i), up: this.memberUp(s.name, i) })) })),
      links: this.links.slice(-20),
      replication: this.replication.status(),
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
    for (const inst of this.config.instances.filter((i) => i.node === this.config.node && i.command)) {
      const m = this.monitors.get(inst.name);
      if (!m || m.state === 'stopped') continue;
      await m.stop().catch(() => {});
      this.publish(instanceFailure(this.placement(inst.name), inst.name, this.stamp('failure', f.at)));
    }
  }

  private onDetector(e: DetectorEvent): void {
    this.emit('detector', e);
    if (e.kind === 'link-down' || e.kind === 'link-up') {
      this.links.push(e);
      if (this.links.length > RECENT) this.links.shift();
    }
  }

  private onInstance(inst: InstanceConfig, e: InstanceEvent): void {
    if (e.kind === 'down') {
      // Cardinality counts the members up before this failure, minus this one.
      const events = instanceFailure(this.placement(inst.name), inst.name, this.stamp(e.cause, e.at));
      if (inst.role) for (const ev of events) if (ev.type === 'instance' || ev.type === 'service_member') ev.role = inst.role;
      this.publish(events);
      void this.runPlan(inst, e);
    } else if (e.kind === 'up') {
      const s = this.stamp('boot', e.at);
      const events: ServiceEvent[] = [{ type: 'instance', status: 'UP', service: this.config.database, database: this.config.database, instance: inst.name, node: inst.node, cardinality: this.upInstances().length, ...(inst.role ? { role: inst.role } : {}), ...s }];
      for (const svc of this.servicesOf(inst.name)) if (this.memberUp(svc, inst.name)) events.push(this.memberEvent(svc, inst.name, 'UP', 'boot', e.at));
      this.publish(events);
    } else {
      const p = this.placement(inst.name);
      this.publish(this.servicesOf(inst.name).flatMap((svc) => notRestarting(p, svc, inst.name, this.stamp('failure', e.at))));
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
    return this.heartbeat.detector.status().some((p) => p.node === node && p.up);
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

  /** The placement the scenarios compute from: members up now, plus `failing` (about to go). */
  private placement(failing: string): Placement {
    const keep = (i: string) => i === failing || this.instanceUp(i);
    return {
      database: this.config.database,
      instances: Object.fromEntries(this.config.instances.filter((i) => keep(i.name)).map((i) => [i.name, i.node])),
      services: Object.fromEntries(this.config.services.map((s) => [s.name, s.members.filter((m) => m === failing || this.memberUp(s.name, m))])),
    };
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

  // ---- control socket ----

  private async onControl(req: ControlRequest, reply: (msg: unknown) => void, onClose: (fn: () => void) => void): Promise<'done' | 'stream'> {
    if (req.cmd === 'status') {
      reply(this.status());
      return 'done';
    }
    if (req.cmd === 'service') {
      reply({ events: this.serviceChange(req.name, req.action) });
      return 'done';
    }
    if (req.cmd === 'flows') {
      if (!this.config.peers.some((p) => p.node === req.peer)) throw new Error(`unknown peer ${req.peer}`);
      reply({ peer: req.peer, status: this.replication.status().peers.find((p) => p.node === req.peer), connections: this.replication.replicas.entries(req.peer) });
      return 'done';
    }
    for (const e of this.recent) reply(e);
    if (!req.follow) return 'done';
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
}

export interface FenceDeviceHandle {
  device: ReservationDevice;
  close(): void;
}

/** What a peer's `takeover` asks that peer's agent to replicate: the address, port and goodbye. */
function replicatedService(t: TakeoverConfig): ReplicatedService {
  const m = parseCloseMethod(t.method);
  return { address: t.address, port: t.port, ...(m.kind === 'goodbye' ? { goodbye: m.plugin.name } : {}) };
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
  subscribers: number;
  peers: Array<{ node: string; up: boolean; incarnation: string; links: Array<{ link: number; up: boolean; lastHeardAt: number | undefined }> }>;
  heartbeat: Record<string, unknown>;
  instances: Array<{ name: string; state: string; pid?: number }>;
  services: Array<{ name: string; members: Array<{ instance: string; node: string; up: boolean }> }>;
  links: DetectorEvent[];
  /** Connections replicated: each peer's copy held here, who holds this node's, and refusals. */
  replication: ReplicationStatus;
  recentEvents: ServiceEvent[];
  callouts: { dropped: number } | undefined;
  disk: { device: string; pulses?: number; pulseFailures?: number; watching?: string; verdict?: string; changes?: number; sampleFailures?: number } | undefined;
  /** This node's key; when it found itself fenced; the last fence it carried out. */
  fencing: { devices: string[]; key?: string; fencedAt?: number; lastFence?: { node: string; ok: boolean; at: number; devices: DeviceReport[] } } | undefined;
}
