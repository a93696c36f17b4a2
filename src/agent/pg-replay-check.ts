// The takeover's replay check for PostgreSQL sessions (config `continue.walCheck`, issue 12): a
// session's unanswered request is replayed on the promoted standby only when the dead primary
// cannot have committed it in WAL the standby holds (wal-arrivals.ts). Otherwise it is replayed
// read-only (pg-read-only-replay.ts: a read is answered, a write is refused by the standby and its
// connection reset) or, where that cannot be done, its connection is reset, exactly, with the
// reason, instead of applying the request twice.
import type { ReplayCheckResult, RestorePlan } from '../net/shadow/continue-connections.js';
import type { WalArrivals } from '../net/shadow/wal-arrivals.js';

export interface PgWalReplayCheckOptions {
  /** Replay what WAL cannot rule out read-only where the plan allows it (default true; config walCheck.readOnlyReplay). */
  readOnlyReplay?: boolean;
  /** The clock the capture's times are on (ms since the epoch). */
  nowMs?: () => number;
}

/**
 * The check, once the standby is promoted (`promoted` resolves: its WAL receiver is gone, so no
 * WAL arrives after). `noteLosses` asks the capture for losses it has not reported yet. Counts:
 * `replays` (sessions with an unanswered request), `refused`, `readOnly` (replayed read-only),
 * and `walBeforeMs`, how long before the decision the last WAL arrived (absent: none since the
 * capture started).
 */
export function pgWalReplayCheck(wal: WalArrivals, noteLosses: () => void, promoted: Promise<unknown>, options: PgWalReplayCheckOptions = {}): (restores: RestorePlan[]) => Promise<ReplayCheckResult> {
  const { readOnlyReplay = true, nowMs = Date.now } = options;
  return async (restores) => {
    await promoted;
    // Segments read from the ring meanwhile are taken before this runs (one turn of the loop).
    await new Promise((r) => setImmediate(r));
    noteLosses();
    const refused = new Map<string, string>();
    const readOnly = new Map<string, string>();
    let replays = 0;
    const now = nowMs();
    for (const p of restores) {
      if (p.goodbye || p.replay.length === 0) continue;
      replays++;
      const why = wal.verdict(p.unansweredSince, now);
      if (!why) continue;
      const client = `${p.client.address}|${p.client.port}`;
      if (readOnlyReplay && typeof p.readOnlyReplay === 'object') readOnly.set(client, why);
      else refused.set(client, `not replayed: ${why}${readOnlyReplay && typeof p.readOnlyReplay === 'string' ? `; nor read-only: ${p.readOnlyReplay}` : ''}`);
    }
    const counts: Record<string, number> = { replays, refused: refused.size, readOnly: readOnly.size };
    if (Number.isFinite(wal.lastWalMs)) counts.walBeforeMs = Math.round(now - wal.lastWalMs);
    return { refused, readOnly, counts };
  };
}
