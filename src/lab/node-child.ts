// A process inside a namespace (usually Node) that talks JSON lines: commands on stdin, events on stdout.
// Lab fixtures (servers, clients, survivors) are such processes.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
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

  private nextReqId = 1;

  get pid(): number {
    return this.process.pid!;
  }

  /** Sends one command object as a JSON line. */
  send(command: Record<string, unknown>): void {
    this.process.stdin!.write(`${JSON.stringify(command)}\n`);
  }

  /**
   * One request to a fixture that answers with onRequests (src/lab/fixtures/args.ts): sends
   * `command` with a fresh reqId and resolves with its result's value; throws the fixture's
   * error message (`COMMAND: message`), or waitFor's after timeoutMs.
   */
  async request(command: Record<string, unknown>, timeoutMs = 15_000): Promise<any> {
    const reqId = this.nextReqId++;
    this.send({ ...command, reqId });
    const r = await this.waitFor('result', timeoutMs, (e) => e.reqId === reqId);
    if (!r.ok) throw new Error(`${String(command.cmd)}: ${String(r.message)}`);
    return r.value;
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

/** Spawns `node SCRIPT` in namespace ns (a TypeScript source runs bundled: bundledScript). */
export function spawnNode(ns: string, script: string, args: string[], env: Record<string, string> = {}): NodeChild {
  const nodeArgs = script.endsWith('.ts') ? [bundledScript(script), ...args] : [script, ...args];
  return spawnInNamespace(ns, process.execPath, nodeArgs, env);
}

const bundles = new Map<string, string>();

/**
 * A TypeScript script (run from the sources, as the tests do) compiled once per process (or once
 * per run of the test suite, below) by esbuild into one ES module, the project's code inlined and packages left to Node's resolution:
 * each start is then plain `node`, not tsx (its loader and a transform-cache lookup per source
 * file: ~0.3-0.5 s more per start on 2 cores, and labs start fixtures hundreds of times; in a TCG
 * guest far more). The bundle sits in build/ of the checkout (src/native.ts finds the package root
 * one directory above the module that holds it), named `<prefix><path of the source>.mjs`;
 * written aside and renamed, so a start never reads a half-written file. esbuild is a development
 * dependency: from dist/ the fixtures are .js and never come here. Returns the bundle's path.
 */
export function bundledScript(script: string, prefix = 'fixture-'): string {
  const known = bundles.get(`${prefix}${script}`);
  if (known) return known;
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
  const name = path.relative(root, path.resolve(root, script)).replace(/\.ts$/, '').replace(/[^A-Za-z0-9_-]+/g, '-');
  const out = path.join(root, 'build', `${prefix}${name}.mjs`);
  // Within one run of the test suite (its global setup names TKO_SUITE_DIR, a directory that
  // lives as long as the run) a bundle is made once, by the first test process that asks, and
  // marked there; the others start it as it is (the sources do not change during a run), which
  // spares each test file esbuild's start and the build (~0.1 s, ~0.3 s for the agent's).
  const suiteDir = process.env.TKO_SUITE_DIR;
  const made = suiteDir && existsSync(suiteDir) ? path.join(suiteDir, 'bundles', path.basename(out)) : undefined;
  if (!made || !existsSync(made) || !existsSync(out)) {
    const tmp = `${out}.${process.pid}.tmp`;
    mkdirSync(path.dirname(out), { recursive: true });
    const esbuild = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
    esbuild.buildSync({ entryPoints: [path.resolve(root, script)], outfile: tmp, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', logLevel: 'error' });
    renameSync(tmp, out);
    if (made) {
      mkdirSync(path.dirname(made), { recursive: true });
      writeFileSync(made, '');
    }
  }
  bundles.set(`${prefix}${script}`, out);
  return out;
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
