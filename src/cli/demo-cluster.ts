// `takeover demo --cluster`: the cluster manager (seed 002) on the embedded store, a whole
// failover and failback of a real service. A lab of three namespaces (client, server, backup)
// on learning bridges; the real agent on server and backup, with one store file and one
// clustered application `web` (a TCP service on the mobile address that greets each client
// with the address of the node serving it). The server node crashes (silent, every process on
// it killed): the backup's agent sees it dead, waits for its lease in the store to run out,
// becomes HOST by compare-and-swap, takes the address over closing the dead node's client
// connections, and starts `web`. The server comes back: AUTO-RECOVER moves `web` home. Each
// step is printed with its time; the store's history of `web` ends the demo.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Lab } from '../lab/lab.js';
import { fixturePath, nowMs } from '../lab/node-child.js';
import { ClusterStore } from '../cluster/cluster-store.js';
import { FileBackend } from '../cluster/file-backend.js';
import type { AppObject } from '../cluster/app-object.js';
import { EXIT_INCOMPLETE, EXIT_OK, requireCapabilities } from './errors.js';
import { historyTable } from './apps.js';
import { replicatedCopy, step } from './demo.js';

const PORT = 7000;
const LEASE_MS = 1000;

export async function clusterDemoCommand(o: { json?: boolean }): Promise<number> {
  await requireCapabilities('demo', ['CAP_NET_ADMIN', 'CAP_NET_RAW']);
  const out = (line: string) => (o.json ? process.stderr : process.stdout).write(`${line}\n`);
  const progress = (line: string) => out(`[${(performance.now() / 1000).toFixed(2)} s] ${line}`);
  progress('building the lab: namespaces client, server and backup on two learning bridges (the service link and a failsafe link)');
  const lab = await Lab.create({ hosts: ['client', 'server', 'backup'], failsafeLink: true });
  const dir = mkdtempSync(path.join(tmpdir(), 'takeover-demo-cluster-'));
  const store = new ClusterStore(new FileBackend(path.join(dir, 'apps.json')));
  const cleanUp = async () => {
    await store.close();
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => void cleanUp().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  try {
    const vip = `198.18.${lab.subnet}.100`;
    const names = new Map([[lab.host('server').ipv4, 'server'], [lab.host('backup').ipv4, 'backup']]);
    const links = (n: string) => [
      { id: 0, address: lab.host(n).ipv4, port: 7400 },
      { id: 1, address: lab.host(n).failsafe!.ipv4, port: 7400 },
    ];
    // The service: greets each client with the node's own address, then keeps the connection open.
    const service = `const os=require('os');const me=(os.networkInterfaces().eth0||[]).find(a=>a.family==='IPv4'&&a.address!==${JSON.stringify(vip)});` +
      `require('net').createServer(s=>{s.on('error',()=>{});s.write('served by '+(me?me.address:'?')+'\\n')}).listen(${PORT})`;
    const config = (node: 'server' | 'backup') => ({
      cluster: 'demo', node, database: 'demo', key: 'demo cluster key', heartbeat: { intervalMs: 100, misses: 3, links: links(node) },
      control: path.join(dir, `${node}.sock`), stateDir: path.join(dir, `state-${node}`), incarnationFile: path.join(dir, `${node}.incarnation`),
      notify: { host: lab.host(node).ipv4, port: 0 },
      // Two nodes and no fencing: the store's leases keep one HOST.
      quorum: { twoNode: true },
      peers: [{ node: node === 'server' ? 'backup' : 'server', links: links(node === 'server' ? 'backup' : 'server') }],
      store: { file: path.join(dir, 'apps.json'), leaseMs: LEASE_MS },
      apps: [{
        tag: 'web', type: 'cluster-capable', primary: 'server', backups: ['backup'], autoRecover: true,
        command: { load: [process.execPath, '-e', service], stopGraceMs: 1000 },
        // up once it accepts a connection, not merely once its process runs
        ready: { tcp: PORT, intervalMs: 50 },
        address: { address: vip, prefixLength: 24, interface: 'eth0', port: PORT },
      }],
    });
    const startAgent = (node: 'server' | 'backup') => lab.spawn(node, fixturePath('agent-node'), ['--config', JSON.stringify(config(node))]);
    const hosted = async (node: string, timeoutMs: number): Promise<AppObject> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const app = (await store.get('web'))?.app;
        if (app?.host === node && app.state === 'up') return app;
        if (Date.now() > deadline) throw new Error(`demo: web is not up on ${node} after ${timeoutMs} ms (store: HOST ${app?.host ?? '-'}, ${app?.state ?? 'not registered'})`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    /**
     * A client connects to the service address and reads the greeting: which node answers. `up`
     * in the store means web accepted a connection (its readiness probe); the client still tries
     * again for up to 3 s, as clients do.
     */
    const ask = async (): Promise<string> => {
      const script = `const end=Date.now()+3000;const t=()=>{const s=require('net').connect(${PORT},${JSON.stringify(vip)});s.setTimeout(1000,()=>s.destroy(new Error('no answer')));` +
        `s.on('error',e=>{if(Date.now()<end)setTimeout(t,20);else{console.log(e.code||e.message);process.exit(1)}});s.once('data',d=>{console.log(String(d).trim());process.exit(0)})};t()`;
      const r = await lab.exec('client', process.execPath, ['-e', script]).catch((err: Error & { stdout?: string }) => ({ stdout: err.stdout || 'no answer' }));
      const line = r.stdout.trim();
      const ip = line.replace(/^served by /, '');
      return names.has(ip) ? `${line} (${names.get(ip)})` : line;
    };

    progress(`lab ${lab.id}: client ${lab.host('client').ipv4}, server ${lab.host('server').ipv4}, backup ${lab.host('backup').ipv4}; the service address ${vip}:${PORT} moves with web`);
    progress('starting the agents (heartbeats every 100 ms on two links; web: PRIMARY server, BACKUP backup, AUTO-RECOVER on; the store is one file)');
    const server = startAgent('server');
    const backup = startAgent('backup');
    await step('the agents started', Promise.all([server.waitFor('started', 15_000), backup.waitFor('started', 15_000)]));
    await step('web up on the server', hosted('server', 15_000));
    out(`  a client asks ${vip}:${PORT}: ${await ask()}`);
    const blocked = lab.spawn('client', fixturePath('client'), ['--host', vip, '--port', String(PORT)]);
    await step('a client connected and reading', blocked.waitFor('connected', 5000));
    await step('the backup\'s copy of the server\'s connections', replicatedCopy(backup, 1, 10_000));
    out('  a second client stays connected, blocked reading (the server sends nothing more)');
    out('');

    await lab.crash('server');
    const t0 = nowMs();
    const at = (t: number) => `t=+${(t - t0).toFixed(0).padStart(5)} ms  `;
    out(`${at(t0)}the server node crashes: silent on the network, its agent and web killed`);
    const down = await step('the backup declaring the server dead', backup.waitFor('node-down', 10_000, (e) => e.node === 'server'));
    out(`${at(Number(down.at))}the backup declares the server dead (3 heartbeats missed on both links)`);
    const claimed = await step('the backup claiming web', backup.waitFor('app', 10_000, (e) => e.kind === 'done' && e.step === 'claim'));
    out(`${at(Number(claimed.at))}its lease in the store ran out: the backup is HOST of web (compare-and-swap in the store)`);
    const released = await Promise.race([blocked.waitFor('error', 5000), blocked.waitFor('end', 5000)]).catch(() => undefined);
    if (released) out(`${at(Number(released.t))}the blocked client's read ends: ${released.event === 'error' ? String(released.code) : 'EOF'} (the backup took ${vip} over and closed the dead node's connections)`);
    await step('web up on the backup', hosted('backup', 15_000));
    out(`${at(nowMs())}web is up on the backup`);
    const afterFailover = await ask();
    out(`  a client asks ${vip}:${PORT}: ${afterFailover}`);
    out('');

    progress('the server comes back (network healed, its agent started again)');
    await lab.heal('server');
    const t1 = nowMs();
    const back = startAgent('server');
    await step('the server\'s agent started', back.waitFor('started', 15_000));
    await step('web back on the server (AUTO-RECOVER)', hosted('server', 20_000));
    out(`  AUTO-RECOVER: the backup stopped web and released ${vip}; the server loaded it: ${((nowMs() - t1) / 1000).toFixed(2)} s after the server's agent was started`);
    const afterFailback = await ask();
    out(`  a client asks ${vip}:${PORT}: ${afterFailback}`);
    out('');
    const s = (await store.get('web'))!;
    out('the store\'s history of web (`takeover history web`):');
    out(historyTable(s.history));
    if (o.json) process.stdout.write(`${JSON.stringify({ lab: lab.id, crashedAt: t0, detectedAt: down.at, claimedAt: claimed.at, clientReleasedAt: released?.t ?? null, history: s.history })}\n`);
    const ok = released !== undefined && afterFailover.endsWith('(backup)') && afterFailback.endsWith('(server)');
    return ok ? EXIT_OK : EXIT_INCOMPLETE;
  } finally {
    process.off('SIGINT', onSignal);
    progress('removing the lab');
    await cleanUp();
    progress('done');
  }
}
