// A clustered service's failover: the HOST node crashes (nft drop, ARP included, then every
// process on it killed) -> the service answers on its address from the backup, as a client on a
// third host sees it (a fresh connection every 5 ms). keepalived's VRRP (v3, unicast, advert_int
// = our heartbeat interval) with a notify_master script that starts the service, against our
// agents with the cluster manager on the embedded store, at the same interval, in the same kind
// of lab, timed the same way. Ours is split into detect (the backup's node-down), the lease
// (until it becomes HOST by compare-and-swap), address (the address taken and the dead HOST's
// connections closed) and start (until the service answers). No fencing on any side (the lab
// has no SCSI; BENCH=scsi times the fence step in the qemu guest).
// Pacemaker 2.1 on corosync 3 (bench/pacemaker.ts: each node's daemons in the host's network
// namespace and a mount namespace of their own) runs the same service as ocf:heartbeat:anything
// after ocf:heartbeat:IPaddr2 (a group preferring m), twice: with its defaults (knet, token
// 3000 ms, consensus 3600 ms) and at our heartbeat settings (token = 100 ms x 3 = 300 ms,
// consensus 360 ms by corosync's rule). The latter runs on udpu: knet at a 300 ms token declared
// its link down every 9 s here while its pongs still came in (the membership flapped), udpu held.
// Pacemaker is split into detect (the backup's corosync membership without m, as
// corosync-quorumtool -m reports it) and start (until the service answers); which node was the
// DC (it runs the scheduler; elected by the controllers, not chosen here) is reported per run.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';
import { fixturePath, nowMs } from '../src/lab/node-child.js';
import { ensurePackages } from './packages.js';
import { PacemakerCluster } from './pacemaker.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const PORT = 7000;
const INTERVAL = 100;
const LEASE_MS = 1000;
const RUNS = 3;

/** The service: greets each client with the node's own eth0 address (not the service address). */
const service = (vip: string) =>
  `const os=require('os');const me=(os.networkInterfaces().eth0||[]).find(a=>a.family==='IPv4'&&a.address!==${JSON.stringify(vip)});` +
  `require('net').createServer(s=>{s.on('error',()=>{});s.end('served by '+(me?me.address:'?')+'\\n')}).listen(${PORT})`;

async function lab3(): Promise<{ lab: Lab; vip: string; dir: string }> {
  const lab = await Lab.create({ hosts: ['m', 'b', 'c'] });
  return { lab, vip: `198.18.${lab.subnet}.100`, dir: mkdtempSync(path.join(tmpdir(), 'tko-appfo-')) };
}

async function answeredAfterCrash(lab: Lab, vip: string, timeoutMs: number): Promise<{ crashedAt: number; answeredAt: number }> {
  const watch = lab.spawn('c', path.join(here, 'fixtures', 'answer-watch.ts'), ['--host', vip, '--port', String(PORT), '--expect', lab.host('b').ipv4]);
  await watch.waitFor('ready', 15_000);
  const crashedAt = nowMs();
  await lab.crash('m');
  const a = await watch.waitFor('answered', timeoutMs);
  return { crashedAt, answeredAt: Number(a.t) };
}

interface PacemakerSplit {
  total: number;
  detect: number;
  start: number;
  dc: string;
  /** Memberships the backup formed without m before the crash (a flapping membership). */
  flaps: number;
}

