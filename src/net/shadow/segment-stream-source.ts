// The primary's end of a segment stream (issue 12's second source, for networks without a port
// mirror): a TCP server a backup dials; after an authenticated HELLO/WELCOME (segment-wire.ts)
// it sends the backup every segment its own capture takes of the services the HELLO named, so
// the backup keeps its shadows (peer-shadow.ts) as it would from a mirror.
//
// - Each subscriber gets its own capture (by default a ring on every interface, payload whole,
//   only its services' hosts and ports), opened at the HELLO; segments are sent once the
//   backup's first ACK has proven it holds the key (it covers this connection's fresh nonce):
//   a recorded HELLO replayed by someone without the key gets a WELCOME and nothing else.
// - Segments are sent in batches, one per turn of the event loop (SEGMENTS frames of ~1 MiB).
// - Every markIntervalMs (25 ms) a MARK says up to which capture time everything has been
//   sent; the capture's drops go out as LOSS frames, after the segments taken before them.
// - Backpressure: when more than maxPendingBytes (64 MiB) wait in the socket's buffer (the
//   backup or the link is slower than the traffic), the stream is cut rather than buffered
//   without bound: the backup sees a break (the segments from then on are lost to it) and
//   dials again. The primary's own service is never slowed by its backup.
// - A second subscription from the same backup node replaces the first (a redial while the old
//   socket lingers). Several backups may subscribe at once.
// - Output commit (`hold`, net/held-traffic.ts): the segments come from netfilter queues instead
//   of captures, and what the services send is released only once every subscriber following
//   them has ACKed the frame carrying it (one that leaves a packet waiting maxHoldMs is cut).
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { ParsedSegment } from '../../native.js';
import { canonicalAddress, type Endpoint } from '../endpoint.js';
import type { HeldPacket, HeldTrafficStats, PacketHold } from '../held-traffic.js';
import { captureOwnSegments, type SegmentCapture, type SegmentCaptureFactory } from './segment-capture.js';
import { checkSegmentKey, DEFAULT_SEGMENTS_FRAME_BODY_BYTES, encodeSegmentFrame, MAX_NODE_BYTES, SegmentFrameReader, splitSegments, type SegmentMessage, type WelcomeRefusal } from './segment-wire.js';

export interface SegmentStreamSourceOptions {
  /** This primary's node name (1..64 bytes), told to the backups in the WELCOME. */
  node: string;
  /** The shared key (16 bytes at least). */
  key: Buffer;
  /** Where to listen for backups. */
  listen: { host: string; port: number };
  /** Makes a subscriber's capture; default captureOwnSegments (every interface, needs CAP_NET_RAW). */
  capture?: SegmentCaptureFactory;
  /** The backups allowed to subscribe (node names); default any that holds the key. */
  backups?: readonly string[];
  /** The services a backup may ask for; default any (the key is the authority). */
  services?: readonly Endpoint[];
  /** How often a MARK is sent, ms (1..50); default 25. */
  markIntervalMs?: number;
  /** Bytes waiting in one socket's buffer above which the stream is cut; default 64 MiB. */
  maxPendingBytes?: number;
  /** A backup that sends no HELLO, or no ACK, for this long is dropped, ms; default 5,000. */
  idleTimeoutMs?: number;
  /**
   * Output commit: the services' traffic read from netfilter queues (HeldTraffic.open) instead of
   * captured, and what they send held until every backup that follows them has acknowledged the
   * frame that carried it. A client then never acknowledges a byte the backups lack. With no
   * backup following, nothing is held. `services` defaults to the held services. The caller
   * opens and closes it.
   */
  hold?: PacketHold;
  /**
   * With `hold`: a backup that leaves a held packet unacknowledged this long is cut (and what it
   * held released), ms; default 500. The longest a backup that dies silently stalls the service.
   */
  maxHoldMs?: number;
  /** Told of subscriptions, refusals and cuts (for logs). */
  onEvent?: (event: SegmentSourceEvent) => void;
  /**
   * Another wire on the same listener: a connection whose first bytes `claims` (at least 8 of
   * them) is handed to `serve` with the bytes read so far, and is no longer this source's (the
   * planned switchover's requests, agent/switchover-primary.ts).
   */
  other?: { claims: (head: Buffer) => boolean; serve: (socket: net.Socket, first: Buffer) => void };
}

