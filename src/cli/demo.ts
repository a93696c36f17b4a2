// `takeover demo`: the main job on an embedded default. A lab of three namespaces (client,
// server, backup) on a learning bridge, a switch as users have: the backup never sees the
// server's unicast traffic. A second bridge is the failsafe link for the heartbeats. The real
// agent runs on the server and on the backup; the server's agent replicates its connections to
// the backup's, which is configured to take the server's service address over. Two clients
// block reading a reply from the server, one with its request acknowledged and one with it
// still unacknowledged. The server's node dies silently (its bridge ports go down: no FIN, no
// RST, no ARP). The backup's heartbeats (100 ms, 3 misses, both links) declare it dead; the
// backup takes the address over and closes the connections its replicated copy lists. Prints
// the copy, then the timeline beside what TCP alone does. Every step of the setup says what it
// does and when (seconds since the command started), so the time the demo takes is all shown;
// a step that does not happen in time fails the demo with what was awaited.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Lab, tcpTimerSysctls } from '../lab/lab.js';
import { fixturePath, nowMs, type NodeChild } from '../lab/node-child.js';
import type { CloseResult } from '../net/close-result.js';
import { describeTcpAlone } from '../net/tcp-alone.js';
import type { PeerFlows } from '../agent/agent.js';
import { EXIT_INCOMPLETE, EXIT_OK, requireCapabilities } from './errors.js';
import { peerFlowsTable } from './flows.js';
import { closeResultsTable, printJson } from './output.js';
import { methodOption } from './parse-args.js';

const PORT = 7000;
const HEARTBEAT = { intervalMs: 100, misses: 3 };

