// test/lab/redis.ts's replica: a real Redis replica in one lab host follows the master in
// another (link up, writes arrive, its own writes refused), then is promoted and takes writes.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { eventually } from './eventually.js';
import { startRedis, type RedisServer } from './redis.js';

let lab: Lab;
const servers: RedisServer[] = [];
beforeAll(async () => {
  lab = await Lab.create({ hosts: ['p', 'b'] });
});
afterAll(async () => {
  for (const s of servers) await s.stop();
  await lab?.destroy();
});

it('a replica follows its master, refuses writes, and takes them once promoted', async () => {
  const t0 = performance.now();
  const master = await startRedis(lab, 'p');
  servers.push(master);
  const replica = await startRedis(lab, 'b', { replicaOf: { host: lab.host('p').ipv4, port: master.port } });
  servers.push(replica);
  await replica.waitReplicaUp();
  expect(await replica.replication()).toMatchObject({ role: 'slave', master_host: lab.host('p').ipv4, master_link_status: 'up' });
  expect(await master.cli(['SET', 'k', 'v1'])).toBe('OK');
  await eventually(async () => ((await replica.cli(['GET', 'k'])) === 'v1' ? true : undefined), 5000, 'the write to reach the replica');
  expect(await replica.cli(['SET', 'k', 'x'])).toMatch(/^READONLY/);
  await replica.promote();
  expect((await replica.replication()).role).toBe('master');
  expect(await replica.cli(['SET', 'k', 'v2'])).toBe('OK');
  expect(await replica.cli(['GET', 'k'])).toBe('v2');
  console.log(`replica up, followed and promoted in ${(performance.now() - t0).toFixed(0)} ms`);
});
