// The systemd unit's privileges are enough for what the agent must do: two `takeover agent`
// processes run with exactly the unit's capability bounding set and no_new_privs (setpriv, as
// the unit gives them; see test/systemd-unit.ts), against a server that runs as another user
// (nobody), as PostgreSQL runs as postgres:
// - on A, the failure plan of its hung instance ends a client's connection with a FIN through the
//   server's own socket: the socket's owner found in /proc/PID/fd (CAP_DAC_READ_SEARCH and
//   CAP_SYS_PTRACE), the socket borrowed with pidfd_getfd (CAP_SYS_PTRACE), its write side shut;
// - A replicates its connections to B (its own capture: CAP_NET_RAW), and once A is dead B takes
//   A's address over (rtnetlink, gratuitous ARP: CAP_NET_ADMIN, CAP_NET_RAW) and ends the other
//   client's connection with a FIN under its RST guard (nftables: CAP_NET_ADMIN).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath, type NodeChild } from '../../src/lab/node-child.js';
import { CLI } from '../cli-process.js';
import { unitPrivileges } from '../systemd-unit.js';
import { DEFAULT_AGENT_NICE, threadNices } from '../../src/monitor/cpu-priority.js';
import { until } from './replication-cluster.js';

// A server that accepts and holds every connection, as nobody; it says its pid and port.
const SERVER = [
  'import json, os, socket',
  's = socket.socket(socket.AF_INET, socket.SOCK_STREAM)',
  's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  's.bind(("0.0.0.0", 7000)); s.listen(16)',
  'print(json.dumps({"event": "listening", "pid": os.getpid(), "uid": os.getuid()}), flush=True)',
  'held = []',
  'while True: held.append(s.accept()[0])',
].join('\n');

let lab: Lab | undefined;
let dir: string | undefined;
afterEach(async () => {
  await lab?.destroy(); // kills the agents too: they run in its namespaces
  if (dir) rmSync(dir, { recursive: true, force: true });
  lab = dir = undefined;
});

const logs = (agent: NodeChild) => agent.events as Array<Record<string, unknown>>;

