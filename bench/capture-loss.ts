// Capture loss vs packet rate (issue 12): the shadow's capture ring (FlowTracker as
// src/net/shadow/shadow-capture.ts configures it) vs the usual Python AF_PACKET reader
// (recvfrom loop, filter in Python), on the same forged TCP traffic at fixed rates.
//
// Lab: host `tx` sends to host `rx` on a bridge. The sender (bench/fixtures/segment-blast.c,
// compiled here with gcc) forges TCP segments of PAYLOAD bytes to rx:PORT at a fixed rate for
// MS ms. On rx a netdev ingress rule counts those frames and drops them: the count is what
// reached rx's interface (the taps see a frame before ingress, so every frame counted was
// offered to the capturers), and the drop keeps rx's TCP from answering each one with an RST.
// lost = arrived - seen by the capturer; ours also prints the kernel's PACKET_STATISTICS drops.
//
// The two capturers run one after the other, each on its own replay of the same traffic (same
// sender, rate, length, frames): on 2 cores, the sender and the kernel's receive path (softirq on
// the sender's CPU) take one, and two readers at once would fight over the other, so each
// would measure the other's load as much as its own.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';
import type { NodeChild } from '../src/lab/node-child.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = (name: string) => path.join(here, 'fixtures', name);
const PORT = 7400;
const PAYLOAD = 100;
const MS = 2000;
const RATES = [20_000, 70_000, 150_000, 300_000];

function buildSender(): string {
  const out = path.join(here, '..', 'build', 'segment-blast');
  mkdirSync(path.dirname(out), { recursive: true });
  try {
    execFileSync('gcc', ['-O2', '-Wall', '-o', out, fx('segment-blast.c')], { stdio: 'pipe' });
  } catch (e) {
    throw new Error(`capture-loss needs gcc to build its sender: ${(e as Error).message}`);
  }
  return out;
}

export async function captureLoss(out: (s: string) => void): Promise<void> {
  const sender = buildSender();
  const lab = await Lab.create({ hosts: ['tx', 'rx'] });
  try {
    const tx = lab.host('tx');
    const rx = lab.host('rx');
    const rule = `ip saddr ${tx.ipv4} tcp dport ${PORT} counter drop`;
    await lab.exec('rx', 'nft', ['-f', '-'], `table netdev tko_blast {\n chain in {\n  type filter hook ingress device eth0 priority 0;\n  ${rule}\n }\n}\n`);
    const arrived = async () => {
      const { stdout } = await lab.exec('rx', 'nft', ['list', 'table', 'netdev', 'tko_blast']);
      const m = /counter packets (\d+)/.exec(stdout);
      if (!m) throw new Error(`capture-loss: no counter in ${stdout}`);
      return Number(m[1]);
    };
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    /** One replay with `reader` capturing: what arrived, what it saw, its report. */
    const replay = async (rate: number, start: () => NodeChild, stop: (c: NodeChild) => void) => {
      const reader = start();
      await reader.waitFor('started', 20_000);
      await pause(300);
      const before = await arrived();
      const sent = await lab.spawnCommand('tx', sender, ['eth0', tx.mac, rx.mac, tx.ipv4, rx.ipv4, String(PORT), String(PAYLOAD), String(rate), String(MS)]).waitFor('done', MS + 20_000);
      await pause(500); // the ring's 10 ms block timeout, the Python queue's backlog
      const got = reader.waitFor('done', 20_000);
      stop(reader);
      const r = await got;
      const n = (await arrived()) - before;
      return { n, pps: n / (Number(sent.ms) / 1000), r };
    };
    const load = (await lab.exec('rx', 'cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' ');
    out(`capture loss vs packet rate (load average ${load}): TCP segments with ${PAYLOAD}-byte payloads, tx -> rx on a bridge, ${MS} ms per rate, each capturer alone on its own replay; lost = arrived at rx's eth0 (netdev ingress counter) - seen`);
    for (const rate of RATES) {
      const ours = await replay(
        rate,
        () => lab.spawn('rx', fx('capture-loss.ts'), ['eth0', rx.ipv4, String(PORT)]),
        (c) => c.send({ cmd: 'stop' }),
      );
      const py = await replay(
        rate,
        () => lab.spawnCommand('rx', 'python3', [fx('packet_reader.py'), 'eth0', rx.ipv4, String(PORT)]),
        (c) => c.process.stdin?.write('stop\n'),
      );
      const lost = (x: { n: number }, seen: number) => (100 * (x.n - seen)) / x.n;
      const o = ours.r;
      const p = py.r;
      out(`  target ${rate / 1000}k/s: ours ${(ours.pps / 1000).toFixed(0)}k/s arrived ${ours.n}, seen ${String(o.seen)}, lost ${lost(ours, Number(o.seen)).toFixed(2)}% (kernel ring drops ${String(o.drops)}), ${Number(o.cpuMs).toFixed(0)} ms CPU (${((1000 * Number(o.cpuMs)) / Number(o.seen)).toFixed(1)} µs per frame seen); ` +
        `Python ${(py.pps / 1000).toFixed(0)}k/s arrived ${py.n}, seen ${String(p.seen)}, lost ${lost(py, Number(p.seen)).toFixed(2)}% (kernel drops ${String(p.kernelDrops)}), ${Number(p.cpuMs).toFixed(0)} ms CPU (${((1000 * Number(p.cpuMs)) / Number(p.seen)).toFixed(1)} µs per frame seen)`);
    }
    out('  anchor (the project figure for seed 003): the Python reader lost 10.7% at ~68k packets/s on 2 cores');
  } finally {
    await lab.destroy();
  }
}
