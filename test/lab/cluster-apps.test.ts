// The cluster manager (issue 11, seed 002) with the agents run as operators run them (`takeover
// agent` processes in the nodes' namespaces, on a learning bridge) and a real PostgreSQL as the
// clustered application, its data in one directory both servers reach, on the embedded store.
// Node a (PRIMARY, HOST) dies: b becomes HOST, the service address answers from b, a client
// blocked on a gets its error at once and its retry succeeds against b, the events are published
// once. a comes back: AUTO-RECOVER moves PostgreSQL back. Then an operator's switchover, unload
// and load. And a link cut between a and b while both reach the store: one HOST, no failover.
import { describe, expect, it } from 'vitest';
import type { AgentsLab } from './agents-lab.js';
import { cluster, crashHostUnderBlockedClient, heardByPeers, tcpApp, hostState, INTERVAL, LEASE_MS, logOf, pgApp, pgData, published } from './apps-cluster.js';
import { until } from './replication-cluster.js';

describe('cluster manager: PostgreSQL on the embedded store', () => {
  it('fails over to the backup when the HOST dies, fails back when it returns, and obeys switchover, unload and load', async () => {
    const pg = await pgData();
    const c = await cluster('tko-apps-', pgApp(pg));
    let a = await c.start('a');
    const b = await c.start('b');
    await until('pg up on a', () => hostState(c, 'a'), 30_000);
    expect(await c.holders()).toEqual(['a']);

    // A client blocked on a (pg_sleep) when a dies; its retry reaches b.
    const { released, upOnB, error: err } = await crashHostUnderBlockedClient(c, b);
    expect(await c.holders()).toContain('b'); // a, dead, still has it configured: nothing answers there
    console.info(`HOST a killed: the blocked client got ${String(err.code ?? err.message)} after ${released} ms; pg up on b (store) after ${upOnB} ms (detection ${3 * INTERVAL} ms, lease ${LEASE_MS} ms, PostgreSQL start)`);
    expect(released).toBeLessThan(LEASE_MS + 3 * INTERVAL + 2000);
    const events = published(b).filter((e) => e.service === 'pg');
    expect(events.filter((e) => e.status === 'DOWN' && e.instance === 'pg@a')).toHaveLength(1);
    expect(events.filter((e) => e.status === 'UP' && e.instance === 'pg@b')).toHaveLength(1);
    const history = JSON.parse((await c.cli(['history', 'pg', '--json'])).stdout) as Array<{ by: string; why: string; to: { host: string } }>;
    expect(history.some((h) => h.by === 'b' && h.why === 'a failed' && h.to.host === 'b')).toBe(true);

    // a comes back: AUTO-RECOVER moves PostgreSQL back to its PRIMARY.
    await c.lab.heal('a');
    a = await c.start('a');
    await until('pg back on a', () => hostState(c, 'a'), 30_000);
    expect(await c.holders()).toEqual(['a']);

    // Operator: switchover to b, unload, load.
    const op = (args: string[]) => c.cli(['app', ...args, '--wait-ms', '30000']);
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
    await heardByPeers(c, 'a'); // b must have heard a to see it go silent
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
  it('a backup that lacks a resource (RESOURCE LIST) hands it on to the next one', async () => {
    const extra = (l: AgentsLab) => `198.18.${l.lab.subnet}.200`;
    const c = await cluster('tko-apps3-', (l) => tcpApp(l, { resources: { addresses: [extra(l)] } }), { nodes: ['a', 'b', 'c'], hosts: ['a', 'b', 'c', 'd'], inConfig: false, cliHost: 'd' });
    for (const n of ['a', 'c']) await c.lab.exec(n, 'ip', ['addr', 'add', `${extra(c)}/32`, 'dev', 'lo']); // b lacks it
    // The application is registered only once the three run and hear each other: until then
    // there is nothing to order their starts, so they start at once.
    const [a, b, cc] = await Promise.all([c.start('a'), c.start('b'), c.start('c')]);
    await until('the agents hear each other', async () => ([a, b, cc].every((x) => logOf(x).filter((l) => l.msg === 'node-up').length >= 2) ? true : undefined), 10_000);
    await c.register();
    await until('web up on a', () => hostState(c, 'a'), 30_000).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(await c.apps())} ${c.agents.map((a) => logOf(a).filter((x) => x.app !== undefined).map((x) => JSON.stringify(x)).join('\n')).join('\n----\n')}`);
    });
    await c.kill('a');
    await until('web up on c', () => hostState(c, 'c'), 20_000);
    expect(await c.holders()).toContain('c');
    expect(await c.holders()).not.toContain('b');
    const history = JSON.parse((await c.cli(['history', 'web', '--json'])).stdout) as Array<{ by: string; why: string; to: { host: string | null } }>;
    expect(history.find((h) => h.by === 'b' && h.to.host === 'c')?.why).toMatch(/^b lacks its resources \(address 198\.18\.\d+\.200 is not on this node\): handed to c$/);
    expect(published(cc).filter((e) => e.service === 'web' && e.status === 'UP' && e.instance === 'web@c'), logOf(cc).filter((x) => x.app !== undefined || x.msg === 'published').map((x) => JSON.stringify(x).slice(0, 300)).join('\n')).toHaveLength(1);
    void b;
  }, 120_000);

  it('a COMMAND that cannot start on any server: NOT_RESTARTING on each, then failed with no HOST; app load tries again', async () => {
    const c = await cluster('tko-apps3f-', (l) => tcpApp(l, { command: { load: ['/nonexistent/web'] } }), { nodes: ['a', 'b', 'c'], hosts: ['a', 'b', 'c', 'd'], inConfig: false, cliHost: 'd' });
    // Nothing to order their starts (the application is registered once they hear each other).
    const agents = await Promise.all([c.start('a'), c.start('b'), c.start('c')]);
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
    const r = await c.cli(['app', 'load', 'web', '--wait-ms', '500']);
    expect(r.code).toBe(1); // loaded on a, which fails again: not up within the wait
    expect(r.stderr).toMatch(/not loaded on a within 500 ms/);
  }, 120_000);
});

describe('cluster manager: failback by hand, and both servers failing', () => {
  it('AUTO-RECOVER off: the returning PRIMARY does not get it back until `app failback`; both servers crash and come back: it runs again where it was HOST', async () => {
    const c = await cluster('tko-appsfb-', (l) => tcpApp(l, { backups: ['b'], autoRecover: false }));
    await c.start('a');
    await c.start('b');
    await until('web up on a', () => hostState(c, 'a'), 30_000);
    await heardByPeers(c, 'a');
    await c.kill('a');
    await until('web up on b', () => hostState(c, 'b'), 20_000);
    await c.lab.heal('a');
    const a = await c.start('a');
    await until('a heard by b', async () => (logOf(a).some((x) => x.msg === 'node-up') ? true : undefined), 10_000);
    await new Promise((r) => setTimeout(r, 2000)); // AUTO-RECOVER would have moved it by now
    expect(await c.apps()).toMatchObject([{ host: 'b', state: 'up', failedOver: true }]);
    const r = await c.cli(['app', 'failback', 'web', '--wait-ms', '20000']);
    expect(r.code, r.stderr).toBe(0);
    expect(await c.holders()).toEqual(['a']);

    // Both servers crash; both come back (the backup first): the application runs again, on one of them.
    await c.kill('a');
    await c.kill('b');
    await c.lab.heal('a');
    await c.lab.heal('b');
    await c.start('b');
    await c.start('a');
    await until('web up again', async () => {
      const [app] = await c.apps();
      return app?.state === 'up' ? app : undefined;
    }, 30_000);
    await new Promise((r) => setTimeout(r, 1000));
    const [app] = await c.apps();
    expect(app).toMatchObject({ host: 'a', state: 'up' }); // a was HOST when both died: it resumes (seed 002 FIG. 6, both failed)
    expect(await c.holders()).toEqual(['a']);
  }, 120_000);
});
