// The cluster manager on etcd (issue 11): agents a and b (processes in their namespaces), a real
// 3-member etcd cluster on hosts e1-e3 of the same learning bridge, the CLI on host c. The HOST
// dies with one etcd member already lost: the backup becomes HOST in etcd. With etcd's quorum
// lost, a dead HOST is not failed over at all (never two HOSTs), the agent's log and
// `takeover apps` say why; once quorum is back, the failover goes on. And a link cut between the
// two servers while both reach etcd: one HOST, nothing moves.
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentsLab } from './agents-lab.js';
import { cluster, heardByPeers, hostState, LEASE_MS, logOf, published, tcpApp } from './apps-cluster.js';
import { type EtcdCluster, startEtcdCluster } from './etcd-cluster.js';
import { until } from './replication-cluster.js';

let etcd: EtcdCluster | undefined;
afterEach(async () => {
  await etcd?.destroy();
  etcd = undefined;
});

const options = {
  hosts: ['a', 'b', 'c', 'e1', 'e2', 'e3'],
  store: async (l: AgentsLab) => {
    etcd = await startEtcdCluster({ lab: l.lab, hosts: ['e1', 'e2', 'e3'] });
    return { etcd: { endpoints: etcd.endpoints, callTimeoutMs: 2000 }, leaseMs: LEASE_MS };
  },
};

describe('cluster manager on etcd', () => {
  it('one etcd member lost, then the HOST dies: the backup becomes HOST in etcd, its events once', async () => {
    const c = await cluster('tko-appsetcd-', (l) => tcpApp(l, { backups: ['b'] }), options);
    await c.start('a');
    const b = await c.start('b');
    await until('web up on a', () => hostState(c, 'a'), 30_000);
    await heardByPeers(c, 'a');
    await etcd!.member('m1').kill();
    const t0 = Date.now();
    await c.kill('a');
    await until('web up on b', () => hostState(c, 'b'), 20_000);
    console.info(`etcd, one member of 3 down: web up on b ${Date.now() - t0} ms after a died (detection 300 ms, lease ${LEASE_MS} ms rounded up to etcd's seconds)`);
    expect(await c.holders()).toContain('b');
    const events = published(b).filter((e) => e.service === 'web');
    expect(events.filter((e) => e.status === 'DOWN' && e.instance === 'web@a')).toHaveLength(1);
    expect(events.filter((e) => e.status === 'UP' && e.instance === 'web@b')).toHaveLength(1);
    const apps = await c.cli(['apps']);
    expect(apps.stdout).toMatch(/^web\s+cluster-capable\s+b\s+a\s+b\s+up\s/m);
  }, 120_000);

  it('etcd without quorum: the dead HOST is not failed over, and the log and `takeover apps` say why; with quorum back, it is', async () => {
    const c = await cluster('tko-appsetcdq-', (l) => tcpApp(l, { backups: ['b'] }), options);
    await c.start('a');
    const b = await c.start('b');
    await until('web up on a', () => hostState(c, 'a'), 30_000);
    await heardByPeers(c, 'a');
    await etcd!.member('m1').kill();
    await etcd!.member('m2').kill();
    await c.kill('a');
    await until('b saw a die', async () => (logOf(b).some((x) => x.msg === 'node-down') ? true : undefined), 5000);
    await new Promise((r) => setTimeout(r, 4000)); // detection, a lease, two store calls' bounds
    expect(await c.holders()).not.toContain('b');
    const said = logOf(b).filter((x) => typeof x.msg === 'string' && x.msg.includes('the store is not usable, no step is taken (no failover)'));
    expect(said.length).toBeGreaterThan(0);
    const apps = await c.cli(['apps']);
    expect(apps.code).toBe(1);
    expect(apps.stderr).toMatch(/store http:\/\/.*(unavailable|quorum|answer|time)/i);
    await etcd!.member('m1').start();
    await etcd!.member('m2').start();
    await until('web up on b once etcd has quorum again', () => hostState(c, 'b'), 30_000);
    expect(published(b).filter((e) => e.service === 'web' && e.status === 'UP' && e.instance === 'web@b')).toHaveLength(1);
  }, 120_000);

  it('a link cut between a and b while both reach etcd: b hears a die on the LAN, sees its lease live, and nothing moves', async () => {
    const c = await cluster('tko-appsetcdcut-', (l) => tcpApp(l, { backups: ['b'] }), options);
    await c.start('a');
    const b = await c.start('b');
    await until('web up on a', () => hostState(c, 'a'), 30_000);
    await heardByPeers(c, 'a'); // b must have heard a to see it go silent
    await c.lab.cutBetween('a', 'b'); // at the switch: a and b still reach e1-e3 and c
    try {
      await until('b saw a silent', async () => (logOf(b).some((x) => x.msg === 'node-down') ? true : undefined), 5000);
      await new Promise((res) => setTimeout(res, 3 * LEASE_MS));
      expect(await c.apps()).toMatchObject([{ host: 'a', state: 'up' }]);
      expect(await c.holders()).toEqual(['a']);
      expect(published(b).filter((e) => e.service === 'web')).toEqual([]);
      const status = await c.cli(['apps', '--json']);
      expect(status.code, status.stderr).toBe(0);
    } finally {
      await c.lab.healBetween('a', 'b');
    }
  }, 120_000);
});
