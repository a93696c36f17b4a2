// `close`: a server's node dies silently (its bridge ports go down: no FIN, no RST, no ARP) while
// its clients block in read(); how long until the last read fails.
//
// Ours: a backup on a switch's port mirror of the server's port (Lab.mirrorPort: it knows the
// connections from its own capture on mir0; it takes the address over on eth0), with
// heartbeats at the agent's defaults (100 ms × 3 misses) and PeerTakeover (address takeover +
// RSTs), nobody telling it anything. Timed from the failure (detection included) and from the
// decision (the backup's node-down); the < 5 ms / < 100 ms targets are for the latter.
// Baseline: a client with keepalive 1 s/1 s/3 (the best it can do alone), from the failure, in a
// lab of its own: where a backup takes the address over, its kernel answers the keepalive
// probes with RSTs and would end the baseline early. TCP alone: computed from the sysctls.
// On a switch the backup's copy of the connections comes by replication: BENCH=replication.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, tcpTimerSysctls } from '../src/lab/lab.js';
import { fixturePath, nowMs } from '../src/lab/node-child.js';
import { describeTcpAlone } from '../src/net/tcp-alone.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = (name: string) => path.join(here, 'fixtures', name);
const fmt = (n: number, d = 2) => n.toFixed(d);
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const span = (v: number[], d = 1) => `${fmt(Math.min(...v), d)}-${fmt(Math.max(...v), d)}`;

const INTERVAL_MS = 100;
const MISSES = 3;
const PORT = 7000;

interface OursRun {
  /** Failure -> the backup's node-down; node-down -> first and last client read failed (ms). */
  detectionMs: number;
  firstAfterDecisionMs: number;
  lastAfterDecisionMs: number;
  closed: number;
  results: number;
  codes: Record<string, number>;
}

/** One silent death with n idle readers spread over up to 4 client processes. */
async function oursOnce(n: number): Promise<OursRun> {
  const lab = await Lab.create({ hosts: ['client', 'server', 'backup'] });
  try {
    const { ifname: mirror } = await lab.mirrorPort('server', 'backup');
    const srv = lab.host('server');
    const link = (host: string) => [{ id: 0, address: lab.host(host).ipv4, port: 7400 }];
    const hb = { key: 'bench key of 16+ bytes', intervalMs: INTERVAL_MS, misses: MISSES };
    const server = lab.spawn('server', fixturePath('server'), ['--port', String(PORT)]);
    await server.waitFor('listening');
    lab.spawn('server', fixturePath('heartbeat-node'), ['--config', JSON.stringify({ ...hb, node: 'server', incarnation: '1', links: link('server'), peers: [{ node: 'backup', links: link('backup') }] })]);
    const backup = lab.spawn('backup', fixturePath('backup-agent'), ['--config', JSON.stringify({
      ...hb, node: 'backup', peer: 'server', links: link('backup'), peers: [{ node: 'server', links: link('server') }],
      service: { address: srv.ipv4, port: PORT }, interface: 'eth0', capture: mirror, prefixLength: 24, method: 'rst',
    })]);
    await backup.waitFor('node-up', 15_000, (e) => e.node === 'server');
    // The connections come from several client processes, as 1,000 peers of a server do; one
    // Node process handling 1,000 socket errors alone would measure mostly itself.
    const procs = Math.min(4, n);
    const clients = Array.from({ length: procs }, (_, i) =>
      lab.spawn('client', fx('many-clients.ts'), [srv.ipv4, String(PORT), String(Math.floor(n / procs) + (i < n % procs ? 1 : 0))]),
    );
    await Promise.all(clients.map((c) => c.waitFor('connected', 60_000)));
    await new Promise((r) => setTimeout(r, 300)); // requests read and acknowledged
    const failedAt = nowMs();
    await lab.killSilently('server', 'port');
    const done = await backup.waitFor('takeover-done', 30_000);
    const ends = await Promise.all(clients.map((c) => c.waitFor('all-ended', 30_000)));
    const codes: Record<string, number> = {};
    for (const e of ends) for (const [k, v] of Object.entries(e.codes as Record<string, number>)) codes[k] = (codes[k] ?? 0) + v;
    const downAt = Number(done.downAt);
    const results = done.results as Array<{ ok: boolean }>;
    return {
      detectionMs: downAt - failedAt,
      firstAfterDecisionMs: Math.min(...ends.map((e) => Number(e.first))) - downAt,
      lastAfterDecisionMs: Math.max(...ends.map((e) => Number(e.last))) - downAt,
      closed: results.filter((r) => r.ok).length,
      results: results.length,
      codes,
    };
  } finally {
    await lab.destroy();
  }
}

