// The cluster manager inside one node's agent (issue 11, seed 002): for every clustered
// application this node may host, it keeps what runs here in line with the store. It asks
// app-decisions.ts what to do next, does it (fence, address, COMMAND, publish), writes the
// store by compare-and-swap, and asks again. A step that fails, or a write that lost a race,
// just leads to the next pass: passes run on every store change, node event, change of the
// application here, and every `passMs` (waits such as a dead HOST's lease running out).
//
// The application's process on this node is an InstanceMonitor (the agent's own runner for
// instances): its own process group, the restart policy, NOT_RESTARTING, stderr kept, and a
// record in the state directory so that a restarted agent adopts it instead of starting it twice.
import { EventEmitter } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { InstanceConfig } from '../agent/config.js';
import { InstanceMonitor, type InstanceEvent } from '../agent/instance-monitor.js';
import { openRecorded, readRecord, recordPath } from '../agent/instance-record.js';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import type { NodeEventSource } from '../monitor/witnessed-node-events.js';
import type { DeadConnection } from '../net/close-engine.js';
import { closePeers } from '../net/close-peers.js';
import { addressEntries, removeAddress, takeOverAddress } from '../net/address.js';
import type { EventStatus, ServiceEvent } from '../events/service-event.js';
import { type AppObject, type AppObjectInput, serversOf } from './app-object.js';
import { failoverOrder, type LocalState, nextStep, type Step, type Unready } from './app-decisions.js';
import { describeProbe, ReadinessWatch, readinessKey } from './app-readiness.js';
import { type ClusterStore, type StoredApp } from './cluster-store.js';
import { StoreConflictError, StoreUnavailableError, type NodeLease } from './store-backend.js';
import { missingResources } from './resource-check.js';

const run = promisify(execFile);

export interface AppManagerOptions {
  node: string;
  /** The database name the agent's events carry. */
  database: string;
  store: ClusterStore;
  /** Node events as the agent decides on them (witnessed, quorum-gated): they trigger passes. */
  nodeEvents: NodeEventSource;
  /**
   * The configured peers and whether each was heard since this agent started. A peer is alive
   * unless its death came through `nodeEvents` (so only deaths the quorum gate let through
   * count), or it was never heard within `startGraceMs` of the start.
   */
  peers: () => ReadonlyArray<{ node: string; heard: boolean }>;
  /** How long a peer never heard counts as alive after the start (ms): the detector's timeout and then some. */
  startGraceMs: number;
  /**
   * Whether this node hears a strict majority of the cluster's nodes, itself included. A peer
   * never heard since the start is presumed dead (after startGraceMs) only then: a node starting
   * alone, or one of two, cannot tell a dead peer from one not started yet (corosync's
   * wait_for_all), and would otherwise take over everything at a cluster's cold start.
   */
  hearsMajority: () => boolean;
  /** This node's lease in the store: its TTL (ms). A HOST whose lease is live is not failed over. */
  leaseTtlMs: number;
  /** Where the records and stderr of the applications run here go (the agent's stateDir). */
  stateDir: string;
  /** The nice value the applications run at (InstanceMonitorOptions.childNice). */
  childNice?: number;
  /** Fences a dead node off the shared devices; must succeed before its application starts here. */
  fence?: (node: string) => Promise<unknown>;
  /** The connections a dead node's agent replicated for a service (address, port). */
  known?: (node: string, service: { address: string; port: number }) => DeadConnection[];
  publish: (events: ServiceEvent[]) => void;
  /** The agent's incarnation and a timestamp for an event. */
  stamp: (reason: string) => { incarnation: number; timestamp: string; reason: string };
  /** Applications the config lists: registered at start when the store lacks them (seed 002 FIG. 6, step 604). */
  register?: AppObjectInput[];
  /** How often every application is looked at again without a trigger (ms). */
  passMs?: number;
  /**
   * Called with every application this node knows of in the store (sorted by tag) when one was
   * added or removed, or its servers or address changed: the agent replicates the connections of
   * those it may take over.
   */
  onApps?: (apps: AppObject[]) => void;
}

