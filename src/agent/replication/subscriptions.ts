// Which connections this node asks each peer to replicate: those of the services it would take
// over when that peer dies. Pure: the agent computes it at start from its config, and again
// whenever the clustered applications in the store change (an application registered by
// `takeover app register` is in no config file), then hands it to ConnectionReplication.
import type { AgentConfig, TakeoverConfig } from '../config.js';
import { parseCloseMethod } from '../../net/close-method.js';
import { canonicalAddress } from '../../net/endpoint.js';
import type { ReplicatedService } from './wire.js';

/** What of a clustered application (config `apps`, or an object in the store) decides its replication. */
export interface ReplicableApp {
  primary: string;
  backups?: readonly string[];
  address?: { address: string; port?: number | undefined };
}

/**
 * Per peer (peers with none left out): the services of its `peers[].takeover`, then those of
 * `apps` (the config's, then the store's) with an address and port that the peer and this node
 * may both host (the peer may be their HOST when it dies, and this node the one that takes
 * over). Each address and port once, the first entry kept.
 */
export function subscriptions(config: Pick<AgentConfig, 'node' | 'peers'>, apps: readonly ReplicableApp[]): Map<string, ReplicatedService[]> {
  const out = new Map<string, ReplicatedService[]>();
  for (const p of config.peers) {
    const services = p.takeover.map(replicatedService);
    for (const a of apps) {
      const servers = [a.primary, ...(a.backups ?? [])];
      if (a.address?.port !== undefined && servers.includes(p.node) && servers.includes(config.node)) services.push({ address: a.address.address, port: a.address.port });
    }
    const once = services.filter((s, i) => services.findIndex((o) => o.port === s.port && canonicalAddress(o.address) === canonicalAddress(s.address)) === i);
    if (once.length > 0) out.set(p.node, once);
  }
  return out;
}

/** What a peer's `takeover` asks that peer's agent to replicate: the address, port and goodbye. */
export function replicatedService(t: TakeoverConfig): ReplicatedService {
  const m = parseCloseMethod(t.method);
  return { address: t.address, port: t.port, ...(m.kind === 'goodbye' ? { goodbye: m.plugin.name } : {}) };
}
