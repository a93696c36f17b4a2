// Running another program to completion (nft, iptables): a promise over execFile that rejects
// with the command line and its stderr, for the agent's own helpers (net/rst-guard.ts,
// net/held-traffic.ts, net/network-lock.ts) and the lab alike.
import { execFile } from 'node:child_process';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs `cmd` with `args` (no shell), writing `input` to its stdin when given; resolves with its
 * output once it exits 0. Rejects with an Error naming the command line and its stderr (or the
 * spawn error's message), the execFile error as `cause`.
 */
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