/** What the manager did, for the log. */
export type AppActivity =
  | { kind: 'step'; tag: string; step: Step; at: number }
  | { kind: 'done'; tag: string; step: Step['kind']; at: number; ms: number }
  | { kind: 'failed'; tag: string; step: Step['kind']; error: string; at: number }
  | { kind: 'instance'; tag: string; event: InstanceEvent }
  | { kind: 'lease-lost'; why: string; at: number }
  | { kind: 'lease-back'; at: number }
  /** No step for an application: the store cannot be read, or this node holds no lease (said once per reason). */
  | { kind: 'store-unavailable'; tag: string; error: string; at: number };

/** One application as `status` and `takeover apps` show it from this node. */
export interface AppView {
  app: AppObject;
  revision: number;
  local: LocalState;
  /** What this node waits for or last decided, in words. */
  note: string;
}

const now = () => performance.timeOrigin + performance.now();
/** The pause after a step failed (ms), doubled with each failure in a row up to RETRY_MAX_MS. */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;

export class AppManager extends EventEmitter<{ activity: [AppActivity] }> {
  private readonly cache = new Map<string, StoredApp>();
  private readonly runners = new Map<string, InstanceMonitor>();
  private readonly stopping = new Set<string>();
  /** Applications without a COMMAND set up here (address taken): they run by other means. */
  private readonly hosted = new Set<string>();
  private readonly notes = new Map<string, string>();
  /** Per application, the step that failed, how many times in a row, and when it may run again (ms, this clock). */
  private readonly retries = new Map<string, { step: Step['kind']; failures: number; at: number }>();
  /** The readiness probe of the process run here, per application with `ready` (one process, one watch). */
  private readonly readiness = new Map<string, ReadinessWatch>();
  /** Why the last start here was ended as not ready: said again when the application is handed on. */
  private readonly lastUnready = new Map<string, string>();
  private readonly queued = new Set<string>();
  private running: Promise<void> | undefined;
  private stopWatch: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lease: NodeLease | undefined;
  private leased = new Set<string>();
  private closed = false;
  /** Peers whose death the (gated) node events announced, until they are heard again or leave. */
  private readonly dead = new Set<string>();
  private startedAt = now();
  /** What onApps was last called with (tags, servers, addresses). */
  private appsSaid = '';
  private readonly onNodeEvent = (e: DetectorEvent) => {
    if (e.kind === 'node-down') this.dead.add(e.node);
    else if (e.kind === 'node-up' || e.kind === 'node-left') this.dead.delete(e.node);
    else return;
    this.schedule();
  };

  constructor(private readonly options: AppManagerOptions) {
    super();
  }

  private get me(): string {
    return this.options.node;
  }

  /** Takes this node's lease, registers the config's applications, adopts what runs here, starts passes. */
  async start(): Promise<void> {
    const { store } = this.options;
    this.startedAt = now();
    this.options.nodeEvents.on('event', this.onNodeEvent);
    // A store that cannot be reached does not keep the agent from starting: its other duties
    // (heartbeats, events, takeovers) do not need it. The applications wait for it.
    try {
      this.holdLease(await store.keepAlive(this.me, this.options.leaseTtlMs));
      await this.registerFromConfig();
    } catch (err) {
      this.emit('activity', { kind: 'lease-lost', why: `the store cannot be used at start: ${(err as Error).message}`, at: now() });
      void this.regainLease();
    }
    this.stopWatch = await store.watch((tag) => this.schedule(tag)).catch(() => undefined);
    await this.adoptRecorded();
    this.timer = setInterval(() => this.schedule(), this.options.passMs ?? 250);
    this.schedule();
  }

  /**
   * Keeps `lease` and, once it is lost, stops what runs here (without its lease this node may be
   * failed over at any moment: it must not keep running what another node is about to start;
   * Patroni demotes its leader the same way) and takes a new one as soon as the store answers.
   * No pass acts while there is no lease.
   */
  private holdLease(lease: NodeLease): void {
    this.lease = lease;
    void lease.lost.then(async (why) => {
      if (this.closed || this.lease !== lease) return;
      this.lease = undefined;
      this.emit('activity', { kind: 'lease-lost', why, at: now() });
      await this.stopAll(`this node's lease in the store was lost: ${why}`);
      await this.regainLease();
    });
  }

