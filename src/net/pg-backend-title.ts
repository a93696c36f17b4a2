// What a PostgreSQL backend is doing, read from its process title (/proc/PID/cmdline), the
// barrier of a PostgreSQL planned switchover (agent/switchover-primary.ts, barrier 'pg-idle'):
// with the service locked and every receive queue read, a backend whose title says `idle` (or
// `idle in transaction`, `idle in transaction (aborted)`) has answered everything it read and
// waits for its client; any other activity (a command tag, `BIND`, `authentication`, a
// ` waiting` suffix for a lock) is still at work. PostgreSQL writes the title as
// `postgres: [CLUSTER: ]USER DATABASE HOST(PORT) ACTIVITY` (src/backend/utils/misc/ps_status.c,
// `update_process_title`, on by default on Linux) over its argv, padded with NULs. The title
// is set just before the ReadyForQuery is written, so the backup still checks each session's
// replies against its shadow (net/switchover-plans.ts). Pure; the read is the caller's.

/** A backend's title, parsed: its activity and whether it waits for its client. */
export type PgBackendActivity =
  | { kind: 'idle'; activity: string }
  | { kind: 'busy'; activity: string }
  /** A WAL sender: a standby's (or a base backup's) replication connection, not a client session. */
  | { kind: 'walsender'; activity: string }
  /** The process is not a PostgreSQL backend (another server holds the socket), or its title says nothing. */
  | { kind: 'unknown'; title: string };

const IDLE = /^idle(?: in transaction(?: \(aborted\))?)?$/;
/** A WAL sender's title: `postgres: [CLUSTER: ]walsender USER [DATABASE ]HOST(PORT) STATE`. */
const WALSENDER = /^postgres: (?:.*?: )?walsender (.*)$/s;
/** A client backend's title: `postgres: `, an optional cluster name, user, database, then `host(port) ` or `[local] `. */
const BACKEND = /^postgres: (?:.*?: )?\S+ \S+ (?:\S+\(\d+\)|\[local\])(?: (.*))?$/s;

/** Parses a /proc/PID/cmdline (bytes as read; NUL padding dropped). Pure. */
export function pgBackendActivity(cmdline: Buffer | string): PgBackendActivity {
  const raw = typeof cmdline === 'string' ? cmdline : cmdline.toString('utf8');
  const nul = raw.indexOf('\0');
  const title = (nul < 0 ? raw : raw.slice(0, nul)).trimEnd();
  const w = WALSENDER.exec(title);
  if (w) return { kind: 'walsender', activity: w[1]!.slice(0, 120) };
  const m = BACKEND.exec(title);
  const activity = m?.[1]?.trim();
  if (!m || !activity) return { kind: 'unknown', title: title.slice(0, 120) };
  return IDLE.test(activity) ? { kind: 'idle', activity } : { kind: 'busy', activity };
}
