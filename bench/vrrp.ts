// Silent node death -> the service address is up on the backup: keepalived's VRRP against ours
// (heartbeats + PeerTakeover), at the same interval (VRRP advert_int = our heartbeat interval),
// in the same two-host lab, timed the same way: from the master's death (nft drop, ARP
// included) to the address appearing on the backup, seen through `ip monitor address` there.
// keepalived (Debian package) is installed when missing. Bounded: 3 runs per setting at 1 s,
// 5 at 100 ms. VRRP's backup decides 3 adverts and a skew of (256 - priority)/256 of one after
// the last advert (3.61 intervals at priority 100); ours `misses` intervals and a 25 ms skew
// after the last heartbeat (FailureDetector.timeoutMs). Both masters die at a phase of their
// own timers the bench does not choose (~0.2 s after the last message at 1 s, as measured).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { run } from '../src/lab/exec.js';
import { ensurePackages } from './packages.js';
import { Lab } from '../src/lab/lab.js';
import { fixturePath, nowMs } from '../src/lab/node-child.js';
import { FailureDetector } from '../src/monitor/failure-detector.js';

function ensureKeepalived(out: (s: string) => void): void {
  ensurePackages(out, '/usr/sbin/keepalived', ['keepalived']);
}

/** Resolves with the time `address` is added on the host's eth0 (rtnetlink, via ip monitor). */
async function watchAddress(lab: Lab, host: string, address: string): Promise<{ added: Promise<number>; stop: () => void }> {
  const mon = spawn('ip', ['-n', lab.host(host).ns, '-o', 'monitor', 'address'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const added = new Promise<number>((resolve) => {
    createInterface({ input: mon.stdout }).on('line', (line) => {
      if (!line.startsWith('Deleted') && line.includes(` ${address}/`)) resolve(nowMs());
    });
  });
  await new Promise((r) => setTimeout(r, 200)); // the monitor has subscribed
  return { added, stop: () => mon.kill('SIGKILL') };
}

async function hasAddress(lab: Lab, host: string, address: string): Promise<boolean> {
  return (await run('ip', ['-n', lab.host(host).ns, '-o', 'addr', 'show', 'dev', 'eth0'])).stdout.includes(` ${address}/`);
}

async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Kills the master silently; ms until the address is up on the backup. */
async function killAndTime(lab: Lab, address: string, intervalMs: number): Promise<number> {
  const watch = await watchAddress(lab, 'b', address);
  try {
    const killedAt = nowMs();
    await lab.killSilently('m', 'nft');
    return (await withTimeout(watch.added, 20 * intervalMs + 5000)) - killedAt;
  } finally {
    watch.stop();
  }
}

const vip = (lab: Lab) => lab.host('m').ipv4.replace(/\.\d+$/, '.200');

async function keepalivedOnce(intervalMs: number): Promise<number> {
  const lab = await Lab.create({ hosts: ['m', 'b'] });
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-vrrp-'));
  const daemons: ChildProcess[] = [];
  try {
    const address = vip(lab);
    for (const [self, other, state, prio] of [['m', 'b', 'MASTER', 200], ['b', 'm', 'BACKUP', 100]] as const) {
      const conf = path.join(dir, `${self}.conf`);
      writeFileSync(conf, [
        `global_defs { router_id tko_${self}${intervalMs < 1000 ? '\n  vrrp_version 3' : ''} }`,
        'vrrp_instance tko {',
        `  state ${state}`, '  interface eth0', '  virtual_router_id 51', `  priority ${prio}`, `  advert_int ${intervalMs / 1000}`,
        `  unicast_src_ip ${lab.host(self).ipv4}`, `  unicast_peer { ${lab.host(other).ipv4} }`,
        `  virtual_ipaddress { ${address}/24 dev eth0 }`,
        '}',
      ].join('\n'));
      daemons.push(spawn('ip', ['netns', 'exec', lab.host(self).ns, 'keepalived', '-n', '-l', '--vrrp', '-f', conf,
        '-p', path.join(dir, `${self}.pid`), '-r', path.join(dir, `${self}-vrrp.pid`)], { stdio: 'ignore' }));
    }
    await until(() => hasAddress(lab, 'm', address), 15_000, 'keepalived master to take the VIP');
    await new Promise((r) => setTimeout(r, 3 * intervalMs)); // the backup has heard adverts
    if (await hasAddress(lab, 'b', address)) throw new Error('the keepalived backup holds the VIP too');
    return await killAndTime(lab, address, intervalMs);
  } finally {
    for (const d of daemons) d.kill('SIGKILL');
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function oursOnce(intervalMs: number, misses: number): Promise<number> {
  const lab = await Lab.create({ hosts: ['m', 'b'] });
  try {
    const address = vip(lab);
    await run('ip', ['-n', lab.host('m').ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
    const link = (n: string) => [{ id: 0, address: lab.host(n).ipv4, port: 7400 }];
    const hb = { key: 'bench key of 16+ bytes', intervalMs, misses };
    lab.spawn('m', fixturePath('heartbeat-node'), ['--config', JSON.stringify({ ...hb, node: 'm', incarnation: '1', links: link('m'), peers: [{ node: 'b', links: link('b') }] })]);
    const backup = lab.spawn('b', fixturePath('backup-agent'), ['--config', JSON.stringify({
      ...hb, node: 'b', peer: 'm', links: link('b'), peers: [{ node: 'm', links: link('m') }],
      service: { address, port: 7000 }, interface: 'eth0', prefixLength: 24, method: 'rst',
    })]);
    await backup.waitFor('node-up', 15_000, (e) => e.node === 'm');
    return await killAndTime(lab, address, intervalMs);
  } finally {
    await lab.destroy();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`no takeover within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

export async function vrrp(out: (s: string) => void): Promise<void> {
  ensureKeepalived(out);
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  const span = (v: number[]) => `${Math.round(Math.min(...v))}-${Math.round(Math.max(...v))}`;
  for (const intervalMs of [1000, 100]) {
    const runs = intervalMs >= 1000 ? 3 : 5;
    const k: number[] = [];
    const o3: number[] = [];
    const o2: number[] = [];
    for (let i = 0; i < runs; i++) {
      k.push(await keepalivedOnce(intervalMs));
      o3.push(await oursOnce(intervalMs, 3));
      o2.push(await oursOnce(intervalMs, 2));
    }
    out(`silent death -> address up on the backup, interval ${intervalMs} ms (medians of ${runs}, range in ms):`);
    out(`  keepalived VRRP${intervalMs < 1000 ? 'v3' : ''} advert_int ${intervalMs / 1000} (declared ${Math.round(intervalMs * (3 + 156 / 256))} ms after the last advert): ${Math.round(median(k))} ms (${span(k)})`);
    const timeout = (misses: number) => new FailureDetector({ intervalMs, misses, links: [0] }).timeoutMs;
    out(`  ours, 3 misses (declared ${timeout(3)} ms after the last heartbeat): ${Math.round(median(o3))} ms (${span(o3)}); ratio VRRP / ours = ${(median(k) / median(o3)).toFixed(2)}`);
    out(`  ours, 2 misses (${timeout(2)} ms after it): ${Math.round(median(o2))} ms (${span(o2)}); ratio VRRP / ours = ${(median(k) / median(o2)).toFixed(2)}`);
  }
}