export type SegmentSourceEvent =
  | { type: 'subscribed'; backup: string; remote: string; services: Endpoint[] }
  | { type: 'refused'; backup: string; remote: string; refusal: WelcomeRefusal; reason: string }
  | { type: 'rejected'; remote: string; reason: string }
  | { type: 'ended'; backup: string; remote: string; reason: string };

export interface SegmentSubscriptionStats {
  backup: string;
  remote: string;
  services: Endpoint[];
  /** Whether the backup's first ACK came (segments flow only then). */
  live: boolean;
  bytesSent: number;
  segmentsSent: number;
  /** Bytes of frames sent that the backup has not acknowledged yet. */
  unackedBytes: number;
  /** Bytes waiting in the socket's buffer (not yet in the kernel's). */
  pendingBytes: number;
  /** Capture to write for the oldest segment of the last batch sent, ms. */
  lagMs: number;
  /** Round trip of the last MARK the backup acknowledged, ms (0 before one). */
  markRoundTripMs: number;
}

export interface SegmentSourceStats {
  subscribers: number;
  accepted: number;
  refused: number;
  /** Connections dropped for a bad frame (wrong key, not the protocol) or silence. */
  rejected: number;
  /** Streams cut because a backup fell maxPendingBytes behind. */
  cuts: number;
  bytesSent: number;
  segmentsSent: number;
  /** Frames the captures reported lost (sent as LOSS). */
  lossFrames: number;
  /** The largest capture-to-write delay seen, ms. */
  maxLagMs: number;
  /** With output commit: the queues' counters and the packets held now. */
  hold?: HeldTrafficStats & { heldNow: number };
  subscriptions: SegmentSubscriptionStats[];
}

interface Subscription {
  socket: net.Socket;
  /** The first bytes, while fewer than 8 came (undefined: none yet; null: this wire's, decided). */
  headBytes?: Buffer | null;
  remote: string;
  reader: SegmentFrameReader;
  backupNonce: bigint;
  primaryNonce: bigint;
  seqOut: bigint;
  backup: string;
  services: Endpoint[];
  serviceKeys: Set<string>;
  capture: SegmentCapture | null;
  unsubscribe: (() => void) | null;
  /** Segments captured, not yet sent. */
  pending: ParsedSegment[];
  pendingPayload: number;
  flushQueued: boolean;
  live: boolean;
  drops: number;
  lastMarkMs: number;
  /** With a hold: the held packets of its services in id order, with the frame that carried each (null: not sent yet). */
  held: { id: number; frame: bigint | null; timeMs: number }[];
  /** Frames sent and not yet acknowledged: their sequence and the bytes sent up to their end. */
  inFlight: { seq: bigint; bytesEnd: number }[];
  marksSent: Map<number, number>;
  ackedBytes: number;
  bytesSent: number;
  segmentsSent: number;
  lagMs: number;
  markRoundTripMs: number;
  lastHeardAt: number;
  ended: boolean;
}

/**
 * A subscriber's capture when the source holds its services' traffic: the segments come from the
 * hold (heldRead), read on the loop as they pass, so everything queued before a timer tick has
 * been read in the poll phase that follows it.
 */
const heldView: SegmentCaptureFactory = () => ({
  ready: Promise.resolve(),
  onSegments: () => () => {},
  stats: () => ({ drops: 0 }), // the kernel drops only what it then sends again (TCP), never a copied packet
  completeToMs: (tickMs) => tickMs,
  close: () => {},
});

function randomNonce(): bigint {
  for (;;) {
    const v = randomBytes(8).readBigUInt64BE(0);
    if (v !== 0n) return v;
  }
}