async function pacemakerOnce(variant: { tokenMs?: number; totem?: string[] }): Promise<PacemakerSplit> {
  const { lab, vip, dir } = await lab3();
  let cluster: PacemakerCluster | undefined;
  try {
    const script = path.join(dir, 'service.js');
    writeFileSync(script, service(vip));
    cluster = await PacemakerCluster.start(lab, dir, { vip, serviceScript: script, first: 'b', ...variant }, 90_000);
    const before = await cluster.state('b');
    const flaps = cluster.membershipLosses('b');
    const track = cluster.trackMembership('b', 40_000);
    await track.ready;
    const t = await answeredAfterCrash(lab, vip, 40_000);
    const lostAt = await track.lost;
    if (lostAt < t.crashedAt) throw new Error('pacemaker: the membership lost m before the crash (a flap)');
    return { total: t.answeredAt - t.crashedAt, detect: lostAt - t.crashedAt, start: t.answeredAt - lostAt, dc: before.dc ?? '?', flaps };
  } finally {
    cluster?.stop();
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function keepalivedOnce(): Promise<number> {
  const { lab, vip, dir } = await lab3();
  const daemons: ChildProcess[] = [];
  try {
    for (const [self, other, state, prio] of [['m', 'b', 'MASTER', 200], ['b', 'm', 'BACKUP', 100]] as const) {
      const up = path.join(dir, `${self}-up.sh`);
      const down = path.join(dir, `${self}-down.sh`);
      writeFileSync(up, `#!/bin/sh\nsetsid ${process.execPath} -e ${JSON.stringify(service(vip))} >/dev/null 2>&1 &\necho $! > ${dir}/${self}-svc.pid\n`);
      writeFileSync(down, `#!/bin/sh\n[ -f ${dir}/${self}-svc.pid ] && kill $(cat ${dir}/${self}-svc.pid) 2>/dev/null; rm -f ${dir}/${self}-svc.pid; true\n`);
      chmodSync(up, 0o755);
      chmodSync(down, 0o755);
      const conf = path.join(dir, `${self}.conf`);
      writeFileSync(conf, [
        `global_defs { router_id tko_${self}\n  vrrp_version 3\n  script_user root\n  enable_script_security }`,
        'vrrp_instance tko {',
        `  state ${state}`, '  interface eth0', '  virtual_router_id 52', `  priority ${prio}`, `  advert_int ${INTERVAL / 1000}`,
        `  unicast_src_ip ${lab.host(self).ipv4}`, `  unicast_peer { ${lab.host(other).ipv4} }`,
        `  virtual_ipaddress { ${vip}/24 dev eth0 }`,
        `  notify_master ${up}`, `  notify_backup ${down}`, `  notify_fault ${down}`,
        '}',
      ].join('\n'));
      daemons.push(spawn('ip', ['netns', 'exec', lab.host(self).ns, 'keepalived', '-n', '-l', '--vrrp', '-f', conf,
        '-p', path.join(dir, `${self}.pid`), '-r', path.join(dir, `${self}-vrrp.pid`)], { stdio: 'ignore' }));
    }
    await new Promise((r) => setTimeout(r, 3000)); // the master holds the address and runs the service
    const t = await answeredAfterCrash(lab, vip, 20_000);
    return t.answeredAt - t.crashedAt;
  } finally {
    for (const d of daemons) d.kill('SIGKILL');
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface OursSplit {
  total: number;
  detect: number;
  lease: number;
  address: number;
  start: number;
}

async function oursOnce(): Promise<OursSplit> {
  const { lab, vip, dir } = await lab3();
  try {
    const link = (n: string) => [{ id: 0, address: lab.host(n).ipv4, port: 7400 }];
    const config = (node: 'm' | 'b') => ({
      cluster: 'bench', node, database: 'bench', key: 'bench cluster key 16+', heartbeat: { intervalMs: INTERVAL, misses: 3, links: link(node) },
      control: path.join(dir, `${node}.sock`), stateDir: path.join(dir, `state-${node}`), incarnationFile: path.join(dir, `${node}.inc`),
      notify: { port: 0 }, quorum: { twoNode: true },
      peers: [{ node: node === 'm' ? 'b' : 'm', links: link(node === 'm' ? 'b' : 'm') }],
      store: { file: path.join(dir, 'apps.json'), leaseMs: LEASE_MS },
      apps: [{ tag: 'svc', type: 'cluster-capable', primary: 'm', backups: ['b'], command: { load: [process.execPath, '-e', service(vip)], stopGraceMs: 500 }, address: { address: vip, prefixLength: 24, interface: 'eth0', port: PORT } }],
    });
    const m = lab.spawn('m', fixturePath('agent-node'), ['--config', JSON.stringify(config('m'))]);
    const b = lab.spawn('b', fixturePath('agent-node'), ['--config', JSON.stringify(config('b'))]);
    await Promise.all([m.waitFor('started', 15_000), b.waitFor('started', 15_000)]);
    await m.waitFor('app', 15_000, (e) => e.kind === 'done' && e.step === 'mark-up');
    await b.waitFor('node-up', 15_000, (e) => e.node === 'm');
    const t = await answeredAfterCrash(lab, vip, 20_000);
    const down = Number((await b.waitFor('node-down', 5000, (e) => e.node === 'm')).at);
    const claimed = Number((await b.waitFor('app', 5000, (e) => e.kind === 'done' && e.step === 'claim')).at);
    const started = Number((await b.waitFor('app', 5000, (e) => e.kind === 'done' && e.step === 'start')).at);
    return { total: t.answeredAt - t.crashedAt, detect: down - t.crashedAt, lease: claimed - down, address: started - claimed, start: t.answeredAt - started };
  } finally {
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function appFailover(out: (s: string) => void): Promise<void> {
  ensurePackages(out, '/usr/sbin/keepalived', ['keepalived']);
  // Pacemaker and corosync from Debian, without systemd (bench/pacemaker.ts starts the daemons);
  // resource-agents for ocf:heartbeat:IPaddr2 and ocf:heartbeat:anything.
  ensurePackages(out, '/usr/sbin/pacemakerd', ['pacemaker', 'pacemaker-cli-utils', 'corosync']);
  ensurePackages(out, '/usr/lib/ocf/resource.d/heartbeat/IPaddr2', ['resource-agents']);
  const median = (v: number[]) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)]!;
  const k: number[] = [];
  const o: OursSplit[] = [];
  const pd: PacemakerSplit[] = [];
  const pt: PacemakerSplit[] = [];
  for (let i = 0; i < RUNS; i++) {
    k.push(await keepalivedOnce());
    o.push(await oursOnce());
    pd.push(await pacemakerOnce({}));
    pt.push(await pacemakerOnce({ tokenMs: INTERVAL * 3, totem: ['transport: udpu'] }));
  }
  const part = (f: keyof OursSplit) => Math.round(median(o.map((x) => x[f])));
  out(`clustered service, HOST crashed -> answering from the backup, ${INTERVAL} ms x 3 (medians of ${RUNS}):`);
  out(`  keepalived VRRPv3 + notify_master starting it: ${Math.round(median(k))} ms (${k.map(Math.round).join(', ')})`);
  out(`  ours (cluster manager, embedded store, lease ${LEASE_MS} ms): ${part('total')} ms = detect ${part('detect')} + lease ${part('lease')} + address ${part('address')} + start ${part('start')} (${o.map((x) => Math.round(x.total)).join(', ')})`);
  const pcmk = (name: string, v: PacemakerSplit[]) => {
    const p = (f: 'total' | 'detect' | 'start') => Math.round(median(v.map((x) => x[f])));
    const flaps = v.reduce((n, x) => n + x.flaps, 0);
    out(`  Pacemaker 2.1 ${name}: ${p('total')} ms = detect ${p('detect')} + start ${p('start')} (${v.map((x) => `${Math.round(x.total)} DC ${x.dc}`).join(', ')})${flaps ? `; ${flaps} membership flaps before the crashes` : ''}`);
  };
  pcmk('defaults (corosync knet, token 3000 ms)', pd);
  pcmk(`at our settings (corosync udpu, token ${INTERVAL * 3} ms)`, pt);
  const ours = median(o.map((x) => x.total));
  out(`  ratio keepalived / ours = ${(median(k) / ours).toFixed(2)}; Pacemaker defaults / ours = ${(median(pd.map((x) => x.total)) / ours).toFixed(2)}; Pacemaker at our settings / ours = ${(median(pt.map((x) => x.total)) / ours).toFixed(2)}`);
}