describe('the systemd unit\'s capabilities', () => {
  it('are enough for the failure plan of a hung instance run by another user, replication, and a peer takeover', async () => {
    lab = await Lab.create({ hosts: ['a', 'b', 'c'] });
    dir = mkdtempSync(path.join(tmpdir(), 'tko-unit-caps-'));
    const l = lab;
    const vip = `198.18.${l.subnet}.100`;
    await l.exec('a', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
    const server = l.spawnCommand('a', 'setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '/usr/bin/python3', '-c', SERVER]);
    const { pid, uid } = await server.waitFor('listening');
    expect(uid).not.toBe(0);

    const hung = path.join(dir, 'hung'); // the instance's health probe fails once this exists
    const links = (n: string) => [{ id: 0, address: l.host(n).ipv4, port: 7400 }];
    const agents = new Map<string, NodeChild>();
    for (const n of ['a', 'b']) {
      const config = {
        cluster: 'ops', node: n, database: 'db', key: 'the operators cluster key', control: path.join(dir, `${n}.sock`),
        heartbeat: { intervalMs: 100, misses: 3, links: links(n) }, notify: { port: 0 },
        peers: [n === 'a' ? { node: 'b', links: links('b') } : { node: 'a', links: links('a'), takeover: { address: vip, port: 7000, interface: 'eth0', prefixLength: 24, method: 'fin' } }],
        quorum: { twoNode: true }, // two agents, no fencing: a silent a is taken over
        instances: [{
          // How it runs and is watched is for a's agent alone (b's config may only name it).
          name: 'web1', node: 'a', role: 'primary',
          ...(n === 'a' ? { pid, ports: [7000], method: 'fin', health: { probe: { kind: 'exec', command: ['test', '!', '-e', hung] }, intervalMs: 100, timeoutMs: 1000, misses: 2 } } : {}),
        }],
        services: [{ name: 'web', members: ['web1'] }],
      };
      writeFileSync(path.join(dir, `${n}.json`), JSON.stringify(config));
      agents.set(n, l.spawnCommand(n, 'setpriv', [...unitPrivileges(), process.execPath, CLI, 'agent', '--config', path.join(dir, `${n}.json`)]));
    }
    const [a, b] = [agents.get('a')!, agents.get('b')!];
    await until('both agents started', async () => (logs(a).some((e) => e.msg === 'agent started') && logs(b).some((e) => e.msg === 'node-up') ? true : undefined), 20_000);
    // CAP_SYS_NICE: the agent's threads run at config `nice` (-10 by default).
    expect(new Set(threadNices(a.pid).values())).toEqual(new Set([DEFAULT_AGENT_NICE]));

    const local = l.spawn('c', fixturePath('client'), ['--host', vip, '--port', '7000']);
    await local.waitFor('connected');
    writeFileSync(hung, '');
    expect(await local.waitFor('end', 10_000)).toMatchObject({ received: 0 });
    const plan = await until('A\'s plan in its log', async () => logs(a).find((e) => e.msg === 'failure plan done')) as { level: number; plan: { cause: string; closed: { outcomes: Record<string, number>; actions: Record<string, number>; seqSources: Record<string, number> } } };
    expect(plan.plan).toMatchObject({ cause: 'hang', closed: { outcomes: { closed: 1 }, actions: { fin: 1 }, seqSources: { socket: 1 } } });

    const remote = l.spawn('c', fixturePath('client'), ['--host', vip, '--port', '7000']);
    await remote.waitFor('connected');
    await new Promise((r) => setTimeout(r, 500)); // B's copy gets the open within a few ms
    await l.killSilently('a');
    expect(await remote.waitFor('end', 10_000)).toMatchObject({ received: 0 });
    const takeover = await until('B\'s takeover in its log', async () => logs(b).find((e) => e.msg === 'peer taken over')) as { closed: { outcomes: Record<string, number> } };
    expect(takeover.closed.outcomes.closed).toBeGreaterThanOrEqual(1);
    expect([...logs(a), ...logs(b)].filter((e) => (e.level as number) >= 50)).toEqual([]);
  });

  it('without CAP_SYS_NICE, an agent whose `nice` is below its own exits 2 naming the field; with `nice: 0` it starts', async () => {
    lab = await Lab.create({ hosts: ['a'] });
    dir = mkdtempSync(path.join(tmpdir(), 'tko-unit-nice-'));
    const d = dir;
    const withoutNice = unitPrivileges().map((a) => (a.startsWith('--bounding-set=') ? a.replace(',+sys_nice', '') : a));
    expect(withoutNice.join(' ')).not.toContain('sys_nice');
    const run = (nice: number | undefined) => {
      const file = path.join(d, `nice${nice ?? ''}.json`);
      writeFileSync(file, JSON.stringify({
        cluster: 'ops', node: 'a', database: 'db', key: 'the operators cluster key', control: path.join(d, `a${nice ?? ''}.sock`), incarnationFile: path.join(d, 'a.incarnation'),
        heartbeat: { links: [{ id: 0, address: lab!.host('a').ipv4, port: 7400 }] }, notify: { port: 0 }, ...(nice !== undefined ? { nice } : {}),
      }));
      return lab!.spawnCommand('a', 'setpriv', [...withoutNice, process.execPath, CLI, 'agent', '--config', file]);
    };
    const refused = run(undefined);
    const code = await new Promise<number | null>((resolve) => refused.process.once('close', resolve));
    expect(code).toBe(2);
    expect(refused.stderrText).toMatch(/nice: cannot set thread \d+'s nice value to -10: EACCES: a nice value below the current one needs CAP_SYS_NICE/);
    const started = run(0);
    await until('the agent started at nice 0', async () => (logs(started).some((e) => e.msg === 'agent started') ? true : undefined), 20_000);
    expect(new Set(threadNices(started.pid).values())).toEqual(new Set([0]));
  });
});
