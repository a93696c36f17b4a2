// The backup's end of the log mirror (seed 004: replication agent RA_B, transaction log TL_B and
// its checkpoint agent CA_B): listens for the primary, says what it holds (HELLO), takes the
// records that follow (RECORDS) into its own log, and acknowledges them as soon as they are in
// its memory (ACK), which is what lets the primary acknowledge a commit in the normal state
// (steps 252-254). Its log checkpoints to disk by time, count or bytes, as the seed's backup
// does; when the primary's link ends it flushes at once and waits (step 420, "link failure").
//
// Every frame is checked (mirror-wire.ts); the first bad one closes the connection, is counted
// and reported, and nothing of it is appended. Records must continue exactly where the backup's
// log ends: a gap closes the connection. One primary at a time: a newer connection whose START
// authenticates replaces the older one (the primary reconnected while the old socket lingers).
// It may listen on two addresses, one on each path of the replication link (seed 004 [0031]:
// main link 82, failsafe link 86); a primary that lost one path comes back on the other, and
// its START there replaces the connection left on the lost path.
//
// A returning primary listens as its successor's backup (seed 004 steps 460-465): the new primary
// answers its HELLO with a resync START naming the fork point (mirror-history.ts); this backup
// checks its records below that point are the primary's (the chain over them, log-chain.ts),
// copies what it holds past it aside, cuts its log back (log-cut.ts) and takes the new
// primary's records from there on its next connection.
import { randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { LogWriter, type CheckpointCriteria } from './log-writer.js';
import { LogChain, chainNext } from './log-chain.js';
import { scanLog } from './log-reader.js';
import { FRAME_OVERHEAD, HEADER_BYTES } from './log-format.js';
import type { FileOps } from './file-ops.js';
import { MirrorError } from './mirror-errors.js';
import { cutLogBack, type LogCut } from './log-cut.js';
import { forgetForkPointsAfter } from './mirror-history.js';
import { backupListenersOf, formatMirrorAddress, type MirrorAddress, type MirrorLinkName } from './mirror-links.js';
import {
  DEFAULT_MAX_RECORD_BYTES,
  MirrorFrameReader,
  checkMirrorKey,
  checkMirrorName,
  encodeMirrorFrame,
  frameBytesFor,
  type MirrorFrame,
  type MirrorMessage,
  type MirrorReadResult,
  type MirrorRejection,
  type StartRefusal,
} from './mirror-wire.js';

export interface MirrorBackupOptions {
  /** The backup's log directory (created when missing; recovered like any log at open). */
  dir: string;
  /** Address to listen on (e.g. the replication link's address). */
  host: string;
  /** TCP port; 0 picks a free one (read `port` after listen). */
  port: number;
  /**
   * A second address to listen on, the backup's end of the failsafe link (seed 004 [0031]);
   * port 0 picks a free one (read `failsafePort`). The primary names it in `backup.failsafe`.
   * RangeError at listen: given without `host`/`port`, a bad host or port, equal to the main
   * address.
   */
  failsafe?: MirrorAddress;
  /** The shared key, at least 16 bytes (the primary's). */
  key: Buffer;
  /** This node's name (1..64 bytes), sent in HELLO. */
  node: string;
  /** The log's name (1..64 bytes): the primary refuses a backup of another log. Default 'default'. */
  log?: string;
  /** The only primary node accepted; another's START closes the connection. Default: any with the key. */
  primary?: string;
  /** This life of the backup (u64, not 0), in every frame. Default: random per listen. */
  incarnation?: bigint;
  /** When the backup's log flushes what it holds (time, records, bytes). Default the writer's (100 ms, 1,000, 1 MiB). */
  checkpoint?: Partial<CheckpointCriteria>;
  /** The largest record accepted, bytes. Default 16 MiB (at most segmentBytes - 40, what its log takes). */
  maxRecordBytes?: number;
  /** The largest frame accepted, bytes. Default `frameBytesFor(maxRecordBytes)`: 256 KiB of records, or one record of maxRecordBytes. */
  maxFrameBytes?: number;
  /** A connection whose START has not come this long after its HELLO is closed, ms. Default 5,000. */
  handshakeTimeoutMs?: number;
  /** A connection silent this long is closed (the primary sends keepalives), ms. Default 30,000. */
  idleTimeoutMs?: number;
  /**
   * A hot standby (as a PostgreSQL standby applies WAL as it arrives): the application's state
   * kept current on the backup, so a takeover has nothing left to replay (takeOver() replays
   * only what `apply` has not seen: `appliedLsn`). `reset()` then `record()` for every record
   * of the log at listen, and again after a resync cut the log; then `record()` for each record
   * taken from the primary, in LSN order, as it is taken (before its ACK). `payload` is a view:
   * copy what is kept. A throw fails the backup (`failed`, EMIRRORFAILED): it takes nothing
   * more, and the primary goes on alone.
   */
  apply?: { reset(): void; record(lsn: number, payload: Buffer): void };
  /**
   * Whether a primary's resync answer is followed (seed 004 step 465): this node held records
   * past the point where that primary took over, so it cuts them (after copying them into
   * `<dir>/diverged/<lsn>-<time>/`, a log `readLog` reads) and mirrors it from there. Default
   * true. False: refused like a divergence (EMIRRORDIVERGED), nothing cut.
   */
  resync?: boolean;
  /** Passed to the log writer. */
  segmentBytes?: number;
  fileOps?: FileOps;
}

/** Counters since listen. */
export interface MirrorBackupStats {
  connections: number;
  /** Connections that became the attached primary's. */
  attached: number;
  /** Attached connections closed because a newer one attached. */
  replaced: number;
  framesReceived: number;
  recordsReceived: number;
  recordBytesReceived: number;
  acksSent: number;
  /** Frames refused by the decoder, by reason (each closed its connection). */
  rejected: Record<MirrorRejection, number>;
  /** RECORDS or START that did not continue the backup's log (a gap or overlap). */
  gaps: number;
  /** STARTs refusing this backup (diverged, behind, another log, another node). */
  refusedByPrimary: number;
  /** STARTs from a primary node other than `primary`. */
  foreignPrimaries: number;
  /** Connections closed for a handshake or idle timeout. */
  timeouts: number;
  /** Connections the other end closed before any START (a primary with another key, say). */
  closedBeforeStart: number;
  /** Flushes on losing the attached primary (seed step 420). */
  linkLossFlushes: number;
  /** Connections refused because this backup took over (promote()): the old primary redialling. */
  refusedAfterTakeover: number;
  /** Times the log was cut back on a primary's resync answer, and the records cut in all. */
  resyncs: number;
  recordsCut: number;
  /** Connections refused while a resync cut the log. */
  refusedWhileResyncing: number;
  /** Primaries attached, by the link (listener) their connection came in on. */
  attachedOn: Record<MirrorLinkName, number>;
}

/** What `promote()` leaves: the log's extent, every record of it on disk, and whom it mirrored. */
export interface PromotedBackup {
  /** Every record below this is in the backup's log and on its disk (fdatasync). */
  nextLsn: number;
  /** CRC32C of record `nextLsn - 1`'s payload (0 when the log holds none): recorded with the fork point (the checks use the chain, log-chain.ts). */
  lastCrc: number;
  /** The log's first LSN. */
  firstLsn: number;
  /** The primary attached when replication stopped (node and incarnation), or null if none was. */
  previousPrimary: { node: string; incarnation: bigint } | null;
  /** When promote() was called and when the flush ended (performance.now(), ms). */
  startedAt: number;
  flushedAt: number;
}

const REJECTIONS: MirrorRejection[] = ['short', 'magic', 'version', 'type', 'length', 'hmac', 'body', 'sequence', 'session', 'unexpected'];

/** A random u64 that is not 0 (0 means "none" in a HELLO). */
export function randomNonce(): bigint {
  for (;;) {
    const v = randomBytes(8).readBigUInt64BE(0);
    if (v !== 0n) return v;
  }
}

interface Conn {
  socket: net.Socket;
  remote: string;
  /** The listener (link) it came in on. */
  link: MirrorLinkName;
  reader: MirrorFrameReader;
  nonce: bigint;
  seqOut: bigint;
  primaryIncarnation: bigint;
  primaryNonce: bigint;
  /** The primary's node name, from its START. */
  primaryNode: string;
  attached: boolean;
  /** Sequence number of the last primary frame taken (ACKed). */
  lastSeq: bigint;
  /** When its last frame was taken (performance.now(), ms). */
  lastFrameAt: number;
  handshakeTimer: NodeJS.Timeout | null;
  closed: Promise<void>;
  gone: boolean;
}

export interface MirrorBackupEvents {
  /** A primary's START was accepted: records follow from `fromLsn`. */
  attached: [info: { primary: string; fromLsn: number; remote: string; link: MirrorLinkName }];
  /** The attached primary's connection ended. */
  detached: [info: { primary: string; error: MirrorError }];
  /** A connection was closed for bad input or a protocol breach (EMIRRORAUTH, EMIRRORPROTO, EMIRRORTIMEOUT). */
  rejected: [info: { remote: string; error: MirrorError; reason: MirrorRejection | 'gap' | 'timeout' | 'primary' | 'promoted' | 'handshake' }];
  /** The primary refused this backup (its START's refusal; a followed resync is `resynced`). */
  refused: [info: { primary: string; refusal: StartRefusal; reason: string; error: MirrorError }];
  /** The log was cut back to a new primary's fork point (seed 004 step 465): what was cut, and where it was kept. */
  resynced: [info: { primary: string; cut: LogCut }];
  /** The backup's log failed (an I/O error): it takes nothing more; reopen to recover. */
  failed: [error: MirrorError];
  /**
   * An ACK is about to be sent (emitted before it is written: a listener that records it
   * synchronously has recorded every ACK the primary can have seen).
   */
  ack: [info: { heldLsn: number; durableLsn: number }];
}

export class MirrorBackup extends EventEmitter<MirrorBackupEvents> {
  readonly stats: MirrorBackupStats = {
    connections: 0,
    attached: 0,
    replaced: 0,
    framesReceived: 0,
    recordsReceived: 0,
    recordBytesReceived: 0,
    acksSent: 0,
    rejected: Object.fromEntries(REJECTIONS.map((r) => [r, 0])) as Record<MirrorRejection, number>,
    gaps: 0,
    refusedByPrimary: 0,
    foreignPrimaries: 0,
    timeouts: 0,
    closedBeforeStart: 0,
    linkLossFlushes: 0,
    refusedAfterTakeover: 0,
    resyncs: 0,
    recordsCut: 0,
    refusedWhileResyncing: 0,
    attachedOn: { main: 0, failsafe: 0 },
  };
  /** This life's incarnation (in every frame). */
  readonly incarnation: bigint;

  private readonly conns = new Set<Conn>();
  private active: Conn | null = null;
  private held: number;
  /** CRC32C of record `held - 1` (the fork point's `prevCrc` when this backup takes over). */
  private lastCrc: number;
  /** The checksum chain over every record held (log-chain.ts): what HELLO names and START must match. */
  private chain: LogChain;
  private readonly firstLsn: number;
  /** The log being cut back (resync): nothing is taken until it is done. */
  private resyncing: Promise<void> | null = null;
  private readonly maxRecordBytes: number;
  private failure: MirrorError | null = null;
  private closing: Promise<void> | null = null;
  /** Set first thing in close(), before anything it calls looks. */
  private closed = false;
  private durableAckPending = false;
  /** Set by promote(): replication is over, every connection is refused with this reason. */
  private promotion: { reason: string; info: Promise<PromotedBackup> } | null = null;
  /** The last primary that attached (kept after it detaches: the one a takeover replaces). */
  private lastPrimary: { node: string; incarnation: bigint } | null = null;
  private lastAckedDurable = -1;

  private constructor(
    private readonly options: MirrorBackupOptions,
    /** Replaced when a resync reopens the log. */
    private writer: LogWriter,
    private readonly servers: ReadonlyArray<{ link: MirrorLinkName; server: net.Server }>,
    opened: OpenedBackupLog,
  ) {
    super();
    this.incarnation = options.incarnation ?? randomNonce();
    this.held = writer.nextLsn;
    this.firstLsn = writer.recovery.firstLsn;
    // A record its own log would refuse is refused on the wire (not numbered, not half-taken).
    this.maxRecordBytes = options.maxRecordBytes ?? Math.min(DEFAULT_MAX_RECORD_BYTES, (options.segmentBytes ?? 64 * 1024 * 1024) - HEADER_BYTES - FRAME_OVERHEAD);
    this.lastCrc = opened.lastCrc;
    this.chain = opened.chain;
    for (const { link, server } of servers) server.on('connection', (s) => this.onConnection(s, link));
  }

  /**
   * Opens (recovers) the backup's log in `dir` and listens. Rejects with RangeError on bad
   * options, the log's errors (LogCorruptionError ELOGCORRUPT...), or the listen error
   * (EADDRINUSE...).
   */
  static async listen(options: MirrorBackupOptions): Promise<MirrorBackup> {
    checkMirrorKey(options.key);
    checkMirrorName('node', options.node);
    checkMirrorName('log name', options.log ?? 'default');
    if (options.primary !== undefined) checkMirrorName('primary', options.primary);
    if (options.incarnation !== undefined && !(options.incarnation > 0n && options.incarnation < 1n << 64n)) throw new RangeError('incarnation must be a u64 above 0');
    const listeners = backupListenersOf(options);
    const opened = await openBackupWriter(options);
    const { writer } = opened;
    const servers: Array<{ link: MirrorLinkName; server: net.Server }> = [];
    try {
      await loadHeld(options, writer);
      for (const l of listeners) {
        const server = net.createServer();
        servers.push({ link: l.link, server });
        server.listen(l.port, l.host);
        await once(server, 'listening'); // rejects with the listen error (EADDRINUSE...)
      }
      return new MirrorBackup(options, writer, servers, opened);
    } catch (err) {
      for (const { server } of servers) server.close();
      await writer.close().catch(() => {});
      throw err;
    }
  }

  /** The port listened on (the main link's). */
  get port(): number {
    return (this.servers[0]!.server.address() as net.AddressInfo).port;
  }

  /** The port listened on on the failsafe link, or undefined without `failsafe`. */
  get failsafePort(): number | undefined {
    const s = this.servers[1];
    return s ? (s.server.address() as net.AddressInfo).port : undefined;
  }

  /** The addresses listened on, by link (`host:port`, the ports as bound). */
  get listening(): ReadonlyArray<{ link: MirrorLinkName; address: string }> {
    return this.servers.map(({ link, server }) => {
      const a = server.address() as net.AddressInfo;
      return { link, address: formatMirrorAddress({ host: a.address, port: a.port }) };
    });
  }

  /** The link the attached primary's connection came in on, or null with none attached. */
  get attachedLink(): MirrorLinkName | null {
    return this.active?.link ?? null;
  }

  /** The backup holds (in memory or on disk) every record below this LSN. */
  get heldLsn(): number {
    return this.held;
  }

  /** `apply` has seen every record below this LSN (the held LSN); the log's first LSN without `apply`. */
  get appliedLsn(): number {
    return this.options.apply ? this.held : this.firstLsn;
  }

  /** Every record below this LSN is on the backup's disk (fdatasync). */
  get durableLsn(): number {
    return this.writer.durableLsn;
  }

  /** Whether a primary is attached (its START accepted, its connection open). */
  get attached(): boolean {
    return this.active !== null;
  }

  /**
   * Milliseconds since the attached primary's last frame was taken (records or its keepalive),
   * or undefined when no primary is attached. MirrorWatch reads the mirror's link as up while
   * this is within its mirrorQuietMs.
   */
  get primaryQuietMs(): number | undefined {
    return this.active ? performance.now() - this.active.lastFrameAt : undefined;
  }

  /** Why the backup stopped (its log failed), or null. */
  get failed(): MirrorError | null {
    return this.failure;
  }

  /** The name of the log it mirrors. */
  get logName(): string {
    return this.options.log ?? 'default';
  }

  /** The backup's log directory. */
  get dir(): string {
    return this.options.dir;
  }

  /** Whether promote() was called: this node no longer mirrors anyone. */
  get promoted(): boolean {
    return this.promotion !== null;
  }

  /** Open connections (for tests and status). */
  get connectionCount(): number {
    return this.conns.size;
  }

  /** Flushes what the backup holds to its disk now; resolves once durable. */
  flush(): Promise<void> {
    return this.writer.flush();
  }

  /**
   * Stops replication for a takeover (seed 004 FIG. 13, steps 426-427): closes the attached
   * primary's connection and every other one, refuses every later connection at once (the old
   * primary redialling: `rejected` with reason 'promoted', EMIRRORREFUSED, counted in
   * `stats.refusedAfterTakeover`), then flushes what the backup holds and closes its log, so the
   * log's directory can be opened by the new primary (`takeOver()` in takeover.ts does the rest).
   * The listener stays open, refusing, until `close()`: a returning primary learns why on its
   * side only as a closed link (EMIRRORLINK; the wire has no refusal from a backup).
   *
   * An explicit call, or MirrorWatch's (mirror-watch.ts: heartbeats over the main and failsafe
   * links, then takeOverFenced(), which runs the caller's fencing hook first). One guard here: a primary still attached whose last
   * frame came less than `quietMs` ago (default 1,000 ms; it sends a keepalive every third of its
   * ackTimeoutMs) is alive, and a takeover would make two primaries: refused (EMIRRORREFUSED)
   * unless `force`. A dead process's connection is closed, so it is not attached; a stopped
   * node's stays open until it has been quiet that long. This is not fencing: a primary cut off
   * from the backup (the link, not the node) is not attached either.
   *
   * Idempotent (a second call gets the first's result). Rejects with MirrorError EMIRRORREFUSED
   * (the guard above; nothing changed), EMIRRORCLOSED after close(), EMIRRORFAILED if the
   * backup's log had failed, or the log's error if the final flush fails (then nothing may be
   * taken over).
   */
  promote(options: { reason?: string; force?: boolean; quietMs?: number } = {}): Promise<PromotedBackup> {
    if (this.promotion) return this.promotion.info;
    if (this.closed) return Promise.reject(new MirrorError('EMIRRORCLOSED', 'the backup is closed'));
    if (this.failure) return Promise.reject(new MirrorError('EMIRRORFAILED', this.failure.message, { cause: this.failure.cause }));
    const quietMs = options.quietMs ?? 1000;
    const heard = this.active ? performance.now() - this.active.lastFrameAt : Infinity;
    if (!options.force && heard < quietMs) {
      return Promise.reject(new MirrorError('EMIRRORREFUSED', `primary ${this.active!.primaryNode} is attached and was heard ${heard.toFixed(0)} ms ago (less than ${quietMs} ms): it is alive, a takeover would make two primaries (force to override)`));
    }
    const reason = options.reason ?? 'explicit takeover';
    const startedAt = performance.now();
    const previousPrimary = this.active ? { node: this.active.primaryNode, incarnation: this.active.primaryIncarnation } : this.lastPrimary;
    const why = `this backup took over as primary (${reason}) at LSN ${this.held}${previousPrimary ? `, replacing primary ${previousPrimary.node} incarnation ${previousPrimary.incarnation}` : ''}: it mirrors nobody now`;
    const info = (async () => {
      // Step 426: replication disabled. Nothing more is taken from any connection.
      for (const c of [...this.conns]) this.drop(c, new MirrorError('EMIRRORREFUSED', why));
      await this.resyncing;
      // Step 427: the log flushed (close() writes and fdatasyncs what is held, then closes it).
      await this.writer.close();
      return { nextLsn: this.held, lastCrc: this.held > this.firstLsn ? this.lastCrc : 0, firstLsn: this.firstLsn, previousPrimary, startedAt, flushedAt: performance.now() };
    })();
    this.promotion = { reason: why, info };
    return info;
  }

  /**
   * Stops listening, closes every connection, flushes what is held and closes the log. Resolves
   * once every socket and file is closed; rejects with the flush's error (all closed anyway).
   */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.closed = true;
    await this.resyncing;
    const serverClosed = Promise.all(this.servers.map(({ server }) => new Promise<void>((r) => server.close(() => r()))));
    for (const c of [...this.conns]) this.drop(c, new MirrorError('EMIRRORCLOSED', 'the backup is closing'));
    await Promise.all([...this.conns].map((c) => c.closed));
    await serverClosed;
    await this.writer.close();
  }

  private onConnection(socket: net.Socket, link: MirrorLinkName): void {
    if (this.closed || this.failure) {
      socket.destroy();
      return;
    }
    if (this.promotion) {
      this.stats.refusedAfterTakeover++;
      socket.destroy();
      this.emit('rejected', { remote: `${socket.remoteAddress}:${socket.remotePort}`, reason: 'promoted', error: new MirrorError('EMIRRORREFUSED', this.promotion.reason) });
      return;
    }
    if (this.resyncing) {
      // The HELLO would name a log being cut: the primary redials shortly.
      this.stats.refusedWhileResyncing++;
      socket.destroy();
      return;
    }
    this.stats.connections++;
    socket.setNoDelay(true);
    socket.setTimeout(this.options.idleTimeoutMs ?? 30_000);
    const nonce = randomNonce();
    const conn: Conn = {
      socket,
      remote: `${socket.remoteAddress}:${socket.remotePort}`,
      link,
      reader: new MirrorFrameReader({ role: 'backup', incarnation: this.incarnation, nonce }, { key: this.options.key, maxRecordBytes: this.maxRecordBytes, maxFrameBytes: this.options.maxFrameBytes ?? frameBytesFor(this.maxRecordBytes) }),
      nonce,
      seqOut: 0n,
      primaryIncarnation: 0n,
      primaryNonce: 0n,
      primaryNode: '',
      attached: false,
      lastSeq: 0n,
      lastFrameAt: performance.now(),
      handshakeTimer: null,
      closed: new Promise((r) => socket.once('close', () => r())),
      gone: false,
    };
    this.conns.add(conn);
    socket.on('error', () => {}); // 'close' follows; its cause is not ours to report
    socket.on('close', () => this.onClosed(conn));
    socket.on('timeout', () => {
      this.stats.timeouts++;
      this.reject(conn, 'timeout', new MirrorError('EMIRRORTIMEOUT', `no frame from ${conn.remote} for ${this.options.idleTimeoutMs ?? 30_000} ms`));
    });
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('end', () => {
      const cut = conn.reader.finish();
      if (cut && !cut.ok) this.rejectFrame(conn, cut);
      else this.closedByPeer(conn);
    });
    conn.handshakeTimer = setTimeout(() => {
      this.stats.timeouts++;
      this.reject(conn, 'timeout', new MirrorError('EMIRRORTIMEOUT', `no START from ${conn.remote} within ${this.options.handshakeTimeoutMs ?? 5000} ms`));
    }, this.options.handshakeTimeoutMs ?? 5000);
    this.send(conn, { type: 'hello', log: this.options.log ?? 'default', node: this.options.node, firstLsn: this.firstLsn, heldLsn: this.held, lastCrc: this.chain.tip });
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.gone) return;
    let records = false;
    for (const r of conn.reader.push(chunk)) {
      if (!r.ok) {
        this.rejectFrame(conn, r);
        return;
      }
      this.stats.framesReceived++;
      conn.lastFrameAt = performance.now();
      if (!this.take(conn, r.frame)) return;
      records ||= r.frame.message.type === 'records';
    }
    // One ACK for what this chunk brought (it names the last frame taken).
    if (records && conn === this.active) this.ack(conn);
  }

  /** Handles one checked frame; false when the connection was closed. */
  private take(conn: Conn, frame: MirrorFrame): boolean {
    const m = frame.message;
    if (m.type === 'start') {
      if (m.refusal === 'resync' && this.options.resync !== false) {
        this.resync(conn, m.node, m.fromLsn, m.prevCrc, m.reason);
        return false;
      }
      if (m.refusal !== null) {
        this.stats.refusedByPrimary++;
        // A resync not followed (`resync: false`) leaves the logs diverged, as the primary found them.
        const diverged = m.refusal === 'diverged' || m.refusal === 'resync';
        const error = new MirrorError(diverged ? 'EMIRRORDIVERGED' : 'EMIRRORREFUSED', `primary ${m.node} refused this backup (${m.refusal}${m.refusal === 'resync' ? ', not followed: resync is off' : ''}): ${m.reason}`);
        this.emit('refused', { primary: m.node, refusal: m.refusal, reason: m.reason, error });
        this.drop(conn, error);
        return false;
      }
      if (this.options.primary !== undefined && m.node !== this.options.primary) {
        this.stats.foreignPrimaries++;
        this.reject(conn, 'primary', new MirrorError('EMIRRORREFUSED', `START from primary ${m.node}, this backup mirrors ${this.options.primary}`));
        return false;
      }
      if (m.fromLsn !== this.held) {
        this.stats.gaps++;
        this.reject(conn, 'gap', new MirrorError('EMIRRORPROTO', `START from LSN ${m.fromLsn}, but the backup holds every record below ${this.held} and nothing after`));
        return false;
      }
      // The primary compared its records below with this backup's (the HELLO's chain over all of
      // them); check its answer here too, so neither side alone decides two logs are one.
      if (this.held > this.firstLsn && m.prevCrc !== this.chain.tip) {
        this.reject(conn, 'gap', new MirrorError('EMIRRORDIVERGED', `START from LSN ${m.fromLsn} names chain ${m.prevCrc.toString(16)} for records ${this.firstLsn}..${m.fromLsn - 1}, this backup's is ${this.chain.tip.toString(16)}`));
        return false;
      }
      conn.primaryIncarnation = frame.senderIncarnation;
      conn.primaryNonce = frame.primaryNonce;
      conn.primaryNode = m.node;
      conn.attached = true;
      conn.lastSeq = frame.seq;
      if (conn.handshakeTimer) clearTimeout(conn.handshakeTimer);
      conn.handshakeTimer = null;
      const previous = this.active;
      this.active = conn;
      this.lastPrimary = { node: m.node, incarnation: frame.senderIncarnation };
      this.stats.attached++;
      this.stats.attachedOn[conn.link]++;
      if (previous && previous !== conn) {
        this.stats.replaced++;
        this.drop(previous, new MirrorError('EMIRRORLINK', `replaced by a newer connection of primary ${m.node} from ${conn.remote}`));
      }
      this.emit('attached', { primary: m.node, fromLsn: m.fromLsn, remote: conn.remote, link: conn.link });
      this.ack(conn); // what it holds, at once: a backup already caught up lets the primary go normal
      return true;
    }
    if (m.type !== 'records') return true; // the reader lets nothing else through
    if (conn !== this.active) {
      // A connection replaced while its data was queued: already dropped.
      return false;
    }
    if (m.firstLsn !== this.held) {
      this.stats.gaps++;
      this.reject(conn, 'gap', new MirrorError('EMIRRORPROTO', `records from LSN ${m.firstLsn}, but the backup holds every record below ${this.held} and nothing after: a gap or an overlap`));
      return false;
    }
    if (this.failure || this.promotion) return false;
    for (const rec of m.records) {
      // Numbered by the writer in call order: its next LSN is the backup's held LSN.
      this.writer.append(rec).then(
        () => this.durableAdvanced(),
        (err: unknown) => this.fail(err),
      );
      const lsn = this.held++;
      this.lastCrc = crc32c(rec);
      this.chain.push(rec);
      this.stats.recordBytesReceived += rec.length;
      if (this.options.apply) {
        try {
          this.options.apply.record(lsn, rec);
        } catch (err) {
          this.fail(new Error(`apply of record ${lsn} threw: ${(err as Error).message}`, { cause: err }));
          return false;
        }
      }
    }
    this.stats.recordsReceived += m.records.length;
    conn.lastSeq = frame.seq;
    return true;
  }

  /**
   * Follows a primary's resync answer (seed 004 step 465): checks this backup's records below
   * `lsn` are the primary's (`prevChain`: the chain over them, log-chain.ts), copies the records from `lsn` on aside, cuts the log
   * back to `lsn` and reopens it; the primary's next connection then finds it holding exactly
   * what they share. Refused (EMIRRORDIVERGED, `refused`, nothing cut) when the records below
   * differ or the point is not inside this log. A failure of the cut fails the backup (its log
   * is valid, only longer: reopen to retry).
   */
  private resync(conn: Conn, primary: string, lsn: number, prevChain: number, reason: string): void {
    const refuse = (why: string) => {
      this.stats.refusedByPrimary++;
      const error = new MirrorError('EMIRRORDIVERGED', `primary ${primary} asked this backup to cut its log back to LSN ${lsn} (${reason}), refused: ${why}`);
      this.emit('refused', { primary, refusal: 'resync', reason, error });
      this.drop(conn, error);
    };
    if (!(lsn >= this.firstLsn && lsn < this.held)) return refuse(`this backup holds LSNs ${this.firstLsn} to ${this.held - 1}`);
    this.drop(conn, new MirrorError('EMIRRORREFUSED', `cutting the log back to LSN ${lsn} for primary ${primary}`));
    for (const c of [...this.conns]) this.drop(c, new MirrorError('EMIRRORREFUSED', `cutting the log back to LSN ${lsn}`));
    const o = this.options;
    const fileOps = o.fileOps;
    this.resyncing = (async () => {
      await this.writer.close(); // flushes what is held: the scan below reads it from disk
      // This log's chain over [firstLsn, lsn): from the point kept below lsn, folding the rest.
      const point = this.chain.pointAtOrBelow(lsn);
      let own = point.chain;
      if (point.lsn < lsn) await scanLog(o.dir, { fromLsn: point.lsn, toLsn: lsn, onRecord: (_l, p) => (own = chainNext(own, p)), ...(fileOps ? { fileOps } : {}) });
      let cut: LogCut | null = null;
      if (lsn === this.firstLsn || own === prevChain) {
        const keepDir = path.join(o.dir, 'diverged', `${lsn}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
        cut = await cutLogBack(o.dir, lsn, keepDir, fileOps);
        await forgetForkPointsAfter(o.dir, lsn);
      }
      const reopened = await openBackupWriter(o);
      this.writer = reopened.writer;
      this.held = this.writer.nextLsn;
      this.lastCrc = reopened.lastCrc;
      this.chain = reopened.chain;
      await loadHeld(o, this.writer);
      if (cut) {
        this.stats.resyncs++;
        this.stats.recordsCut += cut.cutRecords;
        this.emit('resynced', { primary, cut });
      } else refuse(`its chain over records ${this.firstLsn}..${lsn - 1} is ${own.toString(16)}, the primary's ${prevChain.toString(16)}: the logs differ before the fork point`);
    })()
      .catch((err: unknown) => this.fail(err))
      .finally(() => (this.resyncing = null));
  }

  /** Reports the durable LSN to the primary when a checkpoint moved it (one ACK per turn). */
  private durableAdvanced(): void {
    if (this.durableAckPending) return;
    this.durableAckPending = true;
    setImmediate(() => {
      this.durableAckPending = false;
      const c = this.active;
      if (c && !c.gone && this.writer.durableLsn !== this.lastAckedDurable) this.ack(c);
    });
  }

  private ack(conn: Conn): void {
    this.lastAckedDurable = this.writer.durableLsn;
    this.stats.acksSent++;
    const durableLsn = Math.min(this.writer.durableLsn, this.held);
    this.emit('ack', { heldLsn: this.held, durableLsn });
    this.send(conn, { type: 'ack', heldLsn: this.held, durableLsn, frameSeq: conn.lastSeq });
  }

  private send(conn: Conn, message: MirrorMessage): void {
    if (conn.gone) return;
    const hello = message.type === 'hello';
    const bytes = encodeMirrorFrame(
      {
        senderIncarnation: this.incarnation,
        receiverIncarnation: hello ? 0n : conn.primaryIncarnation,
        backupNonce: conn.nonce,
        primaryNonce: hello ? 0n : conn.primaryNonce,
        seq: conn.seqOut++,
        message,
      },
      this.options.key,
    );
    conn.socket.write(bytes);
  }

  private rejectFrame(conn: Conn, r: Extract<MirrorReadResult, { ok: false }>): void {
    this.stats.rejected[r.reason]++;
    const code = r.reason === 'hmac' ? 'EMIRRORAUTH' : 'EMIRRORPROTO';
    this.reject(conn, r.reason, new MirrorError(code, `frame from ${conn.remote} refused (${r.reason}): ${r.detail}`));
  }

  private reject(conn: Conn, reason: MirrorRejection | 'gap' | 'timeout' | 'primary' | 'promoted' | 'handshake', error: MirrorError): void {
    if (conn.gone) return;
    this.emit('rejected', { remote: conn.remote, error, reason });
    this.drop(conn, error);
  }

  /** Closes a connection (once); losing the attached primary flushes what is held (step 420). */
  private drop(conn: Conn, error: MirrorError): void {
    if (conn.gone) return;
    conn.gone = true;
    if (conn.handshakeTimer) clearTimeout(conn.handshakeTimer);
    conn.socket.destroy();
    if (this.active === conn) {
      this.active = null;
      this.emit('detached', { primary: conn.primaryNode, error });
      if (!this.failure && !this.closed && !this.promotion) {
        this.stats.linkLossFlushes++;
        this.writer.flush().catch((err: unknown) => this.fail(err));
      }
    }
  }

  private onClosed(conn: Conn): void {
    if (!conn.gone) this.closedByPeer(conn);
    this.conns.delete(conn);
  }

  /**
   * The other end closed the connection. Before any START, that is a primary that refused this
   * backup's HELLO without a word (another key: it cannot authenticate a START to us), or not
   * a primary at all: reported (`rejected`, reason 'handshake'), so the backup's operator sees
   * it too, not only the primary's.
   */
  private closedByPeer(conn: Conn): void {
    if (conn.primaryNode !== '') {
      this.drop(conn, new MirrorError('EMIRRORLINK', `${conn.remote} closed the connection`));
      return;
    }
    this.stats.closedBeforeStart++;
    this.reject(conn, 'handshake', new MirrorError('EMIRRORLINK', `${conn.remote} closed the connection before any START: a primary with another key (its log says EMIRRORAUTH), or not a primary`));
  }

  /** The backup's log failed: nothing more is taken (a held LSN it could no longer keep would lie). */
  private fail(err: unknown): void {
    if (this.failure || this.closed) return;
    this.failure = new MirrorError('EMIRRORFAILED', `the backup's log failed: ${(err as Error).message}`, { cause: err });
    for (const c of [...this.conns]) this.drop(c, this.failure);
    this.emit('failed', this.failure);
  }
}

/** A backup's log as opened: the writer, the chain over its records and its last record's CRC32C (0 with none). */
interface OpenedBackupLog {
  writer: LogWriter;
  chain: LogChain;
  lastCrc: number;
}

/**
 * Opens (recovers) the backup's log, building the chain over its records and taking the last
 * record's CRC32C from the recovery's own read (the log is read once here).
 */
async function openBackupWriter(options: MirrorBackupOptions): Promise<OpenedBackupLog> {
  let chain: LogChain | null = null;
  let lastCrc = 0;
  const writer = await LogWriter.open({
    dir: options.dir,
    sync: 'checkpoint',
    holder: `a mirror backup (${options.node})`,
    onRecoveredRecord: (lsn, p) => {
      chain ??= new LogChain(lsn);
      chain.push(p);
      lastCrc = crc32c(p);
    },
    ...(options.checkpoint ? { checkpoint: options.checkpoint } : {}),
    ...(options.maxRecordBytes !== undefined ? { maxRecordBytes: options.maxRecordBytes } : {}),
    ...(options.segmentBytes ? { segmentBytes: options.segmentBytes } : {}),
    ...(options.fileOps ? { fileOps: options.fileOps } : {}),
  });
  return { writer, chain: chain ?? new LogChain(writer.recovery.firstLsn), lastCrc };
}

/**
 * The log just opened, as the backup holds it: every record handed to `apply` (after its
 * reset), when there is one.
 */
async function loadHeld(options: MirrorBackupOptions, writer: LogWriter): Promise<void> {
  const next = writer.nextLsn;
  const first = writer.recovery.firstLsn;
  if (!options.apply) return;
  options.apply.reset();
  if (next > first) {
    await scanLog(options.dir, {
      fromLsn: first,
      toLsn: next,
      onRecord: (lsn, p) => options.apply!.record(lsn, p),
      ...(options.fileOps ? { fileOps: options.fileOps } : {}),
    });
  }
}
