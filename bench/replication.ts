// Issue 9's benchmarks, on a learning bridge (a switch), baseline and ours in the same run:
// - release: the share of a dead node's connections released, and when, against the churn
//   rate (opens and closes per second up to the death). Ours: the agents, the serving node's
//   replicating its connections. Baseline: the backup as it was before (heartbeats, PeerTakeover
//   and its own capture, which on a switch sees none of the server's traffic).
// - bandwidth: replication bytes per second per 1,000 connections at rest and under churn,
//   beside conntrackd's figure.
// - jitter: the largest gap between a closing node's heartbeats (timed on a peer as they arrive)
//   while it closes 10,000 connections: the synchronous loop the agent ran before, and now.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';
import { fixturePath, nowMs, type NodeChild } from '../src/lab/node-child.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLIENTS = path.join(here, '..', 'test', 'lab', 'fixtures', 'tcp-clients.ts');
const ARRIVALS = path.join(here, '..', 'test', 'lab', 'fixtures', 'udp-arrivals.ts');
const JITTER = path.join(here, 'fixtures', 'close-jitter.ts');
const out = (s: string) => process.stdout.write(`${s}\n`);
const PORT = 7000;
const INTERVAL = 100;

interface ClientRecord {
  port: number;
  connectedAt?: number;
  endedAt?: number;
  how?: string;
  closedByUs?: number;
}

async function stats(c: NodeChild): Promise<ClientRecord[]> {
  const n = c.events.length;
  c.send({ cmd: 'stats' });
  return (await c.waitFor('stats', 10_000, (e) => c.events.indexOf(e) >= n)).conns as ClientRecord[];
}

async function statusOf(agent: NodeChild): Promise<Record<string, any>> {
  const n = agent.events.length;
  agent.send({ cmd: 'status' });
  return agent.waitFor('status', 5000, (e) => agent.events.indexOf(e) >= n);
}

const links = (lab: Lab, n: string) => [
  { id: 0, address: lab.host(n).ipv4, port: 7400 },
  { id: 1, address: lab.host(n).failsafe!.ipv4, port: 7400 },
];

/**
 * One run: `long` idle connections, churn at `rate` per second (each closed by its client 20 ms
 * later) from 1 s before the death, the server's node killed silently. `replicated`: ours.
 */