  /** Registers the config's applications the store lacks (seed 002 FIG. 6 step 604), then reads every application. */
  private async registerFromConfig(): Promise<void> {
    const { store } = this.options;
    for (const input of this.options.register ?? []) {
      if ((await store.get(input.tag as string)) !== undefined) continue;
      await store.create(input, { by: this.me, why: 'registered from the configuration' }).catch((err: Error & { code?: string }) => {
        if (err.code !== 'EAPPEXISTS') throw err; // another node registered it meanwhile
      });
    }
    for (const s of await store.list()) this.cache.set(s.app.tag, s);
    this.sayApps();
  }

  /** Calls onApps when the applications known, their servers or addresses changed. */
  private sayApps(): void {
    const apps = [...this.cache.values()].map((s) => s.app).sort((x, y) => (x.tag < y.tag ? -1 : x.tag > y.tag ? 1 : 0));
    const said = JSON.stringify(apps.map((a) => [a.tag, a.primary, a.backups, a.address ?? null]));
    if (said === this.appsSaid) return;
    this.appsSaid = said;
    this.options.onApps?.(apps);
  }

  /** Takes a new lease as soon as the store answers (and registers the config's applications then, if it could not at start). */
  private async regainLease(): Promise<void> {
    while (!this.closed) {
      await new Promise((r) => setTimeout(r, Math.max(500, this.options.leaseTtlMs / 2)));
      if (this.closed) return;
      try {
        const again = await this.options.store.keepAlive(this.me, this.options.leaseTtlMs);
        if (this.closed) {
          await again.close().catch(() => undefined);
          return;
        }
        this.emit('activity', { kind: 'lease-back', at: now() });
        this.holdLease(again);
        this.stopWatch ??= await this.options.store.watch((tag) => this.schedule(tag)).catch(() => undefined);
        await this.registerFromConfig().catch(() => undefined); // the passes read the store again anyway
        this.schedule();
        return;
      } catch {
        // still no store: try again
      }
    }
  }

  /**
   * A planned stop of the agent: every application hosted here is handed to the next live
   * server (released to it, as a switchover) or, with none alive, stopped with HOST left here so
   * that it resumes when this agent is back. Then the lease ends. Never throws.
   */
  async stop(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.options.nodeEvents.off('event', this.onNodeEvent);
    this.stopWatch?.();
    await this.running;
    const alive = this.alive();
    for (const tag of [...this.runners.keys(), ...this.hosted]) {
      const s = await this.options.store.get(tag).catch(() => undefined);
      const to = s?.app.host === this.me ? failoverOrder(s.app, this.me).find((n) => alive.has(n)) : undefined;
      const step: Step = to !== undefined ? { kind: 'release', to, why: `${this.me}'s agent stops: handed over to ${to}` } : { kind: 'stop', why: `${this.me}'s agent stops`, planned: true };
      this.emit('activity', { kind: 'step', tag, step, at: now() });
      await this.perform(tag, s, step).catch((err: Error) => this.emit('activity', { kind: 'failed', tag, step: step.kind, error: err.message, at: now() }));
    }
    await Promise.all([...this.runners.values()].map((r) => r.stop()));
    this.runners.clear();
    for (const tag of [...this.readiness.keys()]) this.dropWatch(tag);
    await this.lease?.close().catch(() => undefined);
  }

  views(): AppView[] {
    return [...this.cache.values()].map((s) => ({ app: s.app, revision: s.revision, local: this.local(s.app), note: this.notes.get(s.app.tag) ?? '' }));
  }

