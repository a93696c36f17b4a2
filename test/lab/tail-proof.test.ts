// Issue 12's second source loses the tail of its copy when the primary dies: what the primary
// captured in its last moments never reached the backup. The tail proof asks every restored
// connection's client what it holds, continues those whose copy was whole and resets the rest
// exactly. Here the copy is cut on purpose (a mirror capture that stops feeding the table), on a
// learning bridge, with real Redis (a primary on a, its replica on b promoted) and raw clients on c:
// - quiet: an INCR before the cut, nothing after: continued, the next INCR answered by b;
// - late: an INCR answered by a after the cut (the client holds a reply the copy lacks): reset;
// - blocked: a BLPOP a took and acknowledged after the cut, never answered (the client will not
//   retransmit it): reset once the wait runs out;
// - inflight: an INCR sent after a went silent (unacknowledged, so retransmitted): continued.
import { it } from 'vitest';
import { libraryBackupLab } from './library-backup-lab.js';

const N = 4;
const WAIT_MS = 2000;

// The same cut, told two ways: a stream's copy (every connection proven) or a mirror whose ring
// dropped a frame at the cut (the connections open then are unproven: only those are proven).
// The two run at the same time: each has a lab (and Redis, mirror, backup, clients) of its own,
// tied to it, and most of each is waiting (on retransmissions, on the blocked clients' WAIT_MS).
it.concurrent.for([
  ['a copy from the primary\'s stream', { proveTail: true }],
  ['a mirror\'s copy after a capture loss', { loss: true }],
] as const)('%s: continues the connections whose copy was whole and exactly resets those whose tail the copy lacks', { timeout: 90_000 }, async ([_name, how], test) => {
  const { expect } = test;
  const { lab, master, replica, backup, clients, ports } = await libraryBackupLab('tko-tail-proof-', ['quiet', 'late', 'blocked', 'inflight'], N, test);
  await backup.request({ cmd: 'cut', loss: 'loss' in how });
  await clients.request({ cmd: 'send', group: 'late', words: ['INCR', 'k'] });
  await clients.request({ cmd: 'wait', group: 'late', replies: 3, timeoutMs: 5000 });
  await clients.request({ cmd: 'send', group: 'blocked', words: ['BLPOP', 'nothing', '0'] });
  // a's delayed ACK of the BLPOP (40 ms at most on Linux) must have left before it dies.
  await new Promise((r) => setTimeout(r, 300));
  await lab.killSilently('a');
  await clients.request({ cmd: 'send', group: 'inflight', words: ['INCR', 'k'] });
  await replica.cli(['REPLICAOF', 'NO', 'ONE']);

  const report = await backup.request({ cmd: 'continue', interface: 'eth0', prefixLength: 24, upstreamPort: replica.port, waitMs: WAIT_MS, proveTail: 'proveTail' in how }, 30_000);
  const continued = new Set<number>(report.continued.map((c: { client: number }) => c.client));
  const resetBy = new Map<number, { reason: string; outcome: string; seqSource: string }>(report.reset.map((r: any) => [r.client, r]));
  expect([...continued].sort()).toEqual([...ports.quiet!, ...ports.inflight!].sort());
  for (const p of ports.late!) {
    expect(resetBy.get(p)?.reason).toMatch(/acknowledged \d+ server bytes the copy lacks/);
    expect(resetBy.get(p)).toMatchObject({ outcome: 'reset', seqSource: 'tracked' });
  }
  for (const p of ports.blocked!) expect(resetBy.get(p)?.reason).toMatch(/beyond the copy and did not retransmit them/);
  console.log(`tail proof (${_name}): ${continued.size} continued, ${resetBy.size} reset; proven after ${report.continued.map((c: any) => c.tailProvenMs).join(', ')} ms; timings ${JSON.stringify(report.timings)}`);

  // The continued clients go on (b answers: the key was 1 per connection... one INCR each before
  // the cut, replicated; inflight's INCR was never applied by a); the reset ones saw ECONNRESET.
  await clients.request({ cmd: 'wait', group: 'inflight', replies: 3, timeoutMs: 5000 });
  await clients.request({ cmd: 'send', group: 'quiet', words: ['PING'] });
  await clients.request({ cmd: 'wait', group: 'quiet', replies: 3, timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 200));
  const seen = await clients.request({ cmd: 'report' });
  for (const c of seen.quiet) expect(c).toMatchObject({ replies: ['+OK', expect.stringMatching(/^:\d+$/), '+PONG'], errors: [], closed: false });
  for (const c of seen.inflight) expect(c).toMatchObject({ errors: [], closed: false });
  for (const c of seen.inflight) expect(c.replies).toHaveLength(3);
  for (const c of [...seen.late, ...seen.blocked]) expect(c).toMatchObject({ errors: ['ECONNRESET'], closed: true });
});
