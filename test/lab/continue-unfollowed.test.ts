// What an operator sees when the backup's agent restarts while its peer serves: the connections
// open then were not followed from their SYN, and a takeover resets them instead of continuing
// them. `takeover status` counts them (NOT FOLLOWED, from the peer's replicated table) and says
// so; the takeover then does what it said. Agents as processes, an unmodified Node `http` server
// on a, the mirror of a's port on a learning bridge, idle client connections held from c.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { runCli, startCli } from '../cli-process.js';
import { agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { until } from './replication-cluster.js';

const fixture = (name: string) => fileURLToPath(new URL(`fixtures/${name}`, import.meta.url));
const PORT = 8080;
const UPSTREAM = 8081;
/** Holds COUNT connections to HOST:PORT open, idle, until killed; prints their local ports. */
const HOLDER = `
import json, socket, sys, time
conns = [socket.create_connection((sys.argv[1], int(sys.argv[2]))) for _ in range(int(sys.argv[3]))]
print(json.dumps({"event": "ready", "ports": [c.getsockname()[1] for c in conns]}), flush=True)
time.sleep(120)
`;

it('after the backup\'s agent restarts, status counts the peer\'s connections it does not follow, and a takeover resets exactly those', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-unfollowed-');
  const { lab, vip, dir } = m;
  const primary = lab.spawn('a', fixture('http-server.ts'), ['--port', String(PORT), '--name', 'a']);
  const backup = lab.spawn('b', fixture('http-server.ts'), ['--port', String(UPSTREAM), '--name', 'b', '--host', '127.0.0.1']);
  await Promise.all([primary.waitFor('ready'), backup.waitFor('ready')]);
  const { ifname } = await lab.mirrorPort('a', 'b');
  const started = startContinueAgents(m, PORT, { protocol: 'http', mirror: ifname, upstream: { port: UPSTREAM } });
  await until('b hears a', async () => (started.log('b').some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
  await shadowFollowing(m, 'b');
  const status = async () => {
    const out = await runCli(['status', '--json', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
    return out.code === 0 ? ((JSON.parse(out.stdout) as { shadows: Array<{ connections: number; unfollowed?: number }> }).shadows[0]) : undefined;
  };
  const shadowIs = (what: string, want: { connections: number; unfollowed: number }) =>
    until(what, async () => {
      const s = await status();
      return s && s.connections === want.connections && s.unfollowed === want.unfollowed ? s : undefined;
    }, 15_000);

  const early = lab.spawnCommand('c', 'python3', ['-c', HOLDER, vip, String(PORT), '3']);
  await early.waitFor('ready');
  // Followed from their SYN, and listed by a's replicated table (scanned every second).
  await shadowIs('3 connections followed, none missing', { connections: 3, unfollowed: 0 });

  // b's agent restarts (an upgrade, a crash under systemd): its new shadow never saw their SYNs.
  const first = started.agent('b');
  first.child.kill('SIGTERM');
  await new Promise((r) => first.child.once('exit', r));
  const again = startCli(['agent', '--config', path.join(dir, 'b.json'), '--log-level', 'debug'], { netns: lab.host('b').ns });
  m.agents.push(again);
  const log = () => again.stdout().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, any>);
  await until('b hears a again', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
  await shadowFollowing(m, 'b');
  await shadowIs('the 3 open before the restart not followed', { connections: 0, unfollowed: 3 });
  const late = lab.spawnCommand('c', 'python3', ['-c', HOLDER, vip, String(PORT), '2']);
  await late.waitFor('ready');
  await shadowIs('2 new ones followed, the 3 still not', { connections: 2, unfollowed: 3 });
  const text = await runCli(['status', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
  expect(text.stdout).toMatch(/NOT FOLLOWED[^\n]*\n[^\n]*mirror[^\n]* 2 +0 +3\n/);
  expect(text.stdout).toMatch(/3 of the peers' connection\(s\) are not followed \(opened before the shadow started/);

  await lab.killSilently('a');
  const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 10_000);
  console.log(`continue unfollowed: ${JSON.stringify(taken.continued)}`);
  expect(taken.continued).toMatchObject({ connections: 2, reset: 3 });
  expect(Object.keys(taken.continued.resetBy)).toEqual([expect.stringMatching(/^not shadowed/)]);
}, 90_000);
