// MirrorWatch: heartbeats between the primary's and the backup's processes over two UDP links
// (the seed's main link 82 and failsafe link 86), judged by the agent's FailureDetector through
// a HeartbeatAgent, as the agent wires them (src/agent/agent.ts). On the backup it combines the
// detector's per-link view of the primary with the mirror's TCP link (MirrorBackup) and, when
// configured, a third path, into the verdict of mirror-failure.ts (seed 004 steps 415-420), and
// on 'primary-failure' runs the caller's `beforeTakeover` hook (fencing) and then takeOver()
// (steps 425-428), unless the backup is stale (the primary outlived its mirror link and
// acknowledged commits alone: see stale()). On the primary it reports the backup's links (MirroredLog itself already goes
// primary-only when it loses its link to the backup).
//
// Timing: a heartbeat every intervalMs on both links; a link (or, all silent, the node) is
// declared down after misses × intervalMs + skewMs of silence (the detector's timeoutMs; 100 ms,
// 3 and 25 ms: 325 ms after the last heartbeat, 225-325 ms after a death). The mirror's link
// counts as up while a primary is attached and its last frame was taken within mirrorQuietMs
// (1,000 ms by default, promote()'s guard; an idle primary sends a keepalive every ackTimeoutMs / 3).
// A killed primary's TCP connection closes at once, so its death is decided at the detector's
// timeout; a stopped one (SIGSTOP) keeps it open, so at max(timeout, mirrorQuietMs). The verdict
// is re-evaluated on every detector event, on attach and detach, and every tickMs (intervalMs / 2).
import { EventEmitter } from 'node:events';
import { HeartbeatAgent } from '../monitor/heartbeat-agent.js';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import { decideMirrorFailure, needsThirdPath, takeoverGuard, type MirrorFailureDecision, type ThirdPathAnswer, type TakeoverSafety } from './mirror-failure.js';
import type { MirrorBackup } from './mirror-backup.js';
import type { MirroredLog } from './mirrored-log.js';
import type { MirrorState } from './mirror-state.js';
import { takeOverFenced, type TakeOverOptions, type TakenOver } from './takeover.js';

/** A UDP endpoint on one link. */
export interface WatchEndpoint {
  address: string;
  port: number;
}

/** The heartbeat link ids in the detector: main 0, failsafe 1. */
export const MAIN_LINK = 0;
export const FAILSAFE_LINK = 1;

export interface MirrorWatchOptions extends TakeoverSafety {
  role: 'primary' | 'backup';
  /** This node's name in its heartbeats (1..64 bytes). */
  node: string;
  /** The other node's name. */
  peer: string;
  /** The heartbeats' HMAC-SHA256 key, at least 16 bytes (RangeError otherwise). */
  key: Buffer;
  /**
   * This life's incarnation in the heartbeats; must grow at every start (the detector ignores a
   * lower one). Default: the start time in µs since the epoch.
   */
  incarnation?: bigint;
  /** Heartbeat interval, ms. Default 100. */
  intervalMs?: number;
  /** Heartbeats missed before a link is down. Default 3. */
  misses?: number;
  /** This node's sockets: main and failsafe link. */
  links: { main: WatchEndpoint; failsafe: WatchEndpoint };
  /** The peer's sockets on the same links. */
  peerLinks: { main: WatchEndpoint; failsafe: WatchEndpoint };
  /** Backup role: the mirror backup watched and, on 'primary-failure', taken over. */
  backup?: MirrorBackup;
  /**
   * Backup role: what takeOver() needs (key, node, log name, replay...). Without it the watch
   * only reports verdicts. With it, `beforeTakeover` or `unsafeWithoutFencing: true` is
   * required (MirrorError EMIRRORUNFENCED at start otherwise).
   */
  takeover?: Omit<TakeOverOptions, 'force' | 'quietMs'>;
  /** Backup role: the mirror's link is up while the attached primary was heard within this, ms. Default 1,000. */
  mirrorQuietMs?: number;
  /**
   * Backup role: asked only when main, failsafe and the mirror are all silent (seed step 420,
   * "Network 58"): resolve true if the primary answered by another path. It must need an answer
   * from the primary's process (a service greeting), not a TCP handshake, which a stopped
   * process's listen backlog completes. A throw or no answer within thirdPathTimeoutMs = silent.
   */
  thirdPath?: () => Promise<boolean>;
  /** Default intervalMs, ms. */
  thirdPathTimeoutMs?: number;
  /** Primary role: the mirrored log whose link state is reported. */
  log?: MirroredLog;
}

