// The failure plan for a dead peer node: when the heartbeat detector declares it down, speak for
// its service — take the address over and close every connection the tracker saw — at once,
// once `before` (fencing it off the shared disks) has succeeded.
// The first piece of the agent (issue 3): detection (heartbeats) wired to action (closePeers).
import { EventEmitter } from 'node:events';
import type { NodeEventSource } from '../monitor/witnessed-node-events.js';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import { closePeers, type ClosePeersReport } from '../net/close-peers.js';
import type { CloseMethod } from '../net/close-method.js';
import type { FlowTracker } from '../net/flow-tracker.js';
import { RstGuard } from '../net/rst-guard.js';

export interface PeerTakeoverOptions {
  /** The heartbeat agent, or a WitnessedNodeEvents in front of it. */
  heartbeat: NodeEventSource;
  /** The peer node whose service this host takes over. */
  peer: string;
  service: { address: string; port: number };
  /** Tracks the service's connections before the failure (and hears the peers' answers after). */
  tracker: FlowTracker;
  interface: string;
  prefixLength: number;
  method?: CloseMethod | string;
  /** Runs first and must succeed, or nothing is taken over (the agent fences the peer here). */
  before?: (down: Extract<DetectorEvent, { kind: 'node-down' }>) => Promise<unknown>;
}

export interface TakeoverDone {
  down: Extract<DetectorEvent, { kind: 'node-down' }>;
  report: ClosePeersReport;
  /** When closePeers was called and when it returned (ms since the epoch). */
  startedAt: number;
  doneAt: number;
}

export class PeerTakeover extends EventEmitter<{ done: [TakeoverDone]; failed: [Error] }> {
  private running = false;
  private guard: RstGuard | undefined;
  private readonly onEvent = (e: DetectorEvent) => {
    if (e.kind === 'node-down' && e.node === this.options.peer && !this.running) void this.takeOver(e);
  };

  constructor(private readonly options: PeerTakeoverOptions) {
    super();
    options.heartbeat.on('event', this.onEvent);
  }

  /**
   * Installs the RST guard for the service address ahead of time (for fin, break and goodbyes):
   * starting nft at the moment of failover would cost ~25 ms. Harmless while the address is not
   * ours; removed once the takeover is done, so a service restarted here behaves normally.
   */
  async prepare(): Promise<void> {
    const kind = typeof this.options.method === 'string' ? this.options.method : this.options.method?.kind;
    if (kind === undefined || kind === 'rst' || this.guard) return;
    try {
      this.guard = await RstGuard.install([this.options.service.address]);
    } catch {
      // No nftables here: closePeers tries again at failover and reports the guard as failed.
      this.guard = undefined;
    }
  }

  close(): void {
    this.options.heartbeat.off('event', this.onEvent);
    void this.guard?.remove();
    this.guard = undefined;
  }

  private async takeOver(down: Extract<DetectorEvent, { kind: 'node-down' }>): Promise<void> {
    this.running = true;
    const startedAt = performance.timeOrigin + performance.now();
    try {
      await this.options.before?.(down);
      const report = await closePeers(
        {
          ...this.options.service,
          tracker: this.options.tracker,
          takeover: { interface: this.options.interface, prefixLength: this.options.prefixLength },
        },
        { method: this.options.method ?? 'rst', ...(this.guard ? { guard: false } : {}) },
      );
      this.emit('done', { down, report, startedAt, doneAt: performance.timeOrigin + performance.now() });
    } catch (err) {
      this.emit('failed', err as Error);
    } finally {
      this.running = false;
      await this.guard?.remove().catch(() => undefined);
      this.guard = undefined;
    }
  }
}