/** The keepalive client alone: from the failure to its read failing (ms), and TCP alone. */
async function keepaliveOnce(): Promise<{ ms: number; code: string; alone: ReturnType<typeof describeTcpAlone> }> {
  const lab = await Lab.create({ hosts: ['client', 'server'] });
  try {
    const srv = lab.host('server');
    const server = lab.spawn('server', fixturePath('server'), ['--port', String(PORT)]);
    await server.waitFor('listening');
    const keepalive = lab.spawnCommand('client', 'python3', [fx('keepalive_client.py'), srv.ipv4, String(PORT)]);
    await keepalive.waitFor('connected');
    await new Promise((r) => setTimeout(r, 300)); // the request read and acknowledged
    const failedAt = nowMs();
    await lab.killSilently('server', 'port');
    const ka = await keepalive.waitFor('error', 30_000);
    return { ms: Number(ka.t) - failedAt, code: String(ka.code), alone: describeTcpAlone(await tcpTimerSysctls(lab, 'client')) };
  } finally {
    await lab.destroy();
  }
}

export async function close(out: (s: string) => void): Promise<void> {
  const ka = await keepaliveOnce();
  for (const [n, runs, target] of [[1, 5, 5], [1000, 1, 100]] as const) {
    const r: OursRun[] = [];
    for (let i = 0; i < runs; i++) r.push(await oursOnce(n));
    const fromFailure = r.map((x) => x.detectionMs + x.lastAfterDecisionMs);
    const detection = r.map((x) => x.detectionMs);
    const fromDecision = r.map((x) => x.lastAfterDecisionMs);
    const first = r.map((x) => x.firstAfterDecisionMs);
    const of = runs > 1 ? ` (medians of ${runs}; range)` : '';
    const closed = r.map((x) => `${x.closed}/${x.results}`).join(', ');
    const codes = [...new Set(r.map((x) => JSON.stringify(x.codes)))].join(' ');
    out(`close ${n} conn (${Math.min(4, n)} client process${n > 1 ? 'es' : ''}), silent death, backup at ${INTERVAL_MS} ms × ${MISSES} misses${of}:`);
    out(`  ours from the failure (detection included): last peer error ${fmt(median(fromFailure), 1)} ms${runs > 1 ? ` (${span(fromFailure)})` : ''} = detection ${fmt(median(detection), 1)} ms${runs > 1 ? ` (${span(detection)})` : ''} + the rest`);
    out(`  ours from the decision: last peer error ${fmt(median(fromDecision))} ms${runs > 1 ? ` (${span(fromDecision, 2)})` : ''}, first ${fmt(median(first))} ms; closed ${closed}, ends ${codes}; target < ${target} ms: ${median(fromDecision) < target ? 'met' : 'MISSED'}`);
    if (n === 1) {
      out(`  keepalive 1/1/3 (measured, from the failure): ${fmt(ka.ms / 1000)} s (${ka.code}); ratio keepalive / ours, both from the failure = ${fmt(ka.ms / median(fromFailure), 1)}x`);
      out(`  TCP alone: idle reader ${ka.alone.idleReader}; unacked request ${ka.alone.unackedRequest}`);
    }
  }
}
