// Sends and receives heartbeats on every link (one UDP socket per link) and feeds the failure
// detector; emits the detector's events. Bad datagrams (wrong key, malformed, a link id that
// does not match the socket it came in on) are counted and dropped, never acted upon.
// Other protocols of the agents (connection replication) share the links' sockets: datagrams
// with their magic go to their receiver, and send() reaches a peer on a given link.
//
// Timing: heartbeats go out on a fixed grid (start + k × interval), so a late timer delays one
// heartbeat, never the ones after it (no drift); a loop held past a whole interval sends once,
// not a burst. Decisions run from one timer armed just past the detector's next deadline, and
// always after the I/O of that turn of the loop, so a heartbeat already waiting in any link's
// socket is heard before a silence is judged (never between two sockets' reads: a held loop
// would otherwise take one link's heartbeats, read first, for the other link's failure), and
// after any backlog of datagrams on the links has been read (see decideSoon).
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { FailureDetector, type DetectorEvent } from './failure-detector.js';
import { decodeHeartbeat, encodeHeartbeat, type HeartbeatRejection } from './heartbeat-packet.js';

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
}

export type RejectionCounters = Record<HeartbeatRejection | 'wrong-link' | 'own', number>;

export class HeartbeatAgent extends EventEmitter<{ event: [DetectorEvent] }> {
  readonly detector: FailureDetector;
  readonly rejected: RejectionCounters = { short: 0, magic: 0, version: 0, node: 0, length: 0, hmac: 0, 'wrong-link': 0, own: 0 };
  private readonly sockets = new Map<number, dgram.Socket>();
  private readonly receivers: Array<{ magic: Buffer; fn: (msg: Buffer, link: number) => void }> = [];
  private seq = 0n;
  private beatTimer: NodeJS.Timeout | undefined;
  /** When the next heartbeat is due (ms since the epoch): the grid start + k × interval. */
  private nextBeatAt = 0;
  private decisionTimer: NodeJS.Timeout | undefined;
  /** The deadline decisionTimer was armed for (Infinity: none armed). */
  private decisionAt = Infinity;
  private decisionImmediate: NodeJS.Immediate | undefined;
  /** Datagrams read on the link sockets (any protocol): whether a turn of the loop read some. */
  private linkDatagrams = 0;
  /** Since when a decision has waited for the sockets' backlog to be read. */
  private drainingSince: number | undefined;
  private running = false;

  constructor(private readonly options: HeartbeatAgentOptions) {
    super();
    this.detector = new FailureDetector({ intervalMs: options.intervalMs, misses: options.misses, links: options.links.map((l) => l.id) });
  }

  async start(): Promise<void> {
    for (const link of this.options.links) {
      const socket = dgram.createSocket(net.isIPv6(link.address) ? 'udp6' : 'udp4');
      socket.on('message', (msg) => this.receive(link.id, msg));
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

  /** Sends this interval's heartbeat on every link, then schedules the next on the grid. */
  private beat(): void {
    if (!this.running) return;
    const now = clock();
    this.seq++;
    for (const [id, socket] of this.sockets) {
      const msg = encodeHeartbeat({ node: this.options.node, link: id, incarnation: this.options.incarnation, seq: this.seq, sentAtMs: now }, this.options.key);
      for (const peer of this.options.peers) {
        const to = peer.links.find((l) => l.id === id);
        if (to) socket.send(msg, to.port, to.address);
      }
    }
    const interval = this.options.intervalMs;
    this.nextBeatAt += interval;
    // Held past whole intervals: the next one on the grid after now (those missed are missed).
    if (this.nextBeatAt <= now) this.nextBeatAt += (Math.floor((now - this.nextBeatAt) / interval) + 1) * interval;
    this.beatTimer = setTimeout(() => this.beat(), Math.max(0, this.nextBeatAt - clock()));
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

  private receive(link: number, msg: Buffer): void {
    this.linkDatagrams++;
    for (const r of this.receivers) {
      if (msg.length >= 4 && msg.subarray(0, 4).equals(r.magic)) return r.fn(msg, link);
    }
    const r = decodeHeartbeat(msg, this.options.key);
    if (!r.ok) {
      this.rejected[r.reason]++;
      return;
    }
    if (r.heartbeat.link !== link) {
      this.rejected['wrong-link']++;
      return;
    }
    if (r.heartbeat.node === this.options.node) {
      this.rejected.own++;
      return;
    }
    for (const e of this.detector.observe(r.heartbeat, link, clock())) this.emit('event', e);
    this.decideSoon();
  }
}

/** Wall-clock ms with sub-ms precision (monotonic within the process). */
function clock(): number {
  return performance.timeOrigin + performance.now();
}
