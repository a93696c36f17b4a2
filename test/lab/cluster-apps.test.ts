// The cluster manager (issue 11, seed 002) with the agents run as operators run them (`takeover
// agent` processes in the nodes' namespaces, on a learning bridge) and a real PostgreSQL as the
// clustered application, its data in one directory both servers reach, on the embedded store.
// Node a (PRIMARY, HOST) dies: b becomes HOST, the service address answers from b, a client
// blocked on a gets its error at once and its retry succeeds against b, the events are published
// once. a comes back: AUTO-RECOVER moves PostgreSQL back. Then an operator's switchover, unload
// and load. And a link cut between a and b while both reach the store: one HOST, no failover.
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../src/lab/exec.js';
import { runCli, startCli } from '../cli-process.js';
import { agentsLab, type AgentsLab } from './agents-lab.js';
import { until } from './replication-cluster.js';

const INTERVAL = 100;
const LEASE_MS = 1000;
const PG_CLIENT = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures', 'pg-client.ts');
type Cli = ReturnType<typeof startCli>;
const logOf = (a: Cli) => a.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
const published = (a: Cli) => logOf(a).filter((l) => l.msg === 'published').map((l) => l.event as Record<string, unknown>);

const pgDirs: string[] = [];
afterEach(() => {
  for (const d of pgDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function pgBin(): string {
  const root = '/usr/lib/postgresql';
  const v = readdirSync(root).sort((x, y) => Number(y) - Number(x))[0];
  if (!v) throw new Error('PostgreSQL is not installed under /usr/lib/postgresql (.ci/setup.sh installs it)');
  return path.join(root, v, 'bin');
}

/** A PostgreSQL data directory owned by postgres, reachable from every lab host (one machine's file system). */
async function pgData(): Promise<{ dataDir: string; command: string[] }> {
  const bin = pgBin();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'tko-apps-pg-'));
  pgDirs.push(dataDir);
  const uid = Number((await run('id', ['-u', 'postgres'])).stdout);
  const gid = Number((await run('id', ['-g', 'postgres'])).stdout);
  chownSync(dataDir, uid, gid);
  await run('runuser', ['-u', 'postgres', '--', path.join(bin, 'initdb'), '-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
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

interface Cluster extends AgentsLab {
  store: string;
  /** `takeover app register` of the application (for a cluster made with inConfig false). */
  register(): Promise<void>;
  start(n: string): Promise<Cli>;
  apps(): Promise<Array<Record<string, unknown>>>;
  holders(): Promise<string[]>;
  /** Node n dies: silent on the network (nft, ARP included), then every process in it SIGKILLed (Lab.crash). */
  kill(n: string): Promise<void>;
}

/**
 * Agents on `nodes` (the other lab hosts are clients), one application, the embedded store.
 * `inConfig: false`: the application is not in the agents' `apps`; `register()` registers it
 * with the CLI once they run.
 */
async function cluster(prefix: string, appOf: (l: AgentsLab) => Record<string, unknown>, nodes = ['a', 'b'], hosts = ['a', 'b', 'c'], inConfig = true): Promise<Cluster> {
  const l = await agentsLab({ hosts }, prefix, { addVip: false });
  const app = appOf(l);
  const store = path.join(l.dir, 'store', 'apps.json');
  for (const n of nodes) {
    writeFileSync(path.join(l.dir, `${n}.json`), JSON.stringify({
      cluster: 'apps', node: n, database: 'db', key: 'the cluster apps key', control: path.join(l.dir, `${n}.sock`), stateDir: path.join(l.dir, `state-${n}`), incarnationFile: path.join(l.dir, `${n}.incarnation`),
      heartbeat: { intervalMs: INTERVAL, misses: 3, links: l.links(n) }, notify: { port: 0 }, quorum: { twoNode: nodes.length === 2 },
      peers: nodes.filter((p) => p !== n).map((p) => ({ node: p, links: l.links(p) })),
      store: { file: store, leaseMs: LEASE_MS },
      apps: inConfig ? [app] : [],
    }));
  }
  writeFileSync(path.join(l.dir, 'app.json'), JSON.stringify(app));
  const c: Cluster = {
    ...l,
    store,
    register: async () => {
      const r = await runCli(['app', 'register', path.join(l.dir, 'app.json'), '--config', path.join(l.dir, `${nodes[0]}.json`)]);
      if (r.code !== 0) throw new Error(`app register: ${r.stderr}`);
    },
    start: async (n) => {
      const agent = startCli(['agent', '--config', path.join(l.dir, `${n}.json`)], { netns: l.lab.host(n).ns });
      l.agents.push(agent);
      await until(`${n}'s agent started`, async () => (logOf(agent).some((x) => x.msg === 'agent started') ? true : undefined), 20_000);
      return agent;
    },
    apps: async () => {
      const r = await runCli(['apps', '--json', '--config', path.join(l.dir, 'a.json')]);
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

const hostState = async (c: Cluster, host: string, state = 'up') => {
  const [app] = await c.apps();
  return app?.host === host && app.state === state ? app : undefined;
};

const pgApp = (pg: { dataDir: string; command: string[] }, over: Record<string, unknown> = {}) => (l: AgentsLab) => ({
  tag: 'pg', type: 'cluster-capable', primary: 'a', backups: ['b'], autoRecover: true,
  command: { load: pg.command, stopGraceMs: 5000 }, restart: { maxFailures: 1, windowMs: 10_000, backoffMs: 200 },
  resources: { paths: [pg.dataDir] },
  address: { address: l.vip, prefixLength: 24, interface: 'eth0', port: 5432 },
  ...over,
});

describe('cluster manager: PostgreSQL on the embedded store', () => {
  it('fails over to the backup when the HOST dies, fails back when it returns, and obeys switchover, unload and load', async () => {
    const pg = await pgData();
    const c = await cluster('tko-apps-', pgApp(pg));
    let a = await c.start('a');
    const b = await c.start('b');
    await until('pg up on a', () => hostState(c, 'a'), 30_000);
    expect(await c.holders()).toEqual(['a']);

    // A client blocked on a (pg_sleep) when a dies.
    const client = c.lab.spawn('c', PG_CLIENT, ['--host', c.vip, '--port', '5432']);
    await client.waitFor('query-started', 15_000);
    const t0 = Date.now();
    await c.kill('a');
    const err = await client.waitFor('query-error', 15_000);
    const released = Date.now() - t0;
    await until('pg up on b', () => hostState(c, 'b'), 20_000).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(await c.apps())}; b's log: ${logOf(b).filter((x) => x.app !== undefined || /app/.test(String(x.msg))).map((x) => JSON.stringify(x)).join('\n')}`);
    });
    const upOnB = Date.now() - t0;
    expect(await c.holders()).toContain('b'); // a, dead, still has it configured: nothing answers there
    client.send({ cmd: 'query' });
    const retry = await client.waitFor('query-result', 15_000);
    expect(retry).toMatchObject({ answer: 42, server: `${c.vip}/32` });
    console.info(`HOST a killed: the blocked client got ${String(err.code ?? err.message)} after ${released} ms; pg up on b (store) after ${upOnB} ms (detection ${3 * INTERVAL} ms, lease ${LEASE_MS} ms, PostgreSQL start)`);
    expect(released).toBeLessThan(LEASE_MS + 3 * INTERVAL + 2000);
    const events = published(b).filter((e) => e.service === 'pg');
    expect(events.filter((e) => e.status === 'DOWN' && e.instance === 'pg@a')).toHaveLength(1);
    expect(events.filter((e) => e.status === 'UP' && e.instance === 'pg@b')).toHaveLength(1);
    const history = JSON.parse((await runCli(['history', 'pg', '--json', '--config', path.join(c.dir, 'b.json')])).stdout) as Array<{ by: string; why: string; to: { host: string } }>;
    expect(history.some((h) => h.by === 'b' && h.why === 'a failed' && h.to.host === 'b')).toBe(true);

    // a comes back: AUTO-RECOVER moves PostgreSQL back to its PRIMARY.
    await c.lab.heal('a');
    a = await c.start('a');
    await until('pg back on a', () => hostState(c, 'a'), 30_000);
    expect(await c.holders()).toEqual(['a']);

    // Operator: switchover to b, unload, load.
    const op = (args: string[]) => runCli(['app', ...args, '--config', path.join(c.dir, 'a.json'), '--wait-ms', '30000']);
    let r = await op(['switchover', 'pg', '--to', 'b']);
    expect(r.code, r.stderr).toBe(0);
    expect(await c.holders(), logOf(b).slice(-15).map((x) => JSON.stringify(x)).join('\n')).toEqual(['b']);
    r = await op(['unload', 'pg']);
    expect(r.code, r.stderr).toBe(0);
    expect(await c.holders()).toEqual([]);
    await new Promise((res) => setTimeout(res, 1000));
    expect(await c.apps()).toMatchObject([{ host: null, state: 'unloaded' }]);
    r = await op(['load', 'pg']);
    expect(r.code, r.stderr).toBe(0);
    expect(await c.holders()).toEqual(['a']);
    r = await op(['switchover', 'pg', '--to', 'x']);
    expect(r.code).toBe(2);
    void a;
  }, 180_000);

  it('a link cut between the two servers while both reach the store: one HOST, nothing moves', async () => {
    const pg = await pgData();
    const c = await cluster('tko-apps-cut-', pgApp(pg));
    await c.start('a');
    const b = await c.start('b');
    await until('pg up on a', () => hostState(c, 'a'), 30_000);
    await c.lab.killSilently('a', 'nft'); // a and b no longer hear each other; both still reach the store
    await until('b saw a silent', async () => (logOf(b).some((x) => x.msg === 'node-down') ? true : undefined), 5000);
    await new Promise((res) => setTimeout(res, 3 * LEASE_MS));
    expect(await c.apps()).toMatchObject([{ host: 'a', state: 'up' }]);
    expect(await c.holders()).toEqual(['a']);
    expect(published(b).filter((e) => e.service === 'pg')).toEqual([]);
    await c.lab.heal('a');
  }, 120_000);
});

describe('cluster manager: the next server when one cannot host it', () => {
  const server = (l: AgentsLab, over: Record<string, unknown>) => ({
    tag: 'web', type: 'cluster-capable', primary: 'a', backups: ['b', 'c'],
    // A TCP server that runs until stopped (the lab's fixtures end with their stdin).
    command: { load: [process.execPath, '-e', "require('net').createServer(() => {}).listen(7000)"], stopGraceMs: 1000 },
    restart: { maxFailures: 0, windowMs: 10_000, backoffMs: 100 },
    address: { address: l.vip, prefixLength: 24, interface: 'eth0', port: 7000 },
    ...over,
  });

  it('a backup that lacks a resource (RESOURCE LIST) hands it on to the next one', async () => {
    const extra = (l: AgentsLab) => `198.18.${l.lab.subnet}.200`;
    const c = await cluster('tko-apps3-', (l) => server(l, { resources: { addresses: [extra(l)] } }), ['a', 'b', 'c'], ['a', 'b', 'c'], false);
    for (const n of ['a', 'c']) await c.lab.exec(n, 'ip', ['addr', 'add', `${extra(c)}/32`, 'dev', 'lo']); // b lacks it
    await c.start('a');
    const b = await c.start('b');
    const cc = await c.start('c');
    await c.register();
    await until('web up on a', () => hostState(c, 'a'), 30_000).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(await c.apps())} ${c.agents.map((a) => logOf(a).filter((x) => x.app !== undefined).map((x) => JSON.stringify(x)).join('\n')).join('\n----\n')}`);
    });
    await c.kill('a');
    await until('web up on c', () => hostState(c, 'c'), 20_000);
    expect(await c.holders()).toContain('c');
    expect(await c.holders()).not.toContain('b');
    const history = JSON.parse((await runCli(['history', 'web', '--json', '--config', path.join(c.dir, 'b.json')])).stdout) as Array<{ by: string; why: string; to: { host: string | null } }>;
    expect(history.find((h) => h.by === 'b' && h.to.host === 'c')?.why).toMatch(/^b lacks its resources \(address 198\.18\.\d+\.200 is not on this node\): handed to c$/);
    expect(published(cc).filter((e) => e.service === 'web' && e.status === 'UP' && e.instance === 'web@c'), logOf(cc).filter((x) => x.app !== undefined || x.msg === 'published').map((x) => JSON.stringify(x).slice(0, 300)).join('\n')).toHaveLength(1);
    void b;
  }, 120_000);

  it('a COMMAND that cannot start on any server: NOT_RESTARTING on each, then failed with no HOST; app load tries again', async () => {
    const c = await cluster('tko-apps3f-', (l) => server(l, { command: { load: ['/nonexistent/web'] } }), ['a', 'b', 'c'], ['a', 'b', 'c'], false);
    const agents = [await c.start('a'), await c.start('b'), await c.start('c')];
    await until('the agents hear each other', async () => (agents.every((a) => logOf(a).filter((x) => x.msg === 'node-up').length >= 2) ? true : undefined), 10_000);
    await c.register();
    await until('web failed everywhere', async () => ((await c.apps())[0]?.state === 'failed' ? true : undefined), 30_000).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(await c.apps())}\n${agents.map((a) => logOf(a).filter((x) => x.app !== undefined).map((x) => JSON.stringify(x).slice(0, 300)).join('\n')).join('\n-----\n')}`);
    });
    await new Promise((r) => setTimeout(r, 300)); // the last NOT_RESTARTING is published just after the write
    expect(await c.apps()).toMatchObject([{ host: null, state: 'failed' }]);
    const notRestarting = agents.flatMap((a) => published(a)).filter((e) => e.service === 'web' && e.status === 'NOT_RESTARTING').map((e) => e.node).sort();
    expect(notRestarting, agents.map((a) => logOf(a).filter((x) => x.app !== undefined || x.msg === 'published').map((x) => JSON.stringify(x).slice(0, 300)).join('\n')).join('\n-----\n')).toEqual(['a', 'b', 'c']);
    expect(await c.holders()).toEqual([]);
    const r = await runCli(['app', 'load', 'web', '--config', path.join(c.dir, 'a.json'), '--wait-ms', '500']);
    expect(r.code).toBe(1); // loaded on a, which fails again: not up within the wait
    expect(r.stderr).toMatch(/not loaded on a within 500 ms/);
  }, 120_000);
});
