// For lab tests of the library's takeover (continueConnections) against a mirror, without the
// agents: a Redis primary on a and its replica on b, a's port mirrored to b, the tail-backup
// fixture on b capturing the mirror into a ShadowTable, and groups of raw RESP clients on c
// (resp-groups fixture), each connection having had one `INCR k` answered by a.
import type { TestContext } from 'vitest';
import { agentsLab } from './agents-lab.js';
import { startRedisPair } from './redis.js';

const fixture = (name: string) => new URL(`fixtures/${name}`, import.meta.url).pathname;

/** `count` connections per group; `test`: a concurrent test's context, to which the lab is tied. */
export async function libraryBackupLab(prefix: string, groups: readonly string[], count: number, test?: TestContext) {
  const { lab, vip } = await agentsLab({ hosts: ['a', 'b', 'c'] }, prefix, test ? { test } : {});
  const { master, replica } = await startRedisPair(lab);
  const { ifname } = await lab.mirrorPort('a', 'b');
  const backup = lab.spawn('b', fixture('tail-backup.ts'));
  const clients = lab.spawn('c', fixture('resp-groups.ts'));
  await Promise.all([backup.waitFor('ready'), clients.waitFor('ready')]);
  await backup.request({ cmd: 'start', mirror: ifname, address: vip, port: master.port });
  const ports: Record<string, number[]> = {};
  for (const group of groups) {
    ports[group] = (await clients.request({ cmd: 'open', address: vip, port: master.port, group, count })).ports;
    await clients.request({ cmd: 'send', group, words: ['INCR', 'k'] });
    await clients.request({ cmd: 'wait', group, replies: 2, timeoutMs: 5000 });
  }
  return { lab, vip, master, replica, backup, clients, ports };
}