async function releaseRun(replicated: boolean, long: number, rate: number) {
  const lab = await Lab.create({ hosts: ['a', 'b', 'c'], failsafeLink: true });
  try {
    const vip = `198.18.${lab.subnet}.100`;
    await lab.exec('a', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
    const server = lab.spawn('a', fixturePath('server'), ['--port', String(PORT)]);
    await server.waitFor('listening');
    let a: NodeChild;
    let b: NodeChild;
    if (replicated) {
      const config = (n: 'a' | 'b') => ({
        cluster: 'bench', node: n, database: 'db', key: 'the bench cluster key', control: `/tmp/tko-bench-${lab.id}-${n}.sock`,
        heartbeat: { intervalMs: INTERVAL, misses: 3, links: links(lab, n) }, notify: { port: 0 },
        peers: [n === 'a' ? { node: 'b', links: links(lab, 'b') } : { node: 'a', links: links(lab, 'a'), takeover: { address: vip, port: PORT, interface: 'eth0', prefixLength: 24 } }],
      });
      a = lab.spawn('a', fixturePath('agent-node'), ['--config', JSON.stringify(config('a'))]);
      b = lab.spawn('b', fixturePath('agent-node'), ['--config', JSON.stringify(config('b'))]);
      await a.waitFor('started', 15_000);
    } else {
      const hb = { key: 'the bench cluster key', intervalMs: INTERVAL, misses: 3 };
      a = lab.spawn('a', fixturePath('heartbeat-node'), ['--config', JSON.stringify({ ...hb, node: 'a', incarnation: '1', links: links(lab, 'a'), peers: [{ node: 'b', links: links(lab, 'b') }] })]);
      b = lab.spawn('b', fixturePath('backup-agent'), ['--config', JSON.stringify({
        ...hb, node: 'b', peer: 'a', links: links(lab, 'b'), peers: [{ node: 'a', links: links(lab, 'a') }],
        service: { address: vip, port: PORT }, interface: 'eth0', prefixLength: 24, method: 'rst',
      })]);
    }
    await b.waitFor('node-up', 15_000, (e) => e.node === 'a');
    if (replicated) {
      for (let i = 0; i < 200 && !(await statusOf(b)).replication.peers[0]?.synced; i++) await new Promise((r) => setTimeout(r, 50));
    }
    const procs = long >= 1000 ? 4 : 1;
    const clients = Array.from({ length: procs }, () => lab.spawn('c', CLIENTS, ['--host', vip, '--port', String(PORT)]));
    for (const c of clients) await c.waitFor('ready');
    for (const c of clients) c.send({ cmd: 'open', count: Math.floor(long / procs), request: '' });
    for (const c of clients) await c.waitFor('opened', 60_000);
    await new Promise((r) => setTimeout(r, 1500)); // steady: what is replicated is current
    const churn = rate > 0 ? lab.spawn('c', CLIENTS, ['--host', vip, '--port', String(PORT)]) : undefined;
    if (churn) {
      await churn.waitFor('ready');
      churn.send({ cmd: 'churn', everyMs: 1000 / rate, lifeMs: 20, untilMs: 6000, request: '' });
    }
    // Replication bytes over 2 s of this load (ours only).
    let bytesPerSecond: number | undefined;
    if (replicated) {
      const sent = async () => ((await statusOf(a)).replication.subscribers[0]?.bytes ?? 0) as number;
      const b0 = await sent();
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 2000));
      bytesPerSecond = ((await sent()) - b0) / ((performance.now() - t0) / 1000);
    } else {
      await new Promise((r) => setTimeout(r, 2000));
    }
    const killedAt = nowMs();
    await lab.killSilently('a', 'nft');
    const down = await b.waitFor('node-down', 5000, (e) => e.node === 'a');
    await b.waitFor('takeover-done', 30_000);
    if (churn) await churn.waitFor('churn-done', 15_000);
    await new Promise((r) => setTimeout(r, 2000)); // what is released is released by now
    const conns = (await Promise.all([...clients, ...(churn ? [churn] : [])].map(stats))).flat();
    const connected = conns.filter((c) => c.connectedAt !== undefined);
    const death = Math.max(...connected.map((c) => c.connectedAt!));
    // Open at the death (not closed by their client before it), opened at least 1 ms before it.
    const due = connected.filter((c) => (c.closedByUs === undefined || c.closedByUs > death) && c.connectedAt! <= death - 1);
    const released = due.filter((c) => c.how === 'reset' || c.how === 'eof').map((c) => c.endedAt! - Number(down.at)).sort((x, y) => x - y);
    return { due: due.length, released, bytesPerSecond, decidedMs: Number(down.at) - killedAt };
  } finally {
    await lab.destroy();
  }
}

async function release(): Promise<void> {
  const long = 1000;
  const pct = (xs: number[], p: number) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!.toFixed(0) : '-');
  const base = await releaseRun(false, long, 0);
  out(`release of a dead node's connections on a switch, ${long} idle connections (+ churn), all within 2 s of the decision:`);
  out(`  baseline (the backup's own capture, no replication), churn 0/s: ${base.released.length}/${base.due} released`);
  const perK: Array<[number, number]> = [];
  for (const rate of [0, 100, 1000]) {
    const r = await releaseRun(true, long, rate);
    perK.push([rate, (r.bytesPerSecond! / ((long + rate * 0.02) / 1000))]);
    out(
      `  ours, churn ${rate}/s: ${r.released.length}/${r.due} released; after the decision p50 ${pct(r.released, 50)} ms, max ${pct(r.released, 100)} ms; ` +
        `share ${(r.released.length / r.due * 100).toFixed(1)}% vs baseline ${(base.released.length / base.due * 100).toFixed(1)}%`,
    );
    out(`    replication under this load: ${(r.bytesPerSecond! / 1024).toFixed(1)} KiB/s = ${((r.bytesPerSecond! * 8) / 1e6).toFixed(3)} Mbit/s`);
  }
  // conntrackd, as the issue gives its figure: ~1.6 Mbit/s for ~33,000 connections.
  const conntrackdPerK = 1.6e6 / 8 / 33;
  for (const [rate, bps] of perK) {
    out(`  bandwidth per 1,000 connections, churn ${rate}/s: ours ${(bps / 1024).toFixed(2)} KiB/s; conntrackd's published figure ${(conntrackdPerK / 1024).toFixed(2)} KiB/s; ratio conntrackd / ours = ${(conntrackdPerK / bps).toFixed(1)}x`);
  }
}

