// The log's fork points, kept beside its segments (as PostgreSQL keeps a timeline's history):
// each LSN at which this node took over as primary (seed 004 FIG. 13, takeOver()). Below a fork
// point this node's log is a copy of the primary it mirrored; from it on the records are its own.
// A returning primary (seed 004 step 465) may hold records past that point that the new primary
// never received: they were never acknowledged by the mirror (in the normal state a commit is
// acknowledged only once the backup holds it, and promote() flushed everything it held), so it
// cuts its log back to the fork point and mirrors the new primary from there. The chain over every
// record below the fork point (log-chain.ts, computed from each log, not stored here) is checked
// on both sides first, so a log that differs earlier is never "resynchronised" into a mixture:
// that is refused as divergence.
//
// The file is small JSON, replaced atomically (written beside, fdatasync'd, renamed, the directory
// fsync'd), and read at open; a damaged one is an error, never an empty history.
import { open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { MirrorError } from './mirror-errors.js';
import { nodeFileOps } from './file-ops.js';

/** The history's file name in the log directory (not a segment name: scans skip it). */
export const HISTORY_FILE = 'mirror-history.json';

/** One takeover: this node's records start at `lsn`. */
export interface ForkPoint {
  /** The first LSN this node wrote as primary (the promoted backup's held LSN). */
  lsn: number;
  /**
   * CRC32C of record `lsn - 1`'s payload (0 when `lsn` is the log's first LSN): for the operator
   * reading the file; the resync compares the chain over the records below `lsn` instead.
   */
  prevCrc: number;
  /** The node that took over, and the primary it replaced (null when none had attached). */
  node: string;
  previousPrimary: string | null;
  /** When (ISO 8601). */
  at: string;
}

const forkPointSchema = z.object({
  lsn: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  prevCrc: z.number().int().min(0).max(0xffffffff),
  node: z.string().min(1).max(64),
  previousPrimary: z.string().min(1).max(64).nullable(),
  at: z.string(),
});
const historySchema = z.object({ version: z.literal(1), forks: z.array(forkPointSchema) });

/**
 * The fork points recorded in `dir`, oldest first ([] when the file is absent). Rejects with
 * MirrorError EMIRRORHISTORY when the file is not a valid history (what is wrong, where), or a
 * read's system error.
 */
export async function readForkPoints(dir: string): Promise<ForkPoint[]> {
  const file = path.join(dir, HISTORY_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new MirrorError('EMIRRORHISTORY', `${file} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const r = historySchema.safeParse(parsed);
  if (!r.success) throw new MirrorError('EMIRRORHISTORY', `${file}: ${r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ')}`);
  for (let i = 1; i < r.data.forks.length; i++) {
    if (r.data.forks[i]!.lsn < r.data.forks[i - 1]!.lsn) throw new MirrorError('EMIRRORHISTORY', `${file}: fork ${i} at LSN ${r.data.forks[i]!.lsn} is below the one before it`);
  }
  return r.data.forks;
}

/** Replaces the history in `dir` with `forks`, durably (write, fdatasync, rename, fsync the directory). */
export async function writeForkPoints(dir: string, forks: ForkPoint[]): Promise<void> {
  const file = path.join(dir, HISTORY_FILE);
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(`${JSON.stringify({ version: 1, forks }, null, 1)}\n`);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  await nodeFileOps.syncDir(dir);
}

/** Adds a fork point (a takeover at `fork.lsn`), dropping any recorded at or past it. */
export async function recordForkPoint(dir: string, fork: ForkPoint): Promise<void> {
  const forks = (await readForkPoints(dir)).filter((f) => f.lsn < fork.lsn);
  await writeForkPoints(dir, [...forks, fork]);
}

/**
 * Forgets fork points past `lsn` (the log was cut back to `lsn`: records from there on are
 * another primary's now, so this node's own history past it no longer describes its log).
 */
export async function forgetForkPointsAfter(dir: string, lsn: number): Promise<void> {
  const forks = await readForkPoints(dir);
  const kept = forks.filter((f) => f.lsn <= lsn);
  if (kept.length !== forks.length) await writeForkPoints(dir, kept);
}

/**
 * Where a backup whose last record differs from the primary's (or which holds records past the
 * primary's end) may resume after cutting its log: the latest fork point strictly below the
 * backup's held LSN and at or below the primary's next LSN, which the backup's log reaches past
 * its first LSN (it must hold the record below, to compare its CRC). Null when there is none:
 * the logs differ before anything this node wrote, which no cut repairs (divergence).
 */
export function resyncPoint(forks: readonly ForkPoint[], backup: { firstLsn: number; heldLsn: number }, primaryNextLsn: number): ForkPoint | null {
  for (let i = forks.length - 1; i >= 0; i--) {
    const f = forks[i]!;
    if (f.lsn < backup.heldLsn && f.lsn <= primaryNextLsn && f.lsn >= backup.firstLsn) return f;
  }
  return null;
}
