// The failure plan for a dead peer node: when the heartbeat detector declares it down, speak for
// its service — take the address over and close every connection known — at once, once `before`
// (fencing it off the shared disks) has succeeded. The connections come from the peer's
// replicated table (`known`: what the peer's own agent told us, the only source on a switched
// network) merged with what this host's tracker saw (on a port mirror of the peer's port).
// An address the peer holds under an address lease (agent/address-lease.ts) is added only once
// that lease has certainly run out (`leases`): the takeover waits after `before`, and ends
// without taking anything over if the peer turns out to be alive and holding the address, or
// leaves in a planned way, meanwhile. Then (`probe`) it asks the link whether the peer's kernel
// has really removed the address, and adds it only once nobody answers for it.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { NodeEventSource } from '../monitor/witnessed-node-events.js';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import { BoundaryWatch } from '../net/boundary-watch.js';
import type { DeadConnection } from '../net/close-engine.js';
import { canonicalAddress, formatEndpoint, type Endpoint } from '../net/endpoint.js';
import { closePeers, type ClosePeersReport } from '../net/close-peers.js';
import { parseCloseMethod, type CloseMethod } from '../net/close-method.js';
import type { FlowTracker } from '../net/flow-tracker.js';
import { RstGuard } from '../net/rst-guard.js';
import { continueConnections, type ContinuedConnection, type ContinueOptions, type ContinueReport } from '../net/shadow/continue-connections.js';
import type { RelayHandOff } from '../net/relay-keeper/keeper-client.js';
import type { Relay, RelayEnd } from '../net/shadow/connection-relay.js';
import type { ContinuePlugin } from '../net/shadow/exchange-tracker.js';
import type { PeerShadowStats } from '../net/shadow/peer-shadow.js';
import type { ShadowCapture } from '../net/shadow/shadow-capture.js';
import type { ShadowStats } from '../net/shadow/shadow-table.js';
import { runSwitchover, SwitchoverError, type BackupSwitchoverOptions, type SwitchoverReport } from './switchover-backup.js';
import type { LeaseHeld, LeaseProbeOutcome, LeaseProbeRequest, LeaseVerdict, PeerLeases } from './address-lease.js';
import { resetIfSelfConnected, selfConnectError } from '../net/self-connect.js';

export interface PeerTakeoverOptions {
  /** The heartbeat agent, or a WitnessedNodeEvents in front of it. */
  heartbeat: NodeEventSource;
  /** The peer node whose service this host takes over. */
  peer: string;
  service: { address: string; port: number };
  /**
   * On a port mirror of the peer's port (the config's `capture`) it tracks the service's
   * connections before the failure (with payload, for goodbyes: its streams are followed); on
   * `interface` it hears the peers' answers after it (closePeers listens on `interface` itself
   * when the tracker captures elsewhere).
   */
  tracker: FlowTracker;
  /**
   * When `tracker` captures elsewhere (a port mirror): a running capture on `interface`, where
   * the peers' answers arrive after the takeover (closePeers sets one up at the close without it).
   */
  answers?: FlowTracker;
  /** The peer's connections as its agent replicated them, read at the moment of the takeover. */
  known?: () => DeadConnection[];
  interface: string;
  prefixLength: number;
  method?: CloseMethod | string;
  /** Runs first and must succeed, or nothing is taken over (the agent fences the peer here). */
  before?: (down: Extract<DetectorEvent, { kind: 'node-down' }>) => Promise<unknown>;
  /**
   * The peers' address leases: a leased address is added only once its lease has run out.
   * `abandoned` (when given) is asked between probe rounds.
   */
  leases?: Pick<PeerLeases, 'waitOut'> & Partial<Pick<PeerLeases, 'abandoned'>>;
  /**
   * After a lease was waited out, before the address is added: whether the peer's kernel still
   * holds it (address-lease.ts probeLeaseRanOut). Throws when it is still held past the bound:
   * the takeover fails with that error, nothing added.
   */
  probe?: (request: LeaseProbeRequest) => Promise<LeaseProbeOutcome>;
  /**
   * Continue the peer's connections here (docs/CONTINUE.md) instead of closing them: the shadow
   * of its service connections (a capture on the mirror of its port, or the peer agent's own
   * stream, started by the caller), the local service they go to, the plugin, and the promotion
   * of that service, run after `before` (a failed promotion, or any other failure of the
   * continue: the connections are closed as without `continue`, and `done.continueError` says
   * why; a shadow whose capture cannot be set up emits `failed` at once and is dropped). `proveTail`: the shadow
   * may lack the copy's end (the peer's own stream): each connection is proven by its client first.
   * `openShadow` starts a shadow (at once, and again after each takeover: the peer may come back
   * and serve again); it throws what the capture throws.
   */
  continue?: {
    openShadow: () => Shadow;
    proveTail?: boolean;
    upstream: { host: string; port: number };
    plugin: ContinuePlugin;
    promote?: () => Promise<void>;
    /**
     * The relay keeper's handOff (RelayKeeperClient.handOff): the continued connections' relays go
     * to it once in their steady state, and outlive this agent (ContinueOptions.keeper).
     */
    keeper?: (relay: { client: string; service: string; upstream: string; peer: string }) => RelayHandOff;
    /**
     * Whether the relay keeper holds this client's connection (one continued here, by this life
     * of the agent or an earlier one): like this agent's own relays, not the peer's to lose.
     */
    kept?: (client: Endpoint) => boolean;
  };
}

