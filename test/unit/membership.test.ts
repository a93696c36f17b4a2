// Cluster membership as operators meet it (issue 10 items 1-3, issue 14 items 1-3), with real
// agents on loopback: strangers with the key are dropped, configured peers never heard are
// listed, key and keyFile follow one rule and a key mismatch is said out loud, a restart with a
// lower configured incarnation is still a new life, a stop is a planned departure (nothing taken
// over), two nodes without a tie breaker act on nobody's death, one agent per node, and SIGHUP
// reloads what can be reloaded and refuses the rest.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { configWarnings, loadConfig, validateConfig } from '../../src/agent/config.js';
import { AgentRunningError } from '../../src/agent/control.js';
import { ReloadRefusedError } from '../../src/agent/reload.js';
import type { ServiceEvent } from '../../src/events/service-event.js';
import { CLI, runCli } from '../cli-process.js';
import { eventually } from '../lab/eventually.js';
import { testPort } from '../free-port.js';

let dir: string;
const running: Agent[] = [];
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-member-'));
});
afterEach(async () => {
  for (const a of running.splice(0)) await a.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

const base = testPort(100);
let next = 0;
const freePort = () => base + next++ * 7;

interface NodeSpec {
  node: string;
  port: number;
  peers: Array<{ node: string; port: number }>;
  extra?: Record<string, unknown>;
}
const cfg = (n: NodeSpec) =>
  validateConfig({
    cluster: 'member', node: n.node, database: 'db', key: 'the shared key 0123', control: path.join(dir, `${n.node}.sock`), incarnationFile: path.join(dir, `${n.node}.incarnation`),
    heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: n.port }] },
    peers: n.peers.map((p) => ({ node: p.node, links: [{ id: 0, address: '127.0.0.1', port: p.port }] })),
    notify: { host: '127.0.0.1', port: 0 },
    ...n.extra,
  });

async function start(n: NodeSpec): Promise<{ agent: Agent; published: ServiceEvent[] }> {
  const agent = await Agent.create(cfg(n));
  const published: ServiceEvent[] = [];
  agent.on('published', (e) => published.push(e));
  running.push(agent);
  await agent.start();
  return { agent, published };
}

