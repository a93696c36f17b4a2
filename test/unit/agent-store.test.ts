// The agent with a store it cannot reach (etcd down, say): it starts and does its other work;
// its applications wait, and say why, until the store answers. A closed port on loopback stands
// for an etcd cluster that is down.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/agent/config.js';
import type { AppActivity } from '../../src/cluster/app-manager.js';
import { eventually } from '../lab/eventually.js';
import { freePort } from '../free-port.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-agent-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A loopback port nothing listens on (bound, then released). */
describe('agent and an unreachable store', () => {
  it('starts anyway, runs its heartbeats and status, and says that the store cannot be used', async () => {
    const config = validateConfig({
      cluster: 'store-down', node: 'n1', database: 'db', key: 'the shared key 0123', control: path.join(dir, 'n1.sock'), incarnationFile: path.join(dir, 'n1.incarnation'),
      stateDir: path.join(dir, 'state'),
      heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: await freePort() }] },
      notify: { host: '127.0.0.1', port: 0 },
      store: { etcd: { endpoints: [`http://127.0.0.1:${await freePort()}`], callTimeoutMs: 300 }, leaseMs: 1000 },
      apps: [{ tag: 'web', type: 'cluster-capable', primary: 'n1', command: { load: ['/bin/sleep', '60'] } }],
    });
    const agent = await Agent.create(config);
    const activity: AppActivity[] = [];
    agent.on('app', (a) => activity.push(a));
    try {
      await agent.start();
      expect(agent.status().node).toBe('n1');
      await eventually(async () => (activity.some((a) => a.kind === 'lease-lost' && /cannot be used at start/.test(a.why)) ? true : undefined), 5000);
      expect(agent.status().apps).toEqual([]); // nothing known, nothing started
    } finally {
      await agent.stop();
    }
  });
});