type NodeDown = Extract<DetectorEvent, { kind: 'node-down' }>;

/** How long after a takeover its spent shadow is closed and a fresh one opened, ms (see reopenShadowLater). */
const SHADOW_REOPEN_DELAY_MS = 1000;

/** What a shadow says of itself (ShadowCapture's stats; a PeerShadow adds its stream's). */
export type ShadowHealth = ShadowStats & {
  captureDrops: number;
  backlogDrops?: number;
  /** A mirror's capture: whether its ring is set up (connections opened before are not followed). */
  capturing?: boolean;
  /** With matchWrites: the probe of the primary's replication stream (not started: the capture has not started yet). */
  streamProbe?: { connected: boolean; probes: number; errors: number; lastError: string | null };
  /**
   * With walCheck: the capture of this node's standby's replication connection (times in ms since
   * the epoch, null: not yet): when its ring was set up, when the connection and WAL were last seen;
   * `unseen`: nothing of the connection for more than WAL_SEEN_WITHIN_MS (30 s) since it started
   * or was last seen (a wrong walCheck.primary, say): a takeover then replays no unanswered request as it was (each is unproven: continue.unproven).
   */
  walWatch?: { startedMs: number | null; lastSeenMs: number | null; lastWalMs: number | null; unseen: boolean };
  /**
   * The peer's connections to the service that its replicated table lists and this shadow does
   * not follow (opened before the shadow started, or their handshake was not seen): a takeover
   * now resets them, exactly. Absent without replication, or while the peer is not heard.
   */
  unfollowed?: number;
} & Partial<Pick<PeerShadowStats, 'connected' | 'lagMs' | 'lastMarkMs' | 'breaks' | 'lastError'>>;

/**
 * What a takeover needs of a shadow (ShadowCapture, PeerShadow). checkReplays: the shadow can
 * tell which replays must not run (ContinueOptions.checkReplays), once `promoted` resolves.
 */
export type Shadow = Pick<ShadowCapture, 'plans' | 'close'> &
  Partial<Pick<ShadowCapture, 'ready' | 'clientDataSince' | 'table'>> & {
    stats(): ShadowHealth;
    checkReplays?: (promoted: Promise<unknown>) => NonNullable<ContinueOptions['checkReplays']>;
    /**
     * Whether a client of the service is the shadow's own (a matchWrites stream probe): left out
     * of a takeover's plans already, and here out of what the peer's table lists (not reset).
     */
    ownClient?: (client: Endpoint) => boolean;
  };

/** The takeover waits out the peer's lease on the address (until: ms since the epoch). */
export interface TakeoverWaiting {
  down: NodeDown;
  address: string;
  seconds: number;
  until: number;
}

/** The takeover ended without taking anything over: the peer holds the address (alive) or left. */
export interface TakeoverAbandoned {
  down: NodeDown;
  address: string;
  why: string;
  at: number;
}

/** The peer's kernel still held its leased address after the lease: the takeover probes until it is gone. */
export interface TakeoverHeld extends LeaseHeld {
  down: NodeDown;
}

