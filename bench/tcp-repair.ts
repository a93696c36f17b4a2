// TCP_REPAIR restore per connection: ours (the addon, one by one on the JS thread and as a batch
// on a worker) vs the same steps from Python's socket module, same states, same run, same
// namespace. The restore alone: a whole migration (dump, restore, address move, gratuitous ARP)
// is not timed here.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = (name: string) => path.join(here, 'fixtures', name);
const out = (s: string) => process.stdout.write(`${s}\n`);
type Dist = { min: number; median: number; max: number };
const d = (x: Dist) => `${x.min.toFixed(0)} / ${x.median.toFixed(0)} / ${x.max.toFixed(0)} µs`;

export async function tcpRepair(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-repair-'));
  const lab = await Lab.create({ hosts: ['a'] });
  try {
    for (const [n, rounds] of [[1, 200], [1000, 1]] as const) {
      const file = path.join(dir, `states-${n}.json`);
      const ours = lab.spawn('a', fx('repair-loop.ts'), [String(n), file]);
      await ours.waitFor('dumped', 120_000);
      const py = await lab.spawnCommand('a', 'python3', [fx('repair_loop.py'), file, String(rounds)]).waitFor('result', 120_000);
      ours.send({ cmd: 'restore', rounds });
      const r = await ours.waitFor('result', 120_000);
      const sync = r.syncUs as Dist;
      const pyUs = py.us as Dist;
      out(`tcp repair restore, ${n} connection(s) (1000 bytes in each receive queue), min / median / max per connection: ours ${d(sync)}, Python same steps ${d(pyUs)}; ratio python / ours (median) = ${(pyUs.median / sync.median).toFixed(2)}x`);
      out(`  ours inside the addon (syscalls only, without the state check and conversion): ${d(r.addonUs as Dist)}`);
      out(`  ours as one batch on a worker: ${(r.batchUsPerConnection as number).toFixed(0)} µs per connection (${String(r.failed)} failed)`);
    }
  } finally {
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}
