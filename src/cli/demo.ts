// `takeover demo`: the main job on an embedded default. A lab of three namespaces on a bridge
// (client, server, backup); two clients blocked reading a reply from the server, one with its
// request acknowledged and one with it still unacknowledged; the server's node dies silently
// (its bridge port goes down: no FIN, no RST, no ARP); the backup, which tracked the flows,
// takes the address over and closes the peers. Prints the timeline beside what TCP alone does.
import { Lab, tcpTimerSysctls } from '../lab/lab.js';
import { fixturePath, nowMs } from '../lab/node-child.js';
import type { RemoteCloseReport } from '../net/close-remote.js';
import { describeTcpAlone } from '../net/tcp-alone.js';
import { EXIT_INCOMPLETE, EXIT_OK, requireCapabilities } from './errors.js';
import { closeResultsTable, printJson } from './output.js';
import { methodOption } from './parse-args.js';

const PORT = 7000;

export async function demoCommand(o: { method: string; json?: boolean }): Promise<number> {
  methodOption(o.method); // a bad --method fails here, before any namespace is made
  await requireCapabilities('demo', ['CAP_NET_ADMIN', 'CAP_NET_RAW']);
  const log = (line: string) => {
    if (!o.json) process.stdout.write(`${line}\n`);
  };
  const lab = await Lab.create({ hosts: ['client', 'server', 'backup'], hub: true });
  const onSignal = () => void lab.destroy().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  try {
    const server = lab.host('server');
    log(`lab ${lab.id}: client ${lab.host('client').ipv4}, server ${server.ipv4}:${PORT}, backup ${lab.host('backup').ipv4} (bridge in its own namespace)`);
    const srv = lab.spawn('server', fixturePath('server'), ['--port', String(PORT)]);
    await srv.waitFor('listening');
    const survivor = lab.spawn('backup', fixturePath('survivor'), ['--interface', 'eth0', '--address', server.ipv4, '--port', String(PORT)]);
    await survivor.waitFor('tracking');
    const idle = lab.spawn('client', fixturePath('client'), ['--host', server.ipv4, '--port', String(PORT), '--request', 'GET /report\n']);
    const unacked = lab.spawn('client', fixturePath('client'), ['--host', server.ipv4, '--port', String(PORT)]);
    await Promise.all([idle.waitFor('connected'), unacked.waitFor('connected'), srv.waitFor('data').catch(() => undefined)]);
    await new Promise((r) => setTimeout(r, 100)); // the request is acknowledged; the reply never comes

    const failedAt = nowMs();
    await lab.killSilently('server', 'port');
    log('t=0          server node dies silently (bridge port down: no FIN, no RST, no ARP answers)');
    unacked.send({ cmd: 'write', data: 'GET /late\n' });
    await unacked.waitFor('written');
    // Failure detection is the agent's job (heartbeats, pidfd); the demo decides at once.
    survivor.send({ cmd: 'close', method: o.method, takeover: true, prefixLength: 24 });
    const closed = await survivor.waitFor('closed', 15_000);
    const report = closed.report as RemoteCloseReport;
    const rel = (t: unknown) => `+${(Number(t) - failedAt).toFixed(2)} ms`;
    log(`t=${rel(closed.decidedAt)}  backup decides; takes over ${server.ipv4} (gratuitous ARP), closes ${report.results.length} connections with ${o.method}`);
    const outcomes = await Promise.all([idle, unacked].map((c) => Promise.race([c.waitFor('error', 5000), c.waitFor('end', 5000)]).catch(() => undefined)));
    const alone = describeTcpAlone(await tcpTimerSysctls(lab, 'client'));
    const rows = [
      { client: 'idle reader (request acked, reply awaited)', outcome: outcomes[0], alone: alone.idleReader },
      { client: 'request unacked', outcome: outcomes[1], alone: alone.unackedRequest },
    ];
    for (const r of rows) {
      const what = r.outcome ? (r.outcome.event === 'error' ? String(r.outcome.code) : 'EOF') : 'still blocked';
      log(`t=${r.outcome ? rel(r.outcome.t) : '?'}  client ${r.client}: read ends with ${what}; TCP alone: ${r.alone}`);
    }
    log('');
    log(closeResultsTable(report.results));
    if (o.json) {
      printJson({
        lab: lab.id,
        failedAt,
        decidedAt: closed.decidedAt,
        method: o.method,
        report,
        clients: rows.map((r) => ({ client: r.client, event: r.outcome?.event ?? 'none', code: r.outcome?.code, atMs: r.outcome ? Number(r.outcome.t) - failedAt : null, tcpAlone: r.alone })),
      });
    }
    return outcomes.every(Boolean) && report.results.every((r) => r.ok) ? EXIT_OK : EXIT_INCOMPLETE;
  } finally {
    process.off('SIGINT', onSignal);
    await lab.destroy();
  }
}
