// The PostgreSQL switchover's catch-up against a real server on loopback (the promoted-standby
// path runs in test/lab/switchover-postgres.test.ts): every way it refuses names the server and
// says why, within its bound.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { pgCatchUp } from '../../src/agent/pg-catch-up.js';
import { freePort } from '../free-port.js';
import { startLoopbackPg, type LoopbackPg } from './pg-loopback.js';

let server: LoopbackPg | undefined;
const at = () => ({ host: '127.0.0.1', port: server!.port });

beforeAll(async () => {
  server = await startLoopbackPg(await freePort(), [{ name: 'scram_user', password: 'right', method: 'scram-sha-256' }]);
}, 60_000);

afterAll(async () => {
  await server?.stop();
});

it('refuses an upstream that is not a standby: nothing tells that it holds the primary\'s commits', async () => {
  await expect(pgCatchUp({ primary: at(), standby: at(), user: 'postgres', database: 'postgres' })).rejects.toThrow(`the upstream 127.0.0.1:${server!.port} is not a standby: nothing tells that it holds the primary's commits`);
});

it('names the server, the user and the database when the login fails', async () => {
  await expect(pgCatchUp({ primary: at(), standby: at(), user: 'scram_user', database: 'postgres', password: 'wrong' })).rejects.toThrow(new RegExp(`^the (primary|standby) 127\\.0\\.0\\.1:${server!.port} \\(user scram_user, database postgres\\): password authentication failed`));
});

it('gives up on a server that does not answer within its bound', async () => {
  // A listener that accepts and never speaks: the login never completes.
  const net = await import('node:net');
  const silent = net.createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const port = (silent.address() as { port: number }).port;
  const t0 = performance.now();
  try {
    await expect(pgCatchUp({ primary: { host: '127.0.0.1', port }, standby: at(), user: 'postgres', database: 'postgres', timeoutMs: 300 })).rejects.toThrow(new RegExp(`^the primary 127\\.0\\.0\\.1:${port} \\(user postgres, database postgres\\): `));
    expect(performance.now() - t0).toBeLessThan(2000);
  } finally {
    silent.close();
  }
});