  /** Looks at `tag` (or every application) again soon; passes never overlap. */
  schedule(tag?: string): void {
    if (this.closed) return;
    if (tag === undefined) for (const t of this.cache.keys()) this.queued.add(t);
    else this.queued.add(tag);
    if (this.running) return;
    const pass = async () => {
      while (this.queued.size > 0 && !this.closed) {
        const tags = [...this.queued];
        this.queued.clear();
        this.leased = await this.options.store.liveNodes().catch(() => this.leased);
        for (const t of tags) await this.pass(t);
      }
    };
    this.running = pass().finally(() => (this.running = undefined));
  }

  /** This node and the peers not known to be dead (see `peers`). */
  alive(): Set<string> {
    const presume = now() - this.startedAt >= this.options.startGraceMs && this.options.hearsMajority();
    return new Set([this.me, ...this.options.peers().filter((p) => !this.dead.has(p.node) && (p.heard || !presume)).map((p) => p.node)]);
  }

  /** This node and the peers heard and not known to be dead: where an application may be handed. */
  private heard(): Set<string> {
    return new Set([this.me, ...this.options.peers().filter((p) => !this.dead.has(p.node) && p.heard).map((p) => p.node)]);
  }

  /** What runs of `app` here; with `ready`, `running` only once its process passed its probe. */
  private local(app: AppObject): LocalState {
    const tag = app.tag;
    if (this.stopping.has(tag)) return 'stopping';
    const r = this.runners.get(tag);
    if (r === undefined) return this.hosted.has(tag) ? 'running' : 'stopped';
    switch (r.state) {
      case 'up':
      case 'hung': {
        if (app.ready === undefined) return 'running';
        const w = this.readiness.get(tag);
        return w !== undefined && w.pid === r.pid && w.passed ? 'running' : 'starting';
      }
      case 'not-restarting':
        return 'not-restarting';
      case 'stopped':
        return 'stopped';
      default:
        return 'starting';
    }
  }

  /** One application: read it, decide, act. */
  private async pass(tag: string): Promise<void> {
    const unusable = (error: string) => {
      if (this.notes.get(tag) !== error) this.emit('activity', { kind: 'store-unavailable', tag, error, at: now() });
      this.notes.set(tag, error);
    };
    if (this.lease === undefined) return unusable('this node holds no lease in the store (lost, not yet taken again)');
    let stored: StoredApp | undefined;
    try {
      stored = await this.options.store.get(tag);
    } catch (err) {
      return unusable((err as Error).message);
    }
    if (stored === undefined) {
      this.cache.delete(tag);
      this.sayApps();
      if (this.runners.has(tag)) await this.act(tag, undefined, { kind: 'stop', why: 'no longer registered', planned: true });
      return;
    }
    this.cache.set(tag, stored);
    this.sayApps();
    const a = stored.app.address;
    if (a && stored.app.host !== this.me && !this.runners.has(tag) && !this.hosted.has(tag) && !this.stopping.has(tag) && hasAddress(a)) {
      // Left here by an earlier life (this node died holding it, or its agent was killed): the
      // HOST holds it now, and two holders would split the clients between them.
      await this.act(tag, stored, { kind: 'stop', why: `the service address ${a.address} was left here while ${stored.app.host ?? 'no server'} is HOST` });
      return;
    }
    const unready = this.unready(stored.app);
    const lastUnready = this.lastUnready.get(tag);
    const step = nextStep(stored.app, {
      me: this.me, alive: this.alive(), heard: this.heard(), leased: this.leased, local: this.local(stored.app),
      ...(unready ? { unready } : {}), ...(lastUnready ? { lastUnready } : {}),
    });
    if (step.kind === 'none' || step.kind === 'wait') {
      this.notes.set(tag, step.why);
      return;
    }
    // The step that failed waits out its pause (its note says what failed and when it is tried
    // again); another step (an operator's unload, say) does not.
    const retry = this.retries.get(tag);
    if (retry !== undefined && retry.step === step.kind && now() < retry.at) return;
    await this.act(tag, stored, step);
  }