export interface TakeoverDone {
  down: Extract<DetectorEvent, { kind: 'node-down' }>;
  report: ClosePeersReport;
  /** Connections the peer's replicated table listed for this service at the takeover (not those this agent relays itself). */
  replicated: number;
  /** When closePeers was called and when it returned (ms since the epoch). */
  startedAt: number;
  doneAt: number;
  /** With `continue`: what was continued and reset (report.results holds the resets' closes). */
  continued?: Omit<ContinueReport, 'continued'> & {
    connections: number;
    /** The addon's restore time per connection, µs: median and largest. */
    restoreUs: { median: number; max: number };
    /** Connections continued in the middle of a reply (the replay checked against what the peer had sent). */
    midReply: number;
    /** Connections whose cut reply the upstream was asked for from where it stopped (an HTTP range). */
    resumed: number;
    /** Of `connections`, those only ended cleanly: a protocol goodbye (PostgreSQL inside a transaction: 57P01), or the FIN of a server that had closed its side. */
    goodbyes: number;
    /** Of `connections`, those inside a transaction that their relays rebuild (PostgreSQL: proven to have written nothing), or say the goodbye when that fails. */
    transactions: number;
    /** Each continued connection (the CLI logs them at debug level): its client, what was replayed or checked, µs and ms as in ContinuedConnection. */
    each: Array<{ client: string; replayBytes: number; preambleReplies: number; midReplyBytes: number; resumed?: string; restoreUs: number; tailProvenMs?: number; goodbye?: string; transaction?: string; lateBytes?: number }>;
    /** With proveTail: ms from a restore until its client showed the copy whole, median and largest. */
    tailProvenMs?: { median: number; max: number };
    /**
     * Frames the shadow's capture reported lost while it followed the peer (its ring's drops, or
     * the LOSS the peer's stream reported): the connections open then could not all be continued.
     * A mirror that drops frames before they reach this host (a SPAN port oversubscribed) is not
     * counted here: its holes show in the resets' reasons.
     */
    captureDrops: number;
    /**
     * A mirror's shadow: this host's input-backlog drops while it followed the peer (host-wide,
     * an upper bound of the mirror's own; each made the connections open then prove their tails).
     */
    backlogDrops?: number;
  };
  /** With `continue`: why nothing was continued (the promotion failed); the connections were closed. */
  continueError?: string;
  /**
   * The peer's address lease waited out first: its length, how long this takeover waited (the
   * probes included), and what the probes of the link found (with `held` when the peer's kernel
   * kept the address past its lease: how long at least, ms).
   */
  lease?: { seconds: number; waitedMs: number; probe?: Extract<LeaseProbeOutcome, { kind: 'gone' }> };
}

/** A continued connection's relay ended (RelayEnd): its client as `address:port`. */
export type ContinuedEnded = RelayEnd & { client: string };

export class PeerTakeover extends EventEmitter<{ done: [TakeoverDone]; failed: [Error]; waiting: [TakeoverWaiting]; held: [TakeoverHeld]; abandoned: [TakeoverAbandoned]; 'relay-ended': [ContinuedEnded] }> {
  private running: Promise<void> | undefined;
  private guard: RstGuard | undefined;
  /** Relays of the connections continued here (by client address|port): they live as long as this agent. */
  private readonly relays = new Map<string, Relay>();
  /** With `continue`: the shadow following the peer's connections now (undefined: none could be opened). */
  private shadow: Shadow | undefined;
  /** A takeover's spent shadow and the timer that closes it and opens the next (reopenShadowLater). */
  private reopening: { spent: Shadow | undefined; timer: NodeJS.Timeout } | undefined;
  private closed = false;
  private readonly method: CloseMethod;
  /** For goodbyes: the streams the tracker sees, followed (a port mirror shows them). */
  private readonly watch: BoundaryWatch | undefined;
  private readonly onEvent = (e: DetectorEvent) => {
    if (e.kind === 'node-down' && e.node === this.options.peer && !this.running) {
      const run = this.takeOver(e);
      this.running = run;
      void run.finally(() => {
        if (this.running === run) this.running = undefined;
      });
    }
  };

