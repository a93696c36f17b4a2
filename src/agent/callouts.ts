// Callouts (seed 000): every executable in a directory runs for each event, with the event as
// arguments (its FAN line, split) and in the environment (TAKEOVER_EVENT as JSON, one
// TAKEOVER_<FIELD> per field). They run in parallel up to a limit, each bounded by a timeout
// (SIGKILL past it), and never hold up the agent: run() only queues. Past `maxQueued` waiting
// runs the oldest are dropped and counted, so a hung callout cannot grow memory without bound.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { constants } from 'node:fs';
import { access, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { printFan } from '../events/fan-line.js';
import type { ServiceEvent } from '../events/service-event.js';

export interface CalloutOptions {
  dir: string;
  timeoutMs: number;
  maxParallel: number;
  maxQueued?: number; // default 1000
}

export interface CalloutResult {
  file: string;
  event: ServiceEvent;
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  /** Spawn failure (ENOENT, EACCES...) */
  error?: string;
  elapsedMs: number;
}

export class CalloutRunner extends EventEmitter<{ result: [CalloutResult]; dropped: [{ file: string; event: ServiceEvent }] }> {
  private readonly queue: Array<{ file: string; event: ServiceEvent }> = [];
  private running = 0;
  private idleWaiters: Array<() => void> = [];
  dropped = 0;

  constructor(private readonly options: CalloutOptions) {
    super();
  }

  /** The executables in the directory, in name order (read at each event: add or remove at will). */
  async executables(): Promise<string[]> {
    const names = (await readdir(this.options.dir)).sort();
    const out: string[] = [];
    for (const n of names) {
      if (n.startsWith('.')) continue;
      const file = path.join(this.options.dir, n);
      const s = await stat(file).catch(() => undefined);
      if (!s?.isFile()) continue;
      if (await access(file, constants.X_OK).then(() => true, () => false)) out.push(file);
    }
    return out;
  }

  /** Queues one run of every callout for the event; resolves once they are queued. */
  async run(event: ServiceEvent): Promise<void> {
    let files: string[];
    try {
      files = await this.executables();
    } catch (err) {
      this.emit('result', { file: this.options.dir, event, code: null, signal: null, timedOut: false, error: (err as Error).message, elapsedMs: 0 });
      return;
    }
    const limit = this.options.maxQueued ?? 1000;
    for (const file of files) {
      this.queue.push({ file, event });
      while (this.queue.length > limit) {
        const old = this.queue.shift()!;
        this.dropped++;
        this.emit('dropped', old);
      }
    }
    this.pump();
  }

  /** Resolves when nothing is running or queued (for shutdown and tests). */
  idle(): Promise<void> {
    if (this.running === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private pump(): void {
    while (this.running < this.options.maxParallel && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      void this.exec(job.file, job.event).then((result) => {
        this.running--;
        this.emit('result', result);
        this.pump();
        if (this.running === 0 && this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  private exec(file: string, event: ServiceEvent): Promise<CalloutResult> {
    const started = performance.now();
    const env: Record<string, string> = { ...process.env, TAKEOVER_EVENT: JSON.stringify(event) } as Record<string, string>;
    for (const [k, v] of Object.entries(event)) env[`TAKEOVER_${k.toUpperCase()}`] = String(v);
    return new Promise((resolve) => {
      const child = spawn(file, printFan(event).split(' '), { env, stdio: 'ignore', detached: true });
      let timedOut = false;
      let error: string | undefined;
      // detached: a callout's own children are in its process group and die with it.
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }, this.options.timeoutMs);
      child.once('error', (err) => (error = err.message));
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ file, event, code, signal, timedOut, ...(error ? { error } : {}), elapsedMs: Math.round(performance.now() - started) });
      });
    });
  }
}
