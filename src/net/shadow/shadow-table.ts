// The backup's shadows of every client connection to the services it may continue (issue 12):
// segments from a capture in, a ContinuePlan per connection out when the primary dies. Pure: the
// capture and the clock are the caller's (ShadowCapture wires a real one).
import type { ParsedSegment } from '../../native.js';
import { TCP_ACK, TCP_SYN } from '../../native.js';
import { canonicalAddress, wireAddress, type Endpoint } from '../endpoint.js';
import type { ContinuePlugin } from './exchange-tracker.js';
import type { ProbeCaptureTimes } from './probe-capture-times.js';
import type { RequestLog } from './request-log.js';
import { ShadowConnection, type ContinuePlan, type LateClientData } from './shadow-connection.js';

export interface ShadowTableOptions {
  /** The service endpoints whose client connections are shadowed (an address and a port each). */
  services: Endpoint[];
  plugin: ContinuePlugin;
  /** Connections kept at most; a SYN beyond it is not shadowed (counted). Default 100,000. */
  maxConnections?: number;
  /** Bytes kept per direction of one connection; default 8 MiB (see ShadowConnection). */
  maxRetainedBytes?: number;
  /** A connection that ended (FIN, RST) is forgotten once idle this long, ms; default 60,000. */
  endedLingerMs?: number;
  /** Where every connection's plugin records the writes it can tell apart (the replay matcher's). */
  requestLog?: RequestLog;
  /** Where every connection's plugin records the capture times of the stream probe's PUBLISHes. */
  probeTimes?: ProbeCaptureTimes;
  /**
   * The shadow's own connections to the service (the stream probe's; the client endpoint as
   * segments carry it, the address canonical): followed like the others (their probes are
   * timed), but never planned (neither continued nor reset at a takeover) nor counted. Asked
   * each time, so a connection known as the probe's only after its SYN is left out all the same.
   */
  ownClient?: (client: Endpoint) => boolean;
}

export interface ShadowStats {
  connections: number;
  /** SYNs not shadowed because the table was full. */
  refused: number;
  /** Segments of connections whose SYN was not seen (joined mid-stream). */
  unknownSegments: number;
  /** Frames the capture lost (each marks every connection then open as not continuable). */
  captureLosses: number;
}

export class ShadowTable {
  private readonly connections = new Map<string, ShadowConnection>();
  private readonly services: Set<string>;
  private readonly maxConnections: number;
  private readonly endedLingerMs: number;
  private refused = 0;
  private unknownSegments = 0;
  private captureLosses = 0;
  /** The latest capture loss: its frames, and the capture time by which it was counted (ms since the epoch). */
  private lastLoss: { frames: number; atMs: number } | null = null;

  constructor(private readonly options: ShadowTableOptions) {
    if (options.services.length === 0) throw new RangeError('a ShadowTable needs at least one service endpoint');
    this.services = new Set(options.services.map((e) => `${canonicalAddress(e.address)}|${e.port}`));
    this.maxConnections = options.maxConnections ?? 100_000;
    this.endedLingerMs = options.endedLingerMs ?? 60_000;
  }