/** What the primary reports about its backup. */
export interface PrimaryLinkReport {
  /** The backup is up in the detector (heard on some link within the timeout). */
  backupUp: boolean;
  main: boolean;
  failsafe: boolean;
  /** The mirrored log's state ('normal' / 'catching-up': the mirror's link carries records). */
  mirror: MirrorState | undefined;
}

/** Timings of a takeover the watch made; ms on the heartbeat clock (ms since the epoch, sub-ms). */
export interface WatchTakeover {
  /** When the primary was last heard on a heartbeat link (the detector's node-down). */
  lastHeardAt: number | undefined;
  /** When the verdict became 'primary-failure'. */
  decidedAt: number;
  /** When the beforeTakeover hook resolved (undefined when none). */
  fencedAt: number | undefined;
  /** When takeOver() resolved. */
  doneAt: number;
  result: TakenOver;
}

export interface MirrorWatchEvents {
  /** Backup role: the verdict or its lost paths changed. */
  verdict: [decision: MirrorFailureDecision, previous: MirrorFailureDecision | undefined];
  /** Primary role: the backup's links changed. */
  links: [report: PrimaryLinkReport];
  /** The detector's events (node-up/down, link-up/down) about the peer. */
  detector: [event: DetectorEvent];
  /** Backup role: the takeover is done (this node is the primary, backup-only). */
  takeover: [info: WatchTakeover];
  /** Backup role: the hook or takeOver() failed; the watch does not try again (an operator decides). */
  'takeover-failed': [error: unknown];
  /**
   * Backup role, after the takeover: the old primary is heard again (seed step 460). Nothing is
   * done: its resync from this node (step 465) is not built; it must not serve (fencing).
   */
  'primary-returned': [info: { node: string; incarnation: bigint; at: number }];
}

/**
 * Heartbeats with the peer on the main and failsafe links and, on the backup, the decision of
 * mirror-failure.ts acted on (see the header). Start with MirrorWatch.start(); close() stops it.
 * Events: `verdict` (backup), `links` (primary), `detector`, `takeover`, `takeover-failed`,
 * `primary-returned`.
 */
export class MirrorWatch extends EventEmitter<MirrorWatchEvents> {
  readonly heartbeat: HeartbeatAgent;
  /** The last verdict (backup role). */
  decision: MirrorFailureDecision | undefined;
  /** The last report (primary role). */
  report: PrimaryLinkReport | undefined;
  /** The takeover, once done. */
  takenOver: WatchTakeover | undefined;
  private takeoverState: 'idle' | 'running' | 'done' | 'failed' = 'idle';
  private everHeard = false;
  private lastHeardAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private asking = false;
  private lastAnswer: { at: number; answer: ThirdPathAnswer } | undefined;
  /** Whether the mirror's link was ever up since the start (a primary mirrored to this backup). */
  private everMirrored = false;
  /** When the attached primary's connection last ended (clock). */
  private detachedAt: number | undefined;
  /** When the mirror's link went down (clock), while it is down: see stale(). */
  private mirrorDownAt: number | undefined;
  private closed = false;
  private readonly offs: Array<() => void> = [];

