// What happened to each peer, for `status` and the metrics: since when it is in its state, why it
// was declared dead, what was taken over from it and how that went. Fed by the heartbeats'
// verdicts (the detector), the decisions as the agent takes them (confirmed by the witnesses,
// when there are any) and the takeover plans. (An instance's own history, since when and how it
// last ended, is its monitor's: InstanceMonitor.info().) Times are ms since the epoch; bounded.
import { EventEmitter } from 'node:events';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import type { Disputed, NodeEventSource, WitnessedNodeEvents } from '../monitor/witnessed-node-events.js';
import type { PeerTakeover } from './peer-takeover.js';

type NodeDown = Extract<DetectorEvent, { kind: 'node-down' }>;

export interface PeerDeath {
  /** When this agent decided the peer was dead; with witnesses, when the last one agreed. */
  at: number;
  /** `silence`: no heartbeat on any link; `restart`: heard in a new life while it was up. */
  cause: 'silence' | 'restart';
  /** The last heartbeat heard from the peer, on any link. */
  lastHeardAt: number;
  /** How long every link had been silent when the heartbeats declared it dead (ms). */
  silentMs: number;
  /** With witnesses: when the heartbeats declared it dead, before the witnesses agreed. */
  heartbeatsAt?: number;
  witnesses?: string[];
  /** The same in words, e.g. `silent on every link (0, 1) for 412 ms`. */
  why: string;
}

export interface TakeoverRecord {
  address: string;
  port: number;
  /** The decision it followed (PeerDeath.at) and when it finished or failed. */
  decidedAt: number;
  at: number;
  /**
   * ok: every connection closed; incomplete: some left open; failed: nothing done (fence,
   * address...); abandoned: nothing done, the peer turned out to hold the address (alive) or left.
   */
  result: 'ok' | 'incomplete' | 'failed' | 'abandoned';
  /** Connections found (replicated and tracked), and how many of them were not closed. */
  connections: number;
  notClosed: number;
  /** With a `continue` section: connections continued here (not counted in `connections`, which were closed). */
  continued?: number;
  /** The service address was added here (false: it was already here). */
  addressAdded?: boolean;
  /**
   * The peer's address lease it waited out first: its length (s) and the wait (ms, the probes of
   * the link included); `heldPastLeaseMs` when the peer's kernel still answered for the address
   * after the lease: how long past it at least (ms), and the MAC that answered.
   */
  lease?: { seconds: number; waitedMs: number; heldPastLeaseMs?: number; heldBy?: string };
  /** Why it failed, or why it was abandoned. */
  error?: string;
}

/** A peer the heartbeats call dead but a witness does not (yet): nothing is done meanwhile. */
export interface PeerSuspicion {
  since: number;
  /** The witness that disagrees, once one did. */
  disputedBy?: string;
}

export interface PeerHistory {
  /** When the heartbeats last found the peer up or dead (its current state, as `status` shows it). */
  since?: number;
  /** The last death declared (by the heartbeats, and the witnesses if any), kept after the peer is back. */
  death?: PeerDeath;
  suspected?: PeerSuspicion;
  /** The last takeovers of its services, oldest first. */
  takenOver?: TakeoverRecord[];
}

export interface AgentHistoryOptions {
  /** The heartbeats' own verdicts. */
  heartbeat: NodeEventSource;
  /** With witnesses: the decisions the agent acts on (deaths confirmed, disputes). */
  witnessed?: WitnessedNodeEvents;
  /** This node's heartbeat link ids (named in a death's reason). */
  links: number[];
  /** The witnesses' names (named in a death's reason). */
  witnesses: string[];
}

const TAKEOVERS_KEPT = 16;

export class AgentHistory extends EventEmitter<{ takeover: [TakeoverRecord & { peer: string }] }> {
  private readonly peers = new Map<string, PeerHistory>();
  /** The heartbeats' death verdict awaiting the witnesses. */
  private readonly pending = new Map<string, NodeDown>();
  // The state (up or down, as status shows it) is the heartbeats'; a death is the decision's.
  private readonly onHeartbeat = (e: DetectorEvent) => {
    if (e.kind !== 'node-down' && e.kind !== 'node-up') return;
    const p = this.peer(e.node);
    p.since = e.at;
    if (e.kind === 'node-up') {
      delete p.suspected;
      this.pending.delete(e.node);
    } else if (this.options.witnessed) {
      this.pending.set(e.node, e);
      p.suspected = { since: e.at };
    }
  };
  private readonly onDecision = (e: DetectorEvent) => {
    if (e.kind !== 'node-down') return;
    const p = this.peer(e.node);
    p.death = this.death(e, this.pending.get(e.node));
    delete p.suspected;
    this.pending.delete(e.node);
  };
  private readonly onDisputed = (d: Disputed) => {
    const p = this.peer(d.node);
    if (d.witness === 'heartbeat') {
      // Heard again before the witnesses agreed: it was never declared dead (no node-up follows).
      delete p.suspected;
      this.pending.delete(d.node);
    } else if (p.suspected) p.suspected.disputedBy = d.witness;
  };

