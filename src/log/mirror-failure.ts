// What the backup makes of losing its primary (seed 004, method 400, steps 410-425, and [0039]):
// a link failure told from a primary failure, pure (no I/O, no clock). MirrorWatch
// (mirror-watch.ts) feeds it what the backup hears and acts on the verdict.
//
// The paths by which the backup hears its primary:
//   main       heartbeats on the main link (UDP, the FailureDetector's link 0)         seed: main link 82
//   failsafe   heartbeats on the failsafe link (UDP, link 1)                          seed: failsafe link 86
//   mirror     the mirror's TCP connection: attached, and a frame (records or the
//              primary's keepalive) taken within the watch's mirrorQuietMs            seed: replication link 78
//   third path an optional answer asked only when the three above are silent (e.g.
//              the primary's service greeting over the clients' network)               seed: "Network 58", step 420
//
// | main / failsafe heard  | mirror | third path | verdict          | what happens                                          | seed          |
// |------------------------|--------|------------|------------------|-------------------------------------------------------|---------------|
// | never heard on any path since start     |   | not-heard-yet    | nothing: a primary never heard is never taken over    | —             |
// | both                   | up     | —          | normal           | mirroring goes on                                     | 410, 415 yes  |
// | one or none            | up     | —          | one-link-lost    | mirroring goes on; the lost links are reported        | [0039]        |
// | at least one           | down   | —          | link-failure     | backup flushes and waits; primary goes primary-only   | 420 "Link Failure" |
// | none                   | down   | alive      | link-failure     | the same                                              | 420 via Network 58 |
// | none                   | down   | silent / none configured | primary-failure | take over (backup-only), after fencing    | 420 "ok", 425 |
// | the same, with a stale backup (see `stale`) |   | primary-failure  | reported, no takeover: an operator decides            | 420           |
//
// The primary going primary-only on a link failure is MirroredLog's own doing (it loses its
// link to the backup: closed socket or no ACK within ackTimeoutMs); the backup's flush on losing
// its primary is MirrorBackup's (it flushes when the attached connection ends). The verdict
// names what happened; only 'primary-failure' of a backup that is not stale asks the watch to act.
//
// Never two primaries: the verdict 'primary-failure' is a guess from silence. A primary that is
// cut off on every path the backup watches but still serves clients (a partition) looks exactly
// like a dead one. Taking over is safe only if, before the backup serves, the old primary is
// made unable to go on: fenced off the shared devices (src/fence, the agent's node-fencing), or
// the primary role taken in the cluster store (a lease the old primary must hold to serve).
// So a takeover needs a `beforeTakeover` hook that does that and resolves once it is done, or
// the explicitly named `unsafeWithoutFencing: true` (tests, or a deployment that accepts the
// risk): see takeoverGuard below.
import { MirrorError } from './mirror-errors.js';

/** The paths the backup hears its primary by (see the table above). */
export type PrimaryPath = 'main' | 'failsafe' | 'mirror' | 'third-path';

/**
 * What the third path said, when asked: `alive` (the primary answered), `silent` (no answer in
 * time, or an error), `none` (no third path configured, or not asked because another path is
 * up). Treated alike: `silent` and `none`.
 */
export type ThirdPathAnswer = 'alive' | 'silent' | 'none';

export interface MirrorFailureInputs {
  /** Whether the primary was heard on any path since the watch started. */
  heard: boolean;
  /** The backup's failure detector holds the main link up (heard within misses × interval + skew). */
  main: boolean;
  /** The same, on the failsafe link. */
  failsafe: boolean;
  /** The mirror's TCP connection: a primary attached and a frame taken within mirrorQuietMs. */
  mirror: boolean;
  /** The third path's answer (see ThirdPathAnswer). Default 'none'. */
  thirdPath?: ThirdPathAnswer;
  /**
   * The backup's copy may lack commits the primary acknowledged: no primary ever mirrored to it
   * since the start, or the primary was heard on a heartbeat link after the mirror's link was
   * down (it was alive, primary-only, acknowledging commits on its own disk). Then a
   * 'primary-failure' is not taken over automatically (it would lose those commits): an
   * operator decides. Default false.
   */
  stale?: boolean;
}

