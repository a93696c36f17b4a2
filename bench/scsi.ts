// SCSI in the test guest (qemu TCG, LIO over iSCSI): a PR IN round trip through our addon vs
// sg_persist run once per command (fence_scsi's way), and fencing a node end to end, ours vs the
// same four commands as sg_persist processes. Both run
// under TCG, so absolute times are slow; the ratio is the point. Installs sg3-utils if missing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { runGuest } from '../test/vm/run-guest.js';

export async function scsi(out: (s: string) => void): Promise<void> {
  if (!existsSync('/usr/bin/sg_persist')) {
    out('installing sg3-utils (apt-get) for the sg_persist baseline...');
    const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'sg3-utils'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, stdio: 'ignore' });
    if (r.status !== 0) throw new Error('apt-get install sg3-utils failed');
  }
  const run = await runGuest({ setup: ['tcm_loop', 'lio_iscsi'], job: 'exec node --import tsx bench/fixtures/scsi-bench.ts', timeoutMs: 300_000 });
  const pr = run.results.find((r) => r.bench === 'pr-in');
  const fence = run.results.find((r) => r.bench === 'fence');
  if (run.exitCode !== 0 || !pr || !fence) throw new Error(`scsi bench failed in the guest:\n${run.log.slice(-3000)}`);
  const f = (n: unknown) => Number(n).toFixed(2);
  out(`PR IN (READ KEYS) round trip in the guest (TCG): ours ${f(pr.oursMs)} ms (median of 200, one process), sg_persist ${f(pr.sgPersistMs)} ms (median of 20, a process each); ratio sg_persist / ours = ${Number(pr.ratio).toFixed(0)}x`);
  out(`fence a node end to end (read keys, PREEMPT AND ABORT, verify keys + reservation), one device: ours median ${f(fence.medianMs)} ms (${f(fence.minMs)}-${f(fence.maxMs)}, 10 runs), sg_persist processes ${f(fence.sgPersistMs)} ms; ratio ${Number(fence.ratio).toFixed(0)}x`);
}
