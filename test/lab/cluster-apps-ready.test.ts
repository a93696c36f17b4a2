// The readiness probe of a clustered application (the object's `ready`) with the agents run as
// operators run them (`takeover agent` processes in the nodes' namespaces, on a learning bridge)
// on the embedded store. An application that never answers its probe is never `up`: each start is
// ended at `timeoutMs`, the restart policy restarts it, then NOT_RESTARTING hands it to the backup,
// where the same happens, and it ends failed. One that answers only seconds after its process
// starts is `up` only then, on its PRIMARY and again after a failover: a client that connects the
// moment the store says `up` is served, one that connected while it was loading was refused.
import { describe, expect, it } from 'vitest';
import { fixturePath } from '../../src/lab/node-child.js';
import { cluster, heardByPeers, hostState, logOf, published, tcpApp } from './apps-cluster.js';
import { until } from './replication-cluster.js';

const LISTEN_AFTER_MS = 2500;
/**
 * The never-ready application's timeoutMs: each of its four starts waits it out. Long enough for
 * the `takeover apps` polls (a CLI process each, ~0.5-1 s) to see each server loading it (two
 * starts and a backoff: ~2.2 s a server).
 */
const NEVER_READY_TIMEOUT_MS = 1000;

describe('cluster manager: readiness', () => {
  it('an application whose probe never passes is never up: each start ends at timeoutMs, the restart policy restarts it, then the backup gets it, then it fails', async () => {
    const c = await cluster('tko-ready-never-', (l) => tcpApp(l, {
      backups: ['b'],
      restart: { maxFailures: 1, windowMs: 60_000, backoffMs: 200 },
      // It listens on 7000; the probe asks 7001, where nothing ever listens.
      ready: { tcp: 7001, timeoutMs: NEVER_READY_TIMEOUT_MS, intervalMs: 100 },
    }));
    const a = await c.start('a');
    const b = await c.start('b');
    const states: string[] = [];
    const app = await until('web failed everywhere', async () => {
      const [x] = await c.apps();
      if (x) states.push(`${String(x.host)}:${String(x.state)}`);
      return x?.state === 'failed' ? x : undefined;
    }, 40_000).catch((e: Error) => {
      throw new Error(`${e.message}: ${states.join(' ')}\n${[a, b].map((x) => logOf(x).filter((l) => l.app !== undefined).map((l) => JSON.stringify(l).slice(0, 300)).join('\n')).join('\n-----\n')}`);
    });
    expect(app).toMatchObject({ host: null, state: 'failed' });
    expect(states.some((s) => s.endsWith(':up'))).toBe(false);
    expect(new Set(states)).toEqual(new Set(['a:loading', 'b:loading', 'null:failed']));
    const history = JSON.parse((await c.cli(['history', 'web', '--json'])).stdout) as Array<{ by: string; why: string; to: { host: string | null; state: string } }>;
    const probe = `tcp ${c.vip.replace(/\./g, '\\.')}:7001: connect ECONNREFUSED`;
    expect(history.find((h) => h.by === 'a' && h.to.host === 'b')?.why).toMatch(new RegExp(`^it could not be kept running on a \\(not ready ${NEVER_READY_TIMEOUT_MS} ms after its start \\(${probe}.*\\)\\): handed to b$`));
    expect(history.find((h) => h.by === 'b' && h.to.host === null)?.why).toMatch(new RegExp(`^it could not be kept running on b \\(not ready ${NEVER_READY_TIMEOUT_MS} ms after its start \\(${probe}.*\\)\\), and no other server is alive to take it$`));
    await new Promise((r) => setTimeout(r, 300)); // the last NOT_RESTARTING is published just after the write
    const events = [a, b].flatMap((x) => published(x)).filter((e) => e.service === 'web');
    expect(events.filter((e) => e.status === 'UP')).toEqual([]);
    expect(events.filter((e) => e.status === 'NOT_RESTARTING').map((e) => e.node).sort()).toEqual(['a', 'b']);
    // Each server: the first start and one restart (maxFailures 1), each ended as not ready.
    for (const [node, agent] of [['a', a], ['b', b]] as const) {
      const log = logOf(agent);
      expect(log.filter((l) => l.msg === 'app process started').length, node).toBe(2);
      expect(log.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(`app web: fail-start (not ready ${NEVER_READY_TIMEOUT_MS} ms after its start`)).length, node).toBe(2);
    }
    expect(await c.holders()).toEqual([]);
  }, 120_000);

  it(`an application that listens ${LISTEN_AFTER_MS} ms after its start is up only then, on its PRIMARY and after a failover: a client that connects at once is served`, async () => {
    const listenLate = [process.execPath, '-e', `setTimeout(() => require('net').createServer(() => {}).listen(7000), ${LISTEN_AFTER_MS})`];
    const c = await cluster('tko-ready-late-', (l) => tcpApp(l, {
      backups: ['b'],
      command: { load: listenLate, stopGraceMs: 1000 },
      ready: { tcp: 7000, timeoutMs: 20_000, intervalMs: 100 },
    }));
    // Clients started now (Node takes a moment to start): each connects on command.
    const early = c.lab.spawn('c', fixturePath('client'), ['--host', c.vip, '--port', '7000', '--on-command', '1']);
    const onA = c.lab.spawn('c', fixturePath('client'), ['--host', c.vip, '--port', '7000', '--on-command', '1']);
    const onB = c.lab.spawn('c', fixturePath('client'), ['--host', c.vip, '--port', '7000', '--on-command', '1']);
    for (const x of [early, onA, onB]) await x.waitFor('ready', 15_000);
    const a = await c.start('a');
    const b = await c.start('b');

    // Loading on a, its address there, nothing listening yet: refused, and the store says loading.
    // (The address is taken before COMMAND runs; the agent's log is read at once, the store through a CLI process.)
    await until('web started on a', async () => (logOf(a).some((l) => l.msg === 'app process started') ? true : undefined), 20_000);
    early.send({ cmd: 'connect' });
    expect(await early.waitFor('error', 5000)).toMatchObject({ code: 'ECONNREFUSED' });
    expect(await c.apps()).toMatchObject([{ host: 'a', state: 'loading' }]);
    await until('web up on a', () => hostState(c, 'a'), 30_000);
    onA.send({ cmd: 'connect' });
    await onA.waitFor('connected', 5000);
    const eventsOf = (agent: typeof a, node: string) => published(agent).filter((e) => e.service === 'web' && e.instance === `web@${node}`);
    await until('UP on a published', async () => (eventsOf(a, 'a').some((e) => e.status === 'UP') ? true : undefined), 5000);
    const at = (agent: typeof a, node: string, status: string) => Date.parse(String(eventsOf(agent, node).find((e) => e.status === status)!.timestamp));
    const loadingA = at(a, 'a', 'UP') - at(a, 'a', 'COMING_UP');
    expect(loadingA).toBeGreaterThanOrEqual(LISTEN_AFTER_MS);
    const history = JSON.parse((await c.cli(['history', 'web', '--json'])).stdout) as Array<{ by: string; why: string; to: { host: string | null; state: string } }>;
    expect(history.find((h) => h.by === 'a' && h.to.state === 'up')?.why).toMatch(new RegExp(`^loaded and ready: tcp ${c.vip.replace(/\./g, '\\.')}:7000 passed \\d+ ms after its start$`));

    // a dies: b claims it, loads it, and says up only once it answers.
    await heardByPeers(c, 'a');
    const t0 = Date.now();
    await c.kill('a');
    await until('web loading on b', () => hostState(c, 'b', 'loading'), 20_000);
    const loadingOnB = Date.now() - t0;
    await until('web up on b', () => hostState(c, 'b'), 30_000);
    const upOnB = Date.now() - t0;
    onB.send({ cmd: 'connect' });
    await onB.waitFor('connected', 5000);
    await until('UP on b published', async () => (eventsOf(b, 'b').some((e) => e.status === 'UP') ? true : undefined), 5000);
    const loadingB = at(b, 'b', 'UP') - at(b, 'b', 'COMING_UP');
    expect(loadingB).toBeGreaterThanOrEqual(LISTEN_AFTER_MS);
    console.info(`readiness: COMING_UP to UP on a ${loadingA} ms, on b ${loadingB} ms (the process listens after ${LISTEN_AFTER_MS} ms); a killed: b HOST (loading) after ${loadingOnB} ms, up after ${upOnB} ms; a client connecting at once was served both times, one connecting while it loaded was refused`);
  }, 120_000);
});
