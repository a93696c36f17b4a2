// The event sets of seed 001's scenarios, from a description of where services run. Pure
// functions: the agent describes what changed, these say exactly which events to publish.
// Instance events carry a service too (Table 2); as Oracle does, it is the database's default
// service, named after the database. Cardinality is the count of members (for service_member)
// or of database instances (for instance) still up after the change.
import type { EventStatus, ServiceEvent } from './service-event.js';

export interface Placement {
  database: string;
  /** instance -> node it runs on */
  instances: Record<string, string>;
  /** service -> instances offering it */
  services: Record<string, string[]>;
}

interface Stamp {
  incarnation: number;
  timestamp: string;
  reason: string;
}

/**
 * An instance fails: one instance DOWN, one service_member DOWN per service it offered, and a
 * service_member UP where a service restarts on another instance (`restartedOn`). A service left
 * with no member is also down as a whole: a service DOWN.
 */
export function instanceFailure(p: Placement, instance: string, s: Stamp, restartedOn: Record<string, string> = {}): ServiceEvent[] {
  const node = p.instances[instance];
  if (node === undefined) throw new RangeError(`unknown instance ${instance}`);
  const base = { database: p.database, ...s };
  const events: ServiceEvent[] = [];
  const served = Object.entries(p.services).filter(([, members]) => members.includes(instance));
  for (const [service, members] of served) {
    const remaining = members.filter((m) => m !== instance);
    events.push({ type: 'service_member', status: 'DOWN', service, instance, node, cardinality: remaining.length, ...base });
    const to = restartedOn[service];
    if (to !== undefined) {
      if (p.instances[to] === undefined) throw new RangeError(`unknown instance ${to}`);
      events.push({ type: 'service_member', status: 'UP', service, instance: to, node: p.instances[to], cardinality: remaining.length + (remaining.includes(to) ? 0 : 1), ...base });
    } else if (remaining.length === 0) {
      events.push({ type: 'service', status: 'DOWN', service, ...base });
    }
  }
  events.unshift({ type: 'instance', status: 'DOWN', service: p.database, instance, node, cardinality: Object.keys(p.instances).length - 1, ...base });
  return events;
}

/** A whole service goes down: service_member DOWN per member, service DOWN, instance DOWN per member. */
export function serviceDown(p: Placement, service: string, s: Stamp): ServiceEvent[] {
  const members = p.services[service];
  if (!members) throw new RangeError(`unknown service ${service}`);
  const base = { database: p.database, ...s };
  return [
    ...members.map((instance, i): ServiceEvent => ({ type: 'service_member', status: 'DOWN', service, instance, node: p.instances[instance]!, cardinality: members.length - i - 1, ...base })),
    { type: 'service', status: 'DOWN', service, ...base },
    ...members.map((instance, i): ServiceEvent => ({ type: 'instance', status: 'DOWN', service: p.database, instance, node: p.instances[instance]!, cardinality: Object.keys(p.instances).length - i - 1, ...base })),
  ];
}

/** A node fails: a single node event carrying the incarnation; nothing else (seed 001). */
export function nodeFailure(node: string, s: Stamp, status: Extract<EventStatus, 'DOWN' | 'NOT_RESTARTING'> = 'DOWN'): ServiceEvent[] {
  return [{ type: 'node', status, node, ...s }];
}

/** A service member that will not be restarted any more: service_member NOT_RESTARTING. */
export function notRestarting(p: Placement, service: string, instance: string, s: Stamp): ServiceEvent[] {
  const members = p.services[service] ?? [];
  return [{ type: 'service_member', status: 'NOT_RESTARTING', service, database: p.database, instance, node: p.instances[instance]!, cardinality: members.filter((m) => m !== instance).length, ...s }];
}
