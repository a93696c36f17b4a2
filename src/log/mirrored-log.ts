// The primary's mirrored transaction log (seed 004: application AP_P's transaction log TL_P, its
// checkpoint agent CA_P and replication agent RA_P). Records are appended to the local log and
// sent to the backup over TCP; a commit is acknowledged (its append() resolves) only
//   - in the normal state, when the backup's ACK says it holds the record (method 200, steps
//     250-270; the local log then checkpoints by time, count or bytes), or
//   - in the primary-only and catching-up states, when the record is durable on this disk
//     (method 300, steps 340-360: every record flushed before its ack),
// never otherwise. Losing the backup (the socket closes, or no ACK within ackTimeoutMs) moves
// to primary-only at once: the writer flushes what waits in RAM (as the seed's steps 425/427
// do on leaving normal) and the appends the backup never confirmed wait for that flush.
//
// The primary keeps dialling the backup (bounded backoff). The backup may have two addresses,
// one on each path of the replication link (seed 004 [0031], [0039]: main link 82, failsafe
// link 86): losing the connection that carried the mirror is followed at once by a dial on the
// other path (mirror-links.ts says when), so a lost link costs one handshake and a short
// catch-up out of the normal state, not a backoff. On each connection the backup says
// what it holds (HELLO, with the chain over its records: log-chain.ts); the primary refuses a
// backup holding records it does not have or other ones anywhere below its held LSN
// (divergence), and otherwise sends from there: records already durable here are
// read from the log on disk, newer ones from memory. When the backup holds every commit
// acknowledged so far the state is normal again (mirror-state.ts says why that condition).
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { LogWriter, type CheckpointCriteria } from './log-writer.js';
import { EMPTY_CHAIN, LogChain, chainNext } from './log-chain.js';
import { LogWriterError } from './log-errors.js';
import { scanLog } from './log-reader.js';
import type { FileOps } from './file-ops.js';
import { MirrorError } from './mirror-errors.js';
import { readForkPoints, resyncPoint, type ForkPoint } from './mirror-history.js';
import { randomNonce } from './mirror-backup.js';
import { formatMirrorAddress, primaryLinksOf, redialChoice, type MirrorAddress, type MirrorLinkAddress, type MirrorLinkName } from './mirror-links.js';
import { INITIAL_MIRROR_STATE, ackRuleOf, nextMirrorState, type LinkLossReason, type MirrorEvent, type MirrorState } from './mirror-state.js';
import { FRAME_OVERHEAD, HEADER_BYTES } from './log-format.js';
import {
  DEFAULT_FRAME_RECORD_BYTES,
  DEFAULT_MAX_RECORD_BYTES,
  MirrorFrameReader,
  RECORDS_OVERHEAD,
  RECORD_HEAD_BYTES,
  checkMirrorKey,
  checkMirrorName,
  encodeMirrorFrame,
  type MirrorMessage,
  type MirrorRejection,
  type StartRefusal,
} from './mirror-wire.js';

export interface MirroredLogOptions {
  /** The primary's log directory (created when missing; recovered at open: a torn tail cut). */
  dir: string;
  /**
   * Where the backup listens (MirrorBackup); `node`: the only backup node accepted (default: any
   * with the key). Required unless `state` is 'backup-only'; there it is where the old primary
   * listens when it returns as this node's backup (seed 004 step 460), dialled until it does.
   * `host`/`port` is its address on the main link; `failsafe`, its address on the failsafe link
   * (MirrorBackup's `failsafe` listener; seed 004 [0031]): when the connection in use is lost,
   * the other address is dialled at once. RangeError at open: a failsafe without `host`/`port`,
   * a port outside 1..65535, an empty host, the failsafe equal to the main address.
   */
  backup?: { host: string; port: number; node?: string; failsafe?: MirrorAddress };
  /**
   * The state to open in. 'primary-only' (default): dial `backup` and mirror to it when it
   * attaches. 'backup-only': this node is a former backup that took over (seed 004 FIG. 11,
   * method 400; `takeOver()` in takeover.ts opens it so): no backup is dialled, every commit is
   * durable here (fdatasync, group commit) before it is acknowledged (steps 435-455 as
   * 320-360). With `backup` given, the old primary is dialled there: when it returns it is told
   * to cut what it holds past this node's fork point (mirror-history.ts), attaches, catches up,
   * and the normal state resumes (steps 460-465).
   */
  state?: 'primary-only' | 'backup-only';
  /** The shared key, at least 16 bytes. */
  key: Buffer;
  /** This node's name (1..64 bytes), sent in START. */
  node: string;
  /** The log's name (1..64 bytes); a backup of another log is refused. Default 'default'. */
  log?: string;
  /**
   * A frame sent and not ACKed for this long means the link is lost (primary-only), ms; also
   * the handshake's bound (the HELLO). Default 1,000. Detection takes up to 1.25x this.
   */
  ackTimeoutMs?: number;
  /** An idle link carries a keepalive (an empty RECORDS the backup ACKs) this often, ms. Default ackTimeoutMs / 3. */
  keepaliveMs?: number;
  /** Pause before redialling the backup: from `minMs`, doubling, at most `maxMs`. Default 50 .. 2,000 ms. */
  reconnect?: { minMs?: number; maxMs?: number };
  /** This life of the primary (u64, not 0), in every frame. Default: random per open. */
  incarnation?: bigint;
  /** The local log's checkpoint criteria in the normal state. Default the writer's (100 ms, 1,000 records, 1 MiB). */
  checkpoint?: Partial<CheckpointCriteria>;
  /** The largest record, bytes. Default 16 MiB (at most segmentBytes - 40). The backup must accept as much. */
  maxRecordBytes?: number;
  /**
   * Records go to the backup in frames of at most this many bytes of records, 4 bytes of length
   * each included (one larger record goes alone). Default 256 KiB, what a backup accepts by
   * default; more needs the backup's `maxFrameBytes` raised.
   */
  frameBytes?: number;
  /** Record bytes sent and not yet ACKed, at most (flow control). Default 8 MiB. */
  maxInFlightBytes?: number;
  /** Records read from disk per read while catching a backup up. Default 4,096. */
  catchUpChunkRecords?: number;
  /**
   * The primary role this log serves under (LogPrimaryRole's PrimaryHold, or anything with a
   * `lost` promise): when it resolves, `fence(why)` is called, so the log stops acknowledging
   * the moment another node may claim the role (never two primaries acknowledging).
   */
  hold?: { lost: Promise<string> };
  /** Passed to the log writer. */
  segmentBytes?: number;
  fileOps?: FileOps;
}

