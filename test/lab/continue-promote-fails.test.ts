// Issue 12's failure path through the agent, as operators run it: the backup's `continue`
// section has a promotion that fails (a `promote` command that exits 3, as a `pg_ctl promote`
// or `redis-cli` that cannot do its job would). a serves Redis on the service address, b runs
// its replica; the switch mirrors a's port to b. Clients on c, busy and idle. a dies silently
// (nft drop, ARP included). b restores the connections and starts their relays while the
// promotion runs (only the replays wait for it); when it fails, every relayed client is reset
// with its restored socket's own RST, nothing is replayed to the replica (it stays a replica),
// the address is b's, and the takeover's log line says why. No client hangs.
import { expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { startRedisPair } from './redis.js';
import type { CounterReport } from './fixtures/resp-counter-client.js';
import { until } from './replication-cluster.js';

const clientFixture = fileURLToPath(new URL('fixtures/resp-counter-client.ts', import.meta.url));
const BUSY = 4;
const IDLE = 50;

it('a promotion that fails at the takeover: every client is reset exactly and promptly, nothing is replayed, the log says why', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-nopromo-');
  const { lab, vip } = m;
  const { master, replica, stop } = await startRedisPair(lab, { maxClients: 200 });
  try {
    const { ifname } = await lab.mirrorPort('a', 'b');
    const { log: logOf } = startContinueAgents(m, master.port, { protocol: 'resp', mirror: ifname, upstream: { port: replica.port }, promote: ['sh', '-c', 'echo cannot promote >&2; exit 3'] });
    const log = () => logOf('b');
    await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
    await shadowFollowing(m, 'b');
    const clients = lab.spawn('c', clientFixture);
    await clients.waitFor('ready');
    await clients.request({ cmd: 'start', address: vip, port: master.port, connections: BUSY, idle: IDLE, prefix: 'counter' });
    await new Promise((r) => setTimeout(r, 500));

    const killedAt = Date.now();
    await lab.killSilently('a');
    const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 10_000);
    const poked = (await clients.request({ cmd: 'poke' })) as { idle: number; answered: number; failed: number };
    const after = (await clients.request({ cmd: 'stop' })) as CounterReport[];
    console.log(`promotion failed: ${String(taken.continueError)}; ${taken.ms} ms; clients: idle ${JSON.stringify(poked)}, busy errors ${JSON.stringify(after.map((c) => c.errors))}`);
    expect(taken.continueError).toMatch(/the local service was not promoted: promote command "sh -c .*" exited with 3: cannot promote/);
    expect(taken.level).toBe(40); // a warning
    // Every client, idle or busy, learns at once that its connection is gone: a RST.
    expect(poked).toMatchObject({ idle: IDLE, answered: 0, failed: IDLE });
    for (const c of after) expect(c.errors, c.key).toContain('ECONNRESET');
    expect(Date.now() - killedAt).toBeLessThan(10_000);
    // Nothing was replayed: the replica was never promoted and took no write of the relays.
    expect(await replica.cli(['ROLE'])).toMatch(/^slave/);
    // The address is b's (the clients' next connect meets b's closed port, not a silence).
    expect((await lab.exec('b', 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain(`${vip}/24`);
  } finally {
    await stop();
  }
}, 60_000);
