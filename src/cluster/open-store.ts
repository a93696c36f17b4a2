// The cluster store a config names (`store:`), for the agent and for the CLI's `apps` commands:
// both must open the same store the same way.
import type { AgentConfig } from '../agent/config.js';
import { ClusterStore } from './cluster-store.js';
import { FileBackend } from './file-backend.js';

/**
 * The config's store, checking PRIMARY/BACKUP against the config's nodes. Throws when the config
 * has none. The etcd engine (and its gRPC client, ~0.5 s to load) is loaded only for an etcd store.
 */
export async function openClusterStore(config: AgentConfig): Promise<ClusterStore> {
  const s = config.store;
  if (s === undefined) throw new Error(`${config.node}'s configuration has no store: add \`store: { file: ... }\` or \`store: { etcd: ... }\` (see docs/CLUSTER.md)`);
  const backend = s.etcd ? new (await import('./etcd-backend.js')).EtcdBackend({ endpoints: s.etcd.endpoints, cluster: config.cluster, callTimeoutMs: s.etcd.callTimeoutMs }) : new FileBackend(s.file!);
  return new ClusterStore(backend, clusterNodes(config));
}

/** Every node of the cluster as the config lists them: this one, then its peers. */
export function clusterNodes(config: AgentConfig): string[] {
  return [config.node, ...config.peers.map((p) => p.node)];
}
