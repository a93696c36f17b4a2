// Sends and receives heartbeats on every link (one UDP socket per link) and feeds the failure
// detector; emits the detector's events. Bad datagrams (wrong key, malformed, a link id that
// does not match the socket it came in on, a node that is not a configured peer) are counted and
// dropped, never acted upon. Rejections that come from a configured peer's link address and port
// are also counted per peer, so "n2 is heard, but only with bad HMACs" (keys that differ) can be
// said out loud instead of looking like silence.
// Other protocols of the agents (connection replication) share the links' sockets: datagrams
// with their magic go to their receiver, and send() reaches a peer on a given link.
//
// Timing: heartbeats go out on a fixed grid (start + k × interval), so a late timer delays one
// heartbeat, never the ones after it (no drift); a loop held past a whole interval sends once,
// not a burst. Decisions run from one timer armed just past the detector's next deadline, and
// always after the I/O of that turn of the loop, so a heartbeat already waiting in any link's
// socket is heard before a silence is judged (never between two sockets' reads: a held loop
// would otherwise take one link's heartbeats, read first, for the other link's failure), and
// after any backlog of datagrams on the links has been read (see decideSoon). A heartbeat of its
// own overdue by more than an interval says this node itself was held (its process, or the
// whole host): its peers get an interval and the skew after that to be heard before any is
// judged (FailureDetector.localPause), and the hold is counted (`held`) and reported.
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { FailureDetector, type DetectorEvent } from './failure-detector.js';
import { claimedNode, decodeHeartbeat, encodeHeartbeat, type AddressClaim, type HeartbeatRejection } from './heartbeat-packet.js';
import { HeartbeatTraffic } from './heartbeat-traffic.js';
import { canonicalAddress } from '../net/endpoint.js';

export interface HeartbeatLink {
  id: number;
  /** Local address and port this link's socket binds to. */
  address: string;
  port: number;
}

export interface HeartbeatPeer {
  node: string;
  /** Where the peer listens on each link (same ids as ours). */
  links: Array<{ id: number; address: string; port: number }>;
}

export interface HeartbeatAgentOptions {
  node: string;
  /** Changes at every start of the agent (e.g. a boot counter or the start time). */
  incarnation: bigint;
  key: Buffer;
  intervalMs: number;
  misses: number;
  links: HeartbeatLink[];
  peers: HeartbeatPeer[];
  /** The service addresses this node holds, read at every heartbeat (see agent/address-holding.ts). */
  claims?: () => AddressClaim[];
  /**
   * Called once each regular heartbeat has been handed to the kernel on every link (not for the
   * `leaving` ones, nor after stop): the address lease renews there, after a heartbeat that
   * claimed it (agent/address-lease.ts).
   */
  sent?: () => void;
}

/** This node's own heartbeat was overdue by more than an interval: the node was held. */
export interface HeartbeatHeld {
  /** When that was noticed (the heartbeat went out, or a judgement came first), ms since the epoch. */
  at: number;
  /** How overdue the heartbeat was then, ms (the node was held at least this long). */
  lateMs: number;
  /** Until when no peer is declared down (ms since the epoch): see FailureDetector.localPause. */
  convictionsWaitUntil: number;
}

/** The holds seen since the start: how many (heartbeats overdue by more than an interval), the worst, the last. */
export interface HeldCounters {
  count: number;
  maxLateMs: number;
  last?: HeartbeatHeld;
}

export type RejectionReason = HeartbeatRejection | 'wrong-link' | 'own' | 'unknown-node';
export type RejectionCounters = Record<RejectionReason, number>;

/** A datagram dropped on a link; `peer` when it came from a configured peer's link address and port. */
export interface HeartbeatRejected {
  reason: RejectionReason;
  link: number;
  from: { address: string; port: number };
  peer?: string;
  /** The node the datagram names, when it decoded (unknown-node, own, wrong-link). */
  node?: string;
}

