// The takeover's replay checks for PostgreSQL sessions (config `continue.walCheck` and
// `continue.unproven`, issue 12). A session's unanswered request may have been committed by the
// dead primary, its reply lost with it: replayed as it was, it could apply twice. With walCheck it
// is replayed as it was only when the dead primary cannot have committed it in WAL the standby
// holds (wal-arrivals.ts); without, nothing here can tell. What cannot be ruled out is unproven:
// replayed read-only (pg-read-only-replay.ts: a read is answered, a write is refused by the
// promoted standby and its connection reset), or, where that cannot be done or `unproven` says
// `reset`, its connection is reset, exactly, with the reason.
import type { ReplayCheckResult, RestorePlan } from '../net/shadow/continue-connections.js';
import type { WalArrivals } from '../net/shadow/wal-arrivals.js';

/** What becomes of an unproven replay (config continue.unproven, `as-sent` aside: then no check runs without walCheck). */
export type Unproven = 'read-only' | 'reset';

export interface PgWalReplayCheckOptions {
  unproven?: Unproven;
  /** The clock the capture's times are on (ms since the epoch). */
  nowMs?: () => number;
}

/**
 * The check with walCheck, once the standby is promoted (`promoted` resolves: its WAL receiver is
 * gone, so no WAL arrives after). `noteLosses` asks the capture for losses it has not reported
 * yet. Counts: `replays` (sessions with an unanswered request), `refused`, `readOnly` (replayed
 * read-only), and `walBeforeMs`, how long before the decision the last WAL arrived (absent: none
 * since the capture started).
 */
export function pgWalReplayCheck(wal: WalArrivals, noteLosses: () => void, promoted: Promise<unknown>, options: PgWalReplayCheckOptions = {}): (restores: RestorePlan[]) => Promise<ReplayCheckResult> {
  const { unproven = 'read-only', nowMs = Date.now } = options;
  return async (restores) => {
    await promoted;
    // Segments read from the ring meanwhile are taken before this runs (one turn of the loop).
    await new Promise((r) => setImmediate(r));
    noteLosses();
    const now = nowMs();
    const result = decide(restores, unproven, (p) => wal.verdict(p.unansweredSince, now));
    if (Number.isFinite(wal.lastWalMs)) result.counts!.walBeforeMs = Math.round(now - wal.lastWalMs);
    return result;
  };
}

/**
 * The check without walCheck (a mirror or a stream alone): every unanswered request is unproven.
 * Decides once `promoted` resolves (a read-only replay runs on the promoted server). Counts as
 * pgWalReplayCheck's.
 */
export function pgUnprovenReplayCheck(promoted: Promise<unknown>, unproven: Unproven): (restores: RestorePlan[]) => Promise<ReplayCheckResult> {
  return async (restores) => {
    await promoted;
    return decide(restores, unproven, () => 'nothing here tells whether the dead primary committed it (no walCheck)');
  };
}

/** Sorts the plans with a replay by `why` (null: proven, replayed as it was). */
function decide(restores: RestorePlan[], unproven: Unproven, why: (p: RestorePlan) => string | null): ReplayCheckResult {
  const refused = new Map<string, string>();
  const readOnly = new Map<string, string>();
  let replays = 0;
  for (const p of restores) {
    if (p.goodbye || p.replay.length === 0) continue;
    replays++;
    const reason = why(p);
    if (!reason) continue;
    const client = `${p.client.address}|${p.client.port}`;
    if (unproven === 'read-only' && typeof p.readOnlyReplay === 'object') readOnly.set(client, reason);
    else refused.set(client, `not replayed: ${reason}${unproven === 'read-only' && typeof p.readOnlyReplay === 'string' ? `; nor read-only: ${p.readOnlyReplay}` : ''}`);
  }
  return { refused, readOnly, counts: { replays, refused: refused.size, readOnly: readOnly.size } };
}
