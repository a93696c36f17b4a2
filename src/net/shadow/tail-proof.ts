// Proves, for each connection restored from a copy that may lack its tail (the primary's own
// stream), that the client holds nothing the copy lacks (tail-check.ts says what shows it). The
// client is asked by the restored socket itself: leaving repair mode, Linux sends a window probe
// (tcp_send_window_probe: a bare ACK at SND.UNA - 1, behind the client's window), which draws the
// client's duplicate ACK (RFC 9293 §3.10.7.4) carrying its SND.NXT and RCV.NXT; any segment it
// sends on its own says as much. A capture on the service address's interface sees them. The
// client's kernel answers such segments once per 500 ms per socket at most
// (net.ipv4.tcp_invalid_ratelimit), so an unanswered connection is asked again (a forged bare
// ACK far behind its window) every 600 ms, for waitMs at most.
import type { ParsedSegment } from '../../native.js';
import { TCP_ACK } from '../../native.js';
import type { DeadConnection } from '../close-engine.js';
import { canonicalAddress, connectionKey, familyOf, type Endpoint } from '../endpoint.js';
import { FlowTracker } from '../flow-tracker.js';
import { SegmentForge } from '../forge.js';
import { seqAdd } from '../seq.js';
import { TailCheck, type CopyTail, type TailSide } from './tail-check.js';

export interface TailProofOptions {
  /** The interface the service address is (about to be) on: the clients' segments arrive there. */
  interface: string;
  /** The service address taken over. */
  address: string;
  /** The service ports whose connections are checked. */
  ports: number[];
  /**
   * Every connection that will be checked, with where its copy ends: its client's segments count
   * from the start (an answer to a restore's window probe can come back while the rest of its
   * batch is still being restored, before watch() is called for it).
   */
  connections: ReadonlyArray<{ client: Endpoint; server: Endpoint; tail: CopyTail }>;
  /** How long a connection may stay undecided (ms; default 3000: past a client's third retransmission timeout, 0.2 + 0.4 + 0.8 s after its first). */
  waitMs?: number;
}

/** What became of one connection's check. */
export type TailOutcome = { proven: true; afterMs: number } | { proven: false; reason: string; dead: DeadConnection };

/** Far behind any window the client may have (2^28): never acceptable, so always answered. */
const PROBE_BEHIND = 0x1000_0000;
/** A new question after the client's rate limit on answers (500 ms) has passed. */
const ASK_AGAIN_MS = 600;
const TICK_MS = 50;

interface Watched {
  check: TailCheck;
  client: Endpoint;
  server: Endpoint;
  /** Set by watch(): when the connection was restored, last asked, and whom to tell. */
  started?: number;
  askedAt?: number;
  resolve?: (o: TailOutcome) => void;
}

export class TailProof implements Disposable {
  private readonly capture: FlowTracker;
  private readonly forges = new Map<4 | 6, SegmentForge>();
  private readonly watched = new Map<string, Watched>();
  private readonly timer: NodeJS.Timeout;
  private readonly waitMs: number;
  private readonly address: string;
  private closed = false;

  /** Starts the capture at once (before the address moves here: no client segment is missed). Throws what the capture throws. */
  constructor(private readonly options: TailProofOptions) {
    this.address = canonicalAddress(options.address);
    this.waitMs = options.waitMs ?? 3000;
    for (const c of options.connections) this.watched.set(connectionKey(c.server, c.client), { check: new TailCheck(c.tail), client: c.client, server: c.server });
    this.capture = new FlowTracker({ interface: options.interface, hosts: [this.address], ports: options.ports, trackFlows: false, wakeup: 'packet' });
    this.capture.onSegments((batch) => this.segments(batch));
    this.capture.start();
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  /**
   * The verdict on one of the connections, restored a moment ago with the address already here
   * (the client's answer to the restore's window probe must reach this host). Resolves (never
   * rejects) once both streams are shown whole, or with the reason one is not and what an exact
   * RST needs; within waitMs. Nothing may be relayed before: a reply the client already holds
   * would be applied twice. Throws RangeError for a connection not given at construction.
   */
  watch(client: Endpoint, server: Endpoint): Promise<TailOutcome> {
    const w = this.watched.get(connectionKey(server, client));
    if (!w) throw new RangeError(`${client.address}:${client.port} was not among the connections to check`);
    return new Promise((resolve) => {
      if (this.closed) {
        resolve({ proven: false, reason: 'the tail proof was closed', dead: { local: server, peer: client } });
        return;
      }
      const now = performance.now();
      // The restore's window probe was the first question.
      w.started = now;
      w.askedAt = now;
      w.resolve = resolve;
      this.settle(w);
    });
  }

  /** Stops the capture; connections still undecided are decided as timed out now. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const w of this.watched.values()) {
      if (w.started === undefined) continue;
      w.check.timeOut(Math.round(performance.now() - w.started));
      this.settle(w);
    }
    this.watched.clear();
    this.capture.close();
    for (const f of this.forges.values()) f.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private segments(batch: ParsedSegment[]): void {
    for (const s of batch) {
      if (s.dst !== this.address) continue; // ours (the restored sockets', the questions)
      const w = this.watched.get(connectionKey({ address: s.dst, port: s.dport }, { address: s.src, port: s.sport }));
      if (!w) continue;
      w.check.clientSegment(s);
      this.settle(w);
    }
  }

  private tick(): void {
    const now = performance.now();
    for (const w of this.watched.values()) {
      if (w.started === undefined || w.askedAt === undefined) continue; // not restored yet
      if (now - w.started >= this.waitMs) w.check.timeOut(this.waitMs);
      else if (w.check.server === null && now - w.askedAt >= ASK_AGAIN_MS) this.ask(w);
      this.settle(w);
    }
  }

  /** A bare ACK far behind the client's window: its kernel answers with its SND.NXT and RCV.NXT. */
  private ask(w: Watched): void {
    w.askedAt = performance.now();
    const family = familyOf(w.server.address);
    let forge = this.forges.get(family);
    if (!forge) this.forges.set(family, (forge = new SegmentForge(family, { interface: this.options.interface })));
    try {
      forge.send({
        src: w.server.address, sport: w.server.port, dst: w.client.address, dport: w.client.port,
        seq: seqAdd(w.check.tail.sndEnd, -PROBE_BEHIND), ack: w.check.tail.rcvNxt, flags: TCP_ACK, window: 0,
      });
    } catch {
      // A full device queue or a route not up yet: the next tick asks again.
    }
  }

  /** Tells a watched connection's verdict once there is one (segments may settle it before watch()). */
  private settle(w: Watched): void {
    const { check } = w;
    if (!check.settled || !w.resolve || w.started === undefined) return;
    this.watched.delete(connectionKey(w.server, w.client));
    w.resolve(outcome(check.server!.proven ? check.client! : check.server!, w, Math.round((performance.now() - w.started) * 100) / 100));
  }
}

function outcome(side: TailSide, w: Watched, afterMs: number): TailOutcome {
  if (side.proven) return { proven: true, afterMs };
  const n = w.check.numbers;
  // The client's own numbers make the RST exact (seq = its RCV.NXT); without them the close
  // engine learns them first.
  const dead: DeadConnection = n
    ? { local: w.server, peer: w.client, tracked: { deadNextSeq: n.ack, peerNextSeq: n.seq, peerAck: n.ack } }
    : { local: w.server, peer: w.client };
  return { proven: false, reason: side.reason, dead };
}
