// Issue 9's benchmarks, on a learning bridge (a switch), baseline and ours in the same run:
// - release: the share of a dead node's connections released, and when, against the churn
//   rate (opens and closes per second up to the death). Ours: the agents, the serving node's
//   replicating its connections. Baseline: the backup as it was before (heartbeats, PeerTakeover
//   and its own capture, which on a switch sees none of the server's traffic).
// - bandwidth: replication bytes per second at rest and under churn, against conntrackd (FTFW,
//   the firewalls' replication of connection state) replicating the same workload.
// - jitter: the largest gap between a closing node's heartbeats (timed on a peer as they arrive)
//   while it closes 10,000 connections: the synchronous loop the agent ran before, and now.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';
import { fixturePath, nowMs, type NodeChild } from '../src/lab/node-child.js';
import { ensurePackages } from './packages.js';

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

/** Nodes a (serving on a service address, the lab server fixture), b (its backup) and c (clients), on a switch. */
async function serviceLab(): Promise<{ lab: Lab; vip: string }> {
  const lab = await Lab.create({ hosts: ['a', 'b', 'c'], failsafeLink: true });
  try {
    const vip = `198.18.${lab.subnet}.100`;
    await lab.exec('a', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
    await lab.spawn('a', fixturePath('server'), ['--port', String(PORT)]).waitFor('listening');
    return { lab, vip };
  } catch (err) {
    await lab.destroy();
    throw err;
  }
}

/** The agent on a and on b (b takes a's service address over), until b's copy of a's connections is synced. */
async function startAgents(lab: Lab, vip: string): Promise<{ a: NodeChild; b: NodeChild }> {
  const config = (n: 'a' | 'b') => ({
    cluster: 'bench', node: n, database: 'db', key: 'the bench cluster key', control: `/tmp/tko-bench-${lab.id}-${n}.sock`,
    heartbeat: { intervalMs: INTERVAL, misses: 3, links: links(lab, n) }, notify: { port: 0 }, quorum: { twoNode: true },
    peers: [n === 'a' ? { node: 'b', links: links(lab, 'b') } : { node: 'a', links: links(lab, 'a'), takeover: { address: vip, port: PORT, interface: 'eth0', prefixLength: 24 } }],
  });
  const a = lab.spawn('a', fixturePath('agent-node'), ['--config', JSON.stringify(config('a'))]);
  const b = lab.spawn('b', fixturePath('agent-node'), ['--config', JSON.stringify(config('b'))]);
  await a.waitFor('started', 15_000);
  await b.waitFor('node-up', 15_000, (e) => e.node === 'a');
  for (let i = 0; i < 200 && !(await statusOf(b)).replication.peers[0]?.synced; i++) await new Promise((r) => setTimeout(r, 50));
  return { a, b };
}

/** `long` idle connections from c (four processes from 1,000 up), each sending nothing. */
async function openClients(lab: Lab, vip: string, long: number): Promise<NodeChild[]> {
  const procs = long >= 1000 ? 4 : 1;
  const clients = Array.from({ length: procs }, () => lab.spawn('c', CLIENTS, ['--host', vip, '--port', String(PORT)]));
  for (const c of clients) await c.waitFor('ready');
  for (const c of clients) c.send({ cmd: 'open', count: Math.floor(long / procs), request: '' });
  for (const c of clients) await c.waitFor('opened', 60_000);
  return clients;
}

/** One new connection every 1000/rate ms from c for 6 s, each closed by its client 20 ms later. */
async function churnClients(lab: Lab, vip: string, rate: number): Promise<NodeChild | undefined> {
  if (rate <= 0) return undefined;
  const churn = lab.spawn('c', CLIENTS, ['--host', vip, '--port', String(PORT)]);
  await churn.waitFor('ready');
  churn.send({ cmd: 'churn', everyMs: 1000 / rate, lifeMs: 20, untilMs: 6000, request: '' });
  return churn;
}

/** "TKCR", the replication datagrams' magic, as the 32-bit word a BPF filter compares. */
const REPLICATION_MAGIC_WORD = '0x544b4352';

/** UDP payload bytes matching `filter` seen on a switch port of the lab during `ms` (tcpdump). */
async function udpPayloadBytes(lab: Lab, port: string, filter: string, ms: number): Promise<number> {
  const dump = spawn('ip', ['netns', 'exec', lab.switchNs, 'tcpdump', '-l', '-nn', '-q', '-i', port, filter], { stdio: ['ignore', 'pipe', 'ignore'] });
  let text = '';
  dump.stdout.on('data', (d) => (text += d));
  await new Promise((r) => setTimeout(r, ms));
  dump.kill();
  await new Promise((r) => dump.once('exit', r));
  return [...text.matchAll(/UDP, length (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
}

/** The same workload as releaseRun (`long` idle connections + churn), replicated by conntrackd (FTFW, unicast UDP on the failsafe link). */
async function conntrackdRun(long: number, rate: number): Promise<number> {
  ensurePackages(out, '/usr/sbin/conntrackd', ['conntrackd', 'conntrack']);
  const { lab, vip } = await serviceLab();
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-conntrackd-'));
  const daemons: ChildProcess[] = [];
  try {
    // The kernel tracks connections in a namespace only once a rule uses conntrack.
    await lab.exec('a', 'nft', ['-f', '-'], 'table inet tko_ct {\n chain in { type filter hook input priority 0; ct state established,related accept; }\n}\n');
    const sync = (n: string) => lab.host(n).failsafe!.ipv4;
    for (const [n, peer] of [['a', 'b'], ['b', 'a']] as const) {
      writeFileSync(path.join(dir, `${n}.conf`), [
        'Sync {', '  Mode FTFW { StartupResync on }', '  UDP {', `    IPv4_address ${sync(n)}`, `    IPv4_Destination_Address ${sync(peer)}`,
        '    Port 3780', '    Interface eth1', '    SndSocketBuffer 1249280', '    RcvSocketBuffer 1249280', '    Checksum on', '  }', '}',
        'General {', '  Systemd off', '  HashSize 32768', '  HashLimit 131072', `  LogFile ${dir}/${n}.log`, '  Syslog off', `  LockFile ${dir}/${n}.lock`,
        `  UNIX { Path ${dir}/${n}.sock }`, '  NetlinkBufferSize 2097152', '  NetlinkBufferSizeMaxGrowth 8388608',
        '  Filter From Userspace {', '    Protocol Accept { TCP }', `    Address Ignore { IPv4_address 127.0.0.1 IPv4_address ${sync(n)} }`, '  }', '}', '',
      ].join('\n'));
      // A before B: B's one start-up resync request must find A running.
      daemons.push(spawn('ip', ['netns', 'exec', lab.host(n).ns, 'conntrackd', '-C', path.join(dir, `${n}.conf`)], { stdio: 'ignore' }));
      await new Promise((r) => setTimeout(r, 300));
    }
    await openClients(lab, vip, long);
    await new Promise((r) => setTimeout(r, 1500));
    await churnClients(lab, vip, rate);
    return (await udpPayloadBytes(lab, lab.host('a').failsafe!.port, `udp port 3780 and src host ${sync('a')}`, 2000)) / 2;
  } finally {
    for (const d of daemons) d.kill('SIGTERM');
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One run: `long` idle connections, churn at `rate` per second (each closed by its client 20 ms
 * later) from 1 s before the death, the server's node killed silently. `replicated`: ours.
 */
async function releaseRun(replicated: boolean, long: number, rate: number) {
  const { lab, vip } = await serviceLab();
  try {
    let b: NodeChild;
    if (replicated) {
      b = (await startAgents(lab, vip)).b;
    } else {
      const hb = { key: 'the bench cluster key', intervalMs: INTERVAL, misses: 3 };
      lab.spawn('a', fixturePath('heartbeat-node'), ['--config', JSON.stringify({ ...hb, node: 'a', incarnation: '1', links: links(lab, 'a'), peers: [{ node: 'b', links: links(lab, 'b') }] })]);
      b = lab.spawn('b', fixturePath('backup-agent'), ['--config', JSON.stringify({
        ...hb, node: 'b', peer: 'a', links: links(lab, 'b'), peers: [{ node: 'a', links: links(lab, 'a') }],
        service: { address: vip, port: PORT }, interface: 'eth0', prefixLength: 24, method: 'rst',
      })]);
      await b.waitFor('node-up', 15_000, (e) => e.node === 'a');
    }
    const clients = await openClients(lab, vip, long);
    await new Promise((r) => setTimeout(r, 1500)); // steady: what is replicated is current
    const churn = await churnClients(lab, vip, rate);
    // Replication bytes (UDP payload, A to B) over 2 s of this load, counted on A's switch port.
    const bytesPerSecond = replicated
      ? (await udpPayloadBytes(lab, lab.host('a').port, `udp and udp[8:4] = ${REPLICATION_MAGIC_WORD} and src host ${lab.host('a').ipv4}`, 2000)) / 2
      : (await new Promise((r) => setTimeout(r, 2000)), undefined);
    const killedAt = nowMs();
    await lab.killSilently('a', 'nft');
    const down = await b.waitFor('node-down', 5000, (e) => e.node === 'a');
    await b.waitFor('takeover-done', 30_000);
    if (churn) await churn.waitFor('churn-done', 15_000);
    await new Promise((r) => setTimeout(r, 2000)); // what is released is released by now
    const conns = (await Promise.all([...clients, ...(churn ? [churn] : [])].map(stats))).flat();
    const connected = conns.filter((c) => c.connectedAt !== undefined);
    // The death: when the kill began, or later the last SYN-ACK any client got (under churn).
    const death = Math.max(killedAt, ...connected.map((c) => c.connectedAt!));
    // Open at the death (not closed by their client before it), opened at least 1 ms before it.
    const due = connected.filter((c) => (c.closedByUs === undefined || c.closedByUs > death) && c.connectedAt! <= death - 1);
    const released = due.filter((c) => c.how === 'reset' || c.how === 'eof').map((c) => c.endedAt! - Number(down.at)).sort((x, y) => x - y);
    return { due: due.length, released, bytesPerSecond };
  } finally {
    await lab.destroy();
  }
}

async function release(): Promise<void> {
  const long = 1000;
  const pct = (xs: number[], p: number) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!.toFixed(0) : '-');
  const base = await releaseRun(false, long, 0);
  out(`release of a dead node's connections on a switch, ${long} idle connections (+ churn), within 2 s of the decision:`);
  out(`  baseline (the backup's own capture, no replication), churn 0/s: ${base.released.length}/${base.due} released`);
  const rates: Array<[number, number, number]> = [];
  for (const rate of [0, 100, 1000]) {
    const r = await releaseRun(true, long, rate);
    rates.push([rate, r.bytesPerSecond!, await conntrackdRun(long, rate)]);
    out(
      `  ours, churn ${rate}/s: ${r.released.length}/${r.due} released; after the decision p50 ${pct(r.released, 50)} ms, max ${pct(r.released, 100)} ms; ` +
        `share ${(r.released.length / r.due * 100).toFixed(1)}% vs baseline ${(base.released.length / base.due * 100).toFixed(1)}%`,
    );
  }
  // The same workload replicated by conntrackd (FTFW) in a lab of its own: UDP payload A -> B.
  out(`replication bandwidth, ${long} connections (UDP payload A -> B, counted on A's switch port), ours vs conntrackd FTFW on the same load:`);
  for (const [rate, ours, ct] of rates) {
    const per = rate > 0 ? `; per open+close: ours ${((ours - rates[0]![1]) / rate).toFixed(0)} B, conntrackd ${((ct - rates[0]![2]) / rate).toFixed(0)} B` : '';
    out(`  churn ${rate}/s: ours ${(ours / 1024).toFixed(2)} KiB/s, conntrackd ${(ct / 1024).toFixed(2)} KiB/s; ratio conntrackd / ours = ${(ct / ours).toFixed(2)}x${per}`);
  }
  out('  (at rest both cost a flat keep-alive, not a cost per connection: ours a summary per heartbeat interval, conntrackd one per second;');
  out('   conntrackd also sends each short-lived connection\'s delete ~120 s later, when its TIME_WAIT entry expires: outside this window)');
}

/**
 * The loss window: from the server's SYN-ACK to its agent's open record, both timed by the
 * kernel on the server's switch port. A connection accepted less than that before the server's
 * node dies is not in the backup's copy.
 */
async function window(): Promise<void> {
  const { lab, vip } = await serviceLab();
  try {
    await startAgents(lab, vip);
    // SYN-ACKs of the service, and replication datagrams (UDP payload starting "TKCR").
    const dump = spawn('ip', ['netns', 'exec', lab.switchNs, 'tcpdump', '-l', '-nn', '-tt', '-i', lab.host('a').port,
      `(tcp src port ${PORT} and tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)) or (udp and udp[8:4] = 0x544b4352 and src host ${lab.host('a').ipv4})`], { stdio: ['ignore', 'pipe', 'ignore'] });
    let text = '';
    dump.stdout.on('data', (d) => (text += d));
    await new Promise((r) => setTimeout(r, 500));
    const clients = lab.spawn('c', CLIENTS, ['--host', vip, '--port', String(PORT)]);
    await clients.waitFor('ready');
    clients.send({ cmd: 'churn', everyMs: 10, lifeMs: 0, untilMs: 2000, request: '' });
    await clients.waitFor('churn-done', 10_000);
    await new Promise((r) => setTimeout(r, 300));
    dump.kill();
    const lines = text.split('\n').filter(Boolean).map((l) => ({ t: Number(l.split(' ')[0]) * 1000, synAck: l.includes('Flags [S.]') }));
    const gaps: number[] = [];
    lines.forEach((l, i) => {
      if (!l.synAck) return;
      const next = lines.slice(i + 1).find((x) => !x.synAck);
      if (next) gaps.push(next.t - l.t);
    });
    gaps.sort((x, y) => x - y);
    const q = (p: number) => gaps[Math.min(gaps.length - 1, Math.floor((p / 100) * gaps.length))]!.toFixed(3);
    out(`loss window (server's SYN-ACK -> its agent's open record, on the server's switch port), ${gaps.length} connections: median ${q(50)} ms, p99 ${q(99)} ms, max ${q(100)} ms`);
  } finally {
    await lab.destroy();
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
  if (which.has('replication')) {
    await window();
    await release();
  }
  if (which.has('jitter')) {
    out('heartbeat jitter of a node closing 10,000 local connections (timed on a peer as they arrive):');
    await jitter();
  }
}
