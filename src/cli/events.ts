// `takeover events [--follow] [--filter k=v,...] [--format json|fan|oracle]`: the local agent's recent
// events (control socket), or with --follow its current state (snapshot events) and then the live
// ones; or, with --agents, the state and live events of several agents' notification endpoints,
// de-duplicated (what a subscriber library sees).
import { controlRequest } from '../agent/control.js';
import { formatLine, type WireFormat } from '../events/notification-server.js';
import { validateEvent, type ServiceEvent } from '../events/service-event.js';
import { matchesFilter, subscribe, type AgentConnection, type EventFilter } from '../events/subscribe.js';
import { parseEndpoint } from '../net/endpoint.js';
import { controlPath } from './control-path.js';
import { UsageError } from './errors.js';

export interface EventsOptions {
  follow?: boolean;
  filter?: string;
  format: string;
  agents?: string;
  control?: string;
  config?: string;
}

const FILTER_KEYS = ['service', 'database', 'node'] as const;
const FORMATS: readonly WireFormat[] = ['json', 'fan', 'oracle'];
const RETRY_MS = 500;

export function filterOption(value: string): EventFilter {
  const f: EventFilter = {};
  for (const part of value.split(',').filter(Boolean)) {
    const m = /^([a-z]+)=([A-Za-z0-9_.:@-]{1,128})$/.exec(part);
    if (!m || !(FILTER_KEYS as readonly string[]).includes(m[1]!)) throw new UsageError(`--filter: "${part}" must be KEY=VALUE with KEY one of ${FILTER_KEYS.join(', ')}`);
    f[m[1] as (typeof FILTER_KEYS)[number]] = m[2]!;
  }
  return f;
}

export async function eventsCommand(opts: EventsOptions): Promise<number> {
  if (!(FORMATS as readonly string[]).includes(opts.format)) throw new UsageError(`--format must be ${FORMATS.join(', ')}, got "${opts.format}"`);
  const format = opts.format as WireFormat;
  const filter = opts.filter ? filterOption(opts.filter) : {};
  const print = (e: ServiceEvent) => {
    if (matchesFilter(e, filter)) process.stdout.write(formatLine(e, format));
  };
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    if (opts.agents) {
      if (!opts.follow) throw new UsageError('--agents streams live events: add --follow');
      const agents = opts.agents.split(',').map((a) => {
        try {
          return parseEndpoint(a.trim());
        } catch (err) {
          throw new UsageError(`--agents: ${(err as Error).message}`);
        }
      });
      // Events on stdout, the agents' connections on stderr (one line per change).
      const onAgent = (c: AgentConnection) =>
        process.stderr.write(c.state === 'connected' ? `takeover: connected to agent ${c.agent}\n` : `takeover: ${c.state === 'lost' ? 'lost agent' : 'cannot reach agent'} ${c.agent} (${c.reason}); retrying every ${RETRY_MS} ms\n`);
      for await (const e of subscribe({ agents: agents.map((a) => ({ host: a.address, port: a.port })), filter, signal: ac.signal, retryMs: RETRY_MS, onAgent })) print(e);
      return 0;
    }
    const path = await controlPath(opts);
    let error: string | undefined;
    await controlRequest(path, { cmd: 'events', follow: opts.follow === true }, (msg) => {
      if (typeof msg.error === 'string') error = msg.error;
      else print(validateEvent(msg));
    }, ac.signal);
    if (error) throw new Error(error);
    return 0;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