  private async act(tag: string, stored: StoredApp | undefined, step: Exclude<Step, { kind: 'none' | 'wait' }>): Promise<void> {
    const t0 = now();
    this.emit('activity', { kind: 'step', tag, step, at: t0 });
    try {
      await this.perform(tag, stored, step);
      this.retries.delete(tag);
      this.emit('activity', { kind: 'done', tag, step: step.kind, at: now(), ms: now() - t0 });
    } catch (err) {
      // Tried again after a pause that doubles with each failure in a row (a step that fails for
      // good, such as an address on an interface this node lacks, would otherwise be retried on
      // every pass and flood the log). A conflict is read again at once; a store that did not
      // answer is tried again after the first pause only (a failover must not wait out a long
      // pause once the store is back).
      const last = this.retries.get(tag);
      const failures = (last?.step === step.kind ? last.failures : 0) + 1;
      const pause = err instanceof StoreConflictError ? 0 : err instanceof StoreUnavailableError ? RETRY_FIRST_MS : Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (failures - 1));
      this.retries.set(tag, { step: step.kind, failures, at: now() + pause });
      this.notes.set(tag, `${step.kind} failed: ${(err as Error).message}${pause > 0 ? ` (tried again in ${pause} ms)` : ''}`);
      this.emit('activity', { kind: 'failed', tag, step: step.kind, error: (err as Error).message, at: now() });
      if (pause > 0) {
        setTimeout(() => this.schedule(tag), pause).unref();
        return;
      }
    }
    this.schedule(tag); // what the step changed may call for the next one
  }

  private async perform(tag: string, stored: StoredApp | undefined, step: Exclude<Step, { kind: 'none' | 'wait' }>): Promise<void> {
    const { store } = this.options;
    const note = (why: string) => ({ by: this.me, why });
    switch (step.kind) {
      case 'stop':
        await this.stopHere(tag, stored?.app, step.planned ? 'user' : 'failure');
        return;
      case 'claim': {
        const s = stored!;
        const from = s.app.host;
        await store.update(s, { ...s.app, host: this.me, state: 'loading', failedOver: step.failover, releasedTo: undefined, request: undefined }, note(step.why));
        if (from !== null && from !== this.me && s.app.state !== 'released') {
          // The dead HOST cannot say it itself: its member is down (published once, by the winner).
          this.options.publish([this.member(s.app, from, 'DOWN', 'failure')]);
        }
        return;
      }
      case 'start':
        await this.startHere(stored!);
        return;
      case 'mark-up': {
        const s = stored!;
        const w = this.readiness.get(tag);
        const why = w?.passedAt !== undefined ? `loaded and ready: ${describeProbe(s.app)} passed ${Math.round(w.passedAt - w.since)} ms after its start` : 'loaded';
        await store.update(s, { ...s.app, state: 'up', failedOn: [] }, note(why));
        this.lastUnready.delete(tag);
        this.options.publish([this.member(s.app, this.me, 'UP', this.reasonOf(s))]);
        return;
      }
      case 'fail-start':
        // Counted by the restart policy as any exit: a restart after backoffMs, or NOT_RESTARTING
        // (then the next pass hands it on, saying why).
        this.lastUnready.set(tag, step.why);
        this.dropWatch(tag);
        await this.runners.get(tag)?.kill();
        return;
      case 'release': {
        const s = stored!;
        await this.stopHere(tag, s.app, 'user');
        await store.update(s, { ...s.app, state: 'released', releasedTo: step.to, request: undefined }, note(step.why));
        return;
      }
      case 'unload': {
        const s = stored!;
        await this.stopHere(tag, s.app, 'user');
        await store.update(s, { ...s.app, host: null, state: 'unloaded', request: undefined }, note(step.why));
        return;
      }
      case 'hand-on': {
        const s = stored!;
        await this.stopHere(tag, s.app, 'failure', false);
        const next = step.to === null ? { host: null, state: 'failed' as const } : { host: step.to, state: 'loading' as const, failedOver: true };
        await store.update(s, { ...s.app, ...next, failedOn: [...s.app.failedOn, this.me], request: undefined }, note(step.to === null ? `${step.why}, and no other server is alive to take it` : `${step.why}: handed to ${step.to}`));
        this.options.publish([this.member(s.app, this.me, 'NOT_RESTARTING', 'failure')]);
        return;
      }
    }
  }

  /**
   * This node is HOST and nothing runs here: check the RESOURCE LIST (missing: hand it on),
   * fence the previous HOST if it is not alive, take the service address (closing the dead
   * HOST's connections to it), then run COMMAND.
   */
  private async startHere(s: StoredApp): Promise<void> {
    const app = s.app;
    const missing = [...(await missingResources(app.resources)), ...missingInterface(app.address)];
    if (missing.length > 0) {
      const heard = this.heard();
      const next = failoverOrder(app, this.me).find((n) => heard.has(n) && !app.failedOn.includes(n));
      const why = `${this.me} lacks its resources (${missing.join('; ')})`;
      const to = next === undefined ? { host: null, state: 'failed' as const } : { host: next, state: 'loading' as const, failedOver: true };
      await this.options.store.update(s, { ...app, ...to, failedOn: [...app.failedOn, this.me] }, { by: this.me, why: next === undefined ? `${why}, and no other server is alive to take it` : `${why}: handed to ${next}` });
      return;
    }
    const prev = this.lastHost(s);
    const prevDead = prev !== null && prev !== this.me && !this.alive().has(prev);
    if (prevDead && this.options.fence) await this.options.fence(prev);
    if (app.address) {
      const a = app.address;
      if (prevDead && a.port !== undefined) {
        const known = this.options.known?.(prev, { address: a.address, port: a.port }) ?? [];
        await closePeers({ address: a.address, port: a.port, known, takeover: { interface: a.interface, prefixLength: a.prefixLength } }, { method: 'rst', timeoutMs: 2000 });
      } else {
        await takeOverAddress(a.interface, a.address, a.prefixLength);
      }
    }
    this.options.publish([this.member(app, this.me, 'COMING_UP', this.reasonOf(s))]);
    if (app.command === undefined) {
      this.hosted.add(app.tag); // a cluster-aware application started by other means says itself when it is up (ClusterApp.ready())
      return;
    }
    const r = this.runner(app);
    await r.restart().catch(async (err: Error) => {
      await r.stop().catch(() => undefined);
      throw err;
    });
  }

  /** Stops the application here (its unload COMMAND first, if any) and releases its address. */
  private async stopHere(tag: string, app: AppObject | undefined, reason: string, publish = true): Promise<void> {
    const r = this.runners.get(tag);
    const wasHosted = this.hosted.delete(tag);
    this.dropWatch(tag);
    this.lastUnready.delete(tag);
    this.stopping.add(tag);
    try {
      if (r && app?.command?.unload && r.state !== 'stopped') {
        await run(app.command.unload[0]!, app.command.unload.slice(1), { timeout: app.command.stopGraceMs || 5000 }).catch(() => undefined);
      }
      await r?.stop();
      this.runners.delete(tag);
      const a = app?.address;
      if (a) releaseAddress(a);
      if (publish && app && (r || wasHosted)) this.options.publish([this.member(app, this.me, 'DOWN', reason)]);
    } finally {
      this.stopping.delete(tag);
    }
  }

  /**
   * With `ready`, HOST here and its process running without having passed its probe: how long,
   * and the probe's last error. Keeps one watch per process (made here for a new process, an
   * adopted one, or a changed probe; a watch of a process gone is dropped).
   */
  private unready(app: AppObject): Unready | undefined {
    const r = this.runners.get(app.tag);
    const pid = r !== undefined && (r.state === 'up' || r.state === 'hung') ? r.pid : undefined;
    let w = this.readiness.get(app.tag);
    if (w !== undefined && (pid === undefined || w.pid !== pid || app.ready === undefined || w.key !== readinessKey(app))) {
      this.dropWatch(app.tag);
      w = undefined;
    }
    if (pid === undefined || app.ready === undefined || app.host !== this.me || this.stopping.has(app.tag)) return undefined;
    if (w === undefined) {
      w = ReadinessWatch.of(app, pid, r!.since);
      w.on('ready', () => this.schedule(app.tag));
      this.readiness.set(app.tag, w);
    }
    if (w.passed) return undefined;
    return { runningMs: now() - w.since, probe: describeProbe(app), ...(w.lastError !== undefined ? { lastError: w.lastError } : {}) };
  }

  private dropWatch(tag: string): void {
    this.readiness.get(tag)?.stop();
    this.readiness.delete(tag);
  }

  /** Stops everything run here (lease lost): the store is not written (it cannot be). */
  private async stopAll(why: string): Promise<void> {
    for (const tag of [...this.runners.keys(), ...this.hosted]) {
      this.notes.set(tag, why);
      await this.stopHere(tag, this.cache.get(tag)?.app, 'failure').catch(() => undefined);
    }
  }

  /** The HOST before the current one, from the history (null: none, or it was unloaded). */
  private lastHost(s: StoredApp): string | null {
    for (let i = s.history.length - 1; i >= 0; i--) {
      const h = s.history[i]!;
      if (h.from && h.from.host !== h.to.host) return h.from.host;
    }
    return null;
  }

  /** The reason of this HOST's COMING_UP and UP: a failover, a failback (it was released here), or an operator's (a load, a switchover). */
  private reasonOf(s: StoredApp): string {
    if (s.app.failedOver) return 'failure';
    const came = [...s.history].reverse().find((h) => h.to.host === this.me && h.from?.host !== this.me);
    return came?.from?.state === 'released' && s.app.primary === this.me ? 'failback' : 'user';
  }

  private member(app: AppObject, node: string, status: EventStatus, reason: string): ServiceEvent {
    return { type: 'service_member', status, service: app.tag, database: this.options.database, instance: `${app.tag}@${node}`, node, cardinality: status === 'UP' ? 1 : 0, ...this.options.stamp(reason) };
  }

  /** The application's process here, as an instance the agent runs. */
  private runner(app: AppObject): InstanceMonitor {
    const existing = this.runners.get(app.tag);
    if (existing) return existing;
    const config: InstanceConfig = {
      name: `${app.tag}@${this.me}`,
      node: this.me,
      command: app.command!.load,
      restart: app.restart,
      stopGraceMs: app.command!.stopGraceMs,
      drainMs: 0,
      ports: [],
      method: 'rst',
    };
    const m = new InstanceMonitor(config, { stateDir: this.options.stateDir, ...(this.options.childNice !== undefined ? { childNice: this.options.childNice } : {}) });
    m.on('event', (event) => {
      this.emit('activity', { kind: 'instance', tag: app.tag, event });
      this.schedule(app.tag);
    });
    this.runners.set(app.tag, m);
    return m;
  }

  /** An application process recorded by an earlier agent and still running is adopted (the next pass decides whether it stays). */
  private async adoptRecorded(): Promise<void> {
    for (const s of this.cache.values()) {
      if (!serversOf(s.app).includes(this.me) || s.app.command === undefined) continue;
      const record = await readRecord(recordPath(this.options.stateDir, `${s.app.tag}@${this.me}`)).catch(() => undefined);
      if (!record) continue;
      const found = await openRecorded(record);
      if (!('watch' in found)) continue;
      found.watch.close();
      await this.runner(s.app).start(); // adopts the recorded process (InstanceMonitor checks it again)
    }
  }
}

/** The service address's interface, when this node has none of that name (an application registered with a typo, say). */
function missingInterface(a: AppObject['address']): string[] {
  if (a === undefined) return [];
  try {
    addressEntries(a.interface, a.address);
    return [];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENODEV') return [`interface ${a.interface} (for the service address ${a.address}) is not on this node`];
    throw err;
  }
}

/** Removes the service address from its interface if it is there (an address already gone is fine). */
function releaseAddress(a: NonNullable<AppObject['address']>): void {
  if (hasAddress(a)) removeAddress(a.interface, a.address, a.prefixLength);
}

/** Whether the service address is on its interface here (never, when this node has no such interface). */
function hasAddress(a: NonNullable<AppObject['address']>): boolean {
  try {
    return addressEntries(a.interface, a.address).some((e) => e.prefixLength === a.prefixLength);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENODEV') return false;
    throw err;
  }
}
