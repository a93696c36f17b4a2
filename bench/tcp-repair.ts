// TCP_REPAIR restore per connection: ours (the addon, one by one on the JS thread and as a batch
// on a worker) vs the same steps from Python's socket module, same states, same run, same
// namespace, at 1, 1,000 and 10,000 connections. The restore alone is compared; a whole
// migration (dump, restore, address move, gratuitous ARP) is not timed here, but the anchor's
// Python migration of one socket (the project's anchor figure, 0.62 ms median) is printed next to ours'
// dump + restore per connection. The clients live in a process of their own (fd limit: see the
// fixture).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = (name: string) => path.join(here, 'fixtures', name);
const out = (s: string) => process.stdout.write(`${s}\n`);
type Dist = { min: number; median: number; max: number };
/** The anchor figure: TCP_REPAIR migration of one socket + IP move + gratuitous ARP (Python), median. */
const ANCHOR_MIGRATION_US = 620;
const d = (x: Dist) => `${x.min.toFixed(0)} / ${x.median.toFixed(0)} / ${x.max.toFixed(0)} µs`;

export async function tcpRepair(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-repair-'));
  const lab = await Lab.create({ hosts: ['a'] });
  try {
    for (const [n, rounds] of [[1, 200], [1000, 1], [10_000, 1]] as const) {
      const file = path.join(dir, `states-${n}.json`);
      const t0 = performance.now();
      const ours = lab.spawn('a', fx('repair-loop.ts'), [String(n), file]);
      const dumped = await ours.waitFor('dumped', 120_000);
      const py = await lab.spawnCommand('a', 'python3', [fx('repair_loop.py'), file, String(rounds)]).waitFor('result', 120_000);
      ours.send({ cmd: 'restore', rounds });
      const r = await ours.waitFor('result', 120_000);
      const sync = r.syncUs as Dist;
      const pyUs = py.us as Dist;
      out(`tcp repair restore, ${n} connection(s) (1000 bytes in each receive queue), min / median / max per connection: ours ${d(sync)}, Python same steps ${d(pyUs)}; ratio python / ours (median) = ${(pyUs.median / sync.median).toFixed(2)}x`);
      out(`  ours inside the addon (syscalls only, without the state check and conversion): ${d(r.addonUs as Dist)}`);
      out(`  ours as one batch on a worker: ${(r.batchUsPerConnection as number).toFixed(0)} µs per connection, ${(r.batchMs as number).toFixed(1)} ms for all ${n} (${String(r.failed)} failed)`);
      const dump = r.dumpUs as Dist; // each restored socket's dump (as many samples as restores)
      const perConn = dump.median + sync.median;
      out(`  vs the anchor (Python migration of one socket: dump + restore + address move + gratuitous ARP, median ${ANCHOR_MIGRATION_US} µs): ours dump ${dump.median.toFixed(0)} + restore ${sync.median.toFixed(0)} µs per connection (medians, JS thread), anchor / ours = ${(ANCHOR_MIGRATION_US / perConn).toFixed(1)}x; all ${n}: anchor ${((ANCHOR_MIGRATION_US * n) / 1000).toFixed(1)} ms one by one, ours dump (each, JS thread) + batch restore ${((dumped.dumpMs as number) + (r.batchMs as number)).toFixed(1)} ms (the address move and ARP, once for all, not included on our side)`);
      out(`  (this size took ${((performance.now() - t0) / 1000).toFixed(1)} s with its set-up)`);
    }
  } finally {
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}