const until = (cond: () => boolean, ms = 5000) => eventually(async () => (cond() ? true : undefined), ms);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('membership', () => {
  it('a node with the key that is not a configured peer is dropped and counted; a configured peer never heard is listed', async () => {
    const [p1, p2, p3] = [freePort(), freePort(), freePort()];
    const n1 = await start({ node: 'n1', port: p1, peers: [{ node: 'n2', port: p2 }], extra: { quorum: { twoNode: true } } });
    const n3 = await start({ node: 'n3', port: p3, peers: [{ node: 'n1', port: p1 }], extra: { quorum: { twoNode: true } } });
    await until(() => n1.agent.status().heartbeat.rejected !== undefined && (n1.agent.status().heartbeat.rejected as Record<string, number>)['unknown-node']! >= 3);
    await n3.agent.stop();
    await sleep(300);
    const peers = n1.agent.status().peers;
    expect(peers.map((p) => [p.node, p.heard, p.up])).toEqual([['n2', false, false]]);
    expect(n1.published.filter((e) => e.type === 'node')).toEqual([]);
  });

  it('key and keyFile follow one rule (a final newline is not part of the key); keys that differ are said out loud', async () => {
    const [p1, p2, p3] = [freePort(), freePort(), freePort()];
    const keyFile = path.join(dir, 'key');
    writeFileSync(keyFile, 'the shared key 0123\n'); // what `echo ... > key` writes
    const n1 = await start({ node: 'n1', port: p1, peers: [{ node: 'n2', port: p2 }], extra: { quorum: { twoNode: true } } });
    const n2 = await start({ node: 'n2', port: p2, peers: [{ node: 'n1', port: p1 }], extra: { key: undefined, keyFile, quorum: { twoNode: true } } });
    await until(() => n1.agent.status().peers.some((p) => p.node === 'n2' && p.up) && n2.agent.status().peers.some((p) => p.node === 'n1' && p.up));
    await n2.agent.stop();
    // n2 comes back with another key: n1 hears it, but only with bad HMACs, and says so.
    writeFileSync(keyFile, 'another key, 19+ bytes\n');
    const said: Array<{ peer?: string; reason: string }> = [];
    n1.agent.on('peer-rejected', (r) => said.push({ peer: r.peer, reason: r.reason }));
    const bad = await start({ node: 'n2', port: p2, peers: [{ node: 'n1', port: p1 }], extra: { key: undefined, keyFile, quorum: { twoNode: true } } });
    await until(() => said.length > 0);
    expect(said[0]).toEqual({ peer: 'n2', reason: 'hmac' });
    await sleep(200);
    expect(said).toHaveLength(1); // once per 10 s, not per datagram
    expect(n1.agent.status().peers.find((p) => p.node === 'n2')).toMatchObject({ up: false, rejected: { hmac: expect.any(Number) } });
    await bad.agent.stop();
    void p3;
  });

  it('a peer restarted with a lower configured incarnation (the clock stepped back) is a new life, taken back', async () => {
    const [p1, p2] = [freePort(), freePort()];
    const n1 = await start({ node: 'n1', port: p1, peers: [{ node: 'n2', port: p2 }], extra: { quorum: { twoNode: true } } });
    const first = await start({ node: 'n2', port: p2, peers: [{ node: 'n1', port: p1 }], extra: { incarnation: 5_000_000_000_000, quorum: { twoNode: true } } });
    await until(() => n1.agent.status().peers.some((p) => p.node === 'n2' && p.up));
    first.agent.heartbeat.stop(); // dies without a goodbye
    await until(() => n1.published.some((e) => e.type === 'node' && e.status === 'DOWN'));
    await first.agent.stop();
    const second = await start({ node: 'n2', port: p2, peers: [{ node: 'n1', port: p1 }], extra: { incarnation: 4_999_999_000_000, quorum: { twoNode: true } } });
    expect(second.agent.incarnation).toBe(5_000_000_000_001);
    await until(() => n1.agent.status().peers.some((p) => p.node === 'n2' && p.up && p.incarnation === '5000000000001'));
    expect(n1.published.filter((e) => e.type === 'node').map((e) => e.status)).toEqual(['UP', 'DOWN', 'UP']);
  });

  it('a stop is a planned departure: the peer publishes no death and takes nothing over', async () => {
    const [p1, p2] = [freePort(), freePort()];
    const n1 = await start({ node: 'n1', port: p1, peers: [{ node: 'n2', port: p2 }], extra: { quorum: { twoNode: true } } });
    const n2 = await start({ node: 'n2', port: p2, peers: [{ node: 'n1', port: p1 }], extra: { quorum: { twoNode: true } } });
    await until(() => n1.agent.status().peers.some((p) => p.node === 'n2' && p.up));
    const kinds: string[] = [];
    n1.agent.on('detector', (e) => kinds.push(e.kind));
    await n2.agent.stop();
    await sleep(50 * 2 * 4); // well past the detection time (2 misses of 50 ms)
    expect(kinds).toEqual(['node-left']);
    expect(n1.published.filter((e) => e.status === 'DOWN')).toEqual([]);
    expect(n1.agent.status().peers[0]).toMatchObject({ node: 'n2', up: false, left: { serving: false } });
  });

  it('two nodes without a tie breaker: a silent peer is reported, not declared dead (either may be the one cut off)', async () => {
    const [p1, p2] = [freePort(), freePort()];
    const n1 = await start({ node: 'n1', port: p1, peers: [{ node: 'n2', port: p2 }] });
    const n2 = await start({ node: 'n2', port: p2, peers: [{ node: 'n1', port: p1 }] });
    await until(() => n1.agent.status().peers.some((p) => p.node === 'n2' && p.up));
    const suppressed: string[] = [];
    n1.agent.on('suppressed', (s) => suppressed.push(`${s.node} ${s.heard}/${s.of}`));
    n2.agent.heartbeat.stop(); // silent: n1 cannot tell a dead n2 from its own isolation
    await until(() => suppressed.length === 1);
    expect(suppressed).toEqual(['n2 1/2']);
    expect(n1.published.filter((e) => e.status === 'DOWN')).toEqual([]);
    expect(n1.agent.status().quorum).toMatchObject({ ok: false, heard: 1, of: 2 });
  });

  it('one agent per node: a second one is refused and leaves the first one\'s control socket alone; reload applies callouts and refuses the rest', async () => {
    const p1 = freePort();
    const spec = { node: 'n1', port: p1, peers: [] };
    const first = await start(spec);
    const second = await Agent.create(cfg({ ...spec, port: freePort() }));
    await expect(second.start()).rejects.toBeInstanceOf(AgentRunningError);
    expect(JSON.parse((await runCli(['status', '--json', '--control', path.join(dir, 'n1.sock')])).stdout)).toMatchObject({ node: 'n1' });
    expect(first.agent.reload(cfg({ ...spec, extra: { callouts: { dir } } }))).toEqual(['callouts']);
    expect(() => first.agent.reload(cfg({ ...spec, port: freePort() }))).toThrow(ReloadRefusedError);
    expect(() => first.agent.reload(cfg({ ...spec, port: freePort() }))).toThrow('reload refused: heartbeat changed');
  });
});

