// The agent's nice value (config `nice`) on a busy node: A's agent runs Redis, and 10,000 clients
// open their connections to it at once from four processes on C, on the same 2 cores (the
// replication-10k lab test's burst). A's heartbeats (100 ms) are timed as they arrive on C, and
// B (its backup, 3 misses) says whether it declared A dead meanwhile. Baseline: both agents at
// nice 0, the node's own priority (what the agent ran at before `nice`); ours: the default -10.
// Each side does the same work: a fresh cluster, the same burst, rounds interleaved.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nowMs, type NodeChild } from '../src/lab/node-child.js';
import { DEFAULT_AGENT_NICE } from '../src/monitor/cpu-priority.js';
import { agentStatus, INTERVAL, startReplicationCluster } from '../test/lab/replication-cluster.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fixture = (name: string) => path.join(here, '..', 'test', 'lab', 'fixtures', name);
const N = 10_000;
const PROCESSES = 4;
const ROUNDS = 2;

interface Round {
  /** Largest gap between A's heartbeats on C during the burst, ms. */
  maxGapMs: number;
  /** B declared A dead during the burst (and took its address: the clients that connect then are refused). */
  declaredDead: boolean;
  /** The burst: ms from the first open asked to the last client process done (or failed). */
  burstMs: number;
}

/** Waits until every client process reported its opens done, or an error (a refused connect once B holds the address); bounded. */
async function burstEnd(clients: NodeChild[], timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (clients.every((c) => c.events.some((e) => e.event === 'opened' || e.event === 'fixture-error'))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the burst of ${N} opens did not end in ${timeoutMs} ms`);
}

async function round(nice: number): Promise<Round> {
  const redisArgs = ['redis-server', '--port', '6379', '--bind', '* -::*', '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--maxclients', String(N + 2000), '--dir', '/tmp'];
  const cluster = await startReplicationCluster([{ port: 6379, method: 'rst' }], {
    watchedFromC: true,
    agentExtra: {
      nice,
      instances: [{ name: 'redis', node: 'a', command: redisArgs, ports: [6379], health: { probe: { kind: 'exec', command: ['redis-cli', '-p', '6379', 'PING'] }, intervalMs: 200, timeoutMs: 300, misses: 2 } }],
      services: [{ name: 'cache', members: ['redis'] }],
    },
  });
  try {
    const { lab, a, b, vip } = cluster;
    await a.waitFor('published', 15_000, (e) => e.type === 'instance' && e.status === 'UP');
    if ((await agentStatus(a)).nice !== nice) throw new Error(`A's agent runs at nice ${String((await agentStatus(a)).nice)}, not ${nice}`);
    const watch = lab.spawn('c', fixture('udp-arrivals.ts'), ['--address', lab.host('c').ipv4, '--port', '7400']);
    await watch.waitFor('listening');
    const clients = Array.from({ length: PROCESSES }, () => lab.spawn('c', fixture('tcp-clients.ts'), ['--host', vip, '--port', '6379']));
    for (const c of clients) await c.waitFor('ready');
    const start = nowMs();
    for (const c of clients) c.send({ cmd: 'open', count: N / PROCESSES });
    await burstEnd(clients, 90_000);
    const done = nowMs();
    await new Promise((r) => setTimeout(r, 3 * INTERVAL));
    // From the heartbeat before the burst to the one after it (a window 3 intervals wider on each
    // side); none at all in it: the window itself is the lower bound.
    const since = start - 3 * INTERVAL;
    const until = done + 3 * INTERVAL;
    watch.send({ cmd: 'gaps', from: lab.host('a').ipv4, since, until });
    const gaps = (await watch.waitFor('gaps')).gaps as number[];
    return {
      maxGapMs: gaps.length ? Math.max(...gaps) : until - since,
      declaredDead: b.events.some((e) => e.event === 'node-down' && e.node === 'a'),
      burstMs: done - start,
    };
  } finally {
    await cluster.destroy();
  }
}

export async function agentPriority(out: (s: string) => void): Promise<void> {
  const sides = { baseline: [] as Round[], ours: [] as Round[] };
  for (let i = 0; i < ROUNDS; i++) {
    sides.baseline.push(await round(0));
    sides.ours.push(await round(DEFAULT_AGENT_NICE));
  }
  out(`agent priority: A's heartbeats (interval ${INTERVAL} ms) timed on C while ${N} clients open their connections to the Redis A's agent runs, at once, from ${PROCESSES} processes on the same 2 cores; ${ROUNDS} rounds per side, interleaved`);
  const show = (name: string, rs: Round[]) =>
    out(`  ${name}: largest gap ${rs.map((r) => r.maxGapMs.toFixed(0)).join(', ')} ms; B declared A dead in ${rs.filter((r) => r.declaredDead).length} of ${rs.length}; burst ${rs.map((r) => (r.burstMs / 1000).toFixed(1)).join(', ')} s`);
  show('baseline, both agents at nice 0 (the node\'s own priority)', sides.baseline);
  show(`ours, both agents at nice ${DEFAULT_AGENT_NICE} (the default)`, sides.ours);
  const worst = (rs: Round[]) => Math.max(...rs.map((r) => r.maxGapMs));
  // Lateness: how far past its interval the worst heartbeat came.
  out(`  ratio of the worst lateness (largest gap - interval), baseline / ours = ${((worst(sides.baseline) - INTERVAL) / Math.max(1, worst(sides.ours) - INTERVAL)).toFixed(1)}x`);
}
