// The cluster manager's lab (issue 11): agents run as processes (`takeover agent`) in the nodes'
// namespaces on a learning bridge, one clustered application, a store (the embedded file, or an
// etcd cluster the test started), PostgreSQL data for a real application, and the CLI's view.
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach } from 'vitest';
import { runCli, startCli } from '../cli-process.js';
import { agentsLab, type AgentsLab } from './agents-lab.js';
import { binDir, initdbCopy } from './postgres.js';
import { until } from './replication-cluster.js';

export const INTERVAL = 100;
export const LEASE_MS = 1000;
export const PG_CLIENT = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures', 'pg-client.ts');
export type Cli = ReturnType<typeof startCli>;
export const logOf = (a: Cli) => a.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
export const published = (a: Cli) => logOf(a).filter((l) => l.msg === 'published').map((l) => l.event as Record<string, unknown>);

const pgDirs: string[] = [];
afterEach(() => {
  for (const d of pgDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A PostgreSQL data directory owned by postgres, reachable from every lab host (one machine's file system). */
export async function pgData(): Promise<{ dataDir: string; command: string[] }> {
  const bin = binDir();
  const { dataDir, uid, gid } = await initdbCopy('tko-apps-pg-');
  pgDirs.push(dataDir);
  writeFileSync(path.join(dataDir, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all 198.18.0.0/15 trust\n');
  // The load COMMAND a failover script for PostgreSQL on shared storage has: the dead HOST's
  // postmaster.pid is stale (that node is dead, or fenced off the disk) and would stop the start
  // (here the dead node's processes may linger as zombies: the lab's nodes share one pid space).
  // No Unix socket: its lock file would be another stale lock on the shared directory.
  // exec: sh becomes setpriv becomes PostgreSQL itself, so the agent's stop reaches it.
  const postgres = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', path.join(bin, 'postgres'), '-D', dataDir, '-p', '5432', '-c', 'unix_socket_directories=',
    '-c', 'listen_addresses=*', '-c', 'fsync=off', '-c', 'shared_buffers=16MB', '-c', 'max_connections=20'];
  const command = ['sh', '-c', `rm -f ${dataDir}/postmaster.pid; exec ${postgres.join(' ')}`];
  return { dataDir, command };
}

export interface Cluster extends AgentsLab {
  /** `takeover CMD ARGS --config a.json` on the CLI host. */
  cli(args: string[]): ReturnType<typeof runCli>;
  /** `takeover app register` of the application (for a cluster made with inConfig false). */
  register(): Promise<void>;
  start(n: string): Promise<Cli>;
  apps(): Promise<Array<Record<string, unknown>>>;
  holders(): Promise<string[]>;
  /** Node n dies: silent on the network (nft, ARP included), then every process in it SIGKILLed (Lab.crash). */
  kill(n: string): Promise<void>;
}

export interface ClusterOptions {
  /** The nodes that run agents (default a, b); the other hosts are clients and etcd members. */
  nodes?: string[];
  /** The lab's hosts (default a, b, c). */
  hosts?: string[];
  /** false: the application is not in the agents' `apps`; `register()` registers it with the CLI once they run. */
  inConfig?: boolean;
  /** The `store` section (default: a file in the test's directory); may start what it needs (an etcd cluster in the lab). */
  store?: (l: AgentsLab) => Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Where the CLI runs (`apps`, `app`, `history`): a host that stays alive and reaches the store (default c). */
  cliHost?: string;
}

/** Agents on the nodes, one application, a store; removed after the test (agents-lab). */
export async function cluster(prefix: string, appOf: (l: AgentsLab) => Record<string, unknown>, options: ClusterOptions = {}): Promise<Cluster> {
  const { nodes = ['a', 'b'], hosts = ['a', 'b', 'c'], inConfig = true, cliHost = 'c' } = options;
  const l = await agentsLab({ hosts }, prefix, { addVip: false });
  const app = appOf(l);
  const store = (await options.store?.(l)) ?? { file: path.join(l.dir, 'store', 'apps.json'), leaseMs: LEASE_MS };
  for (const n of nodes) {
    writeFileSync(path.join(l.dir, `${n}.json`), JSON.stringify({
      cluster: 'apps', node: n, database: 'db', key: 'the cluster apps key', control: path.join(l.dir, `${n}.sock`), stateDir: path.join(l.dir, `state-${n}`), incarnationFile: path.join(l.dir, `${n}.incarnation`),
      heartbeat: { intervalMs: INTERVAL, misses: 3, links: l.links(n) }, notify: { port: 0 }, quorum: { twoNode: nodes.length === 2 },
      peers: nodes.filter((p) => p !== n).map((p) => ({ node: p, links: l.links(p) })),
      store,
      apps: inConfig ? [app] : [],
    }));
  }
  writeFileSync(path.join(l.dir, 'app.json'), JSON.stringify(app));
  const c: Cluster = {
    ...l,
    cli: (args) => runCli([...args, '--config', path.join(l.dir, `${nodes[0]}.json`)], { netns: l.lab.host(cliHost).ns }),
    register: async () => {
      const r = await c.cli(['app', 'register', path.join(l.dir, 'app.json')]);
      if (r.code !== 0) throw new Error(`app register: ${r.stderr}`);
    },
    start: async (n) => {
      const agent = startCli(['agent', '--config', path.join(l.dir, `${n}.json`)], { netns: l.lab.host(n).ns });
      l.agents.push(agent);
      await until(`${n}'s agent started`, async () => (logOf(agent).some((x) => x.msg === 'agent started') ? true : undefined), 20_000);
      return agent;
    },
    apps: async () => {
      const r = await c.cli(['apps', '--json']);
      if (r.code !== 0) throw new Error(`takeover apps: ${r.stderr}`);
      return (JSON.parse(r.stdout) as { apps: Array<Record<string, unknown>> }).apps;
    },
    holders: async () => {
      const out: string[] = [];
      for (const n of nodes) if ((await l.lab.exec(n, 'ip', ['-o', 'addr', 'show', 'dev', 'eth0'])).stdout.includes(` ${l.vip}/`)) out.push(n);
      return out;
    },
    kill: (n) => l.lab.crash(n),
  };
  return c;
}

/**
 * Until every running agent of another node has heard `n` (its `node-up`): a backup that never
 * heard a HOST does not fail it over (corosync's wait_for_all, app-manager's alive()), so a test
 * that kills `n` to see it failed over must not kill it sooner.
 */
export async function heardByPeers(c: Cluster, n: string): Promise<void> {
  await until(`${n} heard by the other agents`, async () => {
    const logs = c.agents.filter((a) => a.child.exitCode === null && a.child.signalCode === null).map(logOf);
    const others = logs.filter((log) => log.find((l) => typeof l.node === 'string')?.node !== n);
    return others.length > 0 && others.every((log) => log.some((l) => l.msg === 'node-up' && (l.detector as { node?: string } | undefined)?.node === n)) ? true : undefined;
  }, 10_000);
}

export const hostState = async (c: Cluster, host: string, state = 'up') => {
  const [app] = await c.apps();
  return app?.host === host && app.state === state ? app : undefined;
};

export const pgApp = (pg: { dataDir: string; command: string[] }, over: Record<string, unknown> = {}) => (l: AgentsLab) => ({
  tag: 'pg', type: 'cluster-capable', primary: 'a', backups: ['b'], autoRecover: true,
  command: { load: pg.command, stopGraceMs: 5000 }, restart: { maxFailures: 1, windowMs: 10_000, backoffMs: 200 },
  resources: { paths: [pg.dataDir] },
  address: { address: l.vip, prefixLength: 24, interface: 'eth0', port: 5432 },
  ...over,
});


/**
 * PostgreSQL's HOST a is SIGKILLed with a client blocked there (pg_sleep): returns when b hosts
 * pg and the client's retry got its answer. Waits until a acknowledged the query first: a client
 * with a request in flight would be released anyway (its retransmission reaches b, whose kernel
 * resets it); an idle one only through the replicated table, which is what the callers test.
 * `released`, `upOnB`: ms from the kill; `error`: what the blocked client got.
 */
export async function crashHostUnderBlockedClient(c: Cluster, b: Cli): Promise<{ released: number; upOnB: number; error: { code?: string; message?: string } }> {
  const client = c.lab.spawn('c', PG_CLIENT, ['--host', c.vip, '--port', '5432']);
  await client.waitFor('query-started', 15_000);
  await new Promise((r) => setTimeout(r, 500));
  await heardByPeers(c, 'a');
  const t0 = Date.now();
  await c.kill('a');
  const error = (await client.waitFor('query-error', 15_000)) as { code?: string; message?: string };
  const released = Date.now() - t0;
  await until('pg up on b', () => hostState(c, 'b'), 20_000).catch(async (e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify(await c.apps())}; b's log: ${logOf(b).filter((x) => x.app !== undefined || /app|replication/.test(String(x.msg))).map((x) => JSON.stringify(x)).join('\n')}`);
  });
  const upOnB = Date.now() - t0;
  client.send({ cmd: 'query' });
  const retry = await client.waitFor('query-result', 15_000);
  if ((retry as { answer?: unknown }).answer !== 42 || (retry as { server?: unknown }).server !== `${c.vip}/32`) throw new Error(`the retry on b got ${JSON.stringify(retry)}`);
  // The client is done: its pool's idle connection would otherwise keep b's PostgreSQL from
  // stopping (SIGTERM is a smart shutdown, which waits for every session) until the agent's
  // stopGraceMs SIGKILL, 5 s into the caller's next move of pg.
  await client.kill();
  return { released, upOnB, error };
}

/** A TCP server on port 7000 as the application (the lab's fixtures end with their stdin), PRIMARY a, BACKUP b then c. */
export const tcpApp = (l: AgentsLab, over: Record<string, unknown> = {}) => ({
  tag: 'web', type: 'cluster-capable', primary: 'a', backups: ['b', 'c'],
  command: { load: [process.execPath, '-e', "require('net').createServer(() => {}).listen(7000)"], stopGraceMs: 1000 },
  restart: { maxFailures: 0, windowMs: 10_000, backoffMs: 100 },
  address: { address: l.vip, prefixLength: 24, interface: 'eth0', port: 7000 },
  ...over,
});
