// The mirror's own timing of the backup's replication-stream probes (issue 12, seed 003 [0078]-
// [0080]: a probe ties a stream offset to a time range, and the narrower the range the more
// writes fall clearly before or after it). The probe (src/agent/redis-stream-probe.ts) goes to
// the service endpoint the shadow watches, so the capture sees its `PUBLISH takeover:probe
// <nonce>` and the reply with the same clock, on the same path and in the same order as the
// clients' writes: [capture of the PUBLISH's first byte, capture of its reply's end] holds the
// instant the primary ran it, and spans the primary's service time and the wire (tens of µs),
// not the backup's event-loop round trip (replay-match.ts's windows otherwise).
//
// Only PUBLISHes of the probe's own connections are recorded (`isProbe`): a client's PUBLISH on
// the channel is not a probe (it cannot know a nonce; it is ignored all the same), and no
// PUBLISH is ever a write to match (in cluster mode PUBLISH is not in the replication stream).
import { PROBE_CHANNEL } from './replication-stream.js';

/** The capture's times of one probe PUBLISH (ms since the epoch: ParsedSegment.timeMs). */
export interface CapturedProbe {
  /** The probe's connection (its client end as `${address}|${port}`, RequestLog's form). */
  connection: string;
  /** When the capture saw the PUBLISH's first byte. */
  sentMs: number;
  /** false when that byte was held behind a capture hole (its time is the filling segment's, maybe later). */
  sentExact: boolean;
  /** When the capture saw the end of the PUBLISH's reply; null until then. */
  answeredMs: number | null;
}

export interface ProbeCaptureTimesOptions {
  /** Whether a client endpoint (`${address}|${port}`, the address canonical) is one of the probe's connections. */
  isProbe: (connection: string) => boolean;
  /** Probes remembered, the newest (default 256; the probe keeps 60). */
  keep?: number;
}

/** The probe's nonces: 16 random bytes as 32 lowercase hex digits. */
const NONCE = /^[0-9a-f]{32}$/;

/** Per nonce, when the capture saw the probe's PUBLISH and its reply; bounded, oldest forgotten first. */
export class ProbeCaptureTimes {
  private readonly byNonce = new Map<string, CapturedProbe>();
  private readonly keep: number;

  constructor(private readonly options: ProbeCaptureTimesOptions) {
    const keep = options.keep ?? 256;
    if (!Number.isInteger(keep) || keep < 1) throw new RangeError(`keep must be a positive integer (got ${keep})`);
    this.keep = keep;
  }

  /**
   * A PUBLISH a shadowed connection sent (its arguments after the name, as framed), first byte
   * captured at sentMs. Returns the entry to set answeredMs on when it is the probe's own (a
   * probe connection, the probe channel, a nonce), else null (nothing recorded). A nonce seen
   * again (a retransmission is not framed twice; a repeat is not a probe) is dropped: null.
   */
  sent(connection: string, args: readonly Uint8Array[], sentMs: number, sentExact: boolean): CapturedProbe | null {
    if (args.length !== 2 || Buffer.from(args[0]!).toString('latin1') !== PROBE_CHANNEL) return null;
    const nonce = Buffer.from(args[1]!).toString('latin1');
    if (!NONCE.test(nonce) || !this.options.isProbe(connection)) return null;
    if (this.byNonce.has(nonce)) {
      this.byNonce.delete(nonce);
      return null;
    }
    const entry: CapturedProbe = { connection, sentMs, sentExact, answeredMs: null };
    this.byNonce.set(nonce, entry);
    if (this.byNonce.size > this.keep) this.byNonce.delete(this.byNonce.keys().next().value!);
    return entry;
  }

  /** The capture's times of one nonce (a copy), or undefined when it did not see it (or forgot it). */
  get(nonce: string): CapturedProbe | undefined {
    const e = this.byNonce.get(nonce);
    return e ? { ...e } : undefined;
  }

  /** Nonces remembered. */
  get size(): number {
    return this.byNonce.size;
  }
}
