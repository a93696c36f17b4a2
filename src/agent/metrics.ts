// The agent's Prometheus endpoint (`metrics: { host, port }` in the config; off without it):
// `GET /metrics` in the text exposition format (prom-client). Counts the agent already keeps
// (heartbeat traffic, replication, callouts dropped, disk pulses) and states (peers, links,
// instances, services) are read at scrape time from one `status()` snapshot, so a scrape and
// `takeover status` never disagree; what exists only as an event (events published, takeovers,
// failure plans, fences, callout results, detection times) is counted as it happens. Labels are
// bounded: configured peers and links, instances, services, and fixed sets of reasons and results.
// The process's own metrics (CPU, memory, event-loop delay: the loop also sends the heartbeats)
// come from prom-client's default collectors, registered once per process.
import type { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CalloutResult } from './callouts.js';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import type { Disputed } from '../monitor/witnessed-node-events.js';
import type { ServiceEvent } from '../events/service-event.js';
import type { Agent, AgentEvents, AgentStatus, PlanDone } from './agent.js';
import type { TakeoverRecord } from './agent-history.js';
import type { FenceDone } from './node-fencing.js';
import type { TakeoverDone } from './peer-takeover.js';
import type { CloseResult } from '../net/close-result.js';

export interface MetricsOptions {
  host: string;
  /** 0: any free port (listen() returns it). */
  port: number;
}

/** The instance states the enum gauge always lists (a state outside it is listed when current). */
const INSTANCE_STATES = ['starting', 'up', 'down', 'hung', 'not-restarting', 'stopped'];
/** Seconds: from a few heartbeat intervals to minutes (slow witnesses, long intervals). */
const DETECTION_BUCKETS = [0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120];
/** Seconds: a takeover closes thousands of connections in about a second. */
const TAKEOVER_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30];

type Labels = Record<string, string | number>;
type Rows = Array<[Labels, number]>;

