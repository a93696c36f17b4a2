// File operations for the log tests: the real ones, counted, with faults injected on demand.
import { readdirSync } from 'node:fs';
import { nodeFileOps, type FileOps, type LogFile } from '../../src/log/file-ops.js';

export interface FaultPlan {
  /** The next write writes at most this many bytes, then the following one fails with `code`. */
  writeFails?: { afterBytes: number; code: string } | null;
  /** The next fdatasync fails with this code. */
  datasyncFails?: string | null;
  /** Truncate fails with this code. */
  truncateFails?: string | null;
}

export const errno = (code: string, syscall: string) => Object.assign(new Error(`${code}: injected, ${syscall}`), { code, syscall });

/** Real file ops, counting datasyncs and writes, failing as `plan` says (each fault fires once). */
export function faultyFileOps(plan: FaultPlan = {}): FileOps & { plan: FaultPlan; counts: { datasyncs: number; writes: number } } {
  const counts = { datasyncs: 0, writes: 0 };
  const wrap = (f: LogFile): LogFile => ({
    async write(data, position) {
      counts.writes++;
      const w = plan.writeFails;
      if (w) {
        if (w.afterBytes <= 0) {
          plan.writeFails = null;
          throw errno(w.code, 'write');
        }
        const n = await f.write(data.subarray(0, Math.min(data.length, w.afterBytes)), position);
        w.afterBytes -= n;
        return n;
      }
      return f.write(data, position);
    },
    async datasync() {
      counts.datasyncs++;
      if (plan.datasyncFails) {
        const code = plan.datasyncFails;
        plan.datasyncFails = null;
        throw errno(code, 'fdatasync');
      }
      return f.datasync();
    },
    async truncate(length) {
      if (plan.truncateFails) throw errno(plan.truncateFails, 'ftruncate');
      return f.truncate(length);
    },
    close: () => f.close(),
  });
  return {
    ...nodeFileOps,
    plan,
    counts,
    async open(path, how) {
      return wrap(await nodeFileOps.open(path, how));
    },
  };
}

/** The segment files in a log directory (its LOCK file and the like left out). */
export const segmentFiles = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.log'));
