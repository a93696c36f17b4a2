// Issue 12's "re-inject client segments that arrived in between": a client that sends a request
// after the backup took its plans, before the restored socket is there and the address moved,
// reaches the dead server's port; the mirror copies it to the backup, which delivers it into the
// restored socket itself instead of waiting for the client's retransmission (200 ms, then
// 400 ms more). Real Redis (a primary on a, its replica on b promoted), a learning bridge with
// a's port mirrored to b, raw RESP clients on c; the backup is the library (tail-backup fixture)
// so that the window between the plans and the restores can be held open for the test, and c
// is kept from sending the requests again, so that only the delivery can get them answered.
import { expect, it } from 'vitest';
import { encodeCommand } from '../../src/net/shadow/resp-continue.js';
import { libraryBackupLab } from './library-backup-lab.js';
const N = 4;
/** The window held open between the plans and the restores, ms (the restores and the address take 10-20 ms in a takeover). */
const HOLD_MS = 300;

it('client bytes that reach the dead server after the plans are delivered into the restored sockets, not left to the clients\' retransmission', { timeout: 60_000 }, async () => {
  const { lab, master, replica, backup, clients, ports } = await libraryBackupLab('tko-continue-late-', ['late', 'quiet'], N);
  await lab.killSilently('a');
  await replica.cli(['REPLICAOF', 'NO', 'ONE']);

  const planned = backup.waitFor('planned', 20_000);
  const continuing = backup.request({ cmd: 'continue', interface: 'eth0', prefixLength: 24, upstreamPort: replica.port, holdMs: HOLD_MS, late: true }, 30_000);
  await planned;
  // Into the window: a's port gets the INCRs (a drops them), the mirror copies them to b.
  const sentAt = Date.now();
  await clients.request({ cmd: 'send', group: 'late', words: ['INCR', 'k'] });
  // From now on c cannot send them again (its data segments to the service are dropped as they
  // leave): an answer can only come from the backup's delivery.
  await new Promise((r) => setTimeout(r, 50));
  await lab.exec('c', 'nft', ['-f', '-'], `table inet tko_late_block {\n chain out { type filter hook output priority 0; tcp dport ${master.port} tcp flags & psh == psh drop; }\n}\n`);
  await clients.request({ cmd: 'wait', group: 'late', replies: 3, timeoutMs: 5000 });
  const waitedMs = Date.now() - sentAt;
  await lab.exec('c', 'nft', ['delete', 'table', 'inet', 'tko_late_block']);
  const report = await continuing;
  console.log(`continue late: ${JSON.stringify(report.late)}; the late INCRs answered ${waitedMs} ms after they were sent (the restores came ${HOLD_MS} ms after the plans); timings ${JSON.stringify(report.timings)}`);

  expect(report.reset).toEqual([]);
  const lateBytes = new Map<number, number>(report.continued.map((c: { client: number; lateBytes?: number }) => [c.client, c.lateBytes ?? 0]));
  const incr = encodeCommand(['INCR', 'k']).length;
  for (const p of ports.late!) expect(lateBytes.get(p), `late client ${p}`).toBe(incr);
  for (const p of ports.quiet!) expect(lateBytes.get(p), `quiet client ${p}`).toBe(0);
  expect(report.late).toEqual({ connections: N, bytes: N * incr, failures: 0 });

  await clients.request({ cmd: 'send', group: 'quiet', words: ['INCR', 'k'] });
  await clients.request({ cmd: 'wait', group: 'quiet', replies: 3, timeoutMs: 5000 });
  const seen = await clients.request({ cmd: 'report' });
  // One INCR each before the death (2N in all), then the late group's N, then the quiet group's N.
  const values = (g: string) => seen[g].map((c: { replies: string[] }) => Number(c.replies[2]!.slice(1))).sort((x: number, y: number) => x - y);
  expect(values('late')).toEqual(Array.from({ length: N }, (_, i) => 2 * N + 1 + i));
  expect(values('quiet')).toEqual(Array.from({ length: N }, (_, i) => 3 * N + 1 + i));
  for (const c of [...seen.late, ...seen.quiet]) expect(c).toMatchObject({ errors: [], closed: false });
});
