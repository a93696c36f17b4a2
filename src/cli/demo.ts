// `takeover demo`: the main job on an embedded default. A lab of three namespaces (client,
// server, backup) on two bridges: the service link, which floods frames so the backup can track
// the server's flows, and a failsafe link for heartbeats. Two clients block reading a reply from
// the server, one with its request acknowledged and one with it still unacknowledged. The
// server's node dies silently (its bridge ports go down: no FIN, no RST, no ARP). The backup's
// heartbeats (100 ms, 3 misses, both links) declare it dead; the backup takes the address over
// and closes the peers. Prints the timeline beside what TCP alone does.
import { Lab, tcpTimerSysctls } from '../lab/lab.js';
import { fixturePath, nowMs } from '../lab/node-child.js';
import type { CloseResult } from '../net/close-result.js';
import { describeTcpAlone } from '../net/tcp-alone.js';
import { EXIT_INCOMPLETE, EXIT_OK, requireCapabilities } from './errors.js';
import { closeResultsTable, printJson } from './output.js';
import { methodOption } from './parse-args.js';

const PORT = 7000;
const HEARTBEAT = { key: 'demo cluster key', intervalMs: 100, misses: 3 };

export async function demoCommand(o: { method: string; json?: boolean }): Promise<number> {
  methodOption(o.method); // a bad --method fails here, before any namespace is made
  await requireCapabilities('demo', ['CAP_NET_ADMIN', 'CAP_NET_RAW']);
  const log = (line: string) => {
    if (!o.json) process.stdout.write(`${line}\n`);
  };
  const lab = await Lab.create({ hosts: ['client', 'server', 'backup'], hub: true, failsafeLink: true });
  const onSignal = () => void lab.destroy().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  try {
    const server = lab.host('server');
    const links = (n: string) => [
      { id: 0, address: lab.host(n).ipv4, port: 7400 },
      { id: 1, address: lab.host(n).failsafe!.ipv4, port: 7400 },
    ];
    log(`lab ${lab.id}: client ${lab.host('client').ipv4}, server ${server.ipv4}:${PORT}, backup ${lab.host('backup').ipv4}; heartbeats every ${HEARTBEAT.intervalMs} ms on two links`);
    const srv = lab.spawn('server', fixturePath('server'), ['--port', String(PORT)]);
    lab.spawn('server', fixturePath('heartbeat-node'), ['--config', JSON.stringify({ ...HEARTBEAT, node: 'server', incarnation: '1', links: links('server'), peers: [{ node: 'backup', links: links('backup') }] })]);
    await srv.waitFor('listening');
    const backup = lab.spawn('backup', fixturePath('backup-agent'), ['--config', JSON.stringify({
      ...HEARTBEAT, node: 'backup', peer: 'server', links: links('backup'), peers: [{ node: 'server', links: links('server') }],
      service: { address: server.ipv4, port: PORT }, interface: 'eth0', prefixLength: 24, method: o.method,
    })]);
    await backup.waitFor('node-up', 15_000, (e) => e.node === 'server');
    const idle = lab.spawn('client', fixturePath('client'), ['--host', server.ipv4, '--port', String(PORT), '--request', 'GET /report\n']);
    const unacked = lab.spawn('client', fixturePath('client'), ['--host', server.ipv4, '--port', String(PORT)]);
    await Promise.all([idle.waitFor('connected'), unacked.waitFor('connected'), srv.waitFor('data').catch(() => undefined)]);
    await new Promise((r) => setTimeout(r, 100)); // the request is acknowledged; the reply never comes

    await lab.killSilently('server', 'port');
    const failedAt = nowMs(); // the ports are down by now: from here on the node is dead for sure
    log('t=0            server node dies silently (bridge ports down: no FIN, no RST, no ARP answers)');
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
    const rel = (t: number) => `+${(t - failedAt).toFixed(2)} ms`.padEnd(13);
    const timeline: Array<[number, string]> = [
      [Number(down.at), `backup declares the server dead: ${HEARTBEAT.misses} heartbeats missed on both links`],
      [Number(done.startedAt), `backup takes over ${server.ipv4} (gratuitous ARP) and closes ${results.length} connections with ${o.method}`],
      [Number(done.doneAt), 'backup has every result (verified where the peer answered)'],
      ...rows.map((r): [number, string] => [
        r.outcome ? Number(r.outcome.t) : Infinity,
        `client ${r.client}: read ends with ${r.outcome ? (r.outcome.event === 'error' ? String(r.outcome.code) : 'EOF') : 'nothing (still blocked)'}; TCP alone: ${r.alone}`,
      ]),
    ];
    for (const [t, line] of timeline.sort((a, b) => a[0] - b[0])) log(`t=${Number.isFinite(t) ? rel(t) : '?'.padEnd(13)} ${line}`);
    log('');
    log(closeResultsTable(results));
    if (o.json) {
      printJson({
        lab: lab.id,
        method: o.method,
        failedAt,
        detectedAt: down.at,
        closedAt: done.doneAt,
        results,
        clients: rows.map((r) => ({ client: r.client, event: r.outcome?.event ?? 'none', code: r.outcome?.code, atMs: r.outcome ? Number(r.outcome.t) - failedAt : null, tcpAlone: r.alone })),
      });
    }
    return outcomes.every(Boolean) && results.every((r) => r.ok) ? EXIT_OK : EXIT_INCOMPLETE;
  } finally {
    process.off('SIGINT', onSignal);
    await lab.destroy();
  }
}
