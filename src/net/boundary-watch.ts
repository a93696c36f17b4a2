// Follows the byte streams of a service's connections as they cross the wire, so that when the
// server dies we know, per connection, whether a protocol goodbye would land between messages.
// It needs the capture to deliver payload bytes and to have seen each connection's SYN: a stream
// joined in the middle has no known message boundary.
import type { ParsedSegment } from '../native.js';
import { TCP_RST, TCP_SYN } from '../native.js';
import type { SegmentSource } from './close-remote.js';
import { canonicalAddress, connectionKey, type Endpoint } from './endpoint.js';
import type { BoundaryTracker, GoodbyePlugin } from './goodbye/types.js';
import { seqAdd, seqDiff } from './seq.js';

/** Delivers one direction's payload in order, trimming retransmissions; a gap breaks it. */
export class StreamFollower {
  private next: number | undefined;
  broken: string | null = null;

  constructor(private readonly sink: (chunk: Uint8Array) => void) {}

  syn(seq: number): void {
    this.next = seqAdd(seq, 1);
  }

  data(seq: number, payload: Uint8Array, declaredLength: number): void {
    if (this.broken || declaredLength === 0) return;
    if (this.next === undefined) {
      this.broken = 'the connection was joined mid-stream (its SYN was not seen)';
      return;
    }
    if (payload.length < declaredLength) {
      this.broken = 'the capture truncated a segment';
      return;
    }
    const offset = seqDiff(this.next, seq);
    if (offset > 0) {
      this.broken = `a gap of ${offset} bytes in the captured stream`;
      return;
    }
    const fresh = payload.subarray(-offset);
    if (fresh.length === 0) return; // a retransmission of what we already have
    this.next = seqAdd(this.next, fresh.length);
    this.sink(fresh);
  }
}

interface Followed {
  tracker: BoundaryTracker;
  toServer: StreamFollower;
  toClient: StreamFollower;
}

export class BoundaryWatch {
  private readonly conns = new Map<string, Followed>();
  private readonly unsubscribe: () => void;

  constructor(
    source: SegmentSource,
    private readonly server: Endpoint,
    private readonly plugin: GoodbyePlugin,
  ) {
    this.server = { address: canonicalAddress(server.address), port: server.port };
    this.unsubscribe = source.onSegments((segs) => {
      for (const s of segs) this.onSegment(s);
    });
  }

  /** Whether a goodbye on this connection (server side = the dead side) lands between messages. */
  state(peer: Endpoint): { atBoundary: boolean; reason: string } {
    const f = this.conns.get(connectionKey(this.server, peer));
    if (!f) return { atBoundary: false, reason: 'the connection was not followed from its start' };
    const broken = f.toClient.broken ?? f.toServer.broken;
    if (broken) return { atBoundary: false, reason: broken };
    return { atBoundary: f.tracker.atBoundary(), reason: f.tracker.reason() };
  }

  close(): void {
    this.unsubscribe();
    this.conns.clear();
  }

  private onSegment(s: ParsedSegment): void {
    const fromServer = s.sport === this.server.port && canonicalAddress(s.src) === this.server.address;
    const toServer = s.dport === this.server.port && canonicalAddress(s.dst) === this.server.address;
    if (!fromServer && !toServer) return;
    const peer = fromServer ? { address: s.dst, port: s.dport } : { address: s.src, port: s.sport };
    const key = connectionKey(this.server, peer);
    let f = this.conns.get(key);
    if (s.flags & TCP_RST) {
      this.conns.delete(key);
      return;
    }
    if (!f) {
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