/** Counters since open. */
export interface MirroredLogStats {
  appends: number;
  /** Commits acknowledged on the backup's ACK (normal). */
  ackedByBackup: number;
  /** Commits acknowledged on local durability (primary-only, catching-up). */
  ackedLocally: number;
  connects: number;
  attached: number;
  /**
   * STARTs refusing a backup, by reason (diverged: the backup holds records the primary does
   * not, or others; resync: it was told to cut back to a fork point, and connects again).
   */
  refused: Record<StartRefusal, number>;
  /** Frames from the backup refused by the decoder, by reason (each closed the connection). */
  rejected: Record<MirrorRejection, number>;
  /** ACKs that broke the protocol (held going back, or beyond what was sent). */
  badAcks: number;
  linkLost: Record<LinkLossReason, number>;
  framesSent: number;
  keepalives: number;
  recordsSent: number;
  /** Records sent while catching up that were read from the log on disk. */
  recordsFromDisk: number;
  acksReceived: number;
  transitions: number;
  /** Backups attached, by the link their connection took. */
  attachedOn: Record<MirrorLinkName, number>;
  /** Immediate dials on the other link after losing the connection that carried the mirror. */
  switches: number;
}

export interface MirroredLogEvents {
  /** The state changed; `why` says what moved it. */
  state: [state: MirrorState, previous: MirrorState, why: string];
  /** What happened to the link to the backup (for logs and metrics). */
  link: [
    info:
      | { type: 'attached'; backup: string; fromLsn: number; link: MirrorLinkName; address: string }
      | { type: 'refused'; backup: string; refusal: StartRefusal; error: MirrorError; link: MirrorLinkName }
      | { type: 'lost'; reason: LinkLossReason; error: MirrorError; link: MirrorLinkName }
      | { type: 'connect-failed'; error: Error; link: MirrorLinkName; address: string }
      /** The connection that carried the mirror was lost on `from`; `to` is dialled at once. */
      | { type: 'switch'; from: MirrorLinkName; to: MirrorLinkName; reason: LinkLossReason; address: string },
  ];
  /** The local log failed (an I/O error: EMIRRORFAILED) or fence() was called (EMIRRORFENCED): appends are refused from now on. */
  failed: [error: MirrorError];
}

interface Pending {
  lsn: number;
  resolve: (lsn: number) => void;
  reject: (err: Error) => void;
}

interface InFlight {
  seq: bigint;
  sentAt: number;
  bytes: number;
}

/** One connection to the backup. */
interface Link {
  socket: net.Socket;
  /** The backup's address this connection dialled, and on which link. */
  address: MirrorLinkAddress;
  reader: MirrorFrameReader;
  phase: 'hello' | 'checking' | 'streaming';
  openedAt: number;
  backupNode: string;
  backupIncarnation: bigint;
  backupNonce: bigint;
  nonce: bigint;
  seqOut: bigint;
  /** The next LSN to send. */
  cursor: number;
  /** The backup holds every record below this (its last ACK, or its HELLO). */
  held: number;
  inFlight: InFlight[];
  inFlightBytes: number;
  lastSentAt: number;
  pumping: boolean;
  /** A 'drain' listener is set (one at a time). */
  awaitingDrain: boolean;
  timer: NodeJS.Timeout | null;
  gone: boolean;
  closed: Promise<void>;
}

const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
const REJECTIONS: MirrorRejection[] = ['short', 'magic', 'version', 'type', 'length', 'hmac', 'body', 'sequence', 'session', 'unexpected'];
const LOSSES: LinkLossReason[] = ['closed', 'ack-timeout', 'auth', 'protocol', 'refused', 'closing'];

export class MirroredLog extends EventEmitter<MirroredLogEvents> {
  readonly stats: MirroredLogStats = {
    appends: 0,
    ackedByBackup: 0,
    ackedLocally: 0,
    connects: 0,
    attached: 0,
    refused: { diverged: 0, behind: 0, log: 0, node: 0, resync: 0 },
    rejected: Object.fromEntries(REJECTIONS.map((r) => [r, 0])) as Record<MirrorRejection, number>,
    badAcks: 0,
    linkLost: Object.fromEntries(LOSSES.map((r) => [r, 0])) as Record<LinkLossReason, number>,
    framesSent: 0,
    keepalives: 0,
    recordsSent: 0,
    recordsFromDisk: 0,
    acksReceived: 0,
    transitions: 0,
    attachedOn: { main: 0, failsafe: 0 },
    switches: 0,
  };
  /** This life's incarnation (in every frame). */
  readonly incarnation: bigint;

