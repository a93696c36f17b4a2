// How an instance's process ended, in words: for the agent's log and `takeover status`. Apart
// from instance-monitor.ts so that the CLI's status loads no more than it prints.
import type { ProcessExit } from '../monitor/supervisor.js';

/** "exit code 1", "killed by SIGKILL", or "process exited" when the status is not ours to know. */
export function describeExit(e: Pick<ProcessExit, 'code' | 'signal' | 'error'>): string {
  if (e.error) return `could not start: ${e.error}`;
  if (e.signal !== null) return `killed by ${e.signal}`;
  if (e.code !== null) return `exit code ${e.code}`;
  return 'process exited';
}
