// One 3-member etcd cluster for a whole test file: started in beforeAll, destroyed in afterAll.
// If it cannot start (etcd missing, say), every test that asks for it fails with the reason: a
// failing beforeAll would only mark the tests skipped, and a skipped test must never pass.
import { afterAll, beforeAll } from 'vitest';
import { startEtcdCluster, type EtcdCluster, type EtcdClusterOptions } from './etcd-cluster.js';

/** Registers the file's hooks; call the returned function inside a test to get the cluster. */
export function etcdPerFile(options: EtcdClusterOptions = {}): () => EtcdCluster {
  let started: EtcdCluster | undefined;
  let startError: unknown;
  beforeAll(async () => {
    try {
      started = await startEtcdCluster(options);
    } catch (err) {
      startError = err;
    }
  });
  afterAll(async () => {
    await started?.destroy();
  });
  return () => {
    if (started) return started;
    throw startError instanceof Error ? startError : new Error(`the etcd cluster did not start: ${String(startError)}`);
  };
}
