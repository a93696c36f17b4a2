// Thin promise wrappers over child processes, for the lab and the CLI's helpers.
import { execFile, spawn, type ChildProcess } from 'node:child_process';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; rejects with the command line and its stderr on failure. */
export function run(cmd: string, args: string[], input?: string): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const e = new Error(`${cmd} ${args.join(' ')} failed: ${stderr.trim() || err.message}`);
        (e as Error & { cause?: unknown }).cause = err;
        reject(e);
      } else {
        resolve({ stdout, stderr });
      }
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Whether run() failed because the command is not installed (spawn ENOENT), not because it refused. */
export function commandMissing(err: unknown): boolean {
  return (err as { cause?: { code?: unknown } }).cause?.code === 'ENOENT';
}

/** Like run() but never rejects: for teardown, where every step must be attempted. */
export async function runQuiet(cmd: string, args: string[]): Promise<boolean> {
  try {
    await run(cmd, args);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once the child has exited (immediately if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export { spawn };
