// `BENCH=log`: the mirrored log's commits on this machine's disk (a directory under tmpdir):
// 10 concurrent appenders, each waiting for its commit before the next (as clients do), with
// group commit (ours) against one fdatasync per record (the same writer with maxBatchRecords 1),
// same run, same directory's file system. Bounded in count and time. No lab, no root.
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LogWriter, type LogWriterOptions } from '../src/log/log-writer.js';
import { APPENDERS, onTmpfs, PAYLOAD_BYTES, timedCommits, type CommitRun } from './commit-loop.js';

interface Run extends CommitRun {
  batches: number;
  datasyncs: number;
}

async function run(dir: string, options: Partial<LogWriterOptions>): Promise<Run> {
  const w = await LogWriter.open({ dir, ...options });
  const r = await timedCommits((payload) => w.append(payload));
  await w.close();
  return { ...r, batches: w.stats.batches, datasyncs: w.stats.datasyncs };
}

export async function logCommit(out: (s: string) => void): Promise<void> {
  const root = mkdtempSync(path.join(tmpdir(), 'bench-log-'));
  try {
    const fsType = statfsSync(root).type;
    if (onTmpfs(root)) out(`log commit: WARNING ${root} is on tmpfs, where fdatasync costs nothing: set TMPDIR to a disk`);
    const line = (name: string, r: Run) =>
      `  ${name}: ${(r.commits / r.seconds).toFixed(0)} commits/s (${r.commits} in ${r.seconds.toFixed(2)} s), latency p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms; ${r.batches} batches (${(r.commits / r.batches).toFixed(1)} records each), ${r.datasyncs} fdatasyncs`;
    const base = await run(path.join(root, 'base'), { sync: 'each-commit', maxBatchRecords: 1 });
    const ours = await run(path.join(root, 'ours'), { sync: 'each-commit' });
    out(`log commit, ${APPENDERS} appenders, ${PAYLOAD_BYTES}-byte records, durable before ack (each-commit), on ${root} (fs type 0x${fsType.toString(16)}):`);
    out(line('one fdatasync per record', base));
    out(line('ours, group commit', ours));
    out(`  ratio commits/s ours / per-record = ${((ours.commits / ours.seconds) / (base.commits / base.seconds)).toFixed(2)}x; p99 per-record / ours = ${(base.p99 / ours.p99).toFixed(2)}x`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
