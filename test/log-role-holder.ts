// Starts test/log-role-holder-child.ts (a process holding a log's primary role) and waits until
// it holds the role. Shared by the file-store unit test and the etcd lab test. The child runs as
// an esbuild bundle (bundledScript), not through tsx: ~0.3 s less per start.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundledScript } from '../src/lab/node-child.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'log-role-holder-child.ts');

export interface RoleHolderArgs {
  file?: string;
  etcd?: string[];
  prefix?: string;
  log: string;
  node: string;
  incarnation: bigint;
  leaseMs: number;
}

export interface RoleHolder {
  child: ChildProcess;
  revision: number;
  /** SIGKILL (a crash: the lease is not released, it runs out); resolves once the process exited. */
  kill(): Promise<void>;
}

/** Spawns the holder (pushed onto `children` for the caller's cleanup); rejects if it did not take the role within `timeoutMs`. */
export async function startRoleHolder(args: RoleHolderArgs, children: ChildProcess[], timeoutMs = 20_000): Promise<RoleHolder> {
  const child = spawn(process.execPath, [bundledScript(CHILD, 'test-'), JSON.stringify({ ...args, incarnation: args.incarnation.toString() })], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
  const first = await new Promise<{ held: boolean; revision?: number; error?: string }>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`the role holder did not answer within ${timeoutMs} ms (stderr: ${stderr})`)), timeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      resolve(JSON.parse(buf.slice(0, nl)) as { held: boolean; revision?: number; error?: string });
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the role holder exited (${code}) before holding the role: ${stderr}`));
    });
  });
  if (!first.held) throw new Error(`the role holder could not take the role: ${first.error}`);
  return {
    child,
    revision: first.revision!,
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}