async function jitter(): Promise<void> {
  const N = 10_000;
  const lab = await Lab.create({ hosts: ['a', 'c'] });
  try {
    const redisArgs = ['--port', String(PORT), '--bind', '*', '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--maxclients', String(N + 100), '--dir', '/tmp'];
    const redis = lab.spawnCommand('a', 'redis-server', redisArgs);
    const arrivals = lab.spawn('c', ARRIVALS, ['--address', lab.host('c').ipv4, '--port', '7400']);
    await arrivals.waitFor('listening');
    const node = lab.spawn('a', JITTER, ['--config', JSON.stringify({
      node: 'a', key: 'the bench cluster key', intervalMs: INTERVAL, misses: 3,
      links: [{ id: 0, address: lab.host('a').ipv4, port: 7400 }], peers: [{ node: 'c', links: [{ id: 0, address: lab.host('c').ipv4, port: 7400 }] }],
    })]);
    await node.waitFor('started');
    await new Promise((r) => setTimeout(r, 500)); // redis listening
    const results: Record<string, { ms: number; gap: number }> = {};
    for (const mode of ['sync', 'async'] as const) {
      const clients = Array.from({ length: 4 }, () => lab.spawn('c', CLIENTS, ['--host', lab.host('a').ipv4, '--port', String(PORT)]));
      for (const c of clients) await c.waitFor('ready');
      for (const c of clients) c.send({ cmd: 'open', count: N / 4 });
      for (const c of clients) await c.waitFor('opened', 60_000);
      await new Promise((r) => setTimeout(r, 1000));
      const n = node.events.length;
      node.send({ cmd: 'close', port: PORT, mode });
      const closed = await node.waitFor('closed', 60_000, (e) => node.events.indexOf(e) >= n);
      await new Promise((r) => setTimeout(r, 500));
      const m = arrivals.events.length;
      arrivals.send({ cmd: 'gaps', from: lab.host('a').ipv4, since: Number(closed.startedAt) - 2 * INTERVAL, until: Number(closed.doneAt) + 2 * INTERVAL });
      const gaps = await arrivals.waitFor('gaps', 5000, (e) => arrivals.events.indexOf(e) >= m);
      results[mode] = { ms: Number(closed.ms), gap: Number(gaps.maxGapMs) };
      out(`  ${mode === 'sync' ? 'before (synchronous dump + SOCK_DESTROY loop)' : 'now (closePortPeers: workers + slices)'}: ${closed.count} closed in ${Number(closed.ms).toFixed(0)} ms; largest heartbeat gap ${gaps.maxGapMs} ms (interval ${INTERVAL})`);
      for (const c of clients) await c.kill();
    }
    out(`  ratio of the heartbeats' lateness (gap - interval), before / now = ${((results.sync!.gap - INTERVAL) / Math.max(1, results.async!.gap - INTERVAL)).toFixed(1)}x`);
    await redis.kill();
  } finally {
    await lab.destroy();
  }
}

export async function replication(which: Set<string>): Promise<void> {
  if (which.has('replication')) await release();
  if (which.has('jitter')) {
    out('heartbeat jitter of a node closing 10,000 local connections (timed on a peer as they arrive):');
    await jitter();
  }
}