export class SegmentStreamSource implements AsyncDisposable {
  private readonly server: net.Server;
  private readonly subs = new Set<Subscription>();
  private readonly timer: NodeJS.Timeout;
  private readonly captureFactory: SegmentCaptureFactory;
  private readonly markIntervalMs: number;
  private readonly maxPendingBytes: number;
  private readonly idleTimeoutMs: number;
  private readonly allowedServices: Set<string> | null;
  private readonly maxHoldMs: number;
  private readonly stopHold: (() => void) | null = null;
  private readonly listening: Promise<Endpoint>;
  private closed = false;
  private readonly totals = { accepted: 0, refused: 0, rejected: 0, cuts: 0, bytesSent: 0, segmentsSent: 0, lossFrames: 0, maxLagMs: 0 };

  /**
   * Starts listening at once (see ready()). Throws TypeError/RangeError on a bad key, node name
   * (1..64 bytes), markIntervalMs (1..50) or service.
   */
  constructor(private readonly options: SegmentStreamSourceOptions) {
    checkSegmentKey(options.key);
    const nodeBytes = Buffer.byteLength(options.node);
    if (nodeBytes === 0 || nodeBytes > MAX_NODE_BYTES) throw new RangeError(`node must be 1..${MAX_NODE_BYTES} bytes: ${JSON.stringify(options.node)}`);
    this.markIntervalMs = options.markIntervalMs ?? 25;
    if (!(this.markIntervalMs >= 1 && this.markIntervalMs <= 50)) throw new RangeError(`markIntervalMs ${this.markIntervalMs} is not 1..50`);
    this.maxPendingBytes = options.maxPendingBytes ?? 64 * 1024 * 1024;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 5000;
    this.maxHoldMs = options.maxHoldMs ?? 500;
    if (!(this.maxHoldMs >= 1 && this.maxHoldMs <= 60_000)) throw new RangeError(`maxHoldMs ${this.maxHoldMs} is not 1..60000`);
    const hold = options.hold;
    this.captureFactory = hold ? heldView : (options.capture ?? captureOwnSegments);
    const services = options.services ?? hold?.services;
    this.allowedServices = services ? new Set(services.map((s) => `${canonicalAddress(s.address)}|${s.port}`)) : null;
    if (hold) this.stopHold = hold.onPackets((packets) => this.heldRead(packets));
    this.server = net.createServer((socket) => this.onConnection(socket));
    this.listening = new Promise<Endpoint>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(options.listen.port, options.listen.host, () => {
        this.server.off('error', reject);
        const a = this.server.address() as net.AddressInfo;
        resolve({ address: a.address, port: a.port });
      });
    });
    this.listening.catch(() => {}); // reported through ready()
    this.server.on('error', () => {}); // after listening: a failed accept is the peer's problem
    this.timer = setInterval(() => this.tick(), this.markIntervalMs);
  }

  /** The endpoint listened on (the port chosen when 0 was asked). Rejects with the listen error (EADDRINUSE...). */
  ready(): Promise<Endpoint> {
    return this.listening;
  }

  stats(): SegmentSourceStats {
    const subscriptions = [...this.subs].map((s) => ({
      backup: s.backup,
      remote: s.remote,
      services: s.services,
      live: s.live,
      bytesSent: s.bytesSent,
      segmentsSent: s.segmentsSent,
      unackedBytes: s.bytesSent - s.ackedBytes,
      pendingBytes: s.socket.writableLength,
      lagMs: s.lagMs,
      markRoundTripMs: s.markRoundTripMs,
    }));
    const hold = this.options.hold;
    return { subscribers: subscriptions.filter((s) => s.live).length, ...this.totals, ...(hold ? { hold: { ...hold.stats(), heldNow: hold.heldCount } } : {}), subscriptions };
  }

  /** Stops listening and ends every subscription (each backup sees its stream end, after what was captured). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.stopHold?.();
    const closedServer = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of [...this.subs]) {
      // What was captured goes out first; the backup sees the stream end (not a reset).
      if (s.live) this.flush(s);
      this.end(s, 'the source is closing', true);
    }
    await closedServer;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private onConnection(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const s: Subscription = {
      socket,
      remote: `${socket.remoteAddress}:${socket.remotePort}`,
      reader: new SegmentFrameReader({ role: 'primary' }, { key: this.options.key }),
      backupNonce: 0n,
      primaryNonce: randomNonce(),
      seqOut: 0n,
      backup: '',
      services: [],
      serviceKeys: new Set(),
      capture: null,
      unsubscribe: null,
      pending: [],
      pendingPayload: 0,
      flushQueued: false,
      live: false,
      drops: 0,
      lastMarkMs: 0,
      inFlight: [],
      marksSent: new Map(),
      held: [],
      ackedBytes: 0,
      bytesSent: 0,
      segmentsSent: 0,
      lagMs: 0,
      markRoundTripMs: 0,
      lastHeardAt: performance.now(),
      ended: false,
    };
    this.subs.add(s);
    socket.on('error', () => {}); // 'close' follows
    socket.on('close', () => this.end(s, 'the backup closed the connection', false));
    socket.on('end', () => this.end(s, 'the backup ended the connection', false));
    socket.on('data', (chunk: Buffer) => this.onData(s, chunk));
  }

  private onData(s: Subscription, chunk: Buffer): void {
    if (s.ended) return;
    s.lastHeardAt = performance.now();
    const other = this.options.other;
    if (other && s.headBytes !== null) {
      // Before this wire's first frame only: its first 8 bytes say whose connection it is.
      const head = s.headBytes ? Buffer.concat([s.headBytes, chunk]) : chunk;
      if (head.length < 8) s.headBytes = head;
      else if (other.claims(head)) {
        this.subs.delete(s);
        s.ended = true;
        s.socket.removeAllListeners('data');
        s.socket.removeAllListeners('close');
        s.socket.removeAllListeners('end');
        other.serve(s.socket, head);
        return;
      } else s.headBytes = null;
    }
    for (const r of s.reader.push(chunk)) {
      if (!r.ok) {
        this.totals.rejected++;
        this.options.onEvent?.({ type: 'rejected', remote: s.remote, reason: `${r.reason}: ${r.detail}` });
        this.end(s, `bad frame (${r.reason}): ${r.detail}`, false);
        return;
      }
      const m = r.frame.message;
      if (m.type === 'hello') this.hello(s, r.frame.backupNonce, m.node, m.services);
      else if (m.type === 'ack') this.acked(s, m.frameSeq, m.markMs);
      if (s.ended) return;
    }
  }

  private hello(s: Subscription, backupNonce: bigint, backup: string, services: Endpoint[]): void {
    s.backupNonce = backupNonce;
    s.backup = backup;
    s.services = services;
    s.serviceKeys = new Set(services.map((e) => `${e.address}|${e.port}`));
    const refuse = (refusal: WelcomeRefusal, reason: string) => {
      this.totals.refused++;
      this.options.onEvent?.({ type: 'refused', backup, remote: s.remote, refusal, reason });
      this.send(s, { type: 'welcome', node: this.options.node, refusal, reason });
      this.end(s, `refused (${refusal}): ${reason}`, true);
    };
    if (this.closed) return refuse('closing', 'the source is closing');
    if (this.options.backups && !this.options.backups.includes(backup)) return refuse('node', `${backup} is not a backup of ${this.options.node}`);
    const foreign = this.allowedServices && services.find((e) => !this.allowedServices!.has(`${e.address}|${e.port}`));
    if (foreign) return refuse('services', `${foreign.address}:${foreign.port} is not a service ${this.options.node} streams`);
    try {
      s.capture = this.captureFactory(services);
    } catch (err) {
      return refuse('capture', `the capture failed: ${(err as Error).message}`);
    }
    // Captured from when the capture is ready; sent once the backup's first ACK proves it holds the key.
    s.drops = s.capture.stats().drops;
    s.unsubscribe = s.capture.onSegments((batch) => this.captured(s, batch));
    // WELCOMEd only once the capture takes segments: the backup reports the stream up from the
    // WELCOME, and a connection opened before the ring was set up would never be in its copy.
    s.capture.ready.then(
      () => {
        if (s.ended) return; // the backup left, or the source closed, meanwhile
        this.send(s, { type: 'welcome', node: this.options.node, refusal: null, reason: '' });
        s.reader.accept(s.primaryNonce);
        for (const other of this.subs) if (other !== s && other.backup === backup && !other.ended) this.end(other, 'replaced by a newer subscription of the same backup', false);
      },
      (err: Error) => {
        if (!s.ended) refuse('capture', `the capture failed: ${err.message}`);
      },
    );
  }

  private acked(s: Subscription, frameSeq: bigint, markMs: number): void {
    if (!s.live) {
      s.live = true;
      this.totals.accepted++;
      this.options.onEvent?.({ type: 'subscribed', backup: s.backup, remote: s.remote, services: s.services });
      this.queueFlush(s);
    }
    while (s.inFlight.length > 0 && s.inFlight[0]!.seq <= frameSeq) s.ackedBytes = s.inFlight.shift()!.bytesEnd;
    if (s.held.length > 0) {
      let n = 0;
      while (n < s.held.length && s.held[n]!.frame !== null && s.held[n]!.frame! <= frameSeq) n++;
      if (n > 0) {
        s.held.splice(0, n);
        this.commit();
      }
    }
    const sentAt = s.marksSent.get(markMs);
    if (sentAt !== undefined) {
      s.markRoundTripMs = performance.now() - sentAt;
      for (const t of s.marksSent.keys()) {
        if (t > markMs) break;
        s.marksSent.delete(t);
      }
    }
  }

  private captured(s: Subscription, batch: ParsedSegment[]): void {
    if (s.ended) return;
    for (const seg of batch) {
      if (!s.serviceKeys.has(`${seg.src}|${seg.sport}`) && !s.serviceKeys.has(`${seg.dst}|${seg.dport}`)) continue;
      s.pending.push(seg);
      s.pendingPayload += seg.payload?.length ?? 0;
    }
    // Before the first ACK nothing is sent: what waits is bounded as the socket's buffer is.
    if (s.pendingPayload > this.maxPendingBytes) return this.cut(s);
    this.queueFlush(s);
  }

  /** Packets read from the hold's queues: each subscriber gets those of its services; egress ones are held for it. */
  private heldRead(packets: HeldPacket[]): void {
    for (const s of this.subs) {
      if (s.ended || !s.capture) continue;
      const segments: ParsedSegment[] = [];
      for (const p of packets) {
        const seg = p.segment;
        if (!seg || !(s.serviceKeys.has(`${seg.src}|${seg.sport}`) || s.serviceKeys.has(`${seg.dst}|${seg.dport}`))) continue;
        segments.push(seg);
        if (p.direction === 'out') s.held.push({ id: p.id, frame: null, timeMs: p.timeMs });
      }
      if (segments.length === 0) continue;
      this.captured(s, segments);
      // Sent now, not on the next turn: every reply the service sends waits for this frame's ACK
      // (the queue hands packets over in batches already, one per wake-up).
      if (!s.ended) this.flush(s);
    }
    this.commit();
  }

  /**
   * Releases what the hold keeps that no subscriber still waits for: up to (not including) the
   * oldest held packet some subscriber has not acknowledged; everything when none follows.
   */
  private commit(): void {
    const hold = this.options.hold;
    if (!hold) return;
    let upTo = hold.lastHeldId;
    for (const s of this.subs) if (!s.ended && s.held.length > 0) upTo = Math.min(upTo, s.held[0]!.id - 1);
    hold.release(upTo);
  }

  private queueFlush(s: Subscription): void {
    if (s.flushQueued || !s.live) return;
    s.flushQueued = true;
    setImmediate(() => {
      s.flushQueued = false;
      this.flush(s);
    });
  }

  /** Sends the segments waiting (SEGMENTS frames of ~1 MiB), then a LOSS if the capture dropped frames. */
  private flush(s: Subscription): void {
    if (s.ended || !s.live) return;
    if (s.pending.length > 0) {
      const batch = s.pending;
      s.pending = [];
      s.pendingPayload = 0;
      let oldest = Infinity;
      for (const seg of batch) if (seg.timeMs !== undefined && seg.timeMs < oldest) oldest = seg.timeMs;
      s.socket.cork();
      for (const group of splitSegments(batch, DEFAULT_SEGMENTS_FRAME_BODY_BYTES)) {
        this.send(s, { type: 'segments', segments: group });
        s.segmentsSent += group.length;
        this.totals.segmentsSent += group.length;
      }
      s.socket.uncork();
      // The held packets sent so far ride in frames up to the last one sent.
      for (let i = s.held.length - 1; i >= 0 && s.held[i]!.frame === null; i--) s.held[i]!.frame = s.seqOut - 1n;
      if (oldest !== Infinity) {
        s.lagMs = Math.max(0, Date.now() - oldest);
        if (s.lagMs > this.totals.maxLagMs) this.totals.maxLagMs = s.lagMs;
      }
    }
    const drops = s.capture!.stats().drops;
    if (drops > s.drops) {
      this.totals.lossFrames += drops - s.drops;
      this.send(s, { type: 'loss', frames: drops - s.drops, timeMs: Date.now() }); // the ring's clock
      s.drops = drops;
    }
    if (!s.ended && s.socket.writableLength > this.maxPendingBytes) this.cut(s);
  }

  private tick(): void {
    const tickMs = Date.now();
    const now = performance.now();
    for (const s of this.subs) {
      if (now - s.lastHeardAt > this.idleTimeoutMs) {
        this.totals.rejected++;
        this.end(s, `nothing from the backup for ${this.idleTimeoutMs} ms`, false);
      }
    }
    // After the poll phase that follows this tick: the capture has handed over what it had, and
    // the ACKs that came while the loop was busy have been read (a loop that stalled is no
    // reason to cut a backup that did answer).
    setImmediate(() => {
      const nowMs = Date.now();
      for (const s of this.subs) {
        if (s.ended) continue;
        if (s.held.length > 0 && nowMs - s.held[0]!.timeMs > this.maxHoldMs) {
          this.totals.cuts++;
          this.end(s, `cut: a held packet waited more than ${this.maxHoldMs} ms for the backup's acknowledgement (output commit)`, false);
          continue;
        }
        if (!s.live) continue;
        this.flush(s);
        if (s.ended) continue;
        const t = Math.max(s.lastMarkMs, s.capture!.completeToMs(tickMs));
        s.lastMarkMs = t;
        if (s.marksSent.size < 1024) s.marksSent.set(t, performance.now());
        this.send(s, { type: 'mark', timeMs: t });
      }
    });
  }

  private cut(s: Subscription): void {
    this.totals.cuts++;
    this.end(s, `cut: more than ${this.maxPendingBytes} bytes waited for the backup`, false);
  }

  private send(s: Subscription, message: SegmentMessage): void {
    if (s.ended) return;
    const frame = encodeSegmentFrame({ backupNonce: s.backupNonce, primaryNonce: s.primaryNonce, seq: s.seqOut, message }, this.options.key);
    s.socket.write(frame);
    s.bytesSent += frame.length;
    this.totals.bytesSent += frame.length;
    if (message.type !== 'welcome') s.inFlight.push({ seq: s.seqOut, bytesEnd: s.bytesSent });
    else s.ackedBytes = s.bytesSent; // the WELCOME is not counted as unacknowledged
    s.seqOut++;
  }

  /** Ends one subscription: its capture closed, its socket ended (graceful: after what is queued) or destroyed. */
  private end(s: Subscription, reason: string, graceful: boolean): void {
    if (s.ended) return;
    s.ended = true;
    this.subs.delete(s);
    s.unsubscribe?.();
    s.capture?.close();
    s.pending = [];
    if (s.held.length > 0) {
      s.held = [];
      this.commit(); // its packets no longer wait for it
    }
    if (graceful) {
      s.socket.end();
      // A backup that does not close its end within a second is not waited for.
      setTimeout(() => s.socket.destroy(), 1000).unref();
    } else {
      s.socket.destroy();
    }
    if (s.backup !== '') this.options.onEvent?.({ type: 'ended', backup: s.backup, remote: s.remote, reason });
  }
}
