// `npm run bench`: each benchmark runs its baseline and ours in the same run, on the same lab,
// and prints the ratio. Machines here are noisy: read ratios, not absolute times.
// Select with BENCH=close,forge,destroy,capture,exit,notify,fanout,vrrp,scsi,replication,jitter,failover,log,mirror,mirror-pg,takeover,repair,capture-loss,continue-stall,relay,output-commit,priority (default: all). Needs root.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { Lab } from '../src/lab/lab.js';
import { fixturePath, nowMs } from '../src/lab/node-child.js';
import { ProcessExitWatch } from '../src/monitor/process-exit.js';
import { fanout } from './fanout.js';
import { notify } from './notify.js';
import { vrrp } from './vrrp.js';
import { close } from './close.js';
import { scsi } from './scsi.js';
import { replication } from './replication.js';
import { appFailover } from './app-failover.js';
import { logCommit } from './log-commit.js';
import { mirrorCommit } from './mirror-commit.js';
import { mirrorPg } from './mirror-pg.js';
import { reliableTakeover } from './reliable-takeover.js';
import { tcpRepair } from './tcp-repair.js';
import { captureLoss } from './capture-loss.js';
import { continueStall } from './continue-stall.js';
import { relayThroughput } from './relay-throughput.js';
import { outputCommit } from './output-commit.js';
import { agentPriority } from './agent-priority.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = (name: string) => path.join(here, 'fixtures', name);
const only = new Set((process.env.BENCH ?? 'close,forge,destroy,capture,exit,notify,fanout,vrrp,scsi,replication,jitter,failover,log,mirror,mirror-pg,takeover,repair,capture-loss,continue-stall,relay,output-commit,priority').split(','));
const out = (s: string) => process.stdout.write(`${s}\n`);
const fmt = (n: number, d = 2) => n.toFixed(d);

async function forge(): Promise<void> {
  const lab = await Lab.create({ hosts: ['a', 'b'] });
  try {
    const a = lab.host('a');
    const b = lab.host('b');
    const count = '20000';
    const oursR = await lab.spawn('a', fx('forge-loop.ts'), [a.ipv4, b.ipv4, count]).waitFor('result', 60_000);
    const pyR = await lab.spawnCommand('a', 'python3', [fx('forge_loop.py'), a.ipv4, b.ipv4, count]).waitFor('result', 60_000);
    out(`forge RST per connection: ours ${fmt(oursR.usPerSegment as number)} us, Python raw socket ${fmt(pyR.usPerSegment as number)} us; ratio python / ours = ${fmt((pyR.usPerSegment as number) / (oursR.usPerSegment as number))}x`);
  } finally {
    await lab.destroy();
  }
}

async function destroy(): Promise<void> {
  const lab = await Lab.create({ hosts: ['a'] });
  try {
    const r = await lab.spawn('a', fx('destroy-loop.ts'), ['60']).waitFor('result', 60_000);
    const ss = r.ssMsPerConnection as number;
    const ours = r.oursMsPerConnection as number;
    out(`destroy a local connection, its lookup included on both sides: ours (a sock_diag dump + one SOCK_DESTROY, in process) ${fmt(ours, 3)} ms, \`ss -K\` per connection (a process: its dump + SOCK_DESTROY) ${fmt(ss)} ms; ratio ss / ours = ${fmt(ss / ours, 0)}x`);
    out(`  ours for ${String(r.batch)} at once (one dump, then a SOCK_DESTROY each: the agent's way): ${fmt(r.oursBatchMsPerConnection as number, 3)} ms per connection`);
  } finally {
    await lab.destroy();
  }
}

