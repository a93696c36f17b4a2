// Follows the byte streams of a service's connections as they cross the wire, so that when the
// server dies we know, per connection, whether a protocol goodbye would land between messages.
// It needs the capture to deliver payload bytes and to have seen each connection's SYN: a stream
// joined in the middle has no known message boundary.
import type { ParsedSegment } from '../native.js';
import { TCP_FIN, TCP_RST, TCP_SYN } from '../native.js';
import type { SegmentSource } from './close-remote.js';
import { canonicalAddress, connectionKey, type Endpoint } from './endpoint.js';
import type { BoundaryTracker, GoodbyePlugin } from './goodbye/types.js';
import { seqAdd, seqDiff } from './seq.js';

/** Delivers one direction's payload in order, trimming retransmissions; a gap breaks it. */
export class StreamFollower {
  private nextSeq: number | undefined;
  broken: string | null = null;

  constructor(private readonly sink: (chunk: Uint8Array) => void) {}

  /** The sequence number of the next byte expected (after the SYN), once the SYN was seen. */
  get next(): number | undefined {
    return this.nextSeq;
  }

  syn(seq: number): void {
    this.nextSeq = seqAdd(seq, 1);
  }

  data(seq: number, payload: Uint8Array, declaredLength: number): void {
    if (this.broken || declaredLength === 0) return;
    if (this.nextSeq === undefined) {
      this.broken = 'the connection was joined mid-stream (its SYN was not seen)';
      return;
    }
    if (payload.length < declaredLength) {
      this.broken = 'the capture truncated a segment';
      return;
    }
    const offset = seqDiff(this.nextSeq, seq);
    if (offset > 0) {
      this.broken = `a gap of ${offset} bytes in the captured stream`;
      return;
    }
    const fresh = payload.subarray(-offset);
    if (fresh.length === 0) return; // a retransmission of what we already have
    this.nextSeq = seqAdd(this.nextSeq, fresh.length);
    this.sink(fresh);
  }
}

interface Followed {
  tracker: BoundaryTracker;
  toServer: StreamFollower;
  toClient: StreamFollower;
}

/** Whether a goodbye lands between messages, and where the two streams stand (sequence space). */
export interface BoundaryState {
  atBoundary: boolean;
  reason: string;
  /** seq of the next server byte / client byte, as far as the streams were followed. */
  serverNext?: number;
  clientNext?: number;
}

/** The server side followed: one endpoint, or a port on any local address (address omitted). */
export interface FollowedServer {
  address?: string;
  port: number;
  /** Without an address: which addresses are the server's (default: any with the port). */
  isLocalAddress?: (address: string) => boolean;
}

/**
 * Connections followed at most at once. Past it the one quiet for longest is dropped (its
 * goodbye then falls back), so the watch stays bounded whatever ends it never sees (a SYN flood's
 * half-opens, segments the capture lost).
 */
export const MAX_FOLLOWED = 65536;

export class BoundaryWatch {
  /** In order of their last segment: the first is the one quiet for longest. */
  private readonly conns = new Map<string, Followed>();
  private readonly unsubscribe: () => void;
  private readonly server: FollowedServer;
  /** Connections dropped to make room. */
  evicted = 0;

  constructor(
    source: SegmentSource,
    server: FollowedServer,
    private readonly plugin: GoodbyePlugin,
    private readonly maxFollowed = MAX_FOLLOWED,
  ) {
    this.server = server.address !== undefined ? { address: canonicalAddress(server.address), port: server.port } : { ...server };
    this.unsubscribe = source.onSegments((segs) => {
      for (const s of segs) this.onSegment(s);
    });
  }

  /**
   * Whether a goodbye on this connection (the server side = the dead side) lands between
   * messages. `local` names the server side when the watch follows a port on any address.
   */
  state(peer: Endpoint, local?: Endpoint): BoundaryState {
    const f = this.conns.get(this.keyOf(peer, local));
    if (!f) {
      const why = this.evicted > 0 ? ` (or was the quietest of the ${this.maxFollowed} followed when room was needed)` : '';
      return { atBoundary: false, reason: `the connection was not followed from its start${why}` };
    }
    const positions = {
      ...(f.toClient.next !== undefined ? { serverNext: f.toClient.next } : {}),
      ...(f.toServer.next !== undefined ? { clientNext: f.toServer.next } : {}),
    };
    const broken = f.toClient.broken ?? f.toServer.broken;
    if (broken) return { atBoundary: false, reason: broken, ...positions };
    return { atBoundary: f.tracker.atBoundary(), reason: f.tracker.reason(), ...positions };
  }

  /** Stops following a connection that is over (the owner knows it closed). */
  forget(peer: Endpoint, local?: Endpoint): void {
    this.conns.delete(this.keyOf(peer, local));
  }

  get size(): number {
    return this.conns.size;
  }

  close(): void {
    this.unsubscribe();
    this.conns.clear();
  }

  private keyOf(peer: Endpoint, local?: Endpoint): string {
    const address = local?.address ?? this.server.address;
    if (address === undefined) throw new TypeError('BoundaryWatch follows a port on any address: name the local endpoint');
    return connectionKey({ address, port: this.server.port }, peer);
  }

  private isServer(address: string, port: number): boolean {
    if (port !== this.server.port) return false;
    if (this.server.address === undefined) return this.server.isLocalAddress?.(address) ?? true;
    return canonicalAddress(address) === this.server.address;
  }

  private onSegment(s: ParsedSegment): void {
    const fromServer = this.isServer(s.src, s.sport);
    if (!fromServer && !this.isServer(s.dst, s.dport)) return;
    const [local, peer] = fromServer ? [{ address: s.src, port: s.sport }, { address: s.dst, port: s.dport }] : [{ address: s.dst, port: s.dport }, { address: s.src, port: s.sport }];
    const key = connectionKey(local, peer);
    let f = this.conns.get(key);
    // A reset, or the server's FIN (the client reads end-of-file), ends what a goodbye could do.
    if (s.flags & TCP_RST || (fromServer && s.flags & TCP_FIN && !(s.flags & TCP_SYN))) {
      this.conns.delete(key);
      return;
    }
    if (f) {
      this.conns.delete(key); // to the end: the most recently active
      this.conns.set(key, f);
    } else {
      if (this.conns.size >= this.maxFollowed) {
        this.conns.delete(this.conns.keys().next().value!);
        this.evicted++;
      }
      const tracker = this.plugin.createTracker();
      f = {
        tracker,
        toServer: new StreamFollower((c) => tracker.clientData(c)),
        toClient: new StreamFollower((c) => tracker.serverData(c)),
      };
      this.conns.set(key, f);
    }
    const dir = fromServer ? f.toClient : f.toServer;
    if (s.flags & TCP_SYN) dir.syn(s.seq);
    else dir.data(s.seq, s.payload ?? new Uint8Array(0), s.payloadLength);
  }
}
