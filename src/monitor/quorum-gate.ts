// Who may speak for a silent peer. A node that stops hearing its peers cannot tell "they died"
// from "I am cut off": if it acted alone, both halves of a partition would publish each other's
// death and take each other's addresses (split brain). So a death is acted upon (passed on to
// the publisher, the fencing and the takeovers) only when this node has quorum:
//   - it hears a strict majority of the configured nodes, itself included (corosync's votequorum);
//   - or the cluster has two nodes (no majority is possible) and something breaks the tie: fencing
//     (the first fence wins, the loser finds itself fenced), a witness that confirmed the death
//     (seed 002's disk heartbeat, which sits before this gate), or the operator's explicit
//     `quorum.twoNode: true`, which accepts the risk (corosync's two_node; `agent --check` warns).
// A death without quorum is held back and reported (`suppressed`): nothing is published and
// nothing taken over, and when that node is heard again its coming back is not published either
// (subscribers never saw it go). Planned departures (`node-left`) and all other events pass.
import { EventEmitter } from 'node:events';
import type { DetectorEvent } from './failure-detector.js';
import type { NodeEventSource } from './witnessed-node-events.js';

export interface QuorumPolicy {
  /** Every node of the cluster, this one included. */
  nodes: string[];
  self: string;
  /** Two nodes may act alone: fencing, a witness or the operator's two_node settles it. */
  twoNodeTieBreaker: 'fencing' | 'witness' | 'operator' | undefined;
}

export interface Suppressed {
  node: string;
  at: number;
  /** Nodes this one heard (itself included) out of the cluster's. */
  heard: number;
  of: number;
  why: string;
}

export class QuorumGate extends EventEmitter<{ event: [DetectorEvent]; suppressed: [Suppressed] }> implements NodeEventSource {
  private readonly onEvent = (e: DetectorEvent) => this.handle(e);
  /** Nodes whose death was held back: their return is not news. */
  private readonly held = new Set<string>();

  constructor(
    private readonly source: NodeEventSource,
    private readonly policy: QuorumPolicy,
  ) {
    super();
    source.on('event', this.onEvent);
  }

  get detector(): NodeEventSource['detector'] {
    return this.source.detector;
  }

  close(): void {
    this.source.off('event', this.onEvent);
  }

  /** Whether this node hears a strict majority of the nodes, itself included (no tie-breaker counts). */
  hearsMajority(): boolean {
    const { heard, of } = this.count();
    return 2 * heard > of;
  }

  /** Whether this node may act on a peer's death now; `why` says what decided it. */
  quorum(): { ok: boolean; heard: number; of: number; why: string } {
    const { heard, of } = this.count();
    if (this.hearsMajority()) return { ok: true, heard, of, why: `hears ${heard} of ${of} nodes (a majority)` };
    if (of === 2 && this.policy.twoNodeTieBreaker) return { ok: true, heard, of, why: `two nodes, tie broken by ${this.policy.twoNodeTieBreaker}` };
    const fix = of === 2 ? 'two nodes without fencing, a disk witness or quorum.twoNode' : 'not a majority';
    return { ok: false, heard, of, why: `hears ${heard} of ${of} nodes: ${fix}; this node may be the one cut off` };
  }

  /** Nodes heard (itself included) out of the cluster's. */
  private count(): { heard: number; of: number } {
    const up = new Set(this.source.detector.status().filter((p) => p.up).map((p) => p.node));
    return { heard: 1 + this.policy.nodes.filter((n) => n !== this.policy.self && up.has(n)).length, of: this.policy.nodes.length };
  }

  private handle(e: DetectorEvent): void {
    if (e.kind === 'node-down') {
      const q = this.quorum();
      if (!q.ok) {
        this.held.add(e.node);
        this.emit('suppressed', { node: e.node, at: e.at, heard: q.heard, of: q.of, why: q.why });
        return;
      }
    } else if (e.kind === 'node-up' || e.kind === 'node-left') {
      if (this.held.delete(e.node) && e.kind === 'node-up') return;
    }
    this.emit('event', e);
  }
}