  constructor(private readonly options: PeerTakeoverOptions) {
    super();
    this.method = typeof options.method === 'string' ? parseCloseMethod(options.method) : (options.method ?? { kind: 'rst' });
    if (this.method.kind === 'goodbye') this.watch = new BoundaryWatch(options.tracker, options.service, this.method.plugin);
    this.shadow = options.continue?.openShadow();
    if (this.shadow) this.watchShadow(this.shadow);
    options.heartbeat.on('event', this.onEvent);
  }

  /** A shadow whose capture cannot be set up (ENOMEM) is dropped and said so at once: a takeover then closes the connections instead. */
  private watchShadow(shadow: Shadow): void {
    shadow.ready?.catch((err: Error) => {
      if (this.shadow !== shadow) return;
      this.shadow = undefined;
      shadow.close();
      this.emit('failed', new Error(`the shadow of ${this.options.peer}'s connections could not be started (a takeover will close them, not continue them): ${err.message}`));
    });
  }

  /**
   * A fresh shadow after a takeover took the last one's plans (or gave up on them): without it,
   * the peer's connections after it comes back would not be followed, and a second takeover
   * would continue none of them. Opened a moment later, once the continued connections are
   * under way: closing a capture and opening the next once held the event loop ~40 ms (a lab
   * trace showed every client's first reply 60 ms late); both now run on libuv workers, which
   * the restores use too, and the delay costs nothing, the peer being silent. The spent shadow
   * is out of use at once (a takeover meanwhile finds none and closes the connections instead
   * of continuing them twice).
   */
  private reopenShadowLater(): void {
    const spent = this.shadow;
    this.shadow = undefined;
    clearTimeout(this.reopening?.timer);
    this.reopening?.spent?.close();
    const timer = setTimeout(() => {
      this.reopening = undefined;
      spent?.close();
      if (!this.shadow) this.openShadow();
    }, SHADOW_REOPEN_DELAY_MS);
    this.reopening = { spent, timer };
  }

  private openShadow(): void {
    if (this.closed || !this.options.continue) return;
    try {
      this.shadow = this.options.continue.openShadow();
      this.watchShadow(this.shadow);
    } catch (err) {
      this.emit('failed', new Error(`the shadow of ${this.options.peer}'s connections could not be started again (a next takeover will close them): ${(err as Error).message}`));
    }
  }

  /**
   * Installs the RST guard for the service address ahead of time (for fin, break and goodbyes):
   * starting nft at the moment of failover would cost ~25 ms. Harmless while the address is not
   * ours, and never in the way of a new client's connect (it drops only bare RSTs, not a SYN's
   * RST+ACK); removed once the takeover is done, so a service restarted here behaves normally.
   * If this process is killed before it can remove it, the next start's sweep does.
   */
  async prepare(): Promise<void> {
    if ((this.method.kind === 'rst' && !this.options.continue) || this.guard) return;
    try {
      this.guard = await RstGuard.install([this.options.service.address]);
    } catch {
      // No nftables here: closePeers tries again at failover and reports the guard as failed.
      this.guard = undefined;
    }
  }

  /** True while a takeover runs (from the node-down to the guard's removal). */
  get busy(): boolean {
    return this.running !== undefined;
  }

  /** The peer this plan takes over from, and its service endpoint. */
  get peer(): string {
    return this.options.peer;
  }

  get service(): { address: string; port: number } {
    return this.options.service;
  }

  /** With `continue`: the shadow's own account (connections followed, losses, its stream, the peer's it does not follow), or undefined. */
  shadowHealth(): ShadowHealth | undefined {
    const shadow = this.shadow;
    const health = shadow?.stats();
    if (!shadow || !health) return health;
    // A dead peer's table is what it left: its connections were continued or reset already.
    const peerUp = this.options.heartbeat.detector.status().some((p) => p.node === this.options.peer && p.up);
    const known = peerUp ? this.options.known?.() : undefined;
    if (!known || !shadow.table) return health;
    // As a takeover now would reset them (continueConnections' alsoReset): the peer's table for
    // this service, less this agent's own relays and the shadow's own probe.
    const { address, port } = this.options.service;
    const here = canonicalAddress(address);
    let unfollowed = 0;
    for (const k of known) {
      if (k.local.port !== port || canonicalAddress(k.local.address) !== here) continue;
      if (this.relaysHere(k.peer) || shadow.ownClient?.(k.peer) || shadow.table.follows(k.peer, k.local)) continue;
      unfollowed++;
    }
    return { ...health, unfollowed };
  }

