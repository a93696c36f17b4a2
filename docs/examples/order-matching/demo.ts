// Demo: the order-matching service on the reliable layer, its primary killed mid-load.
//
//   node --import tsx docs/examples/order-matching/demo.ts [orders-per-client]
//
// This process is the backup node (MirrorBackup) and 4 clients; it starts the primary as a
// child process (this same file, argument `primary`), kills it with SIGKILL halfway through,
// then takes over (the explicit call standing for the failure detector, not built yet), serves
// the clients from the rebuilt book and sends them the recovery signal; they resend what they
// have outstanding. It prints the times and checks that every order is in the book exactly once.
// Loopback only; temporary directories removed at the end. test/unit/reliable-demo.test.ts runs it.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MirrorBackup } from '../../../src/log/mirror-backup.js';
import { MirroredLog } from '../../../src/log/mirrored-log.js';
import { takeOver } from '../../../src/log/takeover.js';
import { ReliableClient } from '../../../src/reliable/reliable-client.js';
import { ReliableServer } from '../../../src/reliable/reliable-server.js';
import { ReliableState } from '../../../src/reliable/reliable-state.js';
import { encodeOrder, orderMatchingApp, type OrderBook } from './order-book.js';

const KEY = Buffer.from('demo-shared-key-please-change-me');

if (process.argv[2] === 'primary') {
  // The primary node: its log mirrored to the backup, the service on top.
  const [, , , dir, backupPort] = process.argv;
  const log = await MirroredLog.open({ dir: dir!, backup: { host: '127.0.0.1', port: Number(backupPort) }, key: KEY, node: 'primary', log: 'orders' });
  const server = await ReliableServer.listen({ log, state: new ReliableState(orderMatchingApp), host: '127.0.0.1', port: 0, node: 'primary', incarnation: log.incarnation });
  log.on('state', (s) => s === 'normal' && process.send!({ port: server.port }));
  process.on('disconnect', () => process.exit(0)); // the demo ended (or died): do not linger
} else {
  const perClient = Number(process.argv[2] ?? 500);
  const root = mkdtempSync(path.join(tmpdir(), 'order-matching-demo-'));
  try {
    const backup = await MirrorBackup.listen({ dir: path.join(root, 'backup'), host: '127.0.0.1', port: 0, key: KEY, node: 'backup', log: 'orders' });
    const servicePort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const child = fork(fileURLToPath(import.meta.url), ['primary', path.join(root, 'primary'), String(backup.port)], { execArgv: ['--import', 'tsx'] });
    const primaryPort = await new Promise<number>((resolve) => child.once('message', (m) => resolve((m as { port: number }).port)));
    console.log(`primary serving on ${primaryPort}, mirrored to the backup on ${backup.port}`);

    const clients = await Promise.all(
      Array.from({ length: 4 }, (_, i) => ReliableClient.connect({ servers: [{ host: '127.0.0.1', port: primaryPort }, { host: '127.0.0.1', port: servicePort }], clientId: `trader-${i}`, backoff: { minMs: 5, maxMs: 50 } })),
    );
    let answered = 0;
    let killedAt = 0;
    let firstAfterKill = 0;
    const load = clients.map(async (c, i) => {
      for (let k = 0; k < perClient; k++) {
        await c.request(encodeOrder({ side: (k + i) % 2 ? 'buy' : 'sell', price: 100 + ((k * 7 + i) % 5), qty: 1 + (k % 9) }));
        answered++;
        if (killedAt && !firstAfterKill) firstAfterKill = performance.now();
      }
    });
    while (answered < (perClient * clients.length) / 2) await new Promise((r) => setTimeout(r, 2));
    child.kill('SIGKILL');
    killedAt = performance.now();
    await new Promise((r) => child.once('exit', r));
    // The backup notices the primary's connection end; until then promote() refuses (it may be alive).
    while (backup.attached) await new Promise((r) => setTimeout(r, 1));
    firstAfterKill = 0;
    console.log(`primary killed after ${answered} replies`);

    // Seed FIG. 13: stop replication, flush, rebuild the book from the log (steps 426-428).
    const state = new ReliableState<OrderBook>(orderMatchingApp);
    const t = await takeOver(backup, { key: KEY, node: 'backup', log: 'orders', replay: (lsn, p) => state.replay(lsn, p) });
    const tookOver = performance.now();
    // Step 429: every client that connects now gets RECOVERED and resends what is outstanding.
    const server = await ReliableServer.listen({ log: t.log, state, host: '127.0.0.1', port: servicePort, node: 'backup', incarnation: t.log.incarnation, recoveredLsn: t.promoted.nextLsn });
    await Promise.all(load);
    const s = state.state.snapshot();
    console.log(`takeover: ${t.records} records replayed in ${t.timings.totalMs.toFixed(1)} ms; kill -> takeover done ${(tookOver - killedAt).toFixed(1)} ms, -> first reply after it ${(firstAfterKill - killedAt).toFixed(1)} ms`);
    console.log(`${state.stats.duplicates} resent orders answered from the duplicate table; ${s.nextOrder - 1} orders in the book's history, ${s.trades} trades; best bid ${s.bids[0]?.[0] ?? '-'} / ask ${s.asks[0]?.[0] ?? '-'}`);
    const ok = s.nextOrder - 1 === perClient * clients.length;
    console.log(ok ? 'every order applied exactly once' : `MISMATCH: ${s.nextOrder - 1} orders applied, ${perClient * clients.length} sent`);
    for (const c of clients) await c.close();
    await server.close();
    await t.log.close();
    await backup.close();
    process.exitCode = ok ? 0 : 1;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