  private current: MirrorState = INITIAL_MIRROR_STATE;
  private readonly ackTimeoutMs: number;
  private readonly keepaliveMs: number;
  private readonly maxRecordBytes: number;
  private readonly frameBytes: number;
  private readonly catchUpChunkRecords: number;
  private readonly maxInFlightBytes: number;
  private readonly logName: string;
  private readonly firstLsn: number;
  /** Appends not yet acknowledged, in LSN order (from `pendingHead`). */
  private pending: Pending[] = [];
  private pendingHead = 0;
  /** Every record below this has been acknowledged to its caller. */
  private acked: number;
  /**
   * Catching-up's switch point: the next LSN when an ACK found what is left to send within one
   * catch-up chunk (`catchUpChunkRecords`). Commits below it are acknowledged on local
   * durability; from it on, when the backup holds them, as in normal. Without it, catching-up
   * could never end under a steady flow of appends on a fast disk: each ACK would find newer
   * commits already acknowledged locally that the backup does not hold yet (a test saw 6,000
   * records shipped and no switch in 5 s). With it, every commit acknowledged is below the switch
   * point or held by the backup, so the first ACK at or past it covers every acknowledged commit
   * and normal begins. Set late (not at attach) so that commits made while a long backlog ships
   * do not wait for it. Null outside catching-up and until then; a backup that never gets within
   * a chunk (appends outrun the link) keeps the primary catching-up, as it should.
   */
  private switchAt: number | null = null;
  /** Records from `memFirst` on, kept until durable here and no longer needed by the link. */
  private mem: Buffer[] = [];
  private memHead = 0;
  private memFirst: number;
  private link: Link | null = null;
  /** Every link whose socket is not closed yet (a refused one lingers while its START is sent). */
  private readonly links = new Set<Link>();
  private reconnectTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  /** The backup's addresses: main, then the failsafe when configured. */
  private readonly addresses: MirrorLinkAddress[];
  /** The address the next dial uses (index into `addresses`). */
  private dialIndex = 0;
  /** When the last immediate switch to the other link was made (performance.now(), ms). */
  private lastSwitchAt = -Infinity;
  /**
   * While the dial that follows a switch is in its handshake: records from here on stay in
   * memory (the backup held every record below it on the lost connection), so the new
   * connection's HELLO check and catch-up read memory, not a segment on disk.
   */
  private retainFrom: number | null = null;
  private sendQueued = false;
  private failure: MirrorError | null = null;
  private closing: Promise<void> | null = null;
  /** Set first thing in close(), before anything it calls looks. */
  private closed = false;

  private constructor(
    private readonly options: MirroredLogOptions,
    private readonly writer: LogWriter,
    /** Where this node took over (mirror-history.ts): where a returning old primary is cut back to. */
    private readonly forks: readonly ForkPoint[],
    /** The checksum chain over every record of the log (log-chain.ts), grown by append(). */
    private readonly chain: LogChain,
  ) {
    super();
    this.incarnation = options.incarnation ?? randomNonce();
    this.current = options.state ?? INITIAL_MIRROR_STATE;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 1000;
    this.keepaliveMs = options.keepaliveMs ?? Math.max(1, Math.floor(this.ackTimeoutMs / 3));
    this.maxRecordBytes = options.maxRecordBytes ?? Math.min(DEFAULT_MAX_RECORD_BYTES, (options.segmentBytes ?? DEFAULT_SEGMENT_BYTES) - HEADER_BYTES - FRAME_OVERHEAD);
    this.frameBytes = options.frameBytes ?? DEFAULT_FRAME_RECORD_BYTES;
    this.catchUpChunkRecords = options.catchUpChunkRecords ?? 4096;
    this.maxInFlightBytes = options.maxInFlightBytes ?? 8 * 1024 * 1024;
    this.logName = options.log ?? 'default';
    this.firstLsn = writer.recovery.firstLsn;
    this.acked = writer.nextLsn;
    this.memFirst = writer.nextLsn;
    this.addresses = options.backup ? primaryLinksOf(options.backup) : [];
  }

  /**
   * Opens (recovers) the log in `dir`, primary-only, and starts dialling the backup (or
   * backup-only, dialling nobody: `state`). Rejects with RangeError on bad options, or the log's errors (LogCorruptionError ELOGCORRUPT, a
   * system error of a read).
   */
  static async open(options: MirroredLogOptions): Promise<MirroredLog> {
    MirroredLog.checkOptions(options);
    // The chain is built from the recovery's own read of every record (one read at open).
    let chain: LogChain | null = null;
    const writer = await LogWriter.open({
      dir: options.dir,
      sync: 'each-commit',
      holder: `a mirrored log (primary ${options.node}, ${options.state ?? 'primary-only'})`,
      onRecoveredRecord: (lsn, p) => {
        chain ??= new LogChain(lsn);
        chain.push(p);
      },
      ...(options.checkpoint ? { checkpoint: options.checkpoint } : {}),
      ...(options.segmentBytes ? { segmentBytes: options.segmentBytes } : {}),
      ...(options.maxRecordBytes !== undefined ? { maxRecordBytes: options.maxRecordBytes } : {}),
      ...(options.fileOps ? { fileOps: options.fileOps } : {}),
    });
    let forks: ForkPoint[];
    try {
      forks = await readForkPoints(options.dir);
    } catch (err) {
      await writer.close().catch(() => {});
      throw err;
    }
    const log = new MirroredLog(options, writer, forks, chain ?? new LogChain(writer.recovery.firstLsn));
    void options.hold?.lost.then((why) => log.fence(`the primary role was lost (${why})`));
    log.dial();
    return log;
  }