export async function demoCommand(o: { method: string; json?: boolean }): Promise<number> {
  methodOption(o.method); // a bad --method fails here, before any namespace is made
  await requireCapabilities('demo', ['CAP_NET_ADMIN', 'CAP_NET_RAW']);
  const log = (line: string) => {
    if (!o.json) process.stdout.write(`${line}\n`);
  };
  // Setup and teardown lines carry the time since the process started (Node's own start
  // included); with --json they go to stderr, so that stdout is the JSON document alone.
  const progress = (line: string) => (o.json ? process.stderr : process.stdout).write(`[${(performance.now() / 1000).toFixed(2)} s] ${line}\n`);
  progress('building the lab: namespaces client, server and backup on two learning bridges (the service link and a failsafe link)');
  const lab = await Lab.create({ hosts: ['client', 'server', 'backup'], failsafeLink: true });
  // The agents' control sockets: in a directory of the demo's own, gone with it.
  const dir = mkdtempSync(path.join(tmpdir(), 'takeover-demo-'));
  const cleanUp = async () => {
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => void cleanUp().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  try {
    const vip = `198.18.${lab.subnet}.100`;
    await lab.exec('server', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
    const links = (n: string) => [
      { id: 0, address: lab.host(n).ipv4, port: 7400 },
      { id: 1, address: lab.host(n).failsafe!.ipv4, port: 7400 },
    ];
    const agentConfig = (node: 'server' | 'backup') => ({
      cluster: 'demo', node, database: 'demo', key: 'demo cluster key', heartbeat: { ...HEARTBEAT, links: links(node) },
      control: path.join(dir, `${node}.sock`), notify: { host: lab.host(node).ipv4, port: 0 },
      // Two nodes and no fencing: the demo accepts that a partition would make both act.
      quorum: { twoNode: true },
      peers: [node === 'server'
        ? { node: 'backup', links: links('backup') }
        : { node: 'server', links: links('server'), takeover: { address: vip, port: PORT, interface: 'eth0', prefixLength: 24, method: o.method } }],
    });
    progress(`lab ${lab.id}: client ${lab.host('client').ipv4}, server ${lab.host('server').ipv4} serving ${vip}:${PORT}, backup ${lab.host('backup').ipv4}`);
    log('the bridge is a switch (it learns MACs): the backup never sees the server\'s traffic; agents on server and backup, heartbeats every 100 ms on two links');
    progress(`starting the server on ${vip}:${PORT}, the agents on server and backup, and two clients`);
    const srv = lab.spawn('server', fixturePath('server'), ['--port', String(PORT), '--report-data']);
    const serverAgent = lab.spawn('server', fixturePath('agent-node'), ['--config', JSON.stringify(agentConfig('server'))]);
    const backup = lab.spawn('backup', fixturePath('agent-node'), ['--config', JSON.stringify(agentConfig('backup'))]);
    // The clients start now and connect once the server's agent follows the service's port.
    const idle = lab.spawn('client', fixturePath('client'), ['--host', vip, '--port', String(PORT), '--request', 'GET /report\n', '--on-command']);
    const unacked = lab.spawn('client', fixturePath('client'), ['--host', vip, '--port', String(PORT), '--on-command']);
    await step('the server listening', srv.waitFor('listening'));
    await step('the server\'s agent started', serverAgent.waitFor('started', 15_000));
    await step('the backup hearing the server', backup.waitFor('node-up', 15_000, (e) => e.node === 'server'));
    // The backup's subscription is served: the server's agent follows the service's port now.
    await synced(backup, 10_000);
    progress('agents up: the backup hears the server on both links and holds a synced copy of its connections (none yet)');
    await step('the clients started', Promise.all([idle.waitFor('ready'), unacked.waitFor('ready')]));
    progress(`two clients connect to ${vip}:${PORT}: one sends a request (the server's kernel acknowledges it; no reply comes), the other nothing yet`);
    for (const c of [idle, unacked]) c.send({ cmd: 'connect' });
    await Promise.all([
      step('the idle reader connected', idle.waitFor('connected')),
      step('the other client connected', unacked.waitFor('connected')),
      step('the server receiving the idle reader\'s request', srv.waitFor('data', 5000)),
    ]);

    // The backup's copy of the server's connections, as the server's agent replicated it.
    const copy = await replicatedCopy(backup, 2, 10_000);
    progress('the backup\'s copy lists both connections');
    log('');
    log(`the backup's copy of the server's connections (replicated by the server's agent; \`takeover flows --peer server\` prints it):`);
    log(peerFlowsTable(copy));
    log('');

    await lab.killSilently('server', 'port');
    const failedAt = nowMs(); // the ports are down by now: from here on the node is dead for sure
    const at = (label: string) => `t=${label.padEnd(13)} `; // one column for every line of the timeline
    log(`${at('0')}server node dies silently (bridge ports down: no FIN, no RST, no ARP answers)`);
    unacked.send({ cmd: 'write', data: 'GET /late\n' });
    await unacked.waitFor('written');
    const down = await backup.waitFor('node-down', 15_000, (e) => e.node === 'server');
    const done = await backup.waitFor('takeover-done', 15_000);
    const results = done.results as CloseResult[];
    const outcomes = await Promise.all([idle, unacked].map((c) => Promise.race([c.waitFor('error', 5000), c.waitFor('end', 5000)]).catch(() => undefined)));
    const alone = describeTcpAlone(await tcpTimerSysctls(lab, 'client'));
    const rows = [
      { client: 'idle reader (request acked, reply awaited)', outcome: outcomes[0], alone: alone.idleReader },
      { client: 'request unacked', outcome: outcomes[1], alone: alone.unackedRequest },
    ];
    // The timeline in the order things happened.
    const timeline: Array<[number, string]> = [
      [Number(down.at), `backup declares the server dead: ${HEARTBEAT.misses} heartbeats missed on both links`],
      [Number(done.startedAt), `backup takes over ${vip} (gratuitous ARP) and closes the ${Number(done.replicated)} connections of its copy with ${o.method}`],
      [Number(done.doneAt), 'backup has every result (verified where the peer answered)'],
      ...rows.map((r): [number, string] => [
        r.outcome ? Number(r.outcome.t) : Infinity,
        `client ${r.client}: read ends with ${r.outcome ? (r.outcome.event === 'error' ? String(r.outcome.code) : 'EOF') : 'nothing (still blocked)'}; TCP alone: ${r.alone}`,
      ]),
    ];
    for (const [t, line] of timeline.sort((a, b) => a[0] - b[0])) log(`${at(Number.isFinite(t) ? `+${(t - failedAt).toFixed(2)} ms` : '?')}${line}`);
    log('');
    log(closeResultsTable(results));
    if (o.json) {
      printJson({
        lab: lab.id,
        method: o.method,
        replicated: copy.connections.length,
        failedAt,
        detectedAt: down.at,
        closedAt: done.doneAt,
        results,
        clients: rows.map((r) => ({ client: r.client, event: r.outcome?.event ?? 'none', code: r.outcome?.code, atMs: r.outcome ? Number(r.outcome.t) - failedAt : null, tcpAlone: r.alone })),
      });
    }
    return outcomes.every(Boolean) && results.length === 2 && results.every((r) => r.ok) ? EXIT_OK : EXIT_INCOMPLETE;
  } finally {
    process.off('SIGINT', onSignal);
    log('');
    progress('removing the lab');
    await cleanUp();
    progress('done');
  }
}

/** Awaits one setup step; a step that fails or times out fails the demo, saying which step. */
export async function step<T>(what: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new Error(`demo: waiting for ${what}: ${(err as Error).message}`);
  }
}

/** Waits until the backup holds a synced copy of the server's connections. */
async function synced(backup: NodeChild, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = backup.events.length;
    backup.send({ cmd: 'status' });
    const s = await backup.waitFor('status', 5000, (e) => backup.events.indexOf(e) >= n);
    if ((s.replication as { peers: Array<{ synced: boolean }> }).peers[0]?.synced) return;
    if (Date.now() > deadline) throw new Error(`the backup has no synced copy of the server's connections after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Asks the backup's agent for its copy until it lists `count` connections with their state. */
export async function replicatedCopy(backup: NodeChild, count: number, timeoutMs: number): Promise<PeerFlows> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = backup.events.length;
    backup.send({ cmd: 'flows', peer: 'server' });
    const f = (await backup.waitFor('flows', 5000, (e) => backup.events.indexOf(e) >= n)) as unknown as PeerFlows;
    if (f.connections.length >= count && f.connections.every((c) => c.state)) return f;
    if (Date.now() > deadline) throw new Error(`the backup's copy lists ${f.connections.length} of the server's ${count} connections after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