export type MirrorVerdict = 'not-heard-yet' | 'normal' | 'one-link-lost' | 'link-failure' | 'primary-failure';

export interface MirrorFailureDecision {
  verdict: MirrorVerdict;
  /** The paths that did not reach the primary (main, failsafe, mirror; the third path when asked and silent). */
  lost: PrimaryPath[];
  /** The paths that reached it. */
  reachedBy: PrimaryPath[];
  /** Whether the backup should take over ('primary-failure' with a backup that is not stale). */
  takeOver: boolean;
  /** The seed's steps the verdict stands for. */
  seed: string;
  why: string;
}

/**
 * Whether the third path should be asked before deciding: main, failsafe and the mirror are
 * all silent for a primary that was heard (otherwise the verdict does not depend on it).
 */
export function needsThirdPath(i: MirrorFailureInputs): boolean {
  return i.heard && !i.main && !i.failsafe && !i.mirror;
}

/** The verdict on what the backup hears of its primary (the table above). Pure. */
export function decideMirrorFailure(i: MirrorFailureInputs): MirrorFailureDecision {
  const third = i.thirdPath ?? 'none';
  const reachedBy: PrimaryPath[] = [];
  const lost: PrimaryPath[] = [];
  for (const [p, up] of [['main', i.main], ['failsafe', i.failsafe], ['mirror', i.mirror]] as const) (up ? reachedBy : lost).push(p);
  if (third === 'alive') reachedBy.push('third-path');
  if (third === 'silent') lost.push('third-path');
  const d = (verdict: MirrorVerdict, seed: string, why: string): MirrorFailureDecision => ({ verdict, lost, reachedBy, takeOver: verdict === 'primary-failure' && i.stale !== true, seed, why });
  if (!i.heard && reachedBy.length === 0) return d('not-heard-yet', '—', 'the primary was never heard on any path: nothing to decide (never taken over from)');
  if (i.mirror) {
    if (i.main && i.failsafe) return d('normal', '410, 415', 'the primary is heard on the main and failsafe links and the mirror');
    return d('one-link-lost', '[0039]', `mirroring goes on; lost: ${lost.join(', ')}`);
  }
  if (i.main || i.failsafe) return d('link-failure', '420', `the mirror's link is down but the primary is heard on ${reachedBy.join(' and ')}: the backup flushes and waits, the primary goes primary-only`);
  if (third === 'alive') return d('link-failure', '420 (Network 58)', 'main, failsafe and the mirror are silent but the third path reached the primary: the backup flushes and waits');
  const silent = `the primary is silent on every path (${lost.join(', ')}${third === 'none' ? '; no third path' : ''})`;
  if (i.stale) return d('primary-failure', '420', `${silent}, but this backup may lack commits it acknowledged alone (it ran primary-only, or never mirrored here): no automatic takeover, an operator decides`);
  return d('primary-failure', '420, 425', `${silent}: take over, after fencing`);
}

/** How a takeover is made safe (see the header: never two primaries). */
export interface TakeoverSafety {
  /**
   * Must make the old primary unable to go on (fence it, or take the primary role in the
   * cluster store) and resolve once that is done; takeOver() runs only after it resolved. A
   * rejection stops the takeover (nothing changed on the backup).
   */
  beforeTakeover?: () => Promise<void>;
  /** Take over without any such hook: two primaries if the primary was only cut off. */
  unsafeWithoutFencing?: boolean;
}

/**
 * Throws MirrorError EMIRRORUNFENCED unless `s` has a `beforeTakeover` hook or
 * `unsafeWithoutFencing: true`. Pure.
 */
export function takeoverGuard(s: TakeoverSafety): void {
  if (typeof s.beforeTakeover === 'function' || s.unsafeWithoutFencing === true) return;
  throw new MirrorError(
    'EMIRRORUNFENCED',
    'refusing to take over without fencing: a primary that is only cut off would go on serving (two primaries). Pass beforeTakeover (fence the old primary, or take the role in the cluster store) or, knowingly, unsafeWithoutFencing: true',
  );
}
