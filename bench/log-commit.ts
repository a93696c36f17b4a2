// `BENCH=log`: the mirrored log's commits on this machine's disk (a directory under tmpdir):
// 10 concurrent appenders, each waiting for its commit before the next (as clients do), with
// group commit (ours) against one fdatasync per record (the same writer with maxBatchRecords 1),
// same run, same directory's file system. Bounded in count and time. No lab, no root.
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LogWriter, type LogWriterOptions } from '../src/log/log-writer.js';

const APPENDERS = 10;
const MAX_COMMITS = 5000;
const MAX_MS = 5000;
const PAYLOAD_BYTES = 100;
const TMPFS_MAGIC = 0x01021994;

interface Run {
  commits: number;
  seconds: number;
  p50: number;
  p99: number;
  batches: number;
  datasyncs: number;
}

async function run(dir: string, options: Partial<LogWriterOptions>): Promise<Run> {
  const w = await LogWriter.open({ dir, ...options });
  const payload = Buffer.alloc(PAYLOAD_BYTES, 0x61);
  const latencies: number[] = [];
  const t0 = performance.now();
  let started = 0;
  await Promise.all(
    Array.from({ length: APPENDERS }, async () => {
      while (started < MAX_COMMITS && performance.now() - t0 < MAX_MS) {
        started++;
        const s = performance.now();
        await w.append(payload);
        latencies.push(performance.now() - s);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await w.close();
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  return { commits: latencies.length, seconds, p50: q(0.5), p99: q(0.99), batches: w.stats.batches, datasyncs: w.stats.datasyncs };
}

export async function logCommit(out: (s: string) => void): Promise<void> {
  const root = mkdtempSync(path.join(tmpdir(), 'bench-log-'));
  try {
    const fsType = statfsSync(root).type;
    if (fsType === TMPFS_MAGIC) out(`log commit: WARNING ${root} is on tmpfs, where fdatasync costs nothing: set TMPDIR to a disk`);
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
