// The takeover's replay check for PostgreSQL sessions (config `continue.walCheck`, issue 12): a
// session's unanswered request is replayed on the promoted standby only when the dead primary
// cannot have committed it in WAL the standby holds (wal-arrivals.ts); otherwise its connection
// is reset, exactly, with the reason, instead of applying the request twice.
import type { ReplayCheckResult, RestorePlan } from '../net/shadow/continue-connections.js';
import type { WalArrivals } from '../net/shadow/wal-arrivals.js';

/**
 * The check, once the standby is promoted (`promoted` resolves: its WAL receiver is gone, so no
 * WAL arrives after). `noteLosses` asks the capture for losses it has not reported yet. Counts:
 * `replays` (sessions with an unanswered request), `refused`, and `walBeforeMs`, how long before
 * the decision the last WAL arrived (absent: none since the capture started). `nowMs`: the clock
 * the capture's times are on (ms since the epoch).
 */
export function pgWalReplayCheck(wal: WalArrivals, noteLosses: () => void, promoted: Promise<unknown>, nowMs: () => number = Date.now): (restores: RestorePlan[]) => Promise<ReplayCheckResult> {
  return async (restores) => {
    await promoted;
    // Segments read from the ring meanwhile are taken before this runs (one turn of the loop).
    await new Promise((r) => setImmediate(r));
    noteLosses();
    const refused = new Map<string, string>();
    let replays = 0;
    const now = nowMs();
    for (const p of restores) {
      if (p.goodbye || p.replay.length === 0) continue;
      replays++;
      const why = wal.verdict(p.unansweredSince, now);
      if (why) refused.set(`${p.client.address}|${p.client.port}`, `not replayed: ${why}`);
    }
    const counts: Record<string, number> = { replays, refused: refused.size };
    if (Number.isFinite(wal.lastWalMs)) counts.walBeforeMs = Math.round(now - wal.lastWalMs);
    return { refused, counts };
  };
}
