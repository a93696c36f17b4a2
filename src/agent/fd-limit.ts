// The agent's own open-files limit, for what a `continue` takeover can hold: each continued
// connection is two fds in the agent (the restored socket and its upstream connection). Read from
// /proc/self/limits (Node raises the soft limit to the hard one at start, so this is the hard one).
import { readFileSync } from 'node:fs';

/** fds the agent holds besides continued connections (captures, links, control, logs...), a generous estimate. */
export const FD_RESERVE = 1024;

/** The soft RLIMIT_NOFILE of this process, or undefined when /proc/self/limits cannot tell (unlimited, unreadable). */
export function openFilesLimit(): number | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
  return parseOpenFilesLimit(text);
}

/** The soft limit on the `Max open files` line of a /proc/PID/limits text; undefined when absent or unlimited. */
export function parseOpenFilesLimit(limits: string): number | undefined {
  const line = limits.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  return soft !== undefined && /^\d+$/.test(soft) ? Number(soft) : undefined;
}

/**
 * A warning when continuing `connections` (the shadows' followed connections, all peers) would
 * need more fds than `limit` leaves after FD_RESERVE; null otherwise.
 */
export function fdLimitWarning(connections: number, limit: number | undefined): string | null {
  if (limit === undefined || 2 * connections + FD_RESERVE <= limit) return null;
  return `continuing the ${connections} connection(s) followed needs about ${2 * connections} fds in this agent (each: the restored socket and its upstream), near or past its open-files limit of ${limit} (LimitNOFILE=): past it, upstream connections or restores would fail (EMFILE) and those connections would not be continued`;
}
