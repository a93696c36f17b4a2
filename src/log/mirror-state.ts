// The mirrored log's states on the primary (seed 004, FIG. 2, 9 and 11) and what moves it between
// them: pure, no I/O, no clock. MirroredLog feeds it the link's events and applies what a
// transition says (the writer's sync policy; which rule acknowledges a commit).
//
//   normal         the backup is attached and holds every record acknowledged so far: a commit
//                  is acknowledged when the backup's ACK covers it (method 200, steps 250-270);
//                  the local log checkpoints by time, count or bytes (paragraph [0036]).
//   catching-up    the backup is attached but still receiving what it lacks (from disk, then
//                  memory); it counts as primary-only for acknowledgement and flushing: the
//                  backup's copy is not yet a copy of everything acknowledged.
//   primary-only   no backup (never attached, link lost, refused): a commit is acknowledged when
//                  it is durable on the primary's disk, every record flushed (method 300,
//                  steps 340-360). Leaving normal flushes what waits in RAM at once (as the
//                  backup does at steps 425/427 on leaving normal).
//   backup-only    the seed's third state (method 400): a former backup that took over
//                  (takeover.ts opens its MirroredLog in it); every commit durable here before
//                  its ack. The takeover itself is MirrorWatch's decision, not this table's. When
//                  the old primary returns (step 460) and attaches as this node's backup, after
//                  cutting what it held past the fork point (mirror-history.ts), it catches up
//                  and the normal state resumes with the roles swapped (step 465); losing it
//                  again is primary-only, as for any primary.
//
// Catching-up ends when the backup's ACK covers every record already acknowledged to a caller
// (`ackedLsn`), not when it equals the primary's next LSN at some instant: under a steady flow
// of appends the latter may never hold at the moment an ACK arrives, while the former is exactly
// the normal state's promise (every acknowledged commit is on the backup). Appends not yet
// acknowledged then wait for the backup's ACK, as in normal. For that ACK to come under a
// steady flow of appends, MirroredLog stops acknowledging on local durability alone from a
// switch point on (once what is left to send fits in one catch-up chunk): see its `switchAt`.
import type { SyncPolicy } from './log-writer.js';

export type MirrorState = 'normal' | 'catching-up' | 'primary-only' | 'backup-only';

/** The state a primary opens in: no backup attached yet. */
export const INITIAL_MIRROR_STATE: MirrorState = 'primary-only';

/** Why a link to the backup ended. */
export type LinkLossReason =
  /** The socket closed or failed (the backup died, the network broke). */
  | 'closed'
  /** No ACK within ackTimeoutMs of a frame sent (the backup or the link hangs). */
  | 'ack-timeout'
  /** A frame failed its HMAC (EMIRRORAUTH). */
  | 'auth'
  /** A frame broke the protocol (EMIRRORPROTO). */
  | 'protocol'
  /** The primary refused the backup in its START (divergence, another log...). */
  | 'refused'
  /** The mirrored log is closing. */
  | 'closing';

export type MirrorEvent =
  /** The primary sent an accepting START: the backup receives from `fromLsn` on. */
  | { type: 'backup-attached'; fromLsn: number }
  /**
   * An ACK: the backup holds every record below `heldLsn`; every record below `ackedLsn` has
   * been acknowledged to its caller (by either rule).
   */
  | { type: 'backup-ack'; heldLsn: number; ackedLsn: number }
  | { type: 'link-lost'; reason: LinkLossReason };

/** How a commit is acknowledged in a state. */
export type AckRule =
  /** When the backup's ACK covers its LSN (its record is in the backup's memory). */
  | 'backup-holds'
  /** When it is durable on the primary's disk (fdatasync). */
  | 'locally-durable';

export interface MirrorTransition {
  from: MirrorState;
  to: MirrorState;
  changed: boolean;
  /** The writer's policy in the new state (set it when `changed`). */
  sync: SyncPolicy;
  /**
   * Leaving normal: flush what waits in RAM now (seed steps 425/427) before acknowledging by
   * local durability; `LogWriter.setSync('each-commit')` does it.
   */
  flushNow: boolean;
  /** The event does not apply in this state (a programming error upstream, or backup-only). */
  ignored: boolean;
  why: string;
}

/** How commits are acknowledged in `state`. */
export function ackRuleOf(state: MirrorState): AckRule {
  return state === 'normal' ? 'backup-holds' : 'locally-durable';
}

/** The local writer's policy in `state`: checkpoints in normal, every commit flushed otherwise. */
export function syncPolicyOf(state: MirrorState): SyncPolicy {
  return state === 'normal' ? 'checkpoint' : 'each-commit';
}

function stay(from: MirrorState, why: string, ignored = false): MirrorTransition {
  return { from, to: from, changed: false, sync: syncPolicyOf(from), flushNow: false, ignored, why };
}

function go(from: MirrorState, to: MirrorState, why: string): MirrorTransition {
  return { from, to, changed: true, sync: syncPolicyOf(to), flushNow: from === 'normal' && to !== 'normal', ignored: false, why };
}

/** The transition `event` causes in `state`. */
export function nextMirrorState(state: MirrorState, event: MirrorEvent): MirrorTransition {
  // Alone (no backup attached): the primary's own or the one that took over.
  const alone = state === 'primary-only' || state === 'backup-only';
  switch (event.type) {
    case 'backup-attached':
      if (!alone) return stay(state, `a backup attached in ${state}: one backup at a time`, true);
      return go(state, 'catching-up', `backup attached, receiving from LSN ${event.fromLsn}`);
    case 'backup-ack':
      if (alone) return stay(state, 'an ACK without an attached backup', true);
      if (state === 'normal') return stay(state, `backup holds below ${event.heldLsn}`);
      if (event.heldLsn >= event.ackedLsn) return go(state, 'normal', `backup caught up: it holds below ${event.heldLsn}, every commit acknowledged so far (below ${event.ackedLsn})`);
      return stay(state, `backup holds below ${event.heldLsn}, commits are acknowledged below ${event.ackedLsn}`);
    case 'link-lost':
      if (alone) return stay(state, `link lost (${event.reason}) with no backup attached`);
      return go(state, 'primary-only', `link to the backup lost (${event.reason})`);
  }
}
