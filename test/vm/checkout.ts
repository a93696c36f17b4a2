// Which checkout a guest job ran. The job's wrapper (run-guest.ts) reports, from the directory
// the job then runs in, that directory (symlinks resolved) and the commit checked out there;
// runGuest compares the report with this checkout's and fails the run on a difference. A guest
// that ran another checkout (a fixed path, or this one hidden by the guest's own /tmp) says so
// instead of passing on code that was not under test.
import { execFileSync } from 'node:child_process';
import { realpathSync } from 'node:fs';

/** Shell line for the job wrapper: prints "TKO-CHECKOUT <dir> <commit, or none>". */
export const REPORT_CHECKOUT = `echo "TKO-CHECKOUT $(pwd -P) $(git -c safe.directory='*' rev-parse HEAD 2>/dev/null || echo none)"`;

/** What REPORT_CHECKOUT prints when run in `dir`: "<real path> <commit, or none>". */
export function checkoutOf(dir: string): string {
  let commit = 'none';
  try {
    commit = execFileSync('git', ['-c', 'safe.directory=*', 'rev-parse', 'HEAD'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    // not a git checkout (an unpacked tarball): the directory alone is compared
  }
  return `${realpathSync(dir)} ${commit}`;
}

/** Why the guest's report (undefined: none came) is not `expected`, or undefined when it is. */
export function checkoutMismatch(reported: string | undefined, expected: string): string | undefined {
  if (reported === undefined) return `the guest job did not report its checkout (expected ${expected})`;
  if (reported !== expected) return `the guest job ran checkout "${reported}", not this one, "${expected}"`;
  return undefined;
}