describe('agent --check on a configuration that cannot avoid split brain', () => {
  it('warns (exit 0) about two nodes that would never act, and about twoNode without fencing, on one link especially', async () => {
    const write = (name: string, extra: string, links = '[{ id: 0, address: 127.0.0.1, port: 7400 }]') => {
      const file = path.join(dir, name);
      writeFileSync(file, ['cluster: c', 'node: n1', 'database: d', "key: 'the shared key 0123'", `heartbeat: { links: ${links} }`, `peers: [{ node: n2, links: ${links.replace('127.0.0.1', '127.0.0.2')} }]`, 'notify: { port: 0 }', extra].join('\n'));
      return file;
    };
    // Three configurations, each checked by a process of its own, at once.
    const file = write('two.yaml', '');
    const [plain, twoNode, twoLinks] = await Promise.all([
      runCli(['agent', '--check', '--config', file]),
      runCli(['agent', '--check', '--config', write('two-node.yaml', 'quorum: { twoNode: true }')]),
      runCli(['agent', '--check', '--config', write('two-links.yaml', 'quorum: { twoNode: true }', '[{ id: 0, address: 127.0.0.1, port: 7400 }, { id: 1, address: 127.0.0.1, port: 7401 }]')]),
    ]);
    expect(plain.code).toBe(0);
    expect(plain.stderr).toBe(`${file}: warning: two nodes without fencing or a disk witness (disk.watch): a silent peer is never taken over, since either node may be the one cut off; configure fencing or disk, or set quorum.twoNode: true to act alone and accept split brain on a partition\n`);
    expect(twoNode.stderr).toMatch(/warning: quorum.twoNode without fencing or a disk witness: a partition makes both nodes .* \(split brain\)\. One heartbeat link: a single cut is such a partition/);
    expect(twoLinks.stderr).not.toMatch(/One heartbeat link/);
    // Fencing breaks the tie: nothing to warn about (checked on the parsed file: --check would also
    // look for the device on this host).
    expect(configWarnings(await loadConfig(write('fenced.yaml', 'fencing: { devices: [/dev/sdz] }')))).toEqual([]);
  });
});

describe('the agent as a daemon (a process)', () => {
  it('SIGHUP reloads a valid file and refuses a bad one, still running; SIGTERM is a planned departure the peer sees', async () => {
    const [p1, p2] = [freePort(), freePort()];
    const file = path.join(dir, 'n2.yaml');
    const yaml = (extra: string) =>
      [
        'cluster: member', 'node: n2', 'database: db', "key: 'the shared key 0123'", `control: ${path.join(dir, 'n2.sock')}`, `incarnationFile: ${path.join(dir, 'n2.incarnation')}`,
        `heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: 127.0.0.1, port: ${p2} }] }`,
        `peers: [{ node: n1, links: [{ id: 0, address: 127.0.0.1, port: ${p1} }] }]`,
        'quorum: { twoNode: true }', 'notify: { host: 127.0.0.1, port: 0 }', extra,
      ].join('\n');
    writeFileSync(file, yaml(''));
    const n1 = await start({ node: 'n1', port: p1, peers: [{ node: 'n2', port: p2 }], extra: { quorum: { twoNode: true } } });
    const kinds: string[] = [];
    n1.agent.on('detector', (e) => kinds.push(e.kind));
    const child = spawn(process.execPath, [CLI, 'agent', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const logs: Array<Record<string, any>> = [];
    createInterface({ input: child.stdout }).on('line', (l) => logs.push(JSON.parse(l)));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await until(() => logs.some((l) => l.msg === 'agent started'), 15_000);
      await until(() => kinds.includes('node-up'));
      writeFileSync(file, yaml('notify: { port: 99999 }'));
      child.kill('SIGHUP');
      await until(() => logs.some((l) => /reload refused/.test(l.msg)));
      writeFileSync(file, yaml(`callouts: { dir: ${dir} }`));
      child.kill('SIGHUP');
      await until(() => logs.some((l) => l.msg === 'configuration reloaded'));
      expect(logs.find((l) => l.msg === 'configuration reloaded')).toMatchObject({ changed: ['callouts'] });
      writeFileSync(file, yaml('heartbeat: { intervalMs: 100, links: [] }'));
      child.kill('SIGHUP');
      await until(() => logs.filter((l) => /reload refused/.test(l.msg)).length === 2);
      expect(child.exitCode).toBe(null);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      await sleep(400);
      expect(kinds).toEqual(['node-up', 'node-left']);
      expect(n1.published.filter((e) => e.status === 'DOWN')).toEqual([]);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
