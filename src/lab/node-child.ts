// A process inside a namespace (usually Node) that talks JSON lines: commands on stdin, events on stdout.
// Lab fixtures (servers, clients, survivors) are such processes.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { exited } from './exec.js';

export type LabEvent = Record<string, unknown> & { event: string };

export class NodeChild {
  readonly process: ChildProcess;
  readonly events: LabEvent[] = [];
  private readonly waiters: Array<{ match: (e: LabEvent) => boolean; resolve: (e: LabEvent) => void }> = [];
  private stderr = '';

  constructor(child: ChildProcess) {
    this.process = child;
    createInterface({ input: child.stdout! }).on('line', (line) => this.onLine(line));
    child.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-8192);
    });
  }

  get pid(): number {
    return this.process.pid!;
  }

  /** Sends one command object as a JSON line. */
  send(command: Record<string, unknown>): void {
    this.process.stdin!.write(`${JSON.stringify(command)}\n`);
  }

  /** Waits for the first event (already seen or future) named `name` that matches. */
  waitFor(name: string, timeoutMs = 10_000, match: (e: LabEvent) => boolean = () => true): Promise<LabEvent> {
    const pred = (e: LabEvent) => e.event === name && match(e);
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer);
        this.process.off('exit', onExit);
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
      };
      const waiter = {
        match: pred,
        resolve: (e: LabEvent) => {
          settle();
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        settle();
        reject(new Error(`no '${name}' event from pid ${this.pid} in ${timeoutMs} ms; events: ${JSON.stringify(this.events)}; stderr: ${this.stderr}`));
      }, timeoutMs);
      const onExit = () => {
        settle();
        reject(new Error(`pid ${this.pid} exited (${this.process.exitCode ?? this.process.signalCode}) before '${name}'; events: ${JSON.stringify(this.events)}; stderr: ${this.stderr}`));
      };
      this.waiters.push(waiter);
      this.process.once('exit', onExit);
    });
  }

  get stderrText(): string {
    return this.stderr;
  }

  async kill(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGKILL');
    await exited(this.process);
  }

  private onLine(line: string): void {
    let e: LabEvent;
    try {
      e = JSON.parse(line) as LabEvent;
    } catch {
      this.stderr += `[non-JSON stdout] ${line}\n`;
      return;
    }
    this.events.push(e);
    for (const w of [...this.waiters]) if (w.match(e)) w.resolve(e);
  }
}

/** Spawns any JSON-lines speaking command in namespace ns. */
export function spawnInNamespace(ns: string, cmd: string, args: string[], env: Record<string, string> = {}): NodeChild {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  return new NodeChild(child);
}

/** Spawns `node SCRIPT` in namespace ns (TypeScript sources run through tsx). */
export function spawnNode(ns: string, script: string, args: string[], env: Record<string, string> = {}): NodeChild {
  const nodeArgs = script.endsWith('.ts') ? ['--import', 'tsx', script, ...args] : [script, ...args];
  return spawnInNamespace(ns, process.execPath, nodeArgs, env);
}

/** Path of a lab fixture next to this file, as .ts when running from source, .js from dist. */
export function fixturePath(name: string): string {
  const here = new URL('.', import.meta.url);
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`fixtures/${name}${ext}`, here).pathname;
}

/** Wall-clock milliseconds with sub-ms precision, comparable across processes. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}
