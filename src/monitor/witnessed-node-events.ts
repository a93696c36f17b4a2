// A second witness for node deaths (seed 002: the LAN heartbeat and the SCSI disk heartbeat must
// agree). Detector events pass through unchanged, except a node-down: it is held until every
// witness confirms the node is dead, asked again every `recheckMs`; if the node is heard again
// first, the death is dropped (it only looked dead on the LAN) and reported as `disputed`.
import { EventEmitter } from 'node:events';
import type { DetectorEvent, FailureDetector } from './failure-detector.js';

export interface Witness {
  readonly name: string;
  /**
   * True when this witness also sees `node` as dead, or has no say about it (a disk heartbeat
   * watches one node). A throw counts as "not confirmed".
   */
  confirmsDown(node: string): boolean | Promise<boolean>;
}

/** What consumes node events: the heartbeat agent itself, or this filter in front of it. */
export interface NodeEventSource {
  readonly detector: Pick<FailureDetector, 'status'>;
  on(name: 'event', listener: (e: DetectorEvent) => void): unknown;
  off(name: 'event', listener: (e: DetectorEvent) => void): unknown;
}

export type Disputed = { node: string; witness: string; since: number; at: number };

type NodeDown = Extract<DetectorEvent, { kind: 'node-down' }>;

export class WitnessedNodeEvents extends EventEmitter<{ event: [DetectorEvent]; disputed: [Disputed] }> implements NodeEventSource {
  private readonly pending = new Map<string, { down: NodeDown; timer: NodeJS.Timeout | undefined }>();
  private readonly onEvent = (e: DetectorEvent) => this.handle(e);

  constructor(
    private readonly source: NodeEventSource,
    private readonly witnesses: Witness[],
    private readonly recheckMs = 100,
  ) {
    super();
    source.on('event', this.onEvent);
  }

  get detector(): Pick<FailureDetector, 'status'> {
    return this.source.detector;
  }

  close(): void {
    this.source.off('event', this.onEvent);
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }

  private handle(e: DetectorEvent): void {
    if (e.kind === 'node-down') {
      if (this.witnesses.length === 0) return void this.emit('event', e);
      this.pending.set(e.node, { down: e, timer: undefined });
      void this.ask(e.node);
      return;
    }
    if (e.kind === 'node-up') {
      const p = this.pending.get(e.node);
      if (p) {
        clearTimeout(p.timer);
        this.pending.delete(e.node);
        // The LAN said dead, a witness said alive, and the node came back: no failover happened.
        this.emit('disputed', { node: e.node, witness: 'heartbeat', since: p.down.at, at: e.at });
        return;
      }
    }
    this.emit('event', e);
  }

  private async ask(node: string): Promise<void> {
    const p = this.pending.get(node);
    if (!p) return;
    for (const w of this.witnesses) {
      const agrees = await Promise.resolve()
        .then(() => w.confirmsDown(node))
        .catch(() => false);
      if (this.pending.get(node) !== p) return; // came back meanwhile
      if (!agrees) {
        if (p.timer === undefined) this.emit('disputed', { node, witness: w.name, since: p.down.at, at: performance.timeOrigin + performance.now() });
        p.timer = setTimeout(() => void this.ask(node), this.recheckMs);
        return;
      }
    }
    this.pending.delete(node);
    this.emit('event', { ...p.down, at: performance.timeOrigin + performance.now() });
  }
}
