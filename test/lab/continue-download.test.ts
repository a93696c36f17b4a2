// Issue 12's "death during a large reply", for HTTP, through the agents as processes: unmodified
// nginx (Debian package) on a (the service address) and on b, serving the same files (hard
// links: the same mtime and size, so the same strong ETag, as nodes on a shared disk), b's agent
// continuing a's connections (`protocol: http`, the mirror of a's port on a learning bridge).
// Two node http clients on c download a 24 MiB file each and stop reading in the middle (a slow
// client: a's kernel stops at c's closed window). a dies silently. b restores both sockets and
// asks its nginx for the rest (Range from the byte each body was cut at, If-Range with the
// ETag): the first client reads on to the end, every byte the file's (SHA-256), and its next
// GET goes to b on the same connection. The second file differs on b (another mtime: another
// ETag), so b's nginx answers If-Range with the whole other representation: that client is
// reset (ECONNRESET), never handed a mix of the two, and b's log says why. `takeover status`
// on b lists the connections its agent relays meanwhile.
import { createHash, randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, writeFileSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it, onTestFinished } from 'vitest';
import { runCli } from '../cli-process.js';
import { agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { startNginx } from './nginx.js';
import { until } from './replication-cluster.js';

const fixture = (name: string) => fileURLToPath(new URL(`fixtures/${name}`, import.meta.url));
const PORT = 8080;
const UPSTREAM = 8081;
const FILE_BYTES = 24 * 1024 * 1024;
/** Body bytes each client reads before it stops: its socket's buffers then fill and a stops sending. */
const PAUSE_AFTER = 2 * 1024 * 1024;

it('a dead nginx\'s download cut in its body is finished by b\'s nginx from the byte it was cut at (Range, If-Range); a file that changed is reset', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-download-');
  const { lab, vip } = m;
  const rootA = path.join(m.dir, 'www-a');
  const rootB = path.join(m.dir, 'www-b');
  mkdirSync(rootA);
  mkdirSync(rootB);
  const big = randomBytes(FILE_BYTES);
  writeFileSync(path.join(rootA, 'big.bin'), big);
  linkSync(path.join(rootA, 'big.bin'), path.join(rootB, 'big.bin'));
  // The same length, another mtime on b: another ETag.
  writeFileSync(path.join(rootA, 'changed.bin'), big);
  writeFileSync(path.join(rootB, 'changed.bin'), big);
  utimesSync(path.join(rootB, 'changed.bin'), new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
  for (const [root, name] of [[rootA, 'a'], [rootB, 'b']] as const) writeFileSync(path.join(root, 'small.txt'), `small from ${name}\n`);
  const servers = [await startNginx(lab, 'a', String(PORT), rootA), await startNginx(lab, 'b', `127.0.0.1:${UPSTREAM}`, rootB)];
  onTestFinished(async () => {
    for (const s of servers) await s.stop();
  });
  const { ifname } = await lab.mirrorPort('a', 'b');
  const { log: logOf } = startContinueAgents(m, PORT, { protocol: 'http', mirror: ifname, upstream: { port: UPSTREAM } });
  const log = () => logOf('b');
  await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
  await shadowFollowing(m, 'b');

  const clients = lab.spawn('c', fixture('download-clients.ts'));
  await clients.waitFor('ready');
  const same = await clients.request({ cmd: 'start', address: vip, port: PORT, path: '/big.bin', pauseAfter: PAUSE_AFTER });
  const changed = await clients.request({ cmd: 'start', address: vip, port: PORT, path: '/changed.bin', pauseAfter: PAUSE_AFTER });
  // Both sockets' buffers fill: a is stopped by c's closed window, its last bytes in flight.
  await new Promise((r) => setTimeout(r, 1000));

  await lab.killSilently('a');
  const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 10_000);
  console.log(`continue download: ${JSON.stringify(taken.continued)}`);
  expect(taken.continueError).toBeUndefined();
  expect(taken.continued).toMatchObject({ connections: 2, resumed: 2, reset: 0 });
  // Each asked from where its body was cut: past what the client had read, short of the end.
  for (const x of [same, changed]) {
    const line = log().find((e) => e.msg === 'continued connection' && e.client === `${lab.host('c').ipv4}:${x.port}`);
    console.log(`client ${x.port}: read ${x.received} before it stopped; ${line?.resumed}`);
    const from = Number(/^HTTP range from body byte (\d+) of (\d+) \(If-Range "[0-9a-f]+-[0-9a-f]+"\)$/.exec(line?.resumed ?? '')?.[1]);
    expect(from).toBeGreaterThanOrEqual(x.received);
    expect(from).toBeLessThan(FILE_BYTES);
  }

  // `takeover status` tells an operator what lives in b's agent now (its restart would reset it):
  // the first download's connection; the second's relay reset its client as soon as b's nginx
  // answered with another ETag.
  const status = async (json: boolean) => runCli(['status', ...(json ? ['--json'] : []), '--control', path.join(m.dir, 'b.sock')], { netns: lab.host('b').ns });
  await until('the changed download\'s relay ended', async () => (log().some((e) => e.msg === 'continued connections reset') ? true : undefined), 5000);
  expect(JSON.parse((await status(true)).stdout).relaying).toEqual([{ peer: 'a', address: vip, port: PORT, connections: 1 }]);
  expect((await status(false)).stdout).toMatch(/RELAYING FOR PEER[^]*\n\s*a\s+198\.18\.\d+\.100:8080\s+1\n[^]*1 continued connection\(s\) are relayed by this agent's process: stopping or restarting it resets them/);

  const whole = await clients.request({ cmd: 'finish', id: same.id, next: '/small.txt' }, 30_000);
  expect(whole).toEqual({
    status: 200,
    length: FILE_BYTES,
    bytes: FILE_BYTES,
    sha256: createHash('sha256').update(big).digest('hex'),
    errors: [],
    next: '200 small from b',
    reused: true,
    port: same.port,
  });
  const cut = await clients.request({ cmd: 'finish', id: changed.id, next: '/small.txt' }, 30_000);
  expect(cut.bytes).toBeLessThan(FILE_BYTES);
  expect(cut.errors.join(' ')).toMatch(/ECONNRESET|aborted/);
  const reset = await until('b\'s warning for the reset client', async () => log().find((e) => e.msg === 'continued connections reset'), 5000);
  expect(reset.count).toBe(1);
  expect(reset.first[0].client).toBe(`${lab.host('c').ipv4}:${changed.port}`);
  expect(reset.first[0].reason).toMatch(/does not go on from body byte \d+: its ETag is "[0-9a-f]+-[0-9a-f]+", was "[0-9a-f]+-[0-9a-f]+"/);
  // The finished download's keep-alive connection is still relayed.
  expect(JSON.parse((await status(true)).stdout).relaying).toEqual([{ peer: 'a', address: vip, port: PORT, connections: 1 }]);
}, 90_000);
