// The backup's takeover with recovery (seed 004 FIG. 13, method 425a): the backup stops
// mirroring (step 426), flushes its log (step 427), hands every record to the application so it
// rebuilds its state and applies what was outstanding (step 428), and comes out as the primary
// in the backup-only state (step 425, FIG. 11), where every commit is on its disk before it is
// acknowledged. The recovery signal to clients (step 429) is the request layer's job
// (src/reliable/reliable-server.ts sends RECOVERED to every client that connects after it).
//
// What triggers it: an explicit call, or MirrorWatch (mirror-watch.ts), which decides from
// heartbeats over the main and failsafe links and the mirror's link (steps 415-420, a link
// failure told from a primary failure: mirror-failure.ts) and calls takeOverFenced() below:
// the caller's `beforeTakeover` hook (fencing, the cluster store) runs first, or the takeover is
// refused unless `unsafeWithoutFencing` (never two primaries).
import { MirroredLog, type MirroredLogOptions } from './mirrored-log.js';
import type { MirrorBackup, PromotedBackup } from './mirror-backup.js';
import { scanLog } from './log-reader.js';
import { takeoverGuard, type TakeoverSafety } from './mirror-failure.js';
import { recordForkPoint } from './mirror-history.js';

export interface TakeOverOptions extends Pick<MirroredLogOptions, 'key' | 'node' | 'log' | 'incarnation' | 'checkpoint' | 'maxRecordBytes' | 'segmentBytes' | 'fileOps' | 'backup' | 'ackTimeoutMs' | 'keepaliveMs' | 'reconnect'> {
  /**
   * Called with every record of the log in LSN order, before `takeOver` resolves (step 428):
   * the application rebuilds its state from them. Records the backup's `apply` has already seen
   * (a hot standby: below `backup.appliedLsn`) are not replayed: pass the same application to
   * both, or an empty function when `apply` kept it current. `payload` is a view: copy what is
   * kept. A throw aborts the takeover (the log is closed again, the error rethrown).
   */
  replay: (lsn: number, payload: Buffer) => void;
  /** Why, for the refusal the old primary's connections get and for logs. Default 'explicit takeover'. */
  reason?: string;
  /** Passed to promote(): take over even from a primary still attached and heard within `quietMs` (default 1,000 ms). */
  force?: boolean;
  quietMs?: number;
}

/** The new primary and what its recovery took. */
export interface TakenOver {
  /** The log, open in the backup-only state (each commit durable here before its ack). */
  log: MirroredLog;
  /** What promote() reported: the log's extent and the primary it replaces. */
  promoted: PromotedBackup;
  /** Records replayed (from the backup's `appliedLsn`: the whole log without `apply`, the rest with it). */
  records: number;
  /** Milliseconds: stopping and flushing (426-427), reopening the log, replaying it (428), in all. */
  timings: { stopAndFlushMs: number; openMs: number; replayMs: number; totalMs: number };
}

/**
 * Throws RangeError / TypeError on options takeOver() would fail on after promoting: checked
 * first, since a promoted backup refuses its primary for good (a bad option must change nothing).
 */
function checkTakeOverOptions(backup: MirrorBackup, options: TakeOverOptions): void {
  if (typeof options.replay !== 'function') throw new TypeError('replay must be a function (lsn, payload) => void');
  MirroredLog.checkOptions({ ...options, dir: backup.dir, state: 'backup-only' });
  if ((options.log ?? 'default') !== backup.logName) throw new RangeError(`log ${JSON.stringify(options.log ?? 'default')}: this backup mirrors ${JSON.stringify(backup.logName)}`);
}

/**
 * Takes over from the primary `backup` mirrored (seed 004 FIG. 13, steps 426-428): stops
 * replication and refuses the old primary from now on (`MirrorBackup.promote()`), flushes the
 * backup's log, records the fork point (mirror-history.ts), opens the log as a `MirroredLog` in
 * the backup-only state (recovery: a torn tail cut, damage refused; with `backup`, the old
 * primary's mirror address, dialled until it returns and resyncs: steps 460-465), and calls
 * `options.replay` with every record so the application rebuilds its
 * state. Resolves once that is done: the caller then starts serving clients and sends the
 * recovery signal (step 429). `backup` stays open, refusing connections, until the caller
 * closes it (after the returned log, or before: they share nothing but the directory).
 *
 * Rejects at once, nothing changed, with RangeError / TypeError on bad options (those
 * `MirroredLog.open` checks, `replay` not a function, `log` not the backup's); otherwise with what promote() rejects with (MirrorError EMIRRORREFUSED: the primary is attached
 * and was heard within `quietMs`, and `force` is not set; EMIRRORCLOSED / EMIRRORFAILED; a flush
 * error), the log's errors at open (LogCorruptionError ELOGCORRUPT), RangeError on bad options,
 * or what `replay` throws (the new log is then closed).
 */
export async function takeOver(backup: MirrorBackup, options: TakeOverOptions): Promise<TakenOver> {
  checkTakeOverOptions(backup, options);
  const t0 = performance.now();
  const promoted = await backup.promote({ ...(options.reason !== undefined ? { reason: options.reason } : {}), ...(options.force !== undefined ? { force: options.force } : {}), ...(options.quietMs !== undefined ? { quietMs: options.quietMs } : {}) });
  const t1 = performance.now();
  const { replay, reason: _reason, force: _force, quietMs: _quiet, ...rest } = options;
  // The fork point, durable before the first record of this node's own: where the old primary,
  // returning as this node's backup, is cut back to (mirror-history.ts, step 465).
  await recordForkPoint(backup.dir, { lsn: promoted.nextLsn, prevCrc: promoted.lastCrc, node: options.node, previousPrimary: promoted.previousPrimary?.node ?? null, at: new Date().toISOString() });
  const log = await MirroredLog.open({ ...rest, dir: backup.dir, state: 'backup-only' });
  const t2 = performance.now();
  let records = 0;
  try {
    // Read up to the log's next LSN as opened: every record there is durable (promote flushed).
    const fromLsn = backup.appliedLsn;
    if (fromLsn < log.nextLsn) await scanLog(backup.dir, {
      fromLsn,
      toLsn: log.nextLsn,
      onRecord: (lsn, payload) => {
        records++;
        replay(lsn, payload);
      },
      ...(options.fileOps ? { fileOps: options.fileOps } : {}),
    });
  } catch (err) {
    await log.close().catch(() => {});
    throw err;
  }
  const t3 = performance.now();
  return { log, promoted, records, timings: { stopAndFlushMs: t1 - t0, openMs: t2 - t1, replayMs: t3 - t2, totalMs: t3 - t0 } };
}

/**
 * takeOver() made safe against two primaries (see mirror-failure.ts): refuses at once with
 * MirrorError EMIRRORUNFENCED (nothing changed) unless `options.beforeTakeover` is given or
 * `options.unsafeWithoutFencing` is true; awaits `beforeTakeover()` (fence the old primary, or
 * take the role in the cluster store) and only once it resolved calls takeOver(). A rejection
 * of the hook is rethrown and nothing is changed on the backup. Otherwise rejects as takeOver().
 */
export async function takeOverFenced(backup: MirrorBackup, options: TakeOverOptions & TakeoverSafety): Promise<TakenOver> {
  takeoverGuard(options);
  checkTakeOverOptions(backup, options); // before the hook fences anyone
  const { beforeTakeover, unsafeWithoutFencing: _unsafe, ...rest } = options;
  if (beforeTakeover) await beforeTakeover();
  return takeOver(backup, rest);
}
