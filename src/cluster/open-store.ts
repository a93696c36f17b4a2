// The cluster store a config names (`store:`), for the agent and for the CLI's `apps` commands:
// both must open the same store the same way.
import { ConfigError, type AgentConfig } from '../agent/config.js';
import { ClusterStore } from './cluster-store.js';
import { CredentialFileError, readEtcdCredentials } from './etcd-credentials.js';
import { FileBackend } from './file-backend.js';
import type { StoreBackend } from './store-backend.js';

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
  return new ClusterStore(await etcdBackend(config, s.etcd, file), clusterNodes(config));
}

/** An EtcdBackend on the config's members and credentials; `prefix` overrides the key prefix. */
async function etcdBackend(config: AgentConfig, etcd: NonNullable<NonNullable<AgentConfig['store']>['etcd']>, file: string, prefix?: string): Promise<StoreBackend> {
  const credentials = await readEtcdCredentials(etcd).catch((err: unknown) => {
    throw err instanceof CredentialFileError ? new ConfigError(file, err.field, err.message) : err;
  });
  const { EtcdBackend } = await import('./etcd-backend.js');
  return new EtcdBackend({ endpoints: etcd.endpoints, cluster: config.cluster, ...(prefix !== undefined ? { prefix } : {}), callTimeoutMs: etcd.callTimeoutMs, ...(credentials.tls ? { tls: credentials.tls } : {}), ...(credentials.auth ? { auth: credentials.auth } : {}) });
}

/**
 * The store of the mirrored logs' primary roles (src/log/primary-role.ts) in the config's store:
 * on etcd, the same members under `/takeover/<cluster>/logs/` (the same credentials, whose
 * rights on `/takeover/<cluster>/` cover it); on the file store, the sibling file `<file>.logs`
 * (its leases in `.<file>.logs.nodes/`). Apart from the applications, so ClusterStore never reads
 * a role record, and the holders' leases are apart from the agents' node leases. Throws as
 * openClusterStore(). The caller closes it.
 */
export async function openLogRoleStore(config: AgentConfig, file = 'config'): Promise<StoreBackend> {
  const s = config.store;
  if (s === undefined) throw new Error(`${config.node}'s configuration has no store: add \`store: { file: ... }\` or \`store: { etcd: ... }\` (see docs/CLUSTER.md)`);
  if (!s.etcd) return new FileBackend(`${s.file!}.logs`);
  return etcdBackend(config, s.etcd, file, `/takeover/${config.cluster}/logs/`);
}

/** Every node of the cluster as the config lists them: this one, then its peers. */
export function clusterNodes(config: AgentConfig): string[] {
  return [config.node, ...config.peers.map((p) => p.node)];
}
