// Drops duplicate and stale events: subscribers list several agents (so the survivors' events
// arrive when an agent is gone), and each agent may publish the same change. Per source (type
// and location), an event passes only when its incarnation is above the last one passed.
// Memory is bounded: the least recently seen sources are forgotten past `maxSources`.
import type { ServiceEvent } from './service-event.js';

export class IncarnationFilter {
  private readonly last = new Map<string, number>();
  dropped = 0;

  constructor(private readonly maxSources = 10_000) {}

  accept(e: ServiceEvent): boolean {
    const key = sourceKey(e);
    const prev = this.last.get(key);
    if (prev !== undefined && e.incarnation <= prev) {
      this.dropped++;
      return false;
    }
    this.last.delete(key); // re-insert: Map order is the recency order
    this.last.set(key, e.incarnation);
    if (this.last.size > this.maxSources) this.last.delete(this.last.keys().next().value!);
    return true;
  }
}

/** What an event is about (its type and location): the unit the filter orders events within. */
export function sourceKey(e: Pick<ServiceEvent, 'type' | 'service' | 'database' | 'instance' | 'node'>): string {
  return [e.type, e.service ?? '', e.database ?? '', e.instance ?? '', e.node ?? ''].join('\u0000');
}