  constructor(private readonly options: AgentHistoryOptions) {
    super();
    options.heartbeat.on('event', this.onHeartbeat);
    (options.witnessed ?? options.heartbeat).on('event', this.onDecision);
    options.witnessed?.on('disputed', this.onDisputed);
  }

  close(): void {
    this.options.heartbeat.off('event', this.onHeartbeat);
    (this.options.witnessed ?? this.options.heartbeat).off('event', this.onDecision);
    this.options.witnessed?.off('disputed', this.onDisputed);
  }

  /** Records what a peer's takeover plan does (one plan per service taken over). */
  watchTakeover(peer: string, service: { address: string; port: number }, plan: PeerTakeover): void {
    plan.on('done', (d) => {
      const notClosed = d.report.results.filter((r) => !r.ok).length;
      this.addTakeover(peer, {
        ...service,
        decidedAt: d.down.at,
        at: d.doneAt,
        result: notClosed > 0 ? 'incomplete' : 'ok',
        connections: d.report.results.length,
        notClosed,
        ...(d.continued ? { continued: d.continued.connections } : {}),
        ...(d.report.takeovers?.[0] ? { addressAdded: d.report.takeovers[0].added } : {}),
        ...(d.lease
          ? {
              lease: {
                seconds: d.lease.seconds,
                waitedMs: d.lease.waitedMs,
                ...(d.lease.probe?.held ? { heldPastLeaseMs: d.lease.probe.held.pastLeaseMs, heldBy: d.lease.probe.held.macs.join(', ') } : {}),
              },
            }
          : {}),
      });
    });
    plan.on('abandoned', (a) => {
      this.addTakeover(peer, { ...service, decidedAt: a.down.at, at: a.at, result: 'abandoned', connections: 0, notClosed: 0, error: a.why });
    });
    plan.on('failed', (err) => {
      const decidedAt = this.peers.get(peer)?.death?.at ?? Date.now();
      this.addTakeover(peer, { ...service, decidedAt, at: Date.now(), result: 'failed', connections: 0, notClosed: 0, error: err.message });
    });
  }

  /** What status shows of a peer (copies). */
  peerHistory(node: string): PeerHistory {
    const p = this.peers.get(node);
    if (!p) return {};
    return {
      ...(p.since !== undefined ? { since: p.since } : {}),
      ...(p.death ? { death: { ...p.death } } : {}),
      ...(p.suspected ? { suspected: { ...p.suspected } } : {}),
      ...(p.takenOver?.length ? { takenOver: p.takenOver.map((t) => ({ ...t })) } : {}),
    };
  }

  private death(decided: NodeDown, heartbeats: NodeDown | undefined): PeerDeath {
    const verdict = heartbeats ?? decided;
    const silentMs = Math.max(0, Math.round(verdict.at - verdict.lastHeardAt));
    // The detector declares a peer that restarts (a higher incarnation while it was up) dead at
    // the heartbeat that shows it: no silence before it.
    const cause = silentMs === 0 && verdict.lastHeardAt === verdict.at ? 'restart' : 'silence';
    let why = cause === 'restart' ? 'restarted: heard in a new incarnation while it was up' : `silent on every link (${this.options.links.join(', ')}) for ${silentMs} ms`;
    const witnessed = heartbeats !== undefined && this.options.witnessed !== undefined;
    if (witnessed) why += `; witnesses (${this.options.witnesses.join(', ')}) agreed ${Math.round(decided.at - heartbeats.at)} ms later`;
    return {
      at: decided.at,
      cause,
      lastHeardAt: verdict.lastHeardAt,
      silentMs,
      ...(witnessed ? { heartbeatsAt: heartbeats.at, witnesses: [...this.options.witnesses] } : {}),
      why,
    };
  }

  private addTakeover(peer: string, record: TakeoverRecord): void {
    const p = this.peer(peer);
    const list = (p.takenOver ??= []);
    list.push(record);
    if (list.length > TAKEOVERS_KEPT) list.shift();
    this.emit('takeover', { peer, ...record });
  }

  private peer(node: string): PeerHistory {
    let p = this.peers.get(node);
    if (!p) {
      p = {};
      this.peers.set(node, p);
    }
    return p;
  }

}
