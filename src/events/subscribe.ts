// subscribe(): events from several agents as one stream. Subscribers list every agent, so the
// survivors' events still arrive when the failed node's agent is gone; the same change published
// by several agents arrives once (IncarnationFilter). Each agent sends its current state on
// connect (snapshot events), then its live events; a reconnection brings the state again, of
// which the filter passes what changed. Agents that are down are retried; `onAgent` hears when
// one is connected, lost or cannot be reached.
import net from 'node:net';
import { createInterface } from 'node:readline';
import { IncarnationFilter } from './incarnation-filter.js';
import { EventError, validateEvent, type ServiceEvent } from './service-event.js';
import { resetIfSelfConnected, selfConnectError } from '../net/self-connect.js';

export interface EventFilter {
  service?: string;
  database?: string;
  node?: string;
}

export interface SubscribeOptions {
  agents: Array<{ host: string; port: number }>;
  filter?: EventFilter;
  signal?: AbortSignal;
  /** Wait between connection attempts to an agent, ms (default 500). */
  retryMs?: number;
  /**
   * Told of each change of an agent's connection: `connected`; `lost` (it was connected: the
   * reason the agent gave when it cut the subscriber off, the socket error, or "closed by the
   * agent"); `unreachable` (a connection attempt failed: once per outage, not once per retry,
   * and not after `lost`).
   * Not called after the signal aborts. A throw ends the subscription with that error.
   */
  onAgent?: (change: AgentConnection) => void;
}

export type AgentConnection = { agent: string; state: 'connected' } | { agent: string; state: 'lost' | 'unreachable'; reason: string };

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
  let failure: { error: unknown } | undefined;
  const report = (change: AgentConnection) => {
    if (stopped() || failure || !options.onAgent) return;
    try {
      options.onAgent(change);
    } catch (error) {
      failure = { error };
      wake?.();
    }
  };
  const unreachable = new Set<string>(); // agents whose outage was reported

  const connect = (agent: { host: string; port: number }) => {
    if (stopped()) return;
    const name = agent.host.includes(':') ? `[${agent.host}]:${agent.port}` : `${agent.host}:${agent.port}`;
    const sock = net.connect(agent);
    sockets.add(sock);
    let connected = false;
    let reason: string | undefined;
    sock.on('connect', () => {
      if (resetIfSelfConnected(sock)) {
        reason = selfConnectError(agent.host, agent.port).message;
        return;
      }
      connected = true;
      unreachable.delete(name);
      report({ agent: name, state: 'connected' });
    });
    // readline re-emits the socket's errors (an agent that is down): handled by sock's 'error'.
    createInterface({ input: sock }).on('error', () => {}).on('line', (line) => {
      let e: ServiceEvent;
      try {
        const parsed: unknown = JSON.parse(line);
        // The agent says why it cuts this subscriber off (too slow, flooding) before it does.
        const cut = (parsed as { disconnected?: unknown } | null)?.disconnected;
        if (typeof cut === 'string') {
          reason = `the agent disconnected it: ${cut}`;
          return;
        }
        e = validateEvent(parsed);
      } catch (err) {
        if (err instanceof SyntaxError || err instanceof EventError) return; // not an event line
        throw err;
      }
      if (matchesFilter(e, options.filter) && dedup.accept(e)) {
        queue.push(e);
        wake?.();
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      reason ??= err.code ?? err.message;
    });
    sock.on('close', () => {
      sockets.delete(sock);
      if (stopped()) return;
      if (connected) {
        unreachable.add(name); // "lost" says it is retried: the failed retries are not news
        report({ agent: name, state: 'lost', reason: reason ?? 'closed by the agent' });
      } else if (!unreachable.has(name)) {
        unreachable.add(name);
        report({ agent: name, state: 'unreachable', reason: reason ?? 'closed before connecting' });
      }
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
      if (queue.length === 0 && !failure) await new Promise<void>((r) => (wake = r));
      wake = undefined;
      if (failure) throw failure.error;
      while (queue.length > 0 && !stopped()) yield queue.shift()!;
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    for (const t of timers) clearTimeout(t);
    for (const s of sockets) s.destroy();
  }
}