  /** Connections continued here whose relays run in this process now (not yet, or never, handed to the relay keeper): its stop resets them. */
  get relaying(): number {
    let n = 0;
    for (const r of this.relays.values()) if (!r.stats.kept) n++;
    return n;
  }

  /** Resolves when no takeover is running (the agent's stop lets a running one finish). */
  async settled(): Promise<void> {
    await this.running;
  }


  /** Stops listening and removes the guard prepared ahead (resolves once nft removed it). */
  async close(): Promise<void> {
    this.options.heartbeat.off('event', this.onEvent);
    this.closed = true;
    this.watch?.close();
    this.shadow?.close();
    clearTimeout(this.reopening?.timer);
    this.reopening?.spent?.close();
    this.reopening = undefined;
    // Those the relay keeper holds outlive the agent, and so may those handed to it whose answer
    // has not come (the keeper relays them on if it took them); the rest end with it.
    for (const r of this.relays.values()) if (!r.stats.kept && !r.stats.handingOver) r.close('the agent stopped');
    this.relays.clear();
    const guard = this.guard;
    this.guard = undefined;
    await guard?.remove().catch(() => undefined);
  }

  /**
   * A planned switchover of the peer's service to this node (agent/switchover-backup.ts): the
   * peer's agent hands its connections over exactly, this node promotes its service, takes the
   * address and continues them. Rejects with a SwitchoverError (phase 'refused' or 'aborted':
   * the peer serves on) when there is no `continue`, no shadow, a takeover running, or the
   * switchover failed. The relays live with this plan, as a takeover's.
   */
  async switchover(s: Pick<BackupSwitchoverOptions, 'node' | 'key' | 'primary' | 'catchUp' | 'quietWaitMs' | 'barrier' | 'goodbye'>): Promise<SwitchoverReport> {
    const c = this.options.continue;
    if (!c) throw new SwitchoverError(`the takeover of ${this.options.peer} has no continue section: nothing could carry its connections`, 'refused');
    if (this.running) throw new SwitchoverError(`a takeover or switchover of ${this.options.peer}'s service is running`, 'refused');
    const shadow = this.shadow;
    if (!shadow) throw new SwitchoverError(`no shadow of ${this.options.peer}'s connections is running (their sessions are unknown)`, 'refused');
    let result: Awaited<ReturnType<typeof runSwitchover>> | undefined;
    const run = (async () => {
      result = await runSwitchover({
        ...s,
        service: this.options.service,
        interface: this.options.interface,
        prefixLength: this.options.prefixLength,
        shadow,
        upstream: c.upstream,
        plugin: c.plugin,
        ...(c.promote ? { promote: c.promote } : {}),
        upstreamAccepts: () => upstreamAccepts(c.upstream),
        guard: this.guard === undefined,
        ...this.keeperOption(c),
      });
    })();
    this.running = run;
    try {
      await run;
    } catch (err) {
      // A switchover that moved the address used up the shadow's connections: a fresh one.
      if (err instanceof SwitchoverError && err.phase === 'after-release') {
        this.reopenShadowLater();
        await this.dropGuard();
      }
      throw err;
    } finally {
      if (this.running === run) this.running = undefined;
    }
    this.reopenShadowLater();
    // As after a takeover: the service here now behaves normally (its own RSTs go out).
    await this.dropGuard();
    this.keepRelays(result!.continued);
    return result!.report;
  }

  /** Whether this node relays the client's connection: in this process, or in the relay keeper. */
  private relaysHere(client: Endpoint): boolean {
    return this.relays.has(clientKey(client)) || this.options.continue?.kept?.(client) === true;
  }

  /** ContinueOptions.keeper for this peer's connections, when the agent has a relay keeper. */
  private keeperOption(c: NonNullable<PeerTakeoverOptions['continue']>): Pick<ContinueOptions, 'keeper'> {
    const keeper = c.keeper;
    return keeper ? { keeper: (r) => keeper({ ...r, peer: this.options.peer }) } : {};
  }

  /** Holds the relays of connections continued here until each ends. */
  private keepRelays(continued: readonly ContinuedConnection[]): void {
    for (const x of continued) {
      const k = clientKey(x.client);
      this.relays.set(k, x.relay);
      void x.relay.done.then((end) => {
        if (this.relays.get(k) === x.relay) this.relays.delete(k);
        this.emit('relay-ended', { client: `${x.client.address}:${x.client.port}`, ...end });
      });
    }
  }

