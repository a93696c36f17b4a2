// Two real agents on a learning bridge (a switch): node A serves on a service address (a second
// address on its eth0), node B takes that address over when A dies; node C hosts clients. The
// agents replicate A's connections to B over their heartbeat links (issue 9). Used by the
// replication lab tests; every process and namespace goes with lab.destroy().
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath, type NodeChild } from '../../src/lab/node-child.js';

export const INTERVAL = 100;
export const MISSES = 3;

export interface ReplicationCluster {
  lab: Lab;
  a: NodeChild;
  b: NodeChild;
  /** The service address A holds and B takes over. */
  vip: string;
  /** Kills everything: the agents, their processes, the namespaces, the config directory. */
  destroy(): Promise<void>;
}

export interface ClusterOptions {
  /** Extra top-level config for both agents (e.g. A's instances: B's agent gets their name, node and role). */
  agentExtra?: Record<string, unknown>;
  /**
   * Both agents also send heartbeats to node C, whose port 7400 is left to the test (it times
   * their arrivals); C's own heartbeats (a heartbeat node on port 7401) make it the third member
   * that gives the survivor its majority.
   */
  watchedFromC?: boolean;
  /**
   * The switch also mirrors A's port to B (Lab.mirrorPort: B's mir0, made before the agents
   * start), and B's takeovers capture there (`capture: mir0`): B's own view of A's connections,
   * merged with the replicated copy at the takeover.
   */
  mirror?: boolean;
  /** Runs once the lab exists, before the agents start; returns more top-level config for both. */
  prepare?: (lab: Lab, vip: string) => Promise<Record<string, unknown>>;
}

/**
 * The extra config as node n's agent reads it: an instance of another node keeps its name, node
 * and role (how it runs and is watched is for its own node's agent, and a config refuses them).
 */
function seenFrom(n: string, extra: Record<string, unknown>): Record<string, unknown> {
  const instances = extra.instances as Array<Record<string, unknown>> | undefined;
  if (!instances) return extra;
  return { ...extra, instances: instances.map((i) => (i.node === n ? i : { name: i.name, node: i.node, ...(i.role ? { role: i.role } : {}) })) };
}

export async function startReplicationCluster(takeover: Array<{ port: number; method: string }>, options: ClusterOptions = {}): Promise<ReplicationCluster> {
  const lab = await Lab.create({ hosts: ['a', 'b', 'c'], failsafeLink: true });
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-repl-'));
  const destroy = async () => {
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const vip = `198.18.${lab.subnet}.100`;
    const capture = options.mirror ? (await lab.mirrorPort('a', 'b')).ifname : undefined;
    await lab.exec('a', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
    const prepared = (await options.prepare?.(lab, vip)) ?? {};
    const links = (n: string) => [
      { id: 0, address: lab.host(n).ipv4, port: 7400 },
      { id: 1, address: lab.host(n).failsafe!.ipv4, port: 7400 },
    ];
    const config = (n: 'a' | 'b') => ({
      cluster: 'lab', node: n, database: 'db', key: 'a shared key of the lab cluster', incarnation: n === 'a' ? 11 : 12,
      control: path.join(dir, `${n}.sock`),
      heartbeat: { intervalMs: INTERVAL, misses: MISSES, links: links(n) },
      peers: [
        n === 'a'
          ? { node: 'b', links: links('b') }
          : { node: 'a', links: links('a'), ...(takeover.length ? { takeover: takeover.map((t) => ({ address: vip, port: t.port, interface: 'eth0', ...(capture ? { capture } : {}), prefixLength: 24, method: t.method })) } : {}) },
        ...(options.watchedFromC ? [{ node: 'c', links: links('c') }] : []),
      ],
      notify: { port: 0 },
      quorum: { twoNode: true }, // two agents, no fencing: the lab accepts the split-brain risk
      ...seenFrom(n, { ...options.agentExtra, ...prepared }),
    });
    if (options.watchedFromC) {
      const own = links('c').map((l) => ({ ...l, port: 7401 }));
      lab.spawn('c', fixturePath('heartbeat-node'), ['--config', JSON.stringify({ node: 'c', incarnation: '1', key: 'a shared key of the lab cluster', intervalMs: INTERVAL, misses: MISSES, links: own, peers: [{ node: 'a', links: links('a') }, { node: 'b', links: links('b') }] })]);
    }
    const a = lab.spawn('a', fixturePath('agent-node'), ['--config', JSON.stringify(config('a'))]);
    const b = lab.spawn('b', fixturePath('agent-node'), ['--config', JSON.stringify(config('b'))]);
    await a.waitFor('started', 15_000);
    await b.waitFor('started', 15_000);
    await b.waitFor('node-up', 10_000, (e) => e.node === 'a');
    return { lab, a, b, vip, destroy };
  } catch (err) {
    await destroy();
    throw err;
  }
}

export async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** An agent's status (through the agent-node fixture). */
export async function agentStatus(agent: NodeChild): Promise<Record<string, unknown>> {
  const n = agent.events.length;
  agent.send({ cmd: 'status' });
  return agent.waitFor('status', 5000, (e) => agent.events.indexOf(e) >= n);
}

/** B's copy of A's connections, as B's status shows it. */
export async function copyOfA(b: NodeChild): Promise<{ connections: number; synced: boolean; lastUpdateAgeMs?: number }> {
  const s = await agentStatus(b);
  const replication = s.replication as { peers: Array<{ node: string; connections: number; synced: boolean; lastUpdateAgeMs?: number }> };
  return replication.peers.find((p) => p.node === 'a')!;
}
