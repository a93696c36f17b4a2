// Three agents in three namespaces, heartbeats on two links: node A dies silently; B and C both
// declare it failed, and the node event is published once for the cluster (by one survivor),
// reaching a subscriber that listens to all three agents out of band.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath, nowMs, type NodeChild } from '../../src/lab/node-child.js';

const SUBSCRIBER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'event-subscriber.ts');
let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

it('a silent node death: both survivors decide, one publishes the NODE event, the subscriber gets it once', async () => {
  lab = await Lab.create({ hosts: ['a', 'b', 'c', 'sub'], failsafeLink: true });
  const names = ['a', 'b', 'c'];
  const links = (n: string) => [
    { id: 0, address: lab!.host(n).ipv4, port: 7400 },
    { id: 1, address: lab!.host(n).failsafe!.ipv4, port: 7400 },
  ];
  const agents = new Map<string, NodeChild>();
  for (const n of names) {
    const config = { node: n, incarnation: '3', key: 'k', intervalMs: 100, misses: 3, notifyPort: 7500, links: links(n), peers: names.filter((p) => p !== n).map((p) => ({ node: p, links: links(p) })) };
    agents.set(n, lab.spawn(n, fixturePath('cluster-agent'), ['--config', JSON.stringify(config)]));
  }
  for (const [n, agent] of agents) for (const p of names.filter((x) => x !== n)) await agent.waitFor('node-up', 10_000, (e) => e.node === p);
  const sub = lab.spawn('sub', SUBSCRIBER, ['--agents', JSON.stringify(names.map((n) => ({ host: lab!.host(n).ipv4, port: 7500 })))]);
  await sub.waitFor('subscribed');
  await new Promise((r) => setTimeout(r, 500)); // connected to all three

  const killedAt = nowMs();
  await lab.killSilently('a', 'nft');
  for (const n of ['b', 'c']) await agents.get(n)!.waitFor('node-down', 5000, (e) => e.node === 'a');
  const got = await sub.waitFor('event-received', 5000, (e) => e.type === 'node' && e.status === 'DOWN');
  expect(got).toMatchObject({ node: 'a', incarnation: 7, reason: 'failure' }); // 2 × 3 + 1
  expect(Number(got.t) - killedAt).toBeLessThan(400 + 150); // detection within 4 intervals, + delivery and slack
  await new Promise((r) => setTimeout(r, 500));
  const raw = sub.events.filter((e) => e.event === 'raw' && String(e.line).includes('"status":"DOWN"'));
  expect(raw.map((e) => e.from)).toEqual([lab.host('b').ipv4]); // published once, by the survivor named first
  expect(sub.events.filter((e) => e.event === 'event-received' && e.status === 'DOWN')).toHaveLength(1);
});
