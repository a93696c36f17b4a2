// Fencing in the agent (issue 4): a node declared dead is fenced off the shared devices before
// anything of its is taken over, so a node that only looked dead cannot write after the backup
// starts to. At start the agent joins (registers its key; unfences itself after a fence); while
// it runs, it watches its own key, and a key gone means this node was fenced: it must stop
// writing (the agent stops the instances it runs). Every surviving node with fencing configured
// fences; the second finds the work done ('already-fenced').
import { EventEmitter } from 'node:events';
import { Fencer, OwnKeyWatch, type DeviceReport, type FenceReport, type ReservationDevice } from '../fence/fencer.js';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import type { NodeEventSource } from '../monitor/witnessed-node-events.js';

export interface NodeFencingOptions {
  cluster: string;
  node: string;
  /** Every node of the cluster, this one included: the keys derive from these names. */
  nodes: string[];
  devices: ReservationDevice[];
  /** PREEMPT AND ABORT (default) or PREEMPT: see FencerOptions.abort. */
  abort: boolean;
  /** How often this node checks that its own key is still registered. */
  checkMs: number;
  /** Node events as the agent decides on them (witnessed, when witnesses are configured). */
  events: NodeEventSource;
}

export type FenceDone = FenceReport & { startedAt: number; doneAt: number };

export class FenceFailedError extends Error {
  override readonly name = 'FenceFailedError';
  readonly code = 'ERR_FENCE_FAILED';
  constructor(readonly report: FenceReport) {
    super(`fencing ${report.node} failed: ${report.devices.filter((d) => !d.ok).map((d) => `${d.device}: ${d.error}`).join('; ')}`);
  }
}

export class NodeFencing extends EventEmitter<{ fence: [FenceDone]; fenced: [{ device: string; at: number }] }> {
  readonly fencer: Fencer;
  private readonly watch: OwnKeyWatch;
  /** The fence of each node declared dead, until it is back: one per death, shared by its users. */
  private readonly inFlight = new Map<string, Promise<FenceDone>>();
  private readonly onEvent = (e: DetectorEvent) => {
    if (e.kind === 'node-down') this.fenced(e.node).catch(() => {}); // reported through 'fence'
    else if (e.kind === 'node-up') this.inFlight.delete(e.node);
  };
  lastFence: FenceDone | undefined;
  fencedAt: number | undefined;

  constructor(private readonly options: NodeFencingOptions) {
    super();
    this.fencer = new Fencer({ cluster: options.cluster, node: options.node, nodes: options.nodes, devices: options.devices, abort: options.abort });
    this.watch = new OwnKeyWatch(this.fencer, options.checkMs);
    this.watch.on('fenced', (f) => {
      this.fencedAt ??= f.at;
      this.emit('fenced', f);
    });
    this.watch.on('error', () => {}); // a device that cannot answer is no proof of a fence
  }

  /** Registers this node on every device (a partial join is an error: it could not be fenced there, nor fence). */
  async start(): Promise<DeviceReport[]> {
    const joined = await this.fencer.join();
    const failed = joined.filter((r) => !r.ok);
    if (failed.length) throw new Error(`fencing: cannot join ${failed.map((r) => `${r.device} (${r.error})`).join(', ')}`);
    this.options.events.on('event', this.onEvent);
    this.watch.start();
    return joined;
  }

  stop(): void {
    this.options.events.off('event', this.onEvent);
    this.watch.stop();
  }

  /** Resolves once `node` is fenced off every device (started on its death, or now); rejects if any device failed. */
  fenced(node: string): Promise<FenceDone> {
    let p = this.inFlight.get(node);
    if (!p) {
      p = this.fence(node);
      this.inFlight.set(node, p);
      // A failed fence may be tried again by the next caller.
      p.catch(() => this.inFlight.get(node) === p && this.inFlight.delete(node));
    }
    return p;
  }

  private async fence(node: string): Promise<FenceDone> {
    const startedAt = performance.timeOrigin + performance.now();
    const report = await this.fencer.fence(node);
    const done = { ...report, startedAt, doneAt: performance.timeOrigin + performance.now() };
    this.lastFence = done;
    this.emit('fence', done);
    if (!report.ok) throw new FenceFailedError(report);
    return done;
  }
}
