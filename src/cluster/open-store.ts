// The cluster store a config names (`store:`), for the agent and for the CLI's `apps` commands:
// both must open the same store the same way.
import type { AgentConfig } from '../agent/config.js';
import { ClusterStore } from './cluster-store.js';
import { FileBackend } from './file-backend.js';

/** The config's store, checking PRIMARY/BACKUP against the config's nodes. Throws when the config has none. */
export function openClusterStore(config: AgentConfig): ClusterStore {
  const s = config.store;
  if (s === undefined) throw new Error(`${config.node}'s configuration has no store: add \`store: { file: ... }\` (see docs/CLUSTER.md)`);
  return new ClusterStore(new FileBackend(s.file), clusterNodes(config));
}

/** Every node of the cluster as the config lists them: this one, then its peers. */
export function clusterNodes(config: AgentConfig): string[] {
  return [config.node, ...config.peers.map((p) => p.node)];
}
