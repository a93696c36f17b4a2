// A mirrored log's primary holding its role in the cluster store, as its own process, for tests
// that SIGKILL it (its lease then stops being renewed, as in a crash): test/unit/log-primary-role.test.ts
// (file store) and test/lab/log-role-etcd.test.ts (etcd).
// Run: node --import tsx test/log-role-holder-child.ts JSON (the tests start its bundle: test/log-role-holder.ts)
//   JSON: {"file": PATH} or {"etcd": [ENDPOINT...], "prefix": PREFIX}, plus "log", "node", "incarnation" (decimal), "leaseMs".
// Prints {"held":true,"revision":N,"since":MS} once it holds the role, or {"held":false,"error":...}
// and exits 1. Then prints {"lost":WHY} if it loses the role. SIGTERM releases the role and exits.
import { FileBackend } from '../src/cluster/file-backend.js';
import type { StoreBackend } from '../src/cluster/store-backend.js';
import { LogPrimaryRole } from '../src/log/primary-role.js';

const a = JSON.parse(process.argv[2] ?? '{}') as { file?: string; etcd?: string[]; prefix?: string; log: string; node: string; incarnation: string; leaseMs: number };
let backend: StoreBackend;
if (a.file) backend = new FileBackend(a.file);
else {
  const { EtcdBackend } = await import('../src/cluster/etcd-backend.js');
  backend = new EtcdBackend({ endpoints: a.etcd!, cluster: 'unused', prefix: a.prefix! });
}
const role = new LogPrimaryRole({ backend, log: a.log, node: a.node, incarnation: BigInt(a.incarnation), leaseMs: a.leaseMs });
try {
  const hold = await role.claim();
  process.stdout.write(`${JSON.stringify({ held: true, revision: hold.revision, since: hold.record.since })}\n`);
  void hold.lost.then((why) => process.stdout.write(`${JSON.stringify({ lost: why })}\n`));
  process.on('SIGTERM', () => void hold.release().finally(() => backend.close().finally(() => process.exit(0))));
} catch (err) {
  process.stdout.write(`${JSON.stringify({ held: false, error: (err as Error).message, code: (err as { code?: string }).code })}\n`);
  await backend.close();
  process.exit(1);
}