export class HeartbeatAgent extends EventEmitter<{
  event: [DetectorEvent];
  rejected: [HeartbeatRejected];
  heard: [{ node: string; claims: AddressClaim[] }];
  /**
   * A life's first `leaving` heartbeat: unlike the detector's node-left, also when the node was
   * already declared dead (its stop was slow, or it looked dead just before).
   */
  leaving: [{ node: string; incarnation: bigint; at: number }];
  held: [HeartbeatHeld];
}> {
  readonly detector: FailureDetector;
  readonly rejected: RejectionCounters = { short: 0, magic: 0, version: 0, flags: 0, node: 0, length: 0, claims: 0, hmac: 0, 'wrong-link': 0, own: 0, 'unknown-node': 0 };
  /** Per configured peer: datagrams from its link addresses that were rejected, by reason. */
  readonly rejectedFrom = new Map<string, Partial<RejectionCounters>>();
  /** The same datagrams per peer and link (and sends): what the agent's metrics report. */
  readonly traffic: HeartbeatTraffic;
  readonly held: HeldCounters = { count: 0, maxLateMs: 0 };
  private readonly sockets = new Map<number, dgram.Socket>();
  private readonly receivers: Array<{ magic: Buffer; fn: (msg: Buffer, link: number) => void }> = [];
  private seq = 0n;
  private readonly peerBySource = new Map<string, string>();
  private beatTimer: NodeJS.Timeout | undefined;
  /** When the next heartbeat is due (ms since the epoch): the grid start + k × interval. */
  private nextBeatAt = 0;
  private decisionTimer: NodeJS.Timeout | undefined;
  /** The deadline decisionTimer was armed for (Infinity: none armed). */
  private decisionAt = Infinity;
  private decisionImmediate: NodeJS.Immediate | undefined;
  /** Datagrams read on the link sockets (any protocol): whether a turn of the loop read some. */
  private linkDatagrams = 0;
  /** The due time of the heartbeat whose lateness last counted as a hold (one count per hold). */
  private heldBeatAt = -Infinity;
  /** Since when a decision has waited for the sockets' backlog to be read. */
  private drainingSince: number | undefined;
  private running = false;


  constructor(private readonly options: HeartbeatAgentOptions) {
    super();
    this.detector = new FailureDetector({ intervalMs: options.intervalMs, misses: options.misses, links: options.links.map((l) => l.id), peers: options.peers.map((p) => p.node) });
    for (const p of options.peers) for (const l of p.links) this.peerBySource.set(`${canonicalAddress(l.address)}|${l.port}`, p.node);
    this.traffic = new HeartbeatTraffic(new Set(options.peers.map((p) => p.node)));
  }

  async start(): Promise<void> {
    for (const link of this.options.links) {
      const socket = dgram.createSocket(net.isIPv6(link.address) ? 'udp6' : 'udp4');
      socket.on('message', (msg, rinfo) => this.receive(link.id, msg, rinfo));
      socket.on('error', () => {
        // A send to an unreachable peer reports here; silence is what the detector judges.
      });
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(link.port, link.address, () => {
          socket.off('error', reject);
          resolve();
        });
      });
      this.sockets.set(link.id, socket);
    }
    this.running = true;
    this.nextBeatAt = clock();
    this.beat();
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.beatTimer);
    clearTimeout(this.decisionTimer);
    clearImmediate(this.decisionImmediate);
    this.decisionImmediate = undefined;
    this.drainingSince = undefined;
    this.decisionAt = Infinity;
    for (const s of this.sockets.values()) s.close();
    this.sockets.clear();
  }

  /**
   * A planned departure: sends `copies` heartbeats flagged `leaving` on every link (UDP may drop
   * one), waits until the kernel has taken them, then stops. Peers mark this node as left, not
   * failed, and take nothing over. `serving`: instances on this node still run without the agent.
   */
  async leave(serving: boolean, copies = 3): Promise<void> {
    this.running = false; // no heartbeat of this life after the goodbye
    clearTimeout(this.beatTimer);
    const sends: Array<Promise<void>> = [];
    for (let i = 0; i < copies; i++) sends.push(...this.send1({ serving }));
    await Promise.all(sends);
    this.stop();
  }

  /** Sends this interval's heartbeat on every link, then schedules the next on the grid. */
  private beat(): void {
    if (!this.running) return;
    const now = clock();
    const sends = this.send1();
    this.noticeHold(now);
    const sent = this.options.sent;
    if (sent) {
      void Promise.all(sends).then(() => {
        if (this.running) sent();
      });
    }
    const interval = this.options.intervalMs;
    this.nextBeatAt += interval;
    // Held past whole intervals: the next one on the grid after now (those missed are missed).
    if (this.nextBeatAt <= now) this.nextBeatAt += (Math.floor((now - this.nextBeatAt) / interval) + 1) * interval;
    this.beatTimer = setTimeout(() => this.beat(), Math.max(0, this.nextBeatAt - clock()));
  }

  /**
   * Whether this node was held: its next heartbeat overdue by more than an interval (once per
   * hold). Asked by that heartbeat and before any judgement: at the resume, datagrams already
   * waiting (a peer that resumed first) are read, and judged, before the timers run.
   */
  private noticeHold(now: number): void {
    const lateMs = now - this.nextBeatAt;
    if (lateMs <= this.options.intervalMs || this.heldBeatAt === this.nextBeatAt) return;
    this.heldBeatAt = this.nextBeatAt;
    this.detector.localPause(now);
    const held: HeartbeatHeld = { at: now, lateMs: Math.round(lateMs), convictionsWaitUntil: this.detector.convictionsWaitUntil(now)! };
    this.held.count++;
    this.held.maxLateMs = Math.max(this.held.maxLateMs, held.lateMs);
    this.held.last = held;
    this.emit('held', held);
  }

  /** One heartbeat on every link to every peer; each send resolves when the kernel has it. */
  private send1(leaving?: { serving: boolean }): Array<Promise<void>> {
    this.seq++;
    const sentAtMs = clock();
    const sends: Array<Promise<void>> = [];
    const claims = leaving ? [] : (this.options.claims?.() ?? []);
    for (const [id, socket] of this.sockets) {
      const msg = encodeHeartbeat({ node: this.options.node, link: id, incarnation: this.options.incarnation, seq: this.seq, sentAtMs, ...(leaving ? { leaving } : {}), ...(claims.length ? { claims } : {}) }, this.options.key);
      for (const peer of this.options.peers) {
        const to = peer.links.find((l) => l.id === id);
        // With a callback, a send error comes here instead of the socket's 'error' event.
        if (to) {
          sends.push(
            new Promise((resolve) =>
              socket.send(msg, to.port, to.address, (err) => {
                if (err) this.traffic.sendError(peer.node, id);
                else this.traffic.sent(peer.node, id);
                resolve();
              }),
            ),
          );
        }
      }
    }
    return sends;
  }

  /**
   * Judges the silences after the I/O of this turn of the loop (every datagram already waiting
   * in any link's socket heard first), once however many ask. Asked by the decision timer, and at
   * every heartbeat heard: a link silent past its deadline while no other was alive is a link
   * failure once another is heard. A turn reads at most 32 datagrams per socket, and the links
   * carry replication too: while turns keep reading some, a heartbeat may wait behind them, so
   * the judgement waits for a turn that reads none, for at most one interval (a flood cannot
   * put it off longer: at worst a death is decided `misses` + 1 intervals after the last
   * heartbeat, and the skew).
   */
  private decideSoon(): void {
    if (this.decisionImmediate) return;
    const seen = this.linkDatagrams;
    this.drainingSince ??= clock();
    this.decisionImmediate = setImmediate(() => {
      this.decisionImmediate = undefined;
      if (this.linkDatagrams !== seen && clock() - this.drainingSince! < this.options.intervalMs) return this.decideSoon();
      this.drainingSince = undefined;
      this.decide();
    });
  }

  /** Judges the silences now and arms the timer for the next deadline. */
  private decide(): void {
    if (!this.running) return;
    const now = clock();
    this.noticeHold(now);
    for (const e of this.detector.tick(now)) this.emit('event', e);
    this.armDecision(now);
  }

  /** Arms the decision timer just past the detector's next deadline, unless one is armed sooner. */
  private armDecision(now: number): void {
    if (!this.running) return; // stopped by a listener of the events just emitted
    const at = this.detector.nextDeadline(now);
    if (at === undefined || at >= this.decisionAt) return;
    clearTimeout(this.decisionTimer);
    this.decisionAt = at;
    // Past the deadline (the detector wants more silence than timeoutMs), by at most a ms:
    // timers have ms resolution.
    this.decisionTimer = setTimeout(() => {
      this.decisionAt = Infinity;
      this.decideSoon();
    }, Math.max(1, Math.ceil(at - now)));
  }

  /**
   * Datagrams starting with `magic` (4 bytes, not the heartbeats') go to fn with the link they
   * came in on. Returns the function that removes this receiver.
   */
  addReceiver(magic: Buffer, fn: (msg: Buffer, link: number) => void): () => void {
    const r = { magic, fn };
    this.receivers.push(r);
    return () => {
      const i = this.receivers.indexOf(r);
      if (i >= 0) this.receivers.splice(i, 1);
    };
  }

  /** Sends a datagram to a configured peer on one link (as far as UDP goes: no answer awaited). */
  send(peer: string, link: number, datagram: Buffer): void {
    const to = this.options.peers.find((p) => p.node === peer)?.links.find((l) => l.id === link);
    const socket = this.sockets.get(link);
    if (to && socket) socket.send(datagram, to.port, to.address);
  }

  private receive(link: number, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.linkDatagrams++;
    for (const r of this.receivers) {
      if (msg.length >= 4 && msg.subarray(0, 4).equals(r.magic)) return r.fn(msg, link);
    }
    const r = decodeHeartbeat(msg, this.options.key);
    if (!r.ok) return this.reject(r.reason, link, rinfo, claimedNode(msg));
    const node = r.heartbeat.node;
    if (r.heartbeat.link !== link) return this.reject('wrong-link', link, rinfo, node);
    if (node === this.options.node) return this.reject('own', link, rinfo, node);
    // Only configured peers count: a stranger with the key must not appear in the membership
    // (nor speak for the cluster by sorting first).
    if (!this.options.peers.some((p) => p.node === node)) return this.reject('unknown-node', link, rinfo, node);
    const now = clock();
    const c = this.detector.counters;
    const [accepted, replayed, stale] = [c.accepted, c.replayed, c.staleIncarnation];
    const events = this.detector.observe(r.heartbeat, link, now);
    // The detector's verdict on this heartbeat, per peer and link (its counters are totals).
    if (c.accepted > accepted) this.traffic.received(node, link);
    else if (c.replayed > replayed) this.traffic.rejected('replayed', node, link);
    else if (c.staleIncarnation > stale) this.traffic.rejected('stale-incarnation', node, link);
    for (const e of events) this.emit('event', e);
    this.decideSoon();
    // What a fresh heartbeat of a live node says it holds (replays and old lives say nothing).
    if (c.accepted > accepted && !r.heartbeat.leaving) this.emit('heard', { node, claims: r.heartbeat.claims ?? [] });
    if (c.accepted > accepted && r.heartbeat.leaving) this.emit('leaving', { node, incarnation: r.heartbeat.incarnation, at: now });
  }

  /**
   * Counts a dropped datagram: in total, per configured peer whose link address and port sent
   * it (authenticated by where it came from, for "keys differ"), and for the metrics by the node
   * it names (`node`, read without authentication when it did not decode).
   */
  private reject(reason: RejectionReason, link: number, rinfo: dgram.RemoteInfo, node?: string): void {
    this.rejected[reason]++;
    this.traffic.rejected(reason, node, link);
    const peer = this.peerBySource.get(`${canonicalAddress(rinfo.address)}|${rinfo.port}`);
    if (peer !== undefined) {
      const c = this.rejectedFrom.get(peer) ?? {};
      c[reason] = (c[reason] ?? 0) + 1;
      this.rejectedFrom.set(peer, c);
    }
    this.emit('rejected', { reason, link, from: { address: rinfo.address, port: rinfo.port }, ...(peer !== undefined ? { peer } : {}), ...(node !== undefined ? { node } : {}) });
  }
}

/** Wall-clock ms with sub-ms precision (monotonic within the process). */
function clock(): number {
  return performance.timeOrigin + performance.now();
}