async function capture(): Promise<void> {
  // A watcher capturing others' traffic on a switch's port mirror of the sink's port (its mir0).
  const lab = await Lab.create({ hosts: ['sender', 'sink', 'watch'] });
  try {
    const { ifname: mirror } = await lab.mirrorPort('sink', 'watch');
    const sink = lab.spawn('sink', fixturePath('server'), ['--port', '7100']);
    await sink.waitFor('listening');
    const ms = 3000;
    const ours = lab.spawn('watch', fx('capture-count.ts'), [mirror, '7100']);
    await ours.waitFor('started');
    const tcpdump = spawn('ip', ['netns', 'exec', lab.host('watch').ns, 'tcpdump', '-i', mirror, '-w', '/dev/null', '-B', '8192', 'tcp port 7100'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let tdErr = '';
    tcpdump.stderr.on('data', (d) => (tdErr += d));
    await new Promise((r) => setTimeout(r, 500));
    const blast = lab.spawn('sender', fx('blast.ts'), [lab.host('sink').ipv4, '7100', String(ms)]);
    await blast.waitFor('done', ms + 20_000);
    await new Promise((r) => setTimeout(r, 200)); // let both drain the last frames
    ours.send({ cmd: 'stop' });
    const stat = readFileSync(`/proc/${tcpdump.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const oursR = await ours.waitFor('done', 20_000);
    const tdCpuMs = ((Number(stat[11]) + Number(stat[12])) * 1000) / 100; // utime+stime in USER_HZ=100
    tcpdump.kill('SIGINT');
    await new Promise((r) => tcpdump.once('exit', r));
    const captured = Number(/(\d+) packets? captured/.exec(tdErr)?.[1] ?? NaN);
    const tdDropped = Number(/(\d+) packets? dropped by kernel/.exec(tdErr)?.[1] ?? NaN);
    const oursPkts = Number(oursR.packets);
    const oursRate = oursPkts / (Number(oursR.cpuMs) / 1000);
    const tdRate = captured / (tdCpuMs / 1000);
    out(`capture+tracking: ours ${oursPkts} packets, ${String(oursR.drops)} dropped, ${String(oursR.flows)} flows, ${fmt(Number(oursR.cpuMs), 0)} ms CPU; tcpdump -w /dev/null ${captured} packets, ${tdDropped} dropped, ${fmt(tdCpuMs, 0)} ms CPU`);
    out(`  packets per CPU-second: ours ${fmt(oursRate, 0)}, tcpdump ${fmt(tdRate, 0)}; ratio ours / tcpdump = ${fmt(oursRate / tdRate)} (target >= 1)`);
  } finally {
    await lab.destroy();
  }
}

/** A process's death noticed by pidfd vs by polling /proc every 100 ms, median of 15 kills. */
async function processExit(): Promise<void> {
  const dead = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
    } catch {
      return true;
    }
  };
  const ours: number[] = [];
  const polled: number[] = [];
  for (let i = 0; i < 15; i++) {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const watch = new ProcessExitWatch(child.pid!);
    const poll = new Promise<number>((resolve) => {
      const t = setInterval(() => {
        if (dead(child.pid!)) {
          clearInterval(t);
          resolve(nowMs());
        }
      }, 100);
    });
    // Kill at a random phase of the polling interval, as a real failure would come.
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 100));
    const killedAt = nowMs();
    child.kill('SIGKILL');
    ours.push((await watch.exited) - killedAt);
    polled.push((await poll) - killedAt);
    watch.close();
  }
  const median = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  out(`process exit noticed: pidfd ${fmt(median(ours), 3)} ms, polling every 100 ms ${fmt(median(polled))} ms (medians of 15); ratio polling / pidfd = ${fmt(median(polled) / median(ours), 0)}x`);
}

if (only.has('close')) await close(out);
if (only.has('forge')) await forge();
if (only.has('destroy')) await destroy();
if (only.has('capture')) await capture();
if (only.has('exit')) await processExit();
if (only.has('notify')) await notify(out);
if (only.has('fanout')) await fanout(out);
if (only.has('vrrp')) await vrrp(out);
if (only.has('failover')) await appFailover(out);
if (only.has('scsi')) await scsi(out);
if (only.has('log')) await logCommit(out);
if (only.has('mirror')) await mirrorCommit(out);
if (only.has('mirror-pg')) await mirrorPg(out);
if (only.has('takeover')) await reliableTakeover(out);
if (only.has('repair')) await tcpRepair();
if (only.has('capture-loss')) await captureLoss(out);
if (only.has('continue-stall')) await continueStall(out);
if (only.has('relay')) await relayThroughput(out);
if (only.has('output-commit')) await outputCommit(out);
if (only.has('priority')) await agentPriority(out);
await replication(only);
