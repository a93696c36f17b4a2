// What a segment stream's source (segment-stream-source.ts) captures: the primary's own segments
// of the services a backup asked for. The default is a ring on every interface ('any': the
// primary's traffic is on its own interfaces, loopback included); tests inject their own.
import type { ParsedSegment } from '../../native.js';
import { FlowTracker } from '../flow-tracker.js';
import type { Endpoint } from '../endpoint.js';

/** A capture of segments, as a segment stream's source uses it. */
export interface SegmentCapture {
  /**
   * Settles once the capture takes segments (the default's ring is set up on a libuv worker, tens
   * to hundreds of ms); rejects if it never will (EPERM, no memory for the ring). The source
   * WELCOMEs a backup only after it: a connection opened before would be missing from the copy
   * while the stream said it was up.
   */
  readonly ready: Promise<void>;
  /** Registers a listener for every batch of captured segments (capture order); returns its removal. */
  onSegments(listener: (segments: ParsedSegment[]) => void): () => void;
  /** Frames the capture lost so far (a counter that only grows). */
  stats(): { drops: number };
  /**
   * The capture time (ms since the epoch) up to which every segment the capture took has been
   * handed to the listeners, assuming the event loop has just polled the capture (the source
   * asks from a setImmediate after a timer tick at `tickMs`, so the poll phase that follows the
   * tick has run).
   */
  completeToMs(tickMs: number): number;
  /** Stops capturing; idempotent. */
  close(): void;
}

/** Makes the capture for one subscriber's services (throws what the capture throws: EPERM, too many hosts). */
export type SegmentCaptureFactory = (services: readonly Endpoint[]) => SegmentCapture;

/** Largest TCP payload in one captured frame (a GSO/GRO frame can be up to 64 KiB). */
const FULL_PAYLOAD = 65535;
/** The ring hands over a block at most this long after its first frame, ms. */
const BLOCK_TIMEOUT_MS = 10;
/**
 * The kernel's block timer fires on jiffies (4 ms at HZ=250, 10 ms at HZ=100): a block can be
 * handed over this much later than BLOCK_TIMEOUT_MS.
 */
const TIMER_SLACK_MS = 10;
/** A wake-up hands JS at most this many segments (native kMaxDelivered): a full batch may leave more in the ring. */
const MAX_DELIVERED = 1024;

/**
 * The primary's own segments of `services` (payload whole), on every interface. Throws what
 * FlowTracker throws: EPERM without CAP_NET_RAW, RangeError past 8 hosts or 16 ports.
 *
 * completeToMs: a frame captured at c is in a block handed over by c + 10 ms (+ the kernel
 * timer's slack); a wake-up delivers at most 1024 segments, so after a full batch more may be
 * waiting, and only the newest segment delivered is vouched for; before the ring is set up (it is
 * set up on a libuv worker) nothing is.
 */
export function captureOwnSegments(services: readonly Endpoint[]): SegmentCapture {
  const tracker = new FlowTracker({
    interface: 'any',
    hosts: [...new Set(services.map((s) => s.address))],
    ports: [...new Set(services.map((s) => s.port))],
    payloadBytes: FULL_PAYLOAD,
    trackFlows: false,
    // 64 blocks of 1 MiB handed over every 10 ms at the latest: 640 ms of a stalled loop, as
    // ShadowCapture's ring.
    blockSize: 1024 * 1024,
    blockCount: 64,
    blockTimeoutMs: BLOCK_TIMEOUT_MS,
    // Opened when a backup subscribes: set up on a libuv worker, not on the loop (a grace period).
    background: true,
  });
  // Nothing is vouched for before the ring is set up (nor ever, if it cannot be).
  let ready = false;
  tracker.ready.then(() => (ready = true), () => {});
  let newestMs = 0;
  let backlog = false;
  tracker.onSegments((batch) => {
    const last = batch.at(-1)?.timeMs;
    if (last !== undefined && last > newestMs) newestMs = last;
    backlog = batch.length >= MAX_DELIVERED;
  });
  tracker.start();
  return {
    ready: tracker.ready,
    onSegments: (listener) => tracker.onSegments(listener),
    stats: () => ({ drops: tracker.stats().drops }),
    completeToMs: (tickMs) => (backlog || !ready ? newestMs : Math.max(newestMs, tickMs - BLOCK_TIMEOUT_MS - TIMER_SLACK_MS)),
    close: () => tracker.close(),
  };
}
