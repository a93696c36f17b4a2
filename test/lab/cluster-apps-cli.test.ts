// An application registered only by `takeover app register` (in no agent's config `apps`) gets
// what one from the config gets (cluster-apps.test.ts, the same PostgreSQL on the embedded store):
// the agents replicate its connections once the store has it, so when its HOST crashes the backup
// releases the client blocked there at once (its request acknowledged: nothing of its own would
// reach the backup), and the client's retry reaches the backup.
import { describe, expect, it } from 'vitest';
import { cluster, crashHostUnderBlockedClient, hostState, INTERVAL, LEASE_MS, logOf, pgApp, pgData, published } from './apps-cluster.js';
import { until } from './replication-cluster.js';

describe('cluster manager: an application registered by the CLI only', () => {
  it('its clients\' connections are replicated and released when its HOST crashes, as for one in the config', async () => {
    const pg = await pgData();
    const c = await cluster('tko-apps-cli-', pgApp(pg), { inConfig: false });
    // Nothing in their configs to order their starts: both at once.
    const [, b] = await Promise.all([c.start('a'), c.start('b')]);
    await new Promise((r) => setTimeout(r, 500));
    expect(logOf(b).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('replication: asking a for'))).toEqual([]); // nothing to ask for yet
    await c.register();
    await until('pg up on a', () => hostState(c, 'a'), 30_000);
    // b, which may take pg over from a, asked a for its connections once the store had pg.
    expect(logOf(b).filter((l) => l.msg === `replication: asking a for ${c.vip}:5432`)).toHaveLength(1);

    // A client blocked on a (pg_sleep) when a dies; its retry reaches b.
    const { released, upOnB, error: err } = await crashHostUnderBlockedClient(c, b);
    console.info(`CLI-registered app, HOST a killed: the blocked client got ${String(err.code ?? err.message)} after ${released} ms; pg up on b (store) after ${upOnB} ms (detection ${3 * INTERVAL} ms, lease ${LEASE_MS} ms, PostgreSQL start)`);
    expect(err.code).toBe('ECONNRESET');
    expect(released).toBeLessThan(LEASE_MS + 3 * INTERVAL + 2000); // the bound the config's test uses
    const events = published(b).filter((e) => e.service === 'pg');
    expect(events.filter((e) => e.status === 'DOWN' && e.instance === 'pg@a')).toHaveLength(1);
    expect(events.filter((e) => e.status === 'UP' && e.instance === 'pg@b')).toHaveLength(1);
  }, 180_000);
});
