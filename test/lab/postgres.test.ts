// Real PostgreSQL and the real node-postgres client: a query blocked in pg_sleep(600) gets the
// server's own "terminating connection" error instead of hanging, remotely and locally.
import { runCli } from '../cli-process.js';
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath } from '../../src/lab/node-child.js';
import { startPostgres, type PgServer } from './postgres.js';
import { closeFromBackup, readEnding, type Scenario } from './scenario.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const PG_CLIENT = path.join(here, 'fixtures', 'pg-client.ts');

let lab: Lab | undefined;
const servers: PgServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
  await lab?.destroy();
  lab = undefined;
});

describe('PostgreSQL', () => {
  it('node dies silently: goodbye:postgres rejects the blocked query with 57P01, and the pool moves to the restarted server', async () => {
    // The backup on a switch's port mirror of the server's port (its mir0): its own capture there
    // follows the PostgreSQL stream; it takes the address over and sends on eth0. On a switch
    // without a mirror the server's agent replicates the streams instead (replication.test.ts).
    lab = await Lab.create({ hosts: ['client', 'server', 'backup'] });
    const { ifname: mirror } = await lab.mirrorPort('server', 'backup');
    const address = lab.host('server').ipv4;
    servers.push(await startPostgres(lab, 'server'));
    const survivor = lab.spawn('backup', fixturePath('survivor'), ['--interface', 'eth0', '--capture', mirror, '--address', address, '--port', '5432', '--goodbye', 'postgres']);
    await survivor.waitFor('tracking');
    const client = lab.spawn('client', PG_CLIENT, ['--host', address]);
    await client.waitFor('query-started', 15_000);
    await new Promise((r) => setTimeout(r, 200)); // the query reaches the backend and is acked
    await lab.killSilently('server', 'nft');
    const scenario = { lab, family: 4, serverAddress: address, survivor } as unknown as Scenario;
    const { report } = await closeFromBackup(scenario, { method: 'goodbye:postgres' });
    const err = await client.waitFor('query-error', 5000);
    expect(err).toMatchObject({ code: '57P01', message: 'terminating connection due to administrator command' });
    expect(report.results).toHaveLength(1);
    expect(report.results[0]).toMatchObject({ ok: true, outcome: 'goodbye-delivered', action: 'goodbye:postgres', seqSource: 'tracked', verified: true });
    // The service restarts on the backup, which now owns the address.
    servers.push(await startPostgres(lab, 'backup'));
    client.send({ cmd: 'query' });
    expect(await client.waitFor('query-result', 15_000)).toMatchObject({ answer: 42, server: `${address}/32` });
  });

  it.each([
    ['rst', [], 'ECONNRESET'],
    ['goodbye:postgres', ['--assume-boundary'], '57P01'],
  ])('local hung backend (SIGSTOP): close-peers --pid --method %s ends the client\'s query', async (method, extra, code) => {
    lab = await Lab.create({ hosts: ['client', 'server'] });
    servers.push(await startPostgres(lab, 'server'));
    const client = lab.spawn('client', PG_CLIENT, ['--host', lab.host('server').ipv4]);
    const { backendPid } = await client.waitFor('connected', 15_000);
    await client.waitFor('query-started');
    await new Promise((r) => setTimeout(r, 200));
    process.kill(Number(backendPid), 'SIGSTOP');
    try {
      // Run from the root namespace: the CLI enters the backend's network namespace itself.
      const out = await runCli(['close-peers', '--pid', String(backendPid), '--method', method, ...extra, '--json']);
      expect(out.stderr).toBe('');
      expect(out.code).toBe(0);
      const doc = JSON.parse(out.stdout);
      expect(doc).toMatchObject({ pid: Number(backendPid), connections: 1, failed: 0 });
      expect(doc.results[0]).toMatchObject({ ok: true, peer: { port: expect.any(Number) }, local: { port: 5432 } });
      const err = await client.waitFor('query-error', 5000);
      expect(err.code).toBe(code);
    } finally {
      process.kill(Number(backendPid), 'SIGCONT');
    }
  });
});
