// What output commit costs a service (issue 12): request/reply round trips from a client on c to
// an echo server on a, across the lab's learning bridge: the baseline (no hold), the hold with no
// backup following (the queues alone), and the hold with b following a's segment stream (each
// reply waits for b's acknowledgement). The same work on each side: 2,000 sequential 16-byte
// round trips on one connection (p50/p99), then 8 connections echoing back to back for 2 s.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = path.join(here, 'fixtures', 'output-commit-node.ts');
const PORT = 7310;
type Side = 'baseline' | 'queues only' | 'held for b';
interface Result { rttUs: { p50: number; p99: number; max: number }; busyPerSecond: number }

export async function outputCommit(out: (s: string) => void): Promise<void> {
  const lab = await Lab.create({ hosts: ['a', 'b', 'c'] });
  try {
    const a = lab.host('a').ipv4;
    const results = new Map<Side, Result>();
    for (const side of ['baseline', 'queues only', 'held for b'] as const) {
      const primary = lab.spawn('a', fx, ['--role', 'primary', '--address', a, '--port', String(PORT), ...(side === 'baseline' ? [] : ['--hold', '1'])]);
      await primary.waitFor('listening', 20_000);
      const backup = side === 'held for b' ? lab.spawn('b', fx, ['--role', 'backup', '--primary', a, '--port', String(PORT)]) : undefined;
      if (backup && !(await backup.waitFor('following', 20_000)).connected) throw new Error('output-commit bench: b never followed a\'s stream');
      const r = await lab.spawn('c', fx, ['--role', 'client', '--address', a, '--port', String(PORT)]).waitFor('result', 60_000);
      results.set(side, r as unknown as Result);
      await backup?.kill();
      primary.process.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300)); // its rules removed
      await primary.kill();
    }
    const f = (n: number) => (n / 1000).toFixed(3);
    for (const [side, r] of results) out(`output commit, ${side}: round trip p50 ${f(r.rttUs.p50)} ms, p99 ${f(r.rttUs.p99)} ms, max ${f(r.rttUs.max)} ms; 8 busy connections ${Math.round(r.busyPerSecond)} round trips/s`);
    const base = results.get('baseline')!;
    const held = results.get('held for b')!;
    out(`output commit: round trip p50 held / baseline = ${(held.rttUs.p50 / base.rttUs.p50).toFixed(2)}x; busy throughput baseline / held = ${(base.busyPerSecond / held.busyPerSecond).toFixed(2)}x`);
  } finally {
    await lab.destroy();
  }
}
