// A process's exit, the instant it happens (pidfd + uv_poll in the addon): the first building
// block of the process monitor. No polling interval, and no confusion with a reused pid.
import { native } from '../native.js';

export class ProcessExitWatch implements Disposable {
  /** Resolves with the wall-clock time (ms since the epoch) at which the exit was seen. */
  readonly exited: Promise<number>;
  private readonly watch: { start(onExit: (timeMs: number) => void): void; close(): void };

  /** Throws a NativeError (ESRCH) when no such process exists. */
  constructor(readonly pid: number) {
    this.watch = new native.ProcessWatch(pid);
    this.exited = new Promise((resolve) => this.watch.start(resolve));
  }

  /** Stops watching (the promise then never settles) and closes the pidfd; idempotent. */
  close(): void {
    this.watch.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
