// Heartbeat datagrams counted per peer and link: sent (handed to the kernel), send errors,
// received (accepted by the detector) and rejected by reason. The agent's metrics read these at
// scrape time. Labels stay bounded whatever arrives on the wire: a peer is a configured peer's
// name or '' (a datagram that names no configured peer: unreadable, or a stranger), and a link
// is one of this node's own link ids (the socket it came in on), never the datagram's claim.
import type { HeartbeatRejection } from './heartbeat-packet.js';

/** Why a datagram was not taken as a heartbeat: the packet's checks, then the agent's and the detector's. */
export type TrafficRejection = HeartbeatRejection | 'wrong-link' | 'own' | 'unknown-node' | 'replayed' | 'stale-incarnation';

export interface LinkTraffic {
  /** A configured peer, or '' when the datagram names none. */
  peer: string;
  link: number;
  sent: number;
  sendErrors: number;
  received: number;
  rejected: Partial<Record<TrafficRejection, number>>;
}

export class HeartbeatTraffic {
  private readonly rows = new Map<string, LinkTraffic>();

  /** `peers`: the configured peers' names (anything else is counted under ''). */
  constructor(private readonly peers: ReadonlySet<string>) {}

  sent(peer: string, link: number): void {
    this.row(peer, link).sent++;
  }

  sendError(peer: string, link: number): void {
    this.row(peer, link).sendErrors++;
  }

  received(peer: string, link: number): void {
    this.row(peer, link).received++;
  }

  /** `claimed`: the node the datagram names, if it could be read (unauthenticated: used only when configured). */
  rejected(reason: TrafficRejection, claimed: string | undefined, link: number): void {
    const r = this.row(claimed, link).rejected;
    r[reason] = (r[reason] ?? 0) + 1;
  }

  /** Every (peer, link) seen so far, with its counts since the start (copies). */
  entries(): LinkTraffic[] {
    return [...this.rows.values()].map((r) => ({ ...r, rejected: { ...r.rejected } }));
  }

  private row(claimed: string | undefined, link: number): LinkTraffic {
    const peer = claimed !== undefined && this.peers.has(claimed) ? claimed : '';
    const key = `${peer}\0${link}`;
    let r = this.rows.get(key);
    if (!r) {
      r = { peer, link, sent: 0, sendErrors: 0, received: 0, rejected: {} };
      this.rows.set(key, r);
    }
    return r;
  }
}