  /**
   * Throws RangeError (TypeError for a key that is not a Buffer) on options open() would refuse,
   * before anything is opened: takeOver() checks its options so before it promotes the backup.
   */
  static checkOptions(options: MirroredLogOptions): void {
    checkMirrorKey(options.key);
    checkMirrorName('node', options.node);
    checkMirrorName('log name', options.log ?? 'default');
    if ((options.state ?? 'primary-only') !== 'backup-only' && !options.backup) throw new RangeError('`backup` is required unless state is backup-only');
    if (options.backup) primaryLinksOf(options.backup);
    if (options.backup?.node !== undefined) checkMirrorName('backup node', options.backup.node);
    if (options.incarnation !== undefined && !(options.incarnation > 0n && options.incarnation < 1n << 64n)) throw new RangeError('incarnation must be a u64 above 0');
    const ack = options.ackTimeoutMs ?? 1000;
    if (!(ack >= 10)) throw new RangeError(`ackTimeoutMs ${ack} must be at least 10`);
  }

  get state(): MirrorState {
    return this.current;
  }

  /** The LSN the next append gets. */
  get nextLsn(): number {
    return this.writer.nextLsn;
  }

  /** Every record below this is durable on the primary's disk. */
  get durableLsn(): number {
    return this.writer.durableLsn;
  }

  /** Every record below this has been acknowledged to its caller. */
  get ackedLsn(): number {
    return this.acked;
  }

  /** The attached backup holds every record below this (its last ACK), or null with no backup attached. */
  get backupHeldLsn(): number | null {
    return this.link?.phase === 'streaming' ? this.link.held : null;
  }

  /**
   * The link whose connection carries the mirror now (a backup attached on it), with the
   * backup's address there; null while no backup is attached.
   */
  get mirrorLink(): { link: MirrorLinkName; address: string } | null {
    const l = this.link;
    return l?.phase === 'streaming' ? { link: l.address.link, address: formatMirrorAddress(l.address) } : null;
  }

  /** The backup's configured addresses: main, then failsafe when given (empty in backup-only). */
  get backupLinks(): ReadonlyArray<{ link: MirrorLinkName; address: string }> {
    return this.addresses.map((a) => ({ link: a.link, address: formatMirrorAddress(a) }));
  }

  /** The local writer's policy (checkpoint in normal, each-commit otherwise). */
  get syncPolicy(): 'each-commit' | 'checkpoint' {
    return this.writer.syncPolicy;
  }

  /** Why the log stopped (a local I/O error), or null. */
  get failed(): MirrorError | null {
    return this.failure;
  }

  /**
   * Appends one record (copied). Resolves with its LSN once acknowledged: the backup holds it
   * (normal) or it is durable here (primary-only, catching-up). Rejects with LogWriterError
   * ELOGRECORDSIZE above maxRecordBytes (not numbered), MirrorError EMIRRORCLOSED after close(),
   * EMIRRORFAILED once the local log failed (its `cause`: the log's error); an append pending
   * when the local log fails gets EMIRRORFAILED too (its outcome is unknown: the backup may
   * hold it).
   */
  append(payload: Uint8Array): Promise<number> {
    if (this.closed) return Promise.reject(new MirrorError('EMIRRORCLOSED', 'the mirrored log is closed'));
    if (this.failure) return Promise.reject(new MirrorError(this.failure.code, this.failure.message, { cause: this.failure.cause }));
    if (payload.length > this.maxRecordBytes) return Promise.reject(new LogWriterError('ELOGRECORDSIZE', `record of ${payload.length} bytes, the most is ${this.maxRecordBytes}`));
    const lsn = this.writer.nextLsn;
    // Numbered at the call, in call order, by the writer.
    this.writer.append(payload).then(
      () => this.settle(),
      (err: unknown) => this.fail(err),
    );
    this.mem.push(Buffer.from(payload));
    this.chain.push(payload);
    this.stats.appends++;
    const p = new Promise<number>((resolve, reject) => this.pending.push({ lsn, resolve, reject }));
    this.queueSend();
    return p;
  }

