// A ShadowTable fed by a real capture (issue 12's first source: a mirror of the primary's port
// at the switch or router, seed 003 FIG. 1, arriving on an interface of this host). Payload is
// captured whole for the service's addresses and ports only; the ring's drops are watched, and so
// are the host's input-backlog drops (softnet_stat: a mirror's copy can be dropped there before it
// reaches the ring); any drop makes the connections open at that time unprovable until they show
// their streams whole again (a takeover then proves each one's tail with its client first).
import type { ParsedSegment } from '../../native.js';
import { mapInSlices } from '../../event-loop.js';
import type { Endpoint } from '../endpoint.js';
import { FlowTracker } from '../flow-tracker.js';
import { softnetDrops } from '../softnet-drops.js';
import type { ContinuePlan, LateClientData } from './shadow-connection.js';
import { ShadowTable, type ShadowStats, type ShadowTableOptions } from './shadow-table.js';

export interface ShadowCaptureOptions extends ShadowTableOptions {
  /** The interface the mirrored frames arrive on (e.g. a mirror port's end on this host). */
  interface: string;
  /** How often the ring's drop counter is read and ended connections swept, ms; default 100. */
  checkIntervalMs?: number;
  /** The host's input-backlog drop counter (default: /proc/net/softnet_stat's, softnetDrops). */
  backlogDropCounter?: () => Promise<number | null>;
}

/** Largest TCP payload in one captured frame (a GRO-merged frame can be up to 64 KiB). */
const FULL_PAYLOAD = 65535;

export class ShadowCapture implements Disposable {
  readonly table: ShadowTable;
  private readonly tracker: FlowTracker;
  private readonly timer: NodeJS.Timeout;
  private drops = 0;
  /** The host's input-backlog drops: the count when watching began (null: unreadable), and since. */
  private backlogBase: number | null | undefined;
  private backlogDrops = 0;
  private readonly backlogDropCounter: () => Promise<number | null>;
  private closed = false;
  /** Whether the ring is set up (`ready` resolved): connections opened before it are not followed. */
  private capturing = false;

  /**
   * Starts capturing as soon as the ring is set up, on a libuv worker (`ready`; setting it up on
   * the loop would hold the heartbeats for a kernel grace period). Throws what the capture
   * throws (no such interface, EPERM); a ring that cannot be set up (ENOMEM) rejects `ready`,
   * and plans() with it.
   */
  constructor(options: ShadowCaptureOptions) {
    this.table = new ShadowTable(options);
    this.backlogDropCounter = options.backlogDropCounter ?? softnetDrops;
    this.tracker = new FlowTracker({
      interface: options.interface,
      hosts: [...new Set(options.services.map((s) => s.address))],
      ports: [...new Set(options.services.map((s) => s.port))],
      payloadBytes: FULL_PAYLOAD,
      trackFlows: false,
      // A block is handed over when full or 10 ms after its first frame, so the ring holds
      // 64 x 10 ms = 640 ms of a stalled loop however light the traffic (with 2 ms, a lab run
      // lost frames to a 32 ms stall). The ring's latency does not matter: plans are taken after
      // a failure detection that takes far longer.
      blockSize: 1024 * 1024,
      blockCount: 64,
      blockTimeoutMs: 10,
      background: true,
    });
    this.tracker.onSegments((batch: ParsedSegment[]) => this.table.segments(batch, Date.now()));
    this.tracker.start();
    this.tracker.ready.then(() => void (this.capturing = true), () => undefined);
    this.timer = setInterval(() => this.check(), options.checkIntervalMs ?? 100);
    this.timer.unref();
  }

  /**
   * The plans for one service address (all when absent), after what the ring still holds has
   * been read: call it once the primary is silent (fenced) and the ring's timeout has passed.
   * Made in ~2 ms slices with a yield between them (a plan costs ~60 µs: 10,000 connections
   * would hold the loop, and the agent's heartbeats, for more than half a second).
   */
  async plans(address?: string): Promise<ContinuePlan[]> {
    await this.tracker.ready;
    this.check();
    await this.checkBacklog();
    return mapInSlices(this.table.shadows(address), (c) => c.plan(Date.now()));
  }

  /**
   * Client bytes the mirror showed past a restore's RCV.NXT (ShadowTable.clientDataSince): the
   * dead server's port still gets its clients' frames until the address moves, and the mirror
   * copies them here.
   */
  clientDataSince(client: Endpoint, server: Endpoint, rcvNxt: number): LateClientData | null {
    return this.table.clientDataSince(client, server, rcvNxt);
  }

  /** Resolves once the mirror is captured (see the constructor); rejects with what kept the ring from being set up. */
  get ready(): Promise<void> {
    return this.tracker.ready;
  }

  /**
   * captureDrops: the ring's; backlogDrops: the host's input backlog's since the shadow began
   * (host-wide: an upper bound of its own); capturing: whether the ring is set up yet (before,
   * a connection's handshake passes unseen, and a takeover resets it instead of continuing it).
   */
  stats(): ShadowStats & { captureDrops: number; backlogDrops: number; capturing: boolean } {
    return { ...this.table.stats(), captureDrops: this.drops, backlogDrops: this.backlogDrops, capturing: this.capturing };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.tracker.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private check(): void {
    if (this.closed) return;
    const drops = this.tracker.stats().drops;
    // The ring's timestamps are this host's clock: every frame captured before now is stamped earlier.
    if (drops > this.drops) this.table.captureLost(drops - this.drops, Date.now());
    this.drops = drops;
    this.table.sweep(Date.now());
    void this.checkBacklog();
  }

  /**
   * Counts the host's new input-backlog drops as capture losses, as of the read (every frame they
   * can have been was dropped by then; the connections captured by then are suspect).
   */
  private async checkBacklog(): Promise<void> {
    const now = await this.backlogDropCounter();
    const atMs = Date.now();
    if (this.closed || now === null) return;
    if (this.backlogBase === undefined || this.backlogBase === null) {
      this.backlogBase = now;
      return;
    }
    const fresh = now - this.backlogBase - this.backlogDrops;
    if (fresh <= 0) return;
    this.backlogDrops += fresh;
    this.table.captureLost(fresh, atMs);
  }
}
