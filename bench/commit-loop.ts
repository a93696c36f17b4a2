// The commit loop the log benches time (BENCH=log, BENCH=mirror): 10 concurrent appenders, each
// waiting for its commit before the next (as clients do), 100-byte records, bounded by 5,000
// commits or 5 s; and the tmpfs check (fdatasync costs nothing there, so the numbers would lie).
import { statfsSync } from 'node:fs';

export const APPENDERS = 10;
export const MAX_COMMITS = 5000;
export const MAX_MS = 5000;
export const PAYLOAD_BYTES = 100;
const TMPFS_MAGIC = 0x01021994;

export interface CommitRun {
  commits: number;
  seconds: number;
  /** Commit latency, ms. */
  p50: number;
  p99: number;
}

/** Runs `append` from APPENDERS loops until MAX_COMMITS were started or MAX_MS passed. */
export async function timedCommits(append: (payload: Buffer) => Promise<unknown>): Promise<CommitRun> {
  const payload = Buffer.alloc(PAYLOAD_BYTES, 0x61);
  const latencies: number[] = [];
  const t0 = performance.now();
  let started = 0;
  await Promise.all(
    Array.from({ length: APPENDERS }, async () => {
      while (started < MAX_COMMITS && performance.now() - t0 < MAX_MS) {
        started++;
        const s = performance.now();
        await append(payload);
        latencies.push(performance.now() - s);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  return { commits: latencies.length, seconds, p50: q(0.5), p99: q(0.99) };
}

/** Whether `dir` is on tmpfs. */
export function onTmpfs(dir: string): boolean {
  return Number(statfsSync(dir).type) === TMPFS_MAGIC;
}