  /**
   * Stops dialling, closes the link, flushes the local log and closes it. Appends pending then
   * resolve once durable here (the link is gone: primary-only's rule). Later appends get
   * EMIRRORCLOSED. Resolves once every socket and file is closed.
   */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const link = this.link;
    if (link) this.lose(link, 'closing', new MirrorError('EMIRRORCLOSED', 'the mirrored log is closing'));
    let error: unknown = null;
    await this.writer.close().catch((err: unknown) => (error = err));
    this.settle();
    this.rejectPending(new MirrorError('EMIRRORCLOSED', 'the mirrored log closed before this record was acknowledged'));
    for (const l of this.links) l.socket.destroy();
    await Promise.all([...this.links].map((l) => l.closed));
    if (error) throw error;
  }

  // ---- acknowledgement ----

  /**
   * Whether the commit of `lsn` waits for the backup: in normal, and in catching-up from the
   * switch point on (see `switchAt`); otherwise it waits for local durability.
   */
  private waitsForBackup(lsn: number): boolean {
    if (ackRuleOf(this.current) === 'backup-holds') return true;
    return this.current === 'catching-up' && this.switchAt !== null && lsn >= this.switchAt;
  }

  /** Resolves the pending appends the current state's rule allows, then frees memory. */
  private settle(): void {
    const held = this.link?.held ?? -1;
    const durable = this.writer.durableLsn;
    while (this.pendingHead < this.pending.length) {
      const p = this.pending[this.pendingHead]!;
      const byBackup = this.waitsForBackup(p.lsn);
      if (p.lsn >= (byBackup ? held : durable)) break;
      this.pendingHead++;
      this.acked = p.lsn + 1;
      if (byBackup) this.stats.ackedByBackup++;
      else this.stats.ackedLocally++;
      p.resolve(p.lsn);
    }
    if (this.pendingHead === this.pending.length) {
      // Nothing waits: every record appended so far has been acknowledged.
      this.pending = [];
      this.pendingHead = 0;
      this.acked = this.writer.nextLsn;
    } else if (this.pendingHead > 1024) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
    this.trimMemory();
  }

  /**
   * Drops records from memory once durable here, unless the link still sends from memory and
   * has not sent them (below the durable LSN the link reads the disk instead).
   */
  private trimMemory(): void {
    const durable = this.writer.durableLsn;
    const l = this.link;
    // With a failsafe link, what was sent but not yet ACKed stays too (at most maxInFlightBytes):
    // the connection a switch opens starts where the backup's last ACK was.
    let keepFrom = l && l.phase === 'streaming' && l.cursor >= this.memFirst ? Math.min(durable, this.addresses.length > 1 ? l.held : l.cursor) : durable;
    // A switch's dial in its handshake: keep what the backup may lack (see `retainFrom`).
    if (this.retainFrom !== null) {
      if (l && l.phase !== 'streaming') keepFrom = Math.min(keepFrom, this.retainFrom);
      else this.retainFrom = null;
    }
    const drop = Math.min(keepFrom, this.memFirst + this.mem.length - this.memHead) - this.memFirst;
    if (drop <= 0) return;
    this.memHead += drop;
    this.memFirst += drop;
    if (this.memHead > 4096 && this.memHead * 2 > this.mem.length) {
      this.mem = this.mem.slice(this.memHead);
      this.memHead = 0;
    }
  }

  private rejectPending(err: Error): void {
    const left = this.pending.slice(this.pendingHead);
    this.pending = [];
    this.pendingHead = 0;
    for (const p of left) p.reject(err);
  }

  /**
   * Stops acting as primary (the role was lost in the cluster store, or this node was fenced):
   * every append still pending and every later one is rejected with MirrorError EMIRRORFENCED
   * (its outcome unknown to the caller: a ReliableServer stops, its clients resend to the new
   * primary, which answers a duplicate from its table), the link to the backup is closed and not
   * redialled, `failed` is emitted. What is in the log stays (close() flushes it). Idempotent; no
   * effect after close() or a failure. `hold` in the options calls it when `hold.lost` resolves.
   */
  fence(why: string): void {
    if (this.closed) return;
    this.stop(new MirrorError('EMIRRORFENCED', `this node may no longer act as primary: ${why}`));
  }

  /** The local log failed: nothing more is acknowledged or taken; the backup is let go. */
  private fail(err: unknown): void {
    this.stop(new MirrorError('EMIRRORFAILED', `the primary's log failed: ${(err as Error).message}`, { cause: err }));
  }

  private stop(error: MirrorError): void {
    if (this.failure) return;
    this.failure = error;
    this.rejectPending(this.failure);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.link) this.lose(this.link, 'closing', this.failure);
    this.emit('failed', this.failure);
  }

  // ---- states ----

  private transition(event: MirrorEvent): void {
    const t = nextMirrorState(this.current, event);
    if (!t.changed) return;
    const previous = this.current;
    this.current = t.to;
    this.switchAt = null;
    this.stats.transitions++;
    if (t.to === 'normal') this.attempt = 0;
    // To each-commit, this flushes what waits now (flushNow); the appends then resolve as their
    // records become durable (their writer promises call settle()).
    if (!this.failure) this.writer.setSync(t.sync).then(() => this.settle(), (err: unknown) => this.fail(err));
    this.emit('state', t.to, previous, t.why);
  }

  // ---- the link ----

  private dial(): void {
    const address = this.addresses[this.dialIndex];
    if (this.closed || this.failure || this.link || !address) return;
    this.stats.connects++;
    const socket = net.connect({ host: address.host, port: address.port });
    socket.setNoDelay(true);
    const link: Link = {
      socket,
      address,
      reader: new MirrorFrameReader({ role: 'primary' }, { key: this.options.key, maxFrameBytes: 4096 }),
      phase: 'hello',
      openedAt: performance.now(),
      backupNode: '',
      backupIncarnation: 0n,
      backupNonce: 0n,
      nonce: randomNonce(),
      seqOut: 0n,
      cursor: 0,
      held: 0,
      inFlight: [],
      inFlightBytes: 0,
      lastSentAt: performance.now(),
      pumping: false,
      awaitingDrain: false,
      timer: null,
      gone: false,
      closed: new Promise((r) => socket.once('close', () => r())),
    };
    this.link = link;
    this.links.add(link);
    void link.closed.then(() => this.links.delete(link));
    let connected = false;
    socket.once('connect', () => (connected = true));
    socket.on('error', (err) => {
      if (!connected && !link.gone) {
        this.emit('link', { type: 'connect-failed', error: err, link: address.link, address: formatMirrorAddress(address) });
        this.lose(link, 'closed', new MirrorError('EMIRRORLINK', `cannot reach the backup at ${formatMirrorAddress(address)} (${address.link} link): ${err.message}`, { cause: err }), true);
      }
    });
    socket.on('close', () => this.lose(link, 'closed', new MirrorError('EMIRRORLINK', `the connection to the backup (${address.link} link, ${formatMirrorAddress(address)}) closed`)));
    socket.on('data', (chunk: Buffer) => this.onData(link, chunk));
    socket.on('end', () => {
      const cut = link.reader.finish();
      if (cut && !cut.ok) this.rejectFrame(link, cut.reason, cut.detail);
    });
    link.timer = setInterval(() => this.tick(link), Math.max(1, Math.min(this.keepaliveMs, Math.floor(this.ackTimeoutMs / 4))));
  }

  /** Timeouts (no HELLO, no ACK) and keepalives. */
  private tick(link: Link): void {
    if (link.gone) return;
    const now = performance.now();
    if (link.phase === 'hello' && now - link.openedAt > this.ackTimeoutMs) {
      this.lose(link, 'ack-timeout', new MirrorError('EMIRRORTIMEOUT', `no HELLO from the backup within ${this.ackTimeoutMs} ms`));
      return;
    }
    const oldest = link.inFlight[0];
    if (oldest && now - oldest.sentAt > this.ackTimeoutMs) {
      this.lose(link, 'ack-timeout', new MirrorError('EMIRRORTIMEOUT', `no ACK from the backup within ${this.ackTimeoutMs} ms of frame ${oldest.seq}`));
      return;
    }
    if (link.phase === 'streaming' && now - link.lastSentAt >= this.keepaliveMs) {
      this.stats.keepalives++;
      this.sendRecords(link, link.cursor, []);
    }
  }

  private onData(link: Link, chunk: Buffer): void {
    if (link.gone) return;
    for (const r of link.reader.push(chunk)) {
      if (!r.ok) {
        this.rejectFrame(link, r.reason, r.detail);
        return;
      }
      const m = r.frame.message;
      if (m.type === 'hello') {
        link.backupIncarnation = r.frame.senderIncarnation;
        link.backupNonce = r.frame.backupNonce;
        link.backupNode = m.node;
        link.phase = 'checking';
        void this.onHello(link, m);
      } else if (m.type === 'ack') {
        this.onAck(link, m);
      }
      if (link.gone) return;
    }
  }

  private rejectFrame(link: Link, reason: MirrorRejection, detail: string): void {
    this.stats.rejected[reason]++;
    const auth = reason === 'hmac';
    this.lose(link, auth ? 'auth' : 'protocol', new MirrorError(auth ? 'EMIRRORAUTH' : 'EMIRRORPROTO', `frame from the backup refused (${reason}): ${detail}`));
  }

  /** Decides whether this backup may mirror the log from what it holds; answers with START. */
  private async onHello(link: Link, m: Extract<MirrorMessage, { type: 'hello' }>): Promise<void> {
    let refusal: StartRefusal | null = null;
    let reason = '';
    let prevCrc = 0;
    let fromLsn = m.heldLsn;
    const next = this.writer.nextLsn;
    if (m.log !== this.logName) [refusal, reason] = ['log', `the backup mirrors log ${JSON.stringify(m.log)}, this is ${JSON.stringify(this.logName)}`];
    else if (this.options.backup?.node !== undefined && m.node !== this.options.backup.node) [refusal, reason] = ['node', `backup node ${m.node}, expected ${this.options.backup.node}`];
    // A backup ahead of its primary: records the primary never wrote, or (a primary restarted
    // after a crash in the normal state) commits acknowledged on the backup's copy that never
    // reached the primary's disk. Either way the primary must not number new records over them.
    else if (m.heldLsn > next) [refusal, reason] = ['diverged', `the backup holds records up to LSN ${m.heldLsn - 1}, the primary's log ends before ${next} (if this node restarted after a crash, the backup holds commits it lacks: the backup should take over and this node come back as its backup)`];
    else if (m.heldLsn < this.firstLsn) [refusal, reason] = ['behind', `the backup needs records from LSN ${m.heldLsn}, the primary's log starts at ${this.firstLsn}`];
    // The backup's chain over its records below this log's first LSN cannot be recomputed here.
    else if (m.heldLsn > m.firstLsn && m.firstLsn < this.firstLsn) [refusal, reason] = ['diverged', `the backup's log starts at LSN ${m.firstLsn}, before this log's first LSN ${this.firstLsn}: its records below ${this.firstLsn} cannot be compared`];
    else if (m.heldLsn > m.firstLsn) {
      // Every record the backup holds must be the primary's at that LSN: the chains over them
      // (log-chain.ts) must be equal. The last record alone is not enough: a returning primary
      // and this node may both have written past a fork point and ended on the same record.
      let chain: number;
      try {
        chain = await this.chainOf(m.firstLsn, m.heldLsn);
      } catch (err) {
        if (link.gone) return;
        this.lose(link, 'protocol', new MirrorError('EMIRRORPROTO', `cannot read records ${m.firstLsn}..${m.heldLsn - 1} to compare with the backup's: ${(err as Error).message}`, { cause: err }));
        return;
      }
      if (chain !== m.lastCrc) [refusal, reason] = ['diverged', `the backup's records ${m.firstLsn}..${m.heldLsn - 1} differ from the primary's (chain ${m.lastCrc.toString(16)} vs ${chain.toString(16)})`];
      else prevCrc = chain;
    }
    // A backup past one of this node's fork points (the old primary returning, with records it
    // wrote that never reached this node): cut back there and mirror from it (step 465). START
    // names this log's chain over the backup's records below the fork point, which the backup
    // checks against its own before it cuts anything.
    const fork = refusal === 'diverged' && m.firstLsn >= this.firstLsn ? resyncPoint(this.forks, m, next) : null;
    if (fork) {
      let chain: number;
      try {
        chain = await this.chainOf(m.firstLsn, fork.lsn);
      } catch (err) {
        if (link.gone) return;
        this.lose(link, 'protocol', new MirrorError('EMIRRORPROTO', `cannot read records ${m.firstLsn}..${fork.lsn - 1} for the fork point's chain: ${(err as Error).message}`, { cause: err }));
        return;
      }
      [refusal, reason, fromLsn, prevCrc] = ['resync', `${this.options.node} took over at LSN ${fork.lsn}${fork.previousPrimary ? ` from ${fork.previousPrimary}` : ''}; ${reason}`, fork.lsn, chain];
    }
    if (link.gone) return;
    if (refusal) {
      this.stats.refused[refusal]++;
      const error = new MirrorError(refusal === 'diverged' ? 'EMIRRORDIVERGED' : 'EMIRRORREFUSED', `this primary refused backup ${m.node} (${refusal}): ${reason}`);
      this.send(link, { type: 'start', node: this.options.node, fromLsn: refusal === 'resync' ? fromLsn : next, prevCrc, refusal, reason });
      this.emit('link', { type: 'refused', backup: m.node, refusal, error, link: link.address.link });
      // The START goes out before the close (end() flushes it), so the backup sees the reason.
      link.socket.end();
      // Told to resync, the backup cuts its log and is expected back at once.
      this.lose(link, 'refused', error, false, false, refusal === 'resync');
      return;
    }
    link.reader.accept(this.incarnation, link.nonce);
    this.send(link, { type: 'start', node: this.options.node, fromLsn: m.heldLsn, prevCrc, refusal: null, reason: '' });
    link.phase = 'streaming';
    link.cursor = m.heldLsn;
    link.held = m.heldLsn;
    this.stats.attached++;
    this.stats.attachedOn[link.address.link]++;
    this.emit('link', { type: 'attached', backup: m.node, fromLsn: m.heldLsn, link: link.address.link, address: formatMirrorAddress(link.address) });
    this.transition({ type: 'backup-attached', fromLsn: m.heldLsn });
    this.pump(link);
  }

  /**
   * The chain (log-chain.ts) over records [from, to) of this log, `from` ≥ its first LSN and `to`
   * ≤ its next LSN: from the value kept at or below `to` when `from` is the log's first LSN (at
   * most `LogChain.every` records read), else folded from `from`. Records come from memory
   * where they still are, else from the log on disk (below `memFirst` they are durable there).
   * Rejects with the read's error, or Error when the disk holds fewer records than expected.
   */
  private async chainOf(from: number, to: number): Promise<number> {
    let lsn = from;
    let chain = EMPTY_CHAIN;
    if (from === this.firstLsn) ({ lsn, chain } = this.chain.pointAtOrBelow(to));
    while (lsn < to) {
      if (lsn >= this.memFirst) {
        for (; lsn < to; lsn++) chain = chainNext(chain, this.mem[this.memHead + lsn - this.memFirst]!);
        break;
      }
      // Memory may be trimmed while the disk is read: take what is below it now, then look again.
      const until = Math.min(to, this.memFirst);
      let read = lsn;
      await scanLog(this.options.dir, { fromLsn: lsn, toLsn: until, onRecord: (l, p) => ((chain = chainNext(chain, p)), (read = l + 1)), ...(this.options.fileOps ? { fileOps: this.options.fileOps } : {}) });
      if (read !== until) throw new Error(`the log on disk gave records ${lsn}..${read - 1}, expected up to ${until - 1}`);
      lsn = until;
    }
    return chain;
  }

  private onAck(link: Link, m: Extract<MirrorMessage, { type: 'ack' }>): void {
    this.stats.acksReceived++;
    if (m.heldLsn < link.held || m.heldLsn > link.cursor || m.frameSeq >= link.seqOut) {
      this.stats.badAcks++;
      this.lose(link, 'protocol', new MirrorError('EMIRRORPROTO', `ACK of LSN ${m.heldLsn} / frame ${m.frameSeq}: held was ${link.held}, sent up to ${link.cursor} in frames below ${link.seqOut}`));
      return;
    }
    link.held = m.heldLsn;
    while (link.inFlight.length > 0 && link.inFlight[0]!.seq <= m.frameSeq) link.inFlightBytes -= link.inFlight.shift()!.bytes;
    if (this.current === 'catching-up' && this.switchAt === null && this.writer.nextLsn - link.cursor <= this.catchUpChunkRecords) this.switchAt = this.writer.nextLsn;
    this.transition({ type: 'backup-ack', heldLsn: link.held, ackedLsn: this.acked });
    this.settle();
    this.pump(link);
  }

  private queueSend(): void {
    if (this.sendQueued) return;
    this.sendQueued = true;
    // Appends made in one turn go in one frame.
    queueMicrotask(() => {
      this.sendQueued = false;
      if (this.link) this.pump(this.link);
    });
  }

  /**
   * Sends what the backup lacks, from `cursor` on: from memory where it still is, from the log
   * on disk below that (durable there, so the read never meets a batch being written). Stops
   * at the in-flight bound or when the socket's buffer is full; ACKs and 'drain' resume it.
   */
  private pump(link: Link): void {
    if (link.gone || link.phase !== 'streaming' || link.pumping) return;
    link.pumping = true;
    void this.pumpLoop(link).finally(() => {
      link.pumping = false;
    });
  }

  private async pumpLoop(link: Link): Promise<void> {
    while (!link.gone && link.cursor < this.writer.nextLsn) {
      if (link.inFlightBytes >= this.maxInFlightBytes) return;
      if (link.socket.writableNeedDrain) {
        if (!link.awaitingDrain) {
          link.awaitingDrain = true;
          link.socket.once('drain', () => {
            link.awaitingDrain = false;
            this.pump(link);
          });
        }
        return;
      }
      if (link.cursor >= this.memFirst) {
        const from = link.cursor - this.memFirst + this.memHead;
        const records: Buffer[] = [];
        let bytes = 0;
        for (let i = from; i < this.mem.length && (records.length === 0 || bytes + RECORD_HEAD_BYTES + this.mem[i]!.length <= this.frameBytes); i++) {
          records.push(this.mem[i]!);
          bytes += RECORD_HEAD_BYTES + this.mem[i]!.length;
        }
        this.sendRecords(link, link.cursor, records);
        continue;
      }
      const to = Math.min(this.memFirst, link.cursor + this.catchUpChunkRecords);
      const from = link.cursor;
      const read: Buffer[] = [];
      try {
        await scanLog(this.options.dir, { fromLsn: from, toLsn: to, onRecord: (_l, p) => read.push(Buffer.from(p)), ...(this.options.fileOps ? { fileOps: this.options.fileOps } : {}) });
      } catch (err) {
        this.lose(link, 'protocol', new MirrorError('EMIRRORPROTO', `cannot read records ${from}..${to - 1} for the backup: ${(err as Error).message}`, { cause: err }));
        return;
      }
      if (link.gone) return;
      if (read.length !== to - from) {
        this.lose(link, 'protocol', new MirrorError('EMIRRORPROTO', `the log on disk gave ${read.length} records from ${from}, expected ${to - from}`));
        return;
      }
      this.stats.recordsFromDisk += read.length;
      let i = 0;
      while (i < read.length && !link.gone) {
        const records: Buffer[] = [];
        let bytes = 0;
        for (; i < read.length && (records.length === 0 || bytes + RECORD_HEAD_BYTES + read[i]!.length <= this.frameBytes); i++) {
          records.push(read[i]!);
          bytes += RECORD_HEAD_BYTES + read[i]!.length;
        }
        this.sendRecords(link, link.cursor, records);
      }
    }
  }

  private sendRecords(link: Link, firstLsn: number, records: Buffer[]): void {
    let bytes = 0;
    for (const r of records) bytes += r.length;
    // Counted with the frame's overhead, so keepalives count too.
    bytes += RECORDS_OVERHEAD + RECORD_HEAD_BYTES * records.length;
    const seq = link.seqOut;
    this.send(link, { type: 'records', firstLsn, records });
    link.cursor = firstLsn + records.length;
    link.inFlight.push({ seq, sentAt: performance.now(), bytes });
    link.inFlightBytes += bytes;
    this.stats.recordsSent += records.length;
  }

  private send(link: Link, message: MirrorMessage): void {
    if (link.gone) return;
    const bytes = encodeMirrorFrame(
      { senderIncarnation: this.incarnation, receiverIncarnation: link.backupIncarnation, backupNonce: link.backupNonce, primaryNonce: link.nonce, seq: link.seqOut++, message },
      this.options.key,
    );
    link.socket.write(bytes);
    link.lastSentAt = performance.now();
    this.stats.framesSent++;
  }

  /**
   * The link ends (once): the socket is destroyed (or ended, after a refusal's START), the state
   * moves to primary-only (flushing when it was normal) and, unless closing, the backup is
   * dialled again: at once on the other link when this one carried the mirror and a failsafe
   * is configured, otherwise after a pause (mirror-links.ts, redialChoice()).
   */
  private lose(link: Link, reason: LinkLossReason, error: MirrorError, connectFailed = false, destroy = true, resync = false): void {
    if (link.gone) return;
    link.gone = true;
    if (link.timer) clearInterval(link.timer);
    if (destroy) link.socket.destroy();
    else link.socket.setTimeout(this.ackTimeoutMs, () => link.socket.destroy());
    if (this.link === link) this.link = null;
    if (!connectFailed) {
      this.stats.linkLost[reason]++;
      this.emit('link', { type: 'lost', reason, error, link: link.address.link });
    }
    const wasAttached = link.phase === 'streaming';
    // A switch's own dial that failed: nothing more to keep in memory for it.
    this.retainFrom = null;
    if (!this.closed && !this.failure && !this.reconnectTimer) {
      const now = performance.now();
      const choice = redialChoice({
        links: this.addresses.length,
        lastIndex: this.addresses.indexOf(link.address),
        wasAttached,
        reason: connectFailed ? 'connect-failed' : resync ? 'resync' : reason,
        sinceLastSwitchMs: now - this.lastSwitchAt,
        guardMs: this.ackTimeoutMs,
        attempt: this.attempt,
        minMs: this.options.reconnect?.minMs ?? 50,
        maxMs: this.options.reconnect?.maxMs ?? 2000,
      });
      this.dialIndex = choice.index;
      if (choice.switched) {
        const to = this.addresses[choice.index]!;
        this.lastSwitchAt = now;
        this.stats.switches++;
        this.retainFrom = link.held;
        this.emit('link', { type: 'switch', from: link.address.link, to: to.link, reason, address: formatMirrorAddress(to) });
        // Dialled before the state moves: the flush that leaving normal starts and the new
        // handshake then overlap.
        this.dial();
      } else {
        this.attempt++;
        this.reconnectTimer = setTimeout(() => {
          this.reconnectTimer = null;
          this.dial();
        }, choice.waitMs);
      }
    }
    this.transition({ type: 'link-lost', reason });
    this.settle();
  }
}
