// `BENCH=mirror`: commits of the mirrored log on loopback, normal against primary-only, same run:
// 10 concurrent appenders, each waiting for its commit before the next, 100-byte records.
//   normal        the backup is a child process (test/mirror-backup-child.ts, the one the kill
//                 test uses) on 127.0.0.1: a commit is acknowledged on the backup's ACK, both
//                 logs checkpoint (100 ms, 1,000 records, 1 MiB);
//   primary-only  nobody listens where the backup should be: each commit durable (fdatasync,
//                 group commit) before its ack.
// Bounded: 5,000 commits or 5 s per side, after 500 not counted. On tmpdir's disk (warns on tmpfs). No lab, no root.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MirroredLog } from '../src/log/mirrored-log.js';
import { freePort } from '../test/free-port.js';
import { APPENDERS, onTmpfs, PAYLOAD_BYTES, timedCommits, type CommitRun } from './commit-loop.js';

const KEY = Buffer.from('bench-mirror-key-0123456789abcdef');
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'mirror-backup-child.ts');

interface Run extends CommitRun {
  state: string;
}

async function run(log: MirroredLog): Promise<Run> {
  const payload = Buffer.alloc(PAYLOAD_BYTES, 0x61);
  // Warm-up (not counted): the code paths compiled, the first segment made.
  await Promise.all(Array.from({ length: APPENDERS }, async () => {
    for (let i = 0; i < 50; i++) await log.append(payload);
  }));
  const r = await timedCommits((p) => log.append(p));
  return { ...r, state: log.state };
}

export async function mirrorCommit(out: (s: string) => void): Promise<void> {
  const root = mkdtempSync(path.join(tmpdir(), 'bench-mirror-'));
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, path.join(root, 'b'), '0', KEY.toString('hex')], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const fsType = statfsSync(root).type;
    if (onTmpfs(root)) out(`mirror commit: WARNING ${root} is on tmpfs, where fdatasync costs nothing: set TMPDIR to a disk`);
    const port = await new Promise<number>((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const m = /\{"port":(\d+)/.exec(buf);
        if (m) resolve(Number(m[1]));
        if (buf.length > 4096) buf = buf.slice(-256); // its "held N" lines are not read here
      });
      child.once('exit', (code) => reject(new Error(`the backup child exited (${code})`)));
    });
    const normalLog = await MirroredLog.open({ dir: path.join(root, 'p'), backup: { host: '127.0.0.1', port }, key: KEY, node: 'a', log: 'orders' });
    const t0 = performance.now();
    while (normalLog.state !== 'normal' && performance.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 10));
    const normal = await run(normalLog);
    await normalLog.close();
    const aloneLog = await MirroredLog.open({ dir: path.join(root, 'q'), backup: { host: '127.0.0.1', port: await freePort() }, key: KEY, node: 'a', log: 'orders' });
    const alone = await run(aloneLog);
    await aloneLog.close();
    const line = (name: string, r: Run) =>
      `  ${name} (ended ${r.state}): ${(r.commits / r.seconds).toFixed(0)} commits/s (${r.commits} in ${r.seconds.toFixed(2)} s), latency p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`;
    out(`mirrored log commit on loopback, ${APPENDERS} appenders, ${PAYLOAD_BYTES}-byte records, on ${root} (fs type 0x${fsType.toString(16)}):`);
    out(line('normal: acknowledged on the backup\'s ACK (backup in another process)', normal));
    out(line('primary-only: durable here before the ack (group commit)', alone));
    out(`  ratio commits/s normal / primary-only = ${((normal.commits / normal.seconds) / (alone.commits / alone.seconds)).toFixed(2)}x; p50 primary-only / normal = ${(alone.p50 / normal.p50).toFixed(2)}x`);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    rmSync(root, { recursive: true, force: true });
  }
}