  private async dropGuard(): Promise<void> {
    const guard = this.guard;
    this.guard = undefined;
    await guard?.remove().catch(() => undefined);
  }

  private async takeOver(down: NodeDown): Promise<void> {
    const startedAt = now();
    let continueError: string | undefined;
    try {
      await this.options.before?.(down);
      let lease: TakeoverDone['lease'];
      if (this.options.leases) {
        const address = this.options.service.address;
        const waitFrom = now();
        const v: Exclude<LeaseVerdict, { kind: 'wait' }> = await this.options.leases.waitOut(down.node, address, down.at, (w) => this.emit('waiting', { down, address, seconds: w.seconds, until: w.until }));
        if (v.kind === 'abandon') {
          this.emit('abandoned', { down, address, why: v.why, at: now() });
          return;
        }
        if (v.waited) {
          let probe: Extract<LeaseProbeOutcome, { kind: 'gone' }> | undefined;
          if (this.options.probe) {
            const leases = this.options.leases;
            const p = await this.options.probe({
              peer: down.node,
              address,
              interface: this.options.interface,
              decidedAt: down.at,
              seconds: v.waited.seconds,
              stop: () => leases.abandoned?.(down.node, address, down.at),
              onHeld: (h) => this.emit('held', { down, ...h }),
            });
            if (p.kind === 'stopped') {
              this.emit('abandoned', { down, address, why: p.why, at: now() });
              return;
            }
            probe = p;
          }
          lease = { seconds: v.waited.seconds, waitedMs: Math.round(now() - waitFrom), ...(probe ? { probe } : {}) };
        }
      }
      // A connection this agent relays itself is not the peer's to lose: after a switchover the
      // peer's kernel keeps the moved sockets (frozen), its table still lists them, and a later
      // takeover would reset every client this node serves.
      // Nor is the shadow's own probe of the service (a client the peer's table lists too).
      const own = this.shadow?.ownClient;
      const known = (this.options.known?.() ?? []).filter((k) => !this.relaysHere(k.peer) && !own?.(k.peer));
      const c = this.options.continue;
      const shadow = this.shadow;
      if (c && !shadow) {
        continueError = 'no shadow of its connections could be started after the last takeover';
        this.reopenShadowLater(); // tried again, for the peer's next life
      } else if (c && shadow) {
        // The promotion runs while the plans are taken, the upstream connections opened, the
        // sockets restored and the address taken; only the relays' replays wait for it
        // (ContinueOptions.ready). A relay to an upstream that refuses would end every continued
        // connection a moment later: checked before the replays too.
        const promoted = (async () => {
          try {
            await c.promote?.();
          } catch (err) {
            throw new Error(`the local service was not promoted: ${(err as Error).message}`);
          }
          await upstreamAccepts(c.upstream);
        })();
        promoted.catch(() => undefined); // its rejection is read below
        try {
          const done = await this.continueHere(c, shadow, known, promoted);
          this.emit('done', { down, ...done, replicated: known.length, startedAt, doneAt: now(), ...(lease ? { lease } : {}) });
          return;
        } catch (err) {
          // Nothing continued: a failed promotion (nothing was replayed, every relay reset its
          // client), or the continue's own failure (the shadow's plans, the address). The
          // connections are closed below, as without `continue`.
          continueError = await promoted.then(() => `the continue failed: ${(err as Error).message}`, (e: Error) => e.message);
        } finally {
          this.reopenShadowLater();
        }
      }
      const watch = this.watch;
      const report = await closePeers(
        {
          ...this.options.service,
          tracker: this.options.tracker,
          ...(this.options.answers ? { answers: this.options.answers } : {}),
          known,
          ...(watch ? { boundary: (peer, local) => watch.state(peer, local) } : {}),
          takeover: { interface: this.options.interface, prefixLength: this.options.prefixLength },
        },
        { method: this.method, ...(this.guard ? { guard: false } : {}) },
      );
      this.emit('done', { down, report, replicated: known.length, startedAt, doneAt: now(), ...(lease ? { lease } : {}), ...(continueError ? { continueError } : {}) });
    } catch (err) {
      // Why nothing was continued, if that came first, is part of what failed.
      this.emit('failed', continueError === undefined ? (err as Error) : Object.assign(new Error(`${continueError}; then closing the connections failed: ${(err as Error).message}`), { cause: err }));
    } finally {
      await this.guard?.remove().catch(() => undefined);
      this.guard = undefined;
    }
  }