  /** Captured segments (any order of connections; each connection's in capture order). */
  segments(batch: readonly ParsedSegment[], nowMs: number): void {
    for (const s of batch) {
      // The addon's addresses are canonical: keys without parsing them (tens of thousands of segments a second).
      const src = `${s.src}|${s.sport}`;
      const dst = `${s.dst}|${s.dport}`;
      const fromServer = this.services.has(src);
      if (!fromServer && !this.services.has(dst)) continue;
      const key = fromServer ? `${src}>${dst}` : `${dst}>${src}`;
      let conn = this.connections.get(key);
      const opening = !fromServer && (s.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN;
      if (opening && conn && (conn.endedReason !== null || conn.clientIsn !== s.seq)) {
        this.connections.delete(key); // the 4-tuple reused by a new connection
        conn = undefined;
      }
      if (!conn) {
        if (!opening) {
          this.unknownSegments++;
          continue;
        }
        if (this.connections.size >= this.maxConnections) {
          this.refused++;
          continue;
        }
        const server = fromServer ? { address: s.src, port: s.sport } : { address: s.dst, port: s.dport };
        const client = fromServer ? { address: s.dst, port: s.dport } : { address: s.src, port: s.sport };
        conn = new ShadowConnection(server, client, {
          plugin: this.options.plugin,
          ...(this.options.requestLog ? { requestLog: this.options.requestLog } : {}),
          ...(this.options.probeTimes ? { probeTimes: this.options.probeTimes } : {}),
          ...(this.options.maxRetainedBytes !== undefined ? { maxRetainedBytes: this.options.maxRetainedBytes } : {}),
        });
        this.connections.set(key, conn);
        // Opened before a loss was counted, yet taken only now: the frames a capture still held
        // when its drop counter was read come after the count; this connection's lost segments
        // may be among the dropped ones just as well as an older connection's.
        if (this.lastLoss && (s.timeMs ?? Number.POSITIVE_INFINITY) <= this.lastLoss.atMs) {
          conn.suspect(`the capture lost ${this.lastLoss.frames} frames while it was open`, this.lastLoss.atMs);
        }
      }
      conn.segment(s, fromServer, nowMs);
    }
  }

  /**
   * The capture lost frames: any open connection may have lost one of its segments, so each is
   * unprovable (reset, not continued, if the primary dies) until both its ends have shown their
   * streams whole again (ShadowConnection.suspect). countedAtMs: the capture clock (ms since the
   * epoch, as ParsedSegment.timeMs) when the drops were counted. A capture hands frames over
   * after it counts a drop that came later (its ring still held them), so a connection whose SYN
   * was captured by then and arrives after this call is as suspect as the ones open now, and
   * only segments captured after countedAtMs make a connection good again.
   */
  captureLost(frames: number, countedAtMs: number): void {
    if (frames <= 0) return;
    this.captureLosses += frames;
    if (!this.lastLoss || countedAtMs >= this.lastLoss.atMs) this.lastLoss = { frames, atMs: countedAtMs };
    for (const conn of this.connections.values()) conn.suspect(`the capture lost ${frames} frames while it was open`, countedAtMs);
  }

  /** Forgets connections reset, or ended and quiet for endedLingerMs. */
  sweep(nowMs: number): void {
    for (const [key, conn] of this.connections) {
      if (conn.reset || (conn.endedReason !== null && nowMs - conn.lastSeenMs > this.endedLingerMs)) this.connections.delete(key);
    }
  }

  /** The live shadows of one service address (all when absent), the shadow's own connections left out. */
  shadows(address?: string): ShadowConnection[] {
    const want = address === undefined ? undefined : canonicalAddress(address);
    return [...this.connections.values()].filter((c) => !c.reset && (want === undefined || c.server.address === want) && !this.own(c));
  }

  private own(c: ShadowConnection): boolean {
    return this.options.ownClient?.(c.client) ?? false;
  }

  /** How to continue every connection to one service address (all when absent), now, in one go. */
  plans(nowMs: number, address?: string): ContinuePlan[] {
    return this.shadows(address).map((c) => c.plan(nowMs));
  }

  /**
   * Whether this connection is followed: shadowed from its SYN, not reset, not the shadow's own.
   * Its addresses in any spelling (an IPv4-mapped one as the IPv4 address it is on the wire).
   */
  follows(client: Endpoint, server: Endpoint): boolean {
    const c = this.connections.get(`${wireAddress(server.address)}|${server.port}>${wireAddress(client.address)}|${client.port}`);
    return c !== undefined && !c.reset && !this.own(c);
  }

  /** ShadowConnection.clientDataSince of one connection (endpoints as its plan gave them); null when not shadowed. */
  clientDataSince(client: Endpoint, server: Endpoint, rcvNxt: number): LateClientData | null {
    return this.connections.get(`${server.address}|${server.port}>${client.address}|${client.port}`)?.clientDataSince(rcvNxt) ?? null;
  }

  stats(): ShadowStats {
    let own = 0;
    if (this.options.ownClient) for (const c of this.connections.values()) if (this.own(c)) own++;
    return { connections: this.connections.size - own, refused: this.refused, unknownSegments: this.unknownSegments, captureLosses: this.captureLosses };
  }
}