let processRegistry: Registry | undefined;
/** prom-client's process and Node.js metrics, collected once per process however many agents run in it. */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private server: http.Server | undefined;
  /** The status the current scrape reads (taken at its start). */
  private snapshot: AgentStatus | undefined;
  private readonly listeners: Array<() => void> = [];

  constructor(
    private readonly agent: Agent,
    private readonly options: MetricsOptions,
  ) {
    this.define();
  }

  /** Serves `GET /metrics`; resolves with the port. Rejects `metrics: listen EADDRINUSE ...` and the like. */
  async listen(): Promise<number> {
    const server = http.createServer((req, res) => void this.serve(req, res));
    // A scraper that stalls does not hold a socket for long.
    server.headersTimeout = 5000;
    server.requestTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(Object.assign(new Error(`metrics: ${err.message}`), { code: (err as NodeJS.ErrnoException).code })));
      server.listen(this.options.port, this.options.host, () => resolve());
    });
    server.on('error', () => {}); // after listening, errors are per connection
    this.server = server;
    return (server.address() as AddressInfo).port;
  }

  /** Stops serving (open scrapes are cut) and stops counting the agent's events. */
  async close(): Promise<void> {
    for (const off of this.listeners.splice(0)) off();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The exposition text of this agent's metrics and the process's. */
  async scrape(): Promise<string> {
    this.snapshot = this.agent.status();
    return Registry.merge([this.registry, processMetrics()]).metrics();
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: the metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('only GET and HEAD\n');
      return;
    }
    try {
      const body = await this.scrape();
      res.writeHead(200, { 'content-type': this.registry.contentType }).end(req.method === 'HEAD' ? undefined : body);
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`${(err as Error).message}\n`);
    }
  }

  private get status(): AgentStatus {
    return (this.snapshot ??= this.agent.status());
  }

  /** A counter whose value is read at scrape time from a count kept elsewhere. */
  private mirroredCounter(name: string, help: string, labelNames: string[], read: () => Rows): void {
    const c: Counter<string> = new Counter({
      name, help, labelNames, registers: [this.registry],
      collect: () => {
        c.reset();
        for (const [labels, v] of read()) if (Number.isFinite(v) && v >= 0) c.inc(labels, v);
      },
    });
  }

  /** A gauge read at scrape time. */
  private readGauge(name: string, help: string, labelNames: string[], read: () => Rows): void {
    const g: Gauge<string> = new Gauge({
      name, help, labelNames, registers: [this.registry],
      collect: () => {
        g.reset();
        for (const [labels, v] of read()) if (Number.isFinite(v)) g.set(labels, v);
      },
    });
  }

  private on<K extends keyof AgentEvents>(event: K, fn: (...args: AgentEvents[K]) => void): void {
    const agent = this.agent as unknown as EventEmitter;
    agent.on(event, fn as (...args: unknown[]) => void);
    this.listeners.push(() => agent.off(event, fn as (...args: unknown[]) => void));
  }

  private define(): void {
    const r = [this.registry];
    const agent = this.agent;
    const peers = () => agent.config.peers.map((p) => p.node);

    // ---- the agent ----
    this.readGauge('takeover_agent_info', 'This agent: cluster, node and incarnation (always 1).', ['cluster', 'node', 'incarnation'], () => [[{ cluster: agent.config.cluster, node: agent.config.node, incarnation: String(agent.incarnation) }, 1]]);
    this.readGauge('takeover_notify_subscribers', 'Subscribers connected to the notification endpoint.', [], () => [[{}, this.status.subscribers]]);

    // ---- heartbeats ----
    const traffic = () => agent.heartbeat.traffic.entries();
    this.mirroredCounter('takeover_heartbeats_sent_total', 'Heartbeats sent (handed to the kernel), per peer and link.', ['peer', 'link'], () => traffic().map((t) => [{ peer: t.peer, link: t.link }, t.sent]));
    this.mirroredCounter('takeover_heartbeat_send_errors_total', 'Heartbeat sends that failed (e.g. no route), per peer and link.', ['peer', 'link'], () => traffic().map((t) => [{ peer: t.peer, link: t.link }, t.sendErrors]));
    this.mirroredCounter('takeover_heartbeats_received_total', 'Heartbeats accepted, per peer and link.', ['peer', 'link'], () => traffic().map((t) => [{ peer: t.peer, link: t.link }, t.received]));
    this.mirroredCounter(
      'takeover_heartbeats_rejected_total',
      'Heartbeat datagrams dropped, by reason (short, magic, version, node, length, hmac, wrong-link, own, replayed, stale-incarnation), per claimed peer ("" when it names no configured peer) and the link it came in on.',
      ['peer', 'link', 'reason'],
      () => traffic().flatMap((t) => Object.entries(t.rejected).map(([reason, n]): [Labels, number] => [{ peer: t.peer, link: t.link, reason }, n ?? 0])),
    );
    this.mirroredCounter('takeover_heartbeat_held_total', 'Heartbeats of this agent that went out more than an interval late: the agent (or its host) was held; no peer is judged for an interval and the skew after each.', [], () => [[{}, agent.heartbeat.held.count]]);

    // ---- peers ----
    this.readGauge('takeover_peer_up', 'Peer node up (1) or down or never heard (0), as this agent sees it.', ['peer'], () => {
      const heard = new Map(this.status.peers.map((p) => [p.node, p.up]));
      const names = [...new Set([...peers(), ...heard.keys()])];
      return names.map((peer) => [{ peer }, heard.get(peer) ? 1 : 0]);
    });
    this.readGauge('takeover_peer_link_up', 'Peer link up (1) or down (0).', ['peer', 'link'], () => this.status.peers.flatMap((p) => p.links.map((l): [Labels, number] => [{ peer: p.node, link: l.link }, l.up ? 1 : 0])));
    this.readGauge('takeover_peer_heartbeat_age_seconds', 'Time since the last heartbeat heard from the peer on the link.', ['peer', 'link'], () => {
      const now = Date.now();
      return this.status.peers.flatMap((p) => p.links.filter((l) => l.lastHeardAt !== undefined).map((l): [Labels, number] => [{ peer: p.node, link: l.link }, Math.max(0, now - l.lastHeardAt!) / 1000]));
    });
    const detection = new Histogram({
      name: 'takeover_peer_down_detection_seconds',
      help: 'From the last heartbeat heard from a peer (any link) to the heartbeats declaring it dead (a restart, heard at once, is not observed).',
      labelNames: ['peer'], buckets: DETECTION_BUCKETS, registers: r,
    });
    this.on('detector', (e: DetectorEvent) => {
      if (e.kind === 'node-down' && e.at > e.lastHeardAt) detection.observe({ peer: e.node }, (e.at - e.lastHeardAt) / 1000);
    });
    const disputes = new Counter({ name: 'takeover_peer_down_disputed_total', help: 'Deaths the heartbeats declared that a witness disputed (witness "heartbeat": the peer was heard again first).', labelNames: ['peer', 'witness'], registers: r });
    this.on('disputed', (d: Disputed) => disputes.inc({ peer: d.node, witness: d.witness }));

    // ---- instances and services ----
    this.readGauge('takeover_instance_state', 'This node\'s instances: 1 for the current state, 0 for the others.', ['instance', 'state'], () =>
      this.status.instances.flatMap((i) => [...new Set([...INSTANCE_STATES, i.state])].map((state): [Labels, number] => [{ instance: i.name, state }, i.state === state ? 1 : 0])),
    );
    this.readGauge('takeover_service_members_up', 'Members of a service up as this agent sees them (own instances by their monitor, others by their node).', ['service'], () => this.status.services.map((s) => [{ service: s.name }, s.members.filter((m) => m.up).length]));

    // ---- events and plans ----
    const published = new Counter({ name: 'takeover_events_published_total', help: 'Events published (after de-duplication), by type and status.', labelNames: ['type', 'status'], registers: r });
    this.on('published', (e: ServiceEvent) => published.inc({ type: e.type, status: e.status }));
    const closed = new Counter({ name: 'takeover_plan_connections_total', help: 'Connections the failure plans set out to close, by plan (instance, peer) and outcome (reset, closed, goodbye-delivered, ..., failed).', labelNames: ['plan', 'outcome'], registers: r });
    const countClosed = (plan: string, results: readonly CloseResult[]) => {
      const by = new Map<string, number>();
      for (const x of results) by.set(x.outcome, (by.get(x.outcome) ?? 0) + 1);
      for (const [outcome, n] of by) closed.inc({ plan, outcome }, n);
    };
    const plans = new Counter({ name: 'takeover_failure_plans_total', help: 'Failure plans of this node\'s instances, by result (ok, incomplete: a connection left open, failed).', labelNames: ['instance', 'result'], registers: r });
    this.on('plan', (p: PlanDone) => {
      const results = p.report?.results ?? [];
      plans.inc({ instance: p.instance, result: p.error ? 'failed' : results.some((x) => !x.ok) ? 'incomplete' : 'ok' });
      countClosed('instance', results);
    });
    this.on('takeover', (d: TakeoverDone) => countClosed('peer', d.report.results));
    const takeovers = new Counter({ name: 'takeover_peer_takeovers_total', help: 'Takeovers of a dead peer\'s services, by result (ok, incomplete: a connection left open, failed: nothing taken over, abandoned: the peer holds its leased address or left).', labelNames: ['peer', 'result'], registers: r });
    const takeoverTime = new Histogram({ name: 'takeover_peer_takeover_seconds', help: 'From the decision that a peer is dead to its takeover done (fence, address, every connection closed).', labelNames: ['peer'], buckets: TAKEOVER_BUCKETS, registers: r });
    const onTakeover = (t: TakeoverRecord & { peer: string }) => {
      takeovers.inc({ peer: t.peer, result: t.result });
      if (t.result === 'ok' || t.result === 'incomplete') takeoverTime.observe({ peer: t.peer }, Math.max(0, t.at - t.decidedAt) / 1000);
    };
    // Series that can occur start at 0, so rate() and alerts see the first one.
    for (const p of agent.config.peers.filter((x) => x.takeover.length > 0)) for (const result of ['ok', 'incomplete', 'failed', 'abandoned']) takeovers.inc({ peer: p.node, result }, 0);
    for (const m of agent.monitors.keys()) for (const result of ['ok', 'incomplete', 'failed']) plans.inc({ instance: m, result }, 0);
    agent.history.on('takeover', onTakeover);
    this.listeners.push(() => agent.history.off('takeover', onTakeover));

    // ---- fencing ----
    const fences = new Counter({ name: 'takeover_fences_total', help: 'Fences of a dead peer off the shared devices, by result (ok, failed).', labelNames: ['peer', 'result'], registers: r });
    if (agent.config.fencing) for (const peer of peers()) for (const result of ['ok', 'failed']) fences.inc({ peer, result }, 0);
    this.on('fence', (f: FenceDone) => fences.inc({ peer: f.node, result: f.ok ? 'ok' : 'failed' }));
    // (A metric without labels always shows a value: those of a feature not configured are not registered.)
    if (agent.config.fencing) this.readGauge('takeover_fenced', 'This node found its own key gone from a shared device (1): it was fenced.', [], () => [[{}, this.status.fencing?.fencedAt !== undefined ? 1 : 0]]);

    // ---- address lease (this node's own addresses) ----
    if (agent.config.addressLease) {
      this.readGauge('takeover_address_lease_held', 'This node holds its leased service address under a live lease (1) or not (0: not found, or the lease was lost).', ['address'], () => (this.status.leases?.addresses ?? []).map((a): [Labels, number] => [{ address: a.address }, a.held ? 1 : 0]));
    }

    // ---- callouts ----
    const callouts = new Counter({ name: 'takeover_callouts_total', help: 'Callout runs by result: ok (exit 0), failed (another exit code or a signal), killed (past timeoutMs), error (could not start).', labelNames: ['result'], registers: r });
    if (agent.config.callouts) for (const result of ['ok', 'failed', 'killed', 'error']) callouts.inc({ result }, 0);
    this.on('callout', (c: CalloutResult) => callouts.inc({ result: c.error ? 'error' : c.timedOut ? 'killed' : c.code === 0 ? 'ok' : 'failed' }));
    if (agent.config.callouts) this.mirroredCounter('takeover_callouts_dropped_total', 'Callout runs dropped unrun (more than 1000 queued).', [], () => [[{}, this.status.callouts?.dropped ?? 0]]);

    // ---- connection replication ----
    const repl = () => this.status.replication;
    this.readGauge('takeover_replication_local_connections', 'This node\'s own connections followed for its peers.', [], () => [[{}, repl().local.connections]]);
    this.readGauge('takeover_replication_local_connections_with_state', 'Of those, the ones whose sequence numbers are known.', [], () => [[{}, repl().local.withState]]);
    this.mirroredCounter('takeover_replication_capture_drops_total', 'Segments the own capture lost (the next scan covers them).', [], () => [[{}, repl().local.captureDrops]]);
    this.mirroredCounter('takeover_replication_scans_total', 'sock_diag scans of this node\'s connections.', [], () => [[{}, repl().local.scans]]);
    this.readGauge('takeover_replication_last_scan_seconds', 'How long the last sock_diag scan took.', [], () => [[{}, repl().local.lastScanMs / 1000]]);
    for (const what of ['opened', 'closed', 'refused', 'deferred'] as const) {
      this.mirroredCounter(`takeover_replication_local_${what}_total`, {
        opened: 'Own connections that opened.', closed: 'Own connections that closed.',
        refused: 'Own connections not followed: the table was full.', deferred: 'SYN-ACKs left to the next scan (past the unconfirmed limit: a SYN flood).',
      }[what], [], () => [[{}, repl().local[what]]]);
    }
    this.mirroredCounter('takeover_replication_rejected_total', 'Replication datagrams refused, by reason.', ['reason'], () => Object.entries(repl().rejected).map(([reason, n]) => [{ reason }, n]));
    this.readGauge('takeover_replication_copy_connections', 'Connections in this node\'s copy of a peer\'s table.', ['peer'], () => repl().peers.map((p) => [{ peer: p.node }, p.connections]));
    this.readGauge('takeover_replication_copy_synced', 'The copy of the peer\'s table is synced (1) or not (0).', ['peer'], () => repl().peers.map((p) => [{ peer: p.node }, p.synced ? 1 : 0]));
    this.readGauge('takeover_replication_copy_age_seconds', 'Time since the last replication datagram from the peer.', ['peer'], () => repl().peers.filter((p) => p.lastUpdateAgeMs !== undefined).map((p) => [{ peer: p.node }, p.lastUpdateAgeMs! / 1000]));
    this.readGauge('takeover_replication_subscriber_connections', 'Connections sent to a peer that holds a copy of this node\'s table.', ['peer'], () => repl().subscribers.map((s) => [{ peer: s.node }, s.known]));
    this.readGauge('takeover_replication_subscriber_pending', 'Changes not yet sent to that peer.', ['peer'], () => repl().subscribers.map((s) => [{ peer: s.node }, s.pending]));
    this.mirroredCounter('takeover_replication_sent_bytes_total', 'Replication bytes sent to that peer (since it last subscribed).', ['peer'], () => repl().subscribers.map((s) => [{ peer: s.node }, s.bytes]));
    this.mirroredCounter('takeover_replication_sent_datagrams_total', 'Replication datagrams sent to that peer (since it last subscribed).', ['peer'], () => repl().subscribers.map((s) => [{ peer: s.node }, s.datagrams]));

    // ---- the disk heartbeat ----
    const disk = () => this.status.disk;
    if (agent.config.disk?.pulse) {
      this.mirroredCounter('takeover_disk_pulses_total', 'Disk heartbeat pulses written (RESERVE/RELEASE).', [], () => [[{}, disk()?.pulses ?? 0]]);
      this.mirroredCounter('takeover_disk_pulse_failures_total', 'Disk heartbeat pulses that failed.', [], () => [[{}, disk()?.pulseFailures ?? 0]]);
    }
    if (agent.config.disk?.watch !== undefined) this.mirroredCounter('takeover_disk_sample_failures_total', 'Reads of the watched peer\'s disk pulse that failed.', [], () => [[{}, disk()?.sampleFailures ?? 0]]);
  }
}
