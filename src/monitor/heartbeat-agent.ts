// Sends and receives heartbeats on every link (one UDP socket per link) and feeds the failure
// detector; emits the detector's events. Bad datagrams (wrong key, malformed, a link id that
// does not match the socket it came in on) are counted and dropped, never acted upon.
// Other protocols of the agents (connection replication) share the links' sockets: datagrams
// with their magic go to their receiver, and send() reaches a peer on a given link.
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { FailureDetector, type DetectorEvent } from './failure-detector.js';
import { claimedNode, decodeHeartbeat, encodeHeartbeat, type HeartbeatRejection } from './heartbeat-packet.js';
import { HeartbeatTraffic } from './heartbeat-traffic.js';

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
  /** The same datagrams per peer and link (and sends): what the agent's metrics report. */
  readonly traffic: HeartbeatTraffic;
  private readonly sockets = new Map<number, dgram.Socket>();
  private readonly receivers: Array<{ magic: Buffer; fn: (msg: Buffer, link: number) => void }> = [];
  private seq = 0n;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: HeartbeatAgentOptions) {
    super();
    this.detector = new FailureDetector({ intervalMs: options.intervalMs, misses: options.misses, links: options.links.map((l) => l.id) });
    this.traffic = new HeartbeatTraffic(new Set(options.peers.map((p) => p.node)));
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
    this.beat();
    // Ticks several times per interval so a decision lands within a few ms of its deadline.
    this.timer = setInterval(() => this.tick(), Math.max(1, Math.floor(this.options.intervalMs / 10)));
  }

  stop(): void {
    clearInterval(this.timer);
    for (const s of this.sockets.values()) s.close();
    this.sockets.clear();
  }

  private lastBeat = 0;

  private tick(): void {
    const now = performance.timeOrigin + performance.now();
    if (now - this.lastBeat >= this.options.intervalMs) this.beat();
    for (const e of this.detector.tick(now)) this.emit('event', e);
  }

  private beat(): void {
    const now = performance.timeOrigin + performance.now();
    this.lastBeat = now;
    this.seq++;
    for (const [id, socket] of this.sockets) {
      const msg = encodeHeartbeat({ node: this.options.node, link: id, incarnation: this.options.incarnation, seq: this.seq, sentAtMs: now }, this.options.key);
      for (const peer of this.options.peers) {
        const to = peer.links.find((l) => l.id === id);
        // With a callback, a send error comes here instead of the socket's 'error' event.
        if (to) socket.send(msg, to.port, to.address, (err) => (err ? this.traffic.sendError(peer.node, id) : this.traffic.sent(peer.node, id)));
      }
    }
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
    for (const r of this.receivers) {
      if (msg.length >= 4 && msg.subarray(0, 4).equals(r.magic)) return r.fn(msg, link);
    }
    const r = decodeHeartbeat(msg, this.options.key);
    if (!r.ok) {
      this.rejected[r.reason]++;
      this.traffic.rejected(r.reason, claimedNode(msg), link);
      return;
    }
    if (r.heartbeat.link !== link) {
      this.rejected['wrong-link']++;
      this.traffic.rejected('wrong-link', r.heartbeat.node, link);
      return;
    }
    if (r.heartbeat.node === this.options.node) {
      this.rejected.own++;
      this.traffic.rejected('own', r.heartbeat.node, link);
      return;
    }
    const now = performance.timeOrigin + performance.now();
    const c = this.detector.counters;
    const [accepted, replayed, stale] = [c.accepted, c.replayed, c.staleIncarnation];
    const events = this.detector.observe(r.heartbeat, link, now);
    // The detector's verdict on this heartbeat, per peer and link (its counters are totals).
    if (c.accepted > accepted) this.traffic.received(r.heartbeat.node, link);
    else if (c.replayed > replayed) this.traffic.rejected('replayed', r.heartbeat.node, link);
    else if (c.staleIncarnation > stale) this.traffic.rejected('stale-incarnation', r.heartbeat.node, link);
    for (const e of events) this.emit('event', e);
  }
}
