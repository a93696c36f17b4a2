// The cluster store a config names (`store:`), for the agent and for the CLI's `apps` commands:
// both must open the same store the same way.
import { ConfigError, type AgentConfig } from '../agent/config.js';
import { ClusterStore } from './cluster-store.js';
import { CredentialFileError, readEtcdCredentials } from './etcd-credentials.js';
import { FileBackend } from './file-backend.js';

/**
 * The config's store, checking PRIMARY/BACKUP against the config's nodes. Throws when the config
 * has none, and ConfigError (naming `file` and the field) when a file of `store.etcd.tls` or
 * `store.etcd.auth` cannot be read or is not what the field says. The etcd engine (and its gRPC
 * client, ~0.5 s to load) is loaded only for an etcd store.
 */
export async function openClusterStore(config: AgentConfig, file = 'config'): Promise<ClusterStore> {
  const s = config.store;
  if (s === undefined) throw new Error(`${config.node}'s configuration has no store: add \`store: { file: ... }\` or \`store: { etcd: ... }\` (see docs/CLUSTER.md)`);
  if (!s.etcd) return new ClusterStore(new FileBackend(s.file!), clusterNodes(config));
  const credentials = await readEtcdCredentials(s.etcd).catch((err: unknown) => {
    throw err instanceof CredentialFileError ? new ConfigError(file, err.field, err.message) : err;
  });
  const { EtcdBackend } = await import('./etcd-backend.js');
  const backend = new EtcdBackend({ endpoints: s.etcd.endpoints, cluster: config.cluster, callTimeoutMs: s.etcd.callTimeoutMs, ...(credentials.tls ? { tls: credentials.tls } : {}), ...(credentials.auth ? { auth: credentials.auth } : {}) });
  return new ClusterStore(backend, clusterNodes(config));
}

/** Every node of the cluster as the config lists them: this one, then its peers. */
export function clusterNodes(config: AgentConfig): string[] {
  return [config.node, ...config.peers.map((p) => p.node)];
}
