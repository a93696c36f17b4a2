// Thin promise wrappers over child processes, for the lab and the CLI's helpers (run itself is
// the agent's too: src/run-command.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { run } from '../run-command.js';

export { commandMissing, run, type ExecResult } from '../run-command.js';

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
