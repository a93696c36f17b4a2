// Detection wired to action, on a switch with a port mirror: the switch copies the primary's port
// to the backup's mir0 (Lab.mirrorPort, a SPAN port), the backup knows the primary's connections
// from its own capture there alone, with the library's HeartbeatAgent and PeerTakeover and no
// agent replication (docs/examples/backup.ts's set-up), and takes the address over on its eth0.
// The primary's node dies silently, the backup's heartbeats declare it down within 3 intervals
// and the skew, and the backup closes the primary's peers with no one telling it to; each close
// is proven by the client's answer, which reaches the backup's eth0, not the mirror (closePeers
// listens there too). On a switch without a mirror, the agents' replication does this instead
// (replication.test.ts).
import { afterEach, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath, nowMs } from '../../src/lab/node-child.js';
import { survivorLatenessMs } from './detection-bounds.js';
import { DEFAULT_SKEW_MS } from '../../src/monitor/failure-detector.js';
import type { CloseResult } from '../../src/net/close-result.js';
import { readEnding } from './scenario.js';

let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

it.each([
  ['rst', { event: 'error', code: 'ECONNRESET' }, 'reset'],
  ['fin', { event: 'end' }, 'closed'],
])('a silent node death is detected by heartbeats and its clients are closed (%s), unattended', async (method, ending, outcome) => {
  lab = await Lab.create({ hosts: ['client', 'primary', 'backup'], failsafeLink: true });
  const { ifname: mirror } = await lab.mirrorPort('primary', 'backup');
  const links = (n: string) => [
    { id: 0, address: lab!.host(n).ipv4, port: 7400 },
    { id: 1, address: lab!.host(n).failsafe!.ipv4, port: 7400 },
  ];
  const base = { key: 'k', intervalMs: 100, misses: 3 };
  const primary = lab.spawn('primary', fixturePath('heartbeat-node'), ['--config', JSON.stringify({ ...base, node: 'primary', incarnation: '1', links: links('primary'), peers: [{ node: 'backup', links: links('backup') }] })]);
  const server = lab.spawn('primary', fixturePath('server'), ['--port', '5432']);
  await server.waitFor('listening');
  const service = { address: lab.host('primary').ipv4, port: 5432 };
  const backup = lab.spawn('backup', fixturePath('backup-agent'), ['--config', JSON.stringify({
    ...base, node: 'backup', peer: 'primary', links: links('backup'), peers: [{ node: 'primary', links: links('primary') }],
    service, interface: 'eth0', capture: mirror, prefixLength: 24, method,
  })]);
  await backup.waitFor('node-up', 10_000, (e) => e.node === 'primary');
  await primary.waitFor('started');
  const clients = [0, 1, 2].map(() => lab!.spawn('client', fixturePath('client'), ['--host', service.address, '--port', '5432', '--request', 'Q']));
  for (const c of clients) await c.waitFor('connected');
  await new Promise((r) => setTimeout(r, 200));

  await lab.killSilently('primary', 'nft');
  const deadBy = nowMs(); // the nft rule is in force once nft has exited (8-200 ms after it started)
  const done = await backup.waitFor('takeover-done', 5000);
  const endings = await Promise.all(clients.map((c) => readEnding(c)));
  for (const e of endings) expect(e).toMatchObject(ending);
  expect(done.results).toHaveLength(3);
  // Each from the backup's own capture on the mirror, each proven by the client's answer, which
  // comes to the taken-over address on the backup's eth0 (the mirror copies the dead port only).
  for (const r of done.results as CloseResult[]) expect(r).toMatchObject({ ok: true, verified: true, seqSource: 'tracked', outcome });
  expect(backup.events.filter((e) => e.event === 'node-down')).toHaveLength(1);
  // Detection within 3 heartbeat intervals and the skew of the death, + the survivor's wake-up
  // on a busy host (survivorLatenessMs); the close follows at once.
  expect(Number(done.downAt) - deadBy).toBeLessThan(3 * 100 + DEFAULT_SKEW_MS + survivorLatenessMs(100));
  expect(Math.max(...endings.map((e) => Number(e.t))) - Number(done.downAt)).toBeLessThan(100);
});
