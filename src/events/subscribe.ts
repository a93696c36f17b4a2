// subscribe(): events from several agents as one stream. Subscribers list every agent, so the
// survivors' events still arrive when the failed node's agent is gone; the same change published
// by several agents arrives once (IncarnationFilter). Agents that are down are retried.
import net from 'node:net';
import { createInterface } from 'node:readline';
import { IncarnationFilter } from './incarnation-filter.js';
import { EventError, validateEvent, type ServiceEvent } from './service-event.js';

export interface EventFilter {
  service?: string;
  database?: string;
  node?: string;
}

export interface SubscribeOptions {
  agents: Array<{ host: string; port: number }>;
  filter?: EventFilter;
  signal?: AbortSignal;
  retryMs?: number;
}

/** Whether an event passes a filter (an event without the filtered field passes). */
export function matchesFilter(e: ServiceEvent, f: EventFilter | undefined): boolean {
  if (!f) return true;
  // An event without the field (a node event has no service) still concerns the subscriber.
  return (['service', 'database', 'node'] as const).every((k) => f[k] === undefined || e[k] === undefined || e[k] === f[k]);
}

export async function* subscribe(options: SubscribeOptions): AsyncGenerator<ServiceEvent> {
  const dedup = new IncarnationFilter();
  const queue: ServiceEvent[] = [];
  let wake: (() => void) | undefined;
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const stopped = () => options.signal?.aborted === true;

  const connect = (agent: { host: string; port: number }) => {
    if (stopped()) return;
    const sock = net.connect(agent);
    sockets.add(sock);
    // readline re-emits the socket's errors (an agent that is down): handled by sock's 'error'.
    createInterface({ input: sock }).on('error', () => {}).on('line', (line) => {
      let e: ServiceEvent;
      try {
        e = validateEvent(JSON.parse(line));
      } catch (err) {
        if (err instanceof SyntaxError || err instanceof EventError) return; // not an event line
        throw err;
      }
      if (matchesFilter(e, options.filter) && dedup.accept(e)) {
        queue.push(e);
        wake?.();
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      sockets.delete(sock);
      if (stopped()) return;
      const t = setTimeout(() => {
        timers.delete(t);
        connect(agent);
      }, options.retryMs ?? 500);
      timers.add(t);
    });
  };
  for (const a of options.agents) connect(a);
  const onAbort = () => wake?.();
  options.signal?.addEventListener('abort', onAbort);
  try {
    while (!stopped()) {
      if (queue.length === 0) await new Promise<void>((r) => (wake = r));
      wake = undefined;
      while (queue.length > 0 && !stopped()) yield queue.shift()!;
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    for (const t of timers) clearTimeout(t);
    for (const s of sockets) s.destroy();
  }
}
