// One writer per log directory: an exclusive flock(2) on `<dir>/LOCK`, held while a LogWriter
// (or a cut) has the log open. Two writers on one log would interleave their records and damage
// it, and a mirrored log invites exactly that mistake: a MirrorBackup and a MirroredLog pointed at
// the same directory, a node restarted while its old process lingers, a takeover run twice. The
// kernel releases the lock when its fd closes or the process dies (however it dies), so a crash
// never leaves a stale lock: recovery can always proceed. Readers (scanLog, readLog) take none.
// (libuv opens every file O_CLOEXEC: a child process never inherits the lock.)
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { native } from '../native.js';
import { LogWriterError } from './log-errors.js';

/** The lock file's name in the log directory (not a segment name: scans skip it). */
export const LOCK_FILE = 'LOCK';

/** A held directory lock; `release()` once (closing the fd drops the lock). */
export class LogDirLock {
  private constructor(
    private readonly fh: FileHandle,
    readonly dir: string,
  ) {}

  /**
   * Takes the lock of the log in `dir` (which must exist) for `holder` (what holds it, written in
   * the file for the next one's error message). Never waits. Rejects with LogWriterError
   * ELOGLOCKED naming the holder when another open file holds it (this process or another),
   * or a system error of the open or flock.
   */
  static async acquire(dir: string, holder: string): Promise<LogDirLock> {
    const file = path.join(dir, LOCK_FILE);
    const fh = await open(file, constants.O_RDWR | constants.O_CREAT, 0o644);
    try {
      if (!native.tryLockExclusive(fh.fd)) {
        const who = (await fh.readFile('utf8').catch(() => '')).trim();
        throw new LogWriterError('ELOGLOCKED', `the log in ${dir} is open for writing elsewhere${who ? ` (${who})` : ''}: one writer per log (flock on ${file})`);
      }
      await fh.truncate(0);
      await fh.write(`pid ${process.pid}: ${holder}, since ${new Date().toISOString()}\n`, 0);
      return new LogDirLock(fh, dir);
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
  }

  /** Drops the lock (closes its fd). */
  release(): Promise<void> {
    return this.fh.close();
  }
}
