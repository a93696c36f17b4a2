// Issue 12 through the agent, as operators run it: `takeover agent --config FILE` on the primary a
// and the backup b (a learning bridge; the switch mirrors a's port to b). a serves Redis on the
// service address; b runs a Redis replica, and its config's takeover of a has a `continue`
// section (RESP, the mirror interface, the replica as upstream, `redis-cli REPLICAOF NO ONE` to
// promote it). Clients on c keep counting with INCR. a dies silently (nft drop, ARP included):
// b's agent declares it dead from the heartbeats, promotes the replica and continues all 1,000
// client connections at once; the clients see no error, no end, no reconnect, and each key's
// value on b is the last reply its client got. Without output commit one INCR in flight per busy
// connection may be applied twice or lost (docs/CONTINUE.md): counted, bounded by one each.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import type { LabEvent, NodeChild } from '../../src/lab/node-child.js';
import { startCli } from '../cli-process.js';
import { agentsLab } from './agents-lab.js';
import { startRedis } from './redis.js';
import { until } from './replication-cluster.js';

const clientFixture = fileURLToPath(new URL('fixtures/resp-counter-client.ts', import.meta.url));
/** Busy connections (INCR back to back) and idle ones (one INCR, then one after the takeover): 1,000 in all. */
const CONNECTIONS = 8;
const IDLE = 992;
let nextReq = 1;

async function op(child: NodeChild, cmd: Record<string, unknown>): Promise<any> {
  const reqId = nextReq++;
  child.send({ ...cmd, reqId });
  const r: LabEvent = await child.waitFor('result', 15_000, (e) => e.reqId === reqId);
  if (!r.ok) throw new Error(`${String(cmd.cmd)}: ${String(r.message)}`);
  return r.value;
}

interface ConnReport { key: string; replies: number; values: number[]; maxWaitMs: number; errors: string[]; ended: boolean; closed: boolean }

it('the backup\'s agent continues a silently dead Redis primary\'s connections on its promoted replica', async () => {
  const { lab, dir, agents, vip, links } = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-agent-');
  // Room for the 1,000 clients, the replica's link and the promote command (Redis' default is 10,000; the harness's 1,000).
  const master = await startRedis(lab, 'a', { maxClients: 1100 });
  const replica = await startRedis(lab, 'b', { maxClients: 1100, replicaOf: { host: lab.host('a').ipv4, port: master.port } });
  try {
    await replica.waitReplicaUp();
    const { ifname } = await lab.mirrorPort('a', 'b');
    for (const n of ['a', 'b']) {
      const takeover = {
        address: vip, port: master.port, interface: 'eth0', prefixLength: 24,
        continue: { protocol: 'resp', mirror: ifname, upstream: { port: replica.port }, promote: ['redis-cli', '-p', String(replica.port), 'REPLICAOF', 'NO', 'ONE'] },
      };
      const config = {
        cluster: 'ops', node: n, database: 'db', key: 'the operators cluster key', control: path.join(dir, `${n}.sock`),
        heartbeat: { intervalMs: 100, misses: 3, links: links(n) }, notify: { port: 0 },
        peers: [n === 'a' ? { node: 'b', links: links('b') } : { node: 'a', links: links('a'), takeover }],
        quorum: { twoNode: true }, // two agents, no fencing: the silenced a is what fencing would make it
      };
      writeFileSync(path.join(dir, `${n}.json`), JSON.stringify(config));
      agents.push(startCli(['agent', '--config', path.join(dir, `${n}.json`)], { netns: lab.host(n).ns }));
    }
    const log = () => agents[1]!.stdout().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, any>);
    await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
    // The shadow starts with b's agent: connections opened after it are the ones it can continue.
    await new Promise((r) => setTimeout(r, 500));
    const clients = lab.spawn('c', clientFixture);
    await clients.waitFor('ready');
    await op(clients, { cmd: 'start', address: vip, port: master.port, connections: CONNECTIONS, idle: IDLE, prefix: 'counter' });
    await new Promise((r) => setTimeout(r, 500));

    await lab.killSilently('a');
    const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 10_000);
    await new Promise((r) => setTimeout(r, 500));
    const poked = await op(clients, { cmd: 'poke' });
    const after = (await op(clients, { cmd: 'stop' })) as ConnReport[];
    const down = log().find((e) => e.msg === 'node-down')?.detector as { at: number; lastHeardAt: number } | undefined;
    console.log(`continue via the agent: ${JSON.stringify(taken.continued)}; detection ${down ? Math.round(down.at - down.lastHeardAt) : '?'} ms; takeover ${taken.ms} ms; longest client wait ${Math.max(...after.map((c) => c.maxWaitMs)).toFixed(0)} ms`);
    expect(taken.continueError).toBeUndefined();
    expect(taken.continued).toMatchObject({ connections: CONNECTIONS + IDLE, reset: 0 });
    expect(poked).toEqual({ idle: IDLE, answered: IDLE, bad: [] });
    let doubled = 0;
    let lost = 0;
    for (const c of after) {
      expect(c.errors, c.key).toEqual([]);
      expect(c.ended || c.closed, c.key).toBe(false);
      expect(Number(await replica.cli(['-n', '2', 'GET', c.key])), c.key).toBe(c.values.at(-1));
      for (let k = 1; k < c.values.length; k++) {
        const step = c.values[k]! - c.values[k - 1]!;
        if (step === 2) doubled++;
        else if (step === 0) lost++;
        else expect(step, `${c.key} reply ${k}`).toBe(1);
      }
    }
    expect(doubled + lost).toBeLessThanOrEqual(CONNECTIONS);
    console.log(`continue via the agent: INCR doubled ${doubled}, lost ${lost} (no output commit)`);
    expect((await replica.replication()).role).toBe('master');
  } finally {
    await replica.stop();
    await master.stop();
  }
}, 60_000);
