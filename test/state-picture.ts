// The picture of a cluster's state two ways, to compare them: from an agent's `status()` and
// from the (snapshot) events a subscriber got. Shared by the snapshot tests in unit and lab.
import type { AgentStatus } from '../src/agent/agent.js';
import type { ServiceEvent } from '../src/events/service-event.js';

/** Up or not, per node, own instance, service member and service, as `status` shows them. */
export function statusPicture(s: AgentStatus): Record<string, boolean> {
  const p: Record<string, boolean> = { [`node ${s.node}`]: true };
  for (const peer of s.peers) p[`node ${peer.node}`] = peer.up;
  for (const i of s.instances) p[`instance ${i.name}`] = i.state === 'up';
  for (const svc of s.services) {
    for (const m of svc.members) p[`member ${svc.name}/${m.instance}`] = m.up;
    p[`service ${svc.name}`] = svc.members.some((m) => m.up);
  }
  return p;
}

/** The same, from events (the last one per source wins). */
export function eventPicture(events: ServiceEvent[]): Record<string, boolean> {
  const p: Record<string, boolean> = {};
  for (const e of events) {
    const key = e.type === 'node' ? `node ${e.node}` : e.type === 'instance' ? `instance ${e.instance}` : e.type === 'service_member' ? `member ${e.service}/${e.instance}` : `service ${e.service}`;
    p[key] = e.status === 'UP';
  }
  return p;
}