  private constructor(private readonly options: MirrorWatchOptions) {
    super();
    const intervalMs = options.intervalMs ?? 100;
    this.heartbeat = new HeartbeatAgent({
      node: options.node,
      incarnation: options.incarnation ?? BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)),
      key: options.key,
      intervalMs,
      misses: options.misses ?? 3,
      links: [
        { id: MAIN_LINK, ...options.links.main },
        { id: FAILSAFE_LINK, ...options.links.failsafe },
      ],
      peers: [{ node: options.peer, links: [{ id: MAIN_LINK, ...options.peerLinks.main }, { id: FAILSAFE_LINK, ...options.peerLinks.failsafe }] }],
    });
  }

  /**
   * Binds both links' sockets and starts heartbeating and judging. Throws RangeError on bad
   * options (a key under 16 bytes, no `backup` for the backup role, no `log` for the primary),
   * MirrorError EMIRRORUNFENCED when `takeover` is given without `beforeTakeover` or
   * `unsafeWithoutFencing: true`, and the sockets' bind errors.
   */
  static async start(options: MirrorWatchOptions): Promise<MirrorWatch> {
    if (options.key.length < 16) throw new RangeError('MirrorWatch key must be at least 16 bytes');
    if (options.role === 'backup' && !options.backup) throw new RangeError('MirrorWatch role backup needs `backup`');
    if (options.role === 'primary' && !options.log) throw new RangeError('MirrorWatch role primary needs `log`');
    if (options.role === 'backup' && options.takeover) takeoverGuard(options);
    const w = new MirrorWatch(options);
    await w.heartbeat.start();
    w.wire();
    return w;
  }

  /** The detector's timeout, ms: misses × intervalMs + skewMs. */
  get timeoutMs(): number {
    return this.heartbeat.detector.timeoutMs;
  }

  /** Stops heartbeating and judging (a takeover already running goes on to its end). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const off of this.offs.splice(0)) off();
    this.heartbeat.stop();
  }

  private wire(): void {
    const onEvent = (e: DetectorEvent) => {
      if (e.kind === 'node-down') this.lastHeardAt = e.lastHeardAt;
      if (e.kind === 'node-up' && this.takeoverState === 'done') this.emit('primary-returned', { node: e.node, incarnation: e.incarnation, at: e.at });
      this.emit('detector', e);
      this.evaluate();
    };
    this.heartbeat.on('event', onEvent);
    this.offs.push(() => this.heartbeat.off('event', onEvent));
    const again = () => this.evaluate();
    if (this.options.role === 'backup') {
      const b = this.options.backup!;
      const detached = () => {
        this.detachedAt = clock();
        this.evaluate();
      };
      b.on('attached', again);
      b.on('detached', detached);
      this.offs.push(() => {
        b.off('attached', again);
        b.off('detached', detached);
      });
    } else {
      const log = this.options.log!;
      log.on('state', again);
      this.offs.push(() => log.off('state', again));
    }
    this.timer = setInterval(again, Math.max(5, Math.floor((this.options.intervalMs ?? 100) / 2)));
    this.evaluate();
  }

  /** The peer's per-link liveness as the detector holds it now. */
  private links(): { heard: boolean; up: boolean; main: boolean; failsafe: boolean } {
    const s = this.heartbeat.detector.status().find((p) => p.node === this.options.peer);
    const link = (id: number) => !!s?.up && !!s.links.find((l) => l.link === id)?.up;
    return { heard: !!s?.heard, up: !!s?.up, main: link(MAIN_LINK), failsafe: link(FAILSAFE_LINK) };
  }

  private evaluate(): void {
    if (this.closed) return;
    if (this.options.role === 'primary') return this.evaluatePrimary();
    if (this.takeoverState !== 'idle' || this.asking) return;
    const l = this.links();
    const quiet = this.options.backup!.primaryQuietMs;
    const mirror = quiet !== undefined && quiet <= (this.options.mirrorQuietMs ?? 1000);
    this.everHeard ||= l.heard || this.options.backup!.attached;
    this.trackMirror(mirror, quiet);
    const inputs = { heard: this.everHeard, main: l.main, failsafe: l.failsafe, mirror, stale: this.stale() };
    if (needsThirdPath(inputs) && this.options.thirdPath) {
      // At most one question per interval: between, the last answer stands.
      const interval = this.options.intervalMs ?? 100;
      if (this.lastAnswer && clock() - this.lastAnswer.at < interval) return this.apply(decideMirrorFailure({ ...inputs, thirdPath: this.lastAnswer.answer }));
      this.asking = true;
      void this.askThirdPath().then((answer) => {
        this.asking = false;
        this.lastAnswer = { at: clock(), answer };
        if (this.closed || this.takeoverState !== 'idle') return;
        // Decide on what holds now: a path may have come back while the third path was asked.
        const l2 = this.links();
        const q2 = this.options.backup!.primaryQuietMs;
        const m2 = q2 !== undefined && q2 <= (this.options.mirrorQuietMs ?? 1000);
        this.trackMirror(m2, q2);
        const now = { heard: true, main: l2.main, failsafe: l2.failsafe, mirror: m2, stale: this.stale() };
        this.apply(decideMirrorFailure({ ...now, thirdPath: needsThirdPath(now) ? answer : 'none' }));
      });
      return;
    }
    this.apply(decideMirrorFailure(inputs));
  }

  /**
   * Notes when the mirror's link went down: for a connection that ended, when it ended; for
   * one attached but quiet, its last frame + mirrorQuietMs (by then a primary with
   * ackTimeoutMs <= mirrorQuietMs has left normal). Cleared while it is up.
   */
  private trackMirror(up: boolean, quiet: number | undefined): void {
    if (up) {
      this.everMirrored = true;
      this.mirrorDownAt = undefined;
      return;
    }
    if (this.mirrorDownAt !== undefined) return;
    this.mirrorDownAt = quiet !== undefined ? clock() - quiet + (this.options.mirrorQuietMs ?? 1000) : (this.detachedAt ?? clock());
  }

  /**
   * Whether this backup may lack commits the primary acknowledged alone (mirror-failure.ts,
   * `stale`): no primary ever mirrored here since the start, or a heartbeat of the primary was
   * heard later than skewMs after the mirror's link went down (the primary was alive then, and
   * primary-only). A primary that dies heard its last heartbeat before its connection closed.
   * Not seen: commits acknowledged primary-only within that skew, and a backup still catching up
   * when the primary died (the backup is not told when the primary reaches normal).
   */
  private stale(): boolean {
    if (!this.everMirrored) return true;
    if (this.mirrorDownAt === undefined) return false;
    const s = this.heartbeat.detector.status().find((p) => p.node === this.options.peer);
    const last = Math.max(-Infinity, ...(s?.links ?? []).map((l) => l.lastHeardAt ?? -Infinity));
    return last > this.mirrorDownAt + this.heartbeat.detector.skewMs;
  }

  private async askThirdPath(): Promise<ThirdPathAnswer> {
    const ms = this.options.thirdPathTimeoutMs ?? this.options.intervalMs ?? 100;
    let timer: NodeJS.Timeout | undefined;
    try {
      const ok = await Promise.race([this.options.thirdPath!(), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]);
      return ok ? 'alive' : 'silent';
    } catch {
      return 'silent';
    } finally {
      clearTimeout(timer);
    }
  }

  private apply(d: MirrorFailureDecision): void {
    const prev = this.decision;
    if (!prev || prev.verdict !== d.verdict || prev.lost.join() !== d.lost.join()) {
      this.decision = d;
      this.emit('verdict', d, prev);
    }
    if (d.takeOver && this.options.takeover && this.takeoverState === 'idle') void this.takeOver();
  }

  private async takeOver(): Promise<void> {
    this.takeoverState = 'running';
    const decidedAt = clock();
    let fencedAt: number | undefined;
    const o = this.options;
    const hook = o.beforeTakeover;
    try {
      const result = await takeOverFenced(o.backup!, {
        ...o.takeover!,
        reason: o.takeover!.reason ?? `primary silent on every path (${this.decision?.lost.join(', ')})`,
        quietMs: o.mirrorQuietMs ?? 1000,
        ...(hook
          ? {
              beforeTakeover: async () => {
                await hook();
                fencedAt = clock();
              },
            }
          : {}),
        ...(o.unsafeWithoutFencing ? { unsafeWithoutFencing: true } : {}),
      });
      this.takeoverState = 'done';
      this.takenOver = { lastHeardAt: this.lastHeardAt, decidedAt, fencedAt, doneAt: clock(), result };
      this.emit('takeover', this.takenOver);
    } catch (err) {
      this.takeoverState = 'failed';
      this.emit('takeover-failed', err);
    }
  }

  private evaluatePrimary(): void {
    const l = this.links();
    const r: PrimaryLinkReport = { backupUp: l.up, main: l.main, failsafe: l.failsafe, mirror: this.options.log!.state };
    const p = this.report;
    if (!p || p.backupUp !== r.backupUp || p.main !== r.main || p.failsafe !== r.failsafe || p.mirror !== r.mirror) {
      this.report = r;
      this.emit('links', r);
    }
  }
}

/** The heartbeat agent's clock: ms since the epoch, sub-ms, monotonic within the process. */
function clock(): number {
  return performance.timeOrigin + performance.now();
}
