// The state an agent sends a subscriber when it connects, before any live event (list, then
// watch, as etcd's and Kubernetes' watches start): one event per node, per instance of this node,
// per service member and per service, each marked `snapshot: true`, built from the agent's
// `status()` so that the picture is the one `status` shows, never another.
//   node            this node UP; each peer in status.peers UP or DOWN
//   instance        this node's instances: state up → UP, not-restarting → NOT_RESTARTING, else DOWN
//   service_member  UP when status calls the member up; else NOT_RESTARTING when it is this
//                   node's instance in that state; else DOWN
//   service         UP when any member is up, else DOWN
// Numbers, so that subscribers' de-duplication keeps the snapshot consistent with live events:
// when the last event this agent published (or, for a node, numbered) for the source says the
// same status, the snapshot repeats it (incarnation, timestamp, reason): a subscriber that saw it
// drops it, one that missed it takes it. Otherwise the state has no event of its own here: a
// source this agent speaks for (its own instances, their members, a service all of whose members
// are here) gets a fresh incarnation, since this is the newest word on it; any other (a peer's
// member, this node as a node, a service partly elsewhere) gets incarnation 0, taken only by a
// subscriber that knows nothing newer, so a guess never hides the owner's own event. The reason
// of such an event is 'unknown'. Pure: the agent passes what it knows.
import { sourceKey } from '../events/incarnation-filter.js';
import type { EventStatus, Role, ServiceEvent } from '../events/service-event.js';

export interface SnapshotInput {
  /** This node and what `status()` shows: peers, this node's instances, the services' members. */
  node: string;
  database: string;
  peers: ReadonlyArray<{ node: string; up: boolean }>;
  instances: ReadonlyArray<{ name: string; state: string }>;
  services: ReadonlyArray<{ name: string; members: ReadonlyArray<{ instance: string; node: string; up: boolean }> }>;
  /** Every instance of the configuration: where it runs and its role. */
  placement: ReadonlyArray<{ name: string; node: string; role?: Role }>;
  /** The last event this agent published for a source (`sourceKey`), if any. */
  lastPublished(key: string): ServiceEvent | undefined;
  /** The last change of a peer node as this agent numbered it, if any. */
  lastNodeChange(node: string): ServiceEvent | undefined;
  /** A fresh incarnation of this agent (above every one it used) for a source it speaks for. */
  freshIncarnation(): number;
  /** ISO 8601 UTC: the time of events made here. */
  now: string;
}

/** The snapshot events, in the order nodes, instances, service members, services. */
export function stateSnapshot(s: SnapshotInput): ServiceEvent[] {
  const out: ServiceEvent[] = [];
  const roleOf = new Map(s.placement.map((i) => [i.name, i.role]));
  const nodeOf = new Map(s.placement.map((i) => [i.name, i.node]));
  const own = new Map(s.instances.map((i) => [i.name, i.state]));
  const peerUp = new Map(s.peers.map((p) => [p.node, p.up]));
  // Up as status counts it: this node's instances by their state, the others by their node.
  const instanceUp = (name: string) => (own.has(name) ? own.get(name) === 'up' : nodeOf.get(name) === s.node || peerUp.get(nodeOf.get(name)!) === true);

  const add = (e: ServiceEvent, speaksFor: boolean) => {
    const last = e.type === 'node' && e.node !== s.node ? s.lastNodeChange(e.node!) : s.lastPublished(sourceKey(e));
    if (last && last.status === e.status) out.push({ ...e, incarnation: last.incarnation, timestamp: last.timestamp, reason: last.reason, snapshot: true });
    else out.push({ ...e, incarnation: speaksFor ? s.freshIncarnation() : 0, snapshot: true });
  };
  const base = { reason: 'unknown', incarnation: 0, timestamp: s.now };

  add({ type: 'node', status: 'UP', node: s.node, ...base }, false);
  for (const p of s.peers) add({ type: 'node', status: p.up ? 'UP' : 'DOWN', node: p.node, ...base }, false);

  const upInstances = s.placement.filter((i) => instanceUp(i.name)).length;
  for (const i of s.instances) {
    const status: EventStatus = i.state === 'up' ? 'UP' : i.state === 'not-restarting' ? 'NOT_RESTARTING' : 'DOWN';
    const role = roleOf.get(i.name);
    add({ type: 'instance', status, service: s.database, database: s.database, instance: i.name, node: s.node, cardinality: upInstances, ...(role ? { role } : {}), ...base }, true);
  }

  for (const svc of s.services) {
    const up = svc.members.filter((m) => m.up).length;
    for (const m of svc.members) {
      const status: EventStatus = m.up ? 'UP' : own.get(m.instance) === 'not-restarting' ? 'NOT_RESTARTING' : 'DOWN';
      const role = roleOf.get(m.instance);
      add({ type: 'service_member', status, service: svc.name, database: s.database, instance: m.instance, node: m.node, cardinality: up, ...(role ? { role } : {}), ...base }, own.has(m.instance));
    }
  }
  for (const svc of s.services) {
    const allHere = svc.members.length > 0 && svc.members.every((m) => own.has(m.instance));
    add({ type: 'service', status: svc.members.some((m) => m.up) ? 'UP' : 'DOWN', service: svc.name, database: s.database, ...base }, allHere);
  }
  return out;
}
