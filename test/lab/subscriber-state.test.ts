// What subscribers of real agents (processes in namespaces) see of a node that is cut off, heard
// again with the same incarnation, and then dies: NODE DOWN, UP, DOWN, once each and in order,
// from the survivor that speaks for the cluster. A subscriber that connects afterwards starts
// from each agent's state: the picture that agent's `status` shows, the dead node's DOWN with the
// number of the live event.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../src/lab/exec.js';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath, type LabEvent, type NodeChild } from '../../src/lab/node-child.js';
import { decodeEventJson, type ServiceEvent } from '../../src/events/service-event.js';
import type { AgentStatus } from '../../src/agent/agent.js';
import { eventPicture, statusPicture } from '../state-picture.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SUBSCRIBER = path.join(here, 'fixtures', 'event-subscriber.ts');
const NODES = ['a', 'b', 'c'];

let lab: Lab | undefined;
let dir: string | undefined;
afterEach(async () => {
  await lab?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
  lab = dir = undefined;
});

async function startCluster() {
  lab = await Lab.create({ hosts: NODES });
  dir = mkdtempSync(path.join(tmpdir(), 'tko-subs-'));
  const l = lab;
  const d = dir;
  const links = (n: string) => [{ id: 0, address: l.host(n).ipv4, port: 7400 }];
  const agents = new Map<string, NodeChild>();
  for (const n of NODES) {
    const config = {
      cluster: 'lab', node: n, database: 'db', key: 'a shared key of the lab cluster', control: path.join(d, `${n}.sock`),
      heartbeat: { intervalMs: 100, misses: 3, links: links(n) },
      peers: NODES.filter((p) => p !== n).map((p) => ({ node: p, links: links(p) })),
      notify: { port: 7500 },
      // Each node's agent is told how to run its own instance only (another node's is refused).
      instances: [{ name: 'web1', node: 'a' }, { name: 'web2', node: 'b' }].map((i) => (i.node === n ? { ...i, command: ['sleep', '600'] } : i)),
      services: [{ name: 'web', members: ['web1', 'web2'] }],
    };
    agents.set(n, lab.spawn(n, fixturePath('agent-node'), ['--config', JSON.stringify(config)]));
  }
  for (const [n, agent] of agents) {
    await agent.waitFor('started', 15_000);
    for (const p of NODES.filter((x) => x !== n)) await agent.waitFor('node-up', 10_000, (e) => e.node === p);
  }
  const subscriber = () => l.spawn('c', SUBSCRIBER, ['--agents', JSON.stringify(NODES.map((n) => ({ host: l.host(n).ipv4, port: 7500 })))]);
  return { lab, agents, subscriber };
}

const aboutA = (e: LabEvent) => e.event === 'event-received' && e.type === 'node' && e.node === 'a' && !e.snapshot;
const count = (c: NodeChild, pred: (e: LabEvent) => boolean) => c.events.filter(pred).length;
async function until(cond: () => boolean, ms: number, what: string) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('subscribers of real agents', () => {
  it('a node cut off, heard again with the same incarnation, then dead: NODE DOWN, UP, DOWN once each; a later subscriber starts from the state status shows', async () => {
    const { lab, agents, subscriber } = await startCluster();
    const b = agents.get('b')!;
    const first = subscriber();
    await first.waitFor('subscribed');
    // The state first: from b, node a UP among the rest.
    await first.waitFor('event-received', 5000, (e) => e.type === 'node' && e.node === 'a' && e.snapshot === true);

    await lab.cutLink('a', 'main'); // a partition: a alone on its side
    await until(() => count(first, aboutA) === 1, 5000, 'NODE a DOWN at the subscriber');
    await run('ip', ['-n', lab.switchNs, 'link', 'set', 'dev', lab.host('a').port, 'up']); // healed: the same incarnation
    await until(() => count(first, aboutA) === 2, 5000, 'NODE a UP at the subscriber');
    await lab.killSilently('a', 'nft'); // now it dies
    await until(() => count(first, aboutA) === 3, 5000, 'NODE a DOWN again at the subscriber');

    const seen = first.events.filter(aboutA);
    expect(seen.map((e) => `${e.status} ${e.reason}`)).toEqual(['DOWN failure', 'UP boot', 'DOWN failure']);
    const numbers = seen.map((e) => Number(e.incarnation));
    expect(numbers).toEqual([...numbers].sort((x, y) => x - y));
    expect(new Set(numbers).size).toBe(3);
    // b's detector decided the same three changes, and b (the survivor named first) published
    // each once; c published none of them.
    expect(b.events.filter((e) => (e.event === 'node-down' || e.event === 'node-up') && e.node === 'a').map((e) => e.event)).toEqual(['node-up', 'node-down', 'node-up', 'node-down']);
    await new Promise((r) => setTimeout(r, 300));
    const liveLines = first.events.filter((e) => e.event === 'raw' && /"type":"node"/.test(String(e.line)) && /"node":"a"/.test(String(e.line)) && !/"snapshot":true/.test(String(e.line)));
    expect(liveLines.map((e) => e.from)).toEqual([lab.host('b').ipv4, lab.host('b').ipv4, lab.host('b').ipv4]);

    // A subscriber that connects now gets b's state: a DOWN with the live event's number, and
    // the picture b's status shows.
    const later = subscriber();
    await later.waitFor('subscribed');
    b.send({ cmd: 'status' });
    const status = await b.waitFor('status');
    const fromB = () => later.events.filter((e) => e.event === 'raw' && e.from === lab.host('b').ipv4).map((e) => decodeEventJson(String(e.line)));
    const size = 1 + (status.peers as unknown[]).length + (status.instances as unknown[]).length + (status.services as Array<{ members: unknown[] }>).reduce((n, s) => n + s.members.length + 1, 0);
    await until(() => fromB().length >= size, 5000, "b's state at the later subscriber");
    const state = fromB().slice(0, size);
    expect(state.every((e) => e.snapshot === true)).toBe(true);
    expect(eventPicture(state)).toEqual(statusPicture(status as unknown as AgentStatus)); // the fixture reports status() as JSON
    expect(eventPicture(state)).toMatchObject({ 'node a': false, 'member web/web1': false, 'member web/web2': true, 'service web': true });
    expect(state.find((e) => e.type === 'node' && e.node === 'a')).toMatchObject({ status: 'DOWN', reason: 'failure', incarnation: numbers[2] });
    // Through subscribe() (b's and c's states merged): the same picture of node a, taken once.
    await later.waitFor('event-received', 5000, (e) => e.type === 'node' && e.node === 'a');
    expect(later.events.filter((e) => e.event === 'event-received' && e.type === 'node' && e.node === 'a').map((e) => e.status)).toEqual(['DOWN']);
  });
});