  /** Continues what the shadow can prove, resets the rest (and what only the replicated table knew). */
  private async continueHere(c: NonNullable<PeerTakeoverOptions['continue']>, shadow: Shadow, known: DeadConnection[], promoted: Promise<void>): Promise<Pick<TakeoverDone, 'report' | 'continued'>> {
    const address = this.options.service.address;
    const r = await continueConnections({
      plans: () => shadow.plans(address),
      address,
      interface: this.options.interface,
      prefixLength: this.options.prefixLength,
      upstream: c.upstream,
      plugin: c.plugin,
      guard: this.guard === undefined,
      alsoReset: known.filter((k) => k.local.port === this.options.service.port),
      ...(c.proveTail ? { proveTail: {} } : {}),
      ready: promoted,
      ...(shadow.checkReplays ? { checkReplays: shadow.checkReplays(promoted) } : {}),
      // A mirror's copy goes on after the plans: what clients sent the dead server meanwhile.
      ...(shadow.clientDataSince ? { lateClientData: shadow.clientDataSince.bind(shadow) } : {}),
      ...this.keeperOption(c),
    });
    this.keepRelays(r.continued);
    const results = r.reset.flatMap((x) => (x.close ? [x.close] : []));
    const { continued, ...rest } = r;
    return {
      report: { results, takeovers: [{ interface: this.options.interface, address, added: r.addressAdded }] },
      continued: {
        ...rest,
        connections: continued.length,
        restoreUs: medianMax(continued.map((x) => x.restoreUs)),
        midReply: continued.filter((x) => x.midReplyBytes > 0).length,
        resumed: continued.filter((x) => x.resumed !== undefined).length,
        goodbyes: continued.filter((x) => x.goodbye !== undefined).length,
        transactions: continued.filter((x) => x.transaction !== undefined).length,
        each: continued.map((x) => ({
          client: `${x.client.address}:${x.client.port}`,
          replayBytes: x.replayBytes,
          preambleReplies: x.preambleReplies,
          midReplyBytes: x.midReplyBytes,
          ...(x.resumed !== undefined ? { resumed: x.resumed } : {}),
          restoreUs: x.restoreUs,
          ...(x.tailProvenMs !== undefined ? { tailProvenMs: x.tailProvenMs } : {}),
          ...(x.goodbye !== undefined ? { goodbye: x.goodbye } : {}),
          ...(x.transaction !== undefined ? { transaction: x.transaction } : {}),
          ...(x.lateBytes ? { lateBytes: x.lateBytes } : {}),
        })),
        ...(c.proveTail ? { tailProvenMs: medianMax(continued.map((x) => x.tailProvenMs ?? 0)) } : {}),
        captureDrops: shadow.stats().captureDrops,
        ...(shadow.stats().backlogDrops !== undefined ? { backlogDrops: shadow.stats().backlogDrops } : {}),
      },
    };
  }
}

const now = () => performance.timeOrigin + performance.now();

const clientKey = (e: Endpoint) => `${canonicalAddress(e.address)}|${e.port}`;

/** Resolves once a TCP connection to the upstream is made (and closed); rejects naming it, within 2 s. */
function upstreamAccepts(upstream: { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: upstream.host, port: upstream.port, timeout: 2000 });
    const fail = (why: string) => {
      socket.destroy();
      reject(new Error(`the upstream ${formatEndpoint({ address: upstream.host, port: upstream.port })} does not accept connections (${why})`));
    };
    socket.once('connect', () => {
      if (resetIfSelfConnected(socket)) return fail(selfConnectError(upstream.host, upstream.port).message);
      socket.destroy();
      resolve();
    });
    socket.once('timeout', () => fail('no answer in 2000 ms'));
    socket.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
  });
}

function medianMax(values: number[]): { median: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const round = (v: number | undefined) => Math.round((v ?? 0) * 10) / 10;
  return { median: round(sorted[Math.floor(sorted.length / 2)]), max: round(sorted.at(-1)) };
}
