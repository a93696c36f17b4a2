// What a protocol plugin tells the connection shadow (issue 12, seed 003) about one connection's
// two byte streams: where the requests the server answered end, where its last complete reply
// ends, the session state a new upstream must be given first, and whether the connection can be
// continued at all. Offsets are stream offsets: bytes since the SYN in that direction (0 is the
// first data byte), not sequence numbers, so they never wrap.
import type { ProbeCaptureTimes } from './probe-capture-times.js';
import type { RequestLog } from './request-log.js';

/** The bytes that re-establish a session on a new upstream, and how many replies they draw. */
export interface SessionPreamble {
  /** Sent to the new upstream before anything else (e.g. RESP `AUTH`, `SELECT`). */
  bytes: Buffer;
  /** Complete replies those bytes produce; the relay swallows them, the client never sees them. */
  replies: number;
  /**
   * A preamble that needs the upstream's answers (a PostgreSQL login: password, MD5, SCRAM). When
   * set, the relay runs it instead of sending `bytes` and swallowing `replies` (which then only
   * describe it): nothing else goes to the upstream, and nothing of it reaches the client, until
   * the dialog is done. Called once per relay.
   */
  dialog?: () => PreambleDialog;
}

/** One run of an interactive preamble on one new upstream. */
export interface PreambleDialog {
  /** The first bytes for the upstream (e.g. a StartupMessage). */
  start(): Buffer;
  /**
   * The upstream's bytes, in order. `more`: send `send` (may be empty) and wait for more bytes;
   * `done`: the preamble's last reply ended, `rest` (the chunk's remaining bytes) belongs to the
   * client; `failed`: the upstream refused or cannot be followed (the relay ends with `reason`).
   */
  push(chunk: Uint8Array): { kind: 'more'; send: Buffer } | { kind: 'done'; rest: Buffer } | { kind: 'failed'; reason: string };
}

/** The connection cannot be continued, but its client can be told so in its own protocol. */
export interface ProtocolGoodbye {
  /** Why it is not continued (logged). */
  reason: string;
  /** Sent to the client after the server's complete replies, then FIN (PostgreSQL: FATAL 57P01). */
  bytes: Buffer;
}

/**
 * A reply the dead server was cut in the middle of that the new upstream can be asked to send on
 * from where it stopped, instead of whole (HTTP: a Range request with If-Range, RFC 9110 §14.2 and
 * §13.1.5): the client keeps the bytes it has, the new server sends the rest, and nothing has to
 * be reproduced byte for byte (a response's Date field would differ: expectReply).
 */
export interface ReplyResume {
  /** For the log: from which byte, and the validator that says it is the same representation. */
  description: string;
  /** Client stream offset inside the first replayed request where `insert` goes (HTTP: before its head's final CRLF). */
  insertAt: number;
  /** The bytes added to that request (HTTP: the Range and If-Range field lines). */
  insert: Buffer;
  /** Reads the new upstream's reply to that request up to where the cut one goes on; one per relay. */
  createFilter(): ReplyFilter;
}

/** Reads the start of a new upstream's first reply for a ReplyResume. */
export interface ReplyFilter {
  /**
   * The upstream's bytes, in order. `more`: all dropped (the new reply's head, or bytes the client
   * has), wait for more; `done`: `rest` is where the bytes the client lacks begin (everything from
   * there is relayed as it comes); `failed`: the reply does not go on from where the cut one
   * stopped (another representation, an error status): the client is reset with `reason`.
   */
  push(chunk: Uint8Array): { kind: 'more' } | { kind: 'done'; rest: Buffer } | { kind: 'failed'; reason: string };
}

/**
 * When the capture saw a chunk's segment: ms since the epoch (ParsedSegment.timeMs). late: the
 * chunk was held until a hole before it filled, and its bytes may have been seen earlier.
 */
export interface ChunkTime {
  ms: number;
  late: boolean;
}

/** What a tracker is told of its connection (all optional: a plugin may ignore it). */
export interface TrackerContext {
  /** The client endpoint as `${address}|${port}` (RequestLog's connection). */
  connection: string;
  /** Where the plugin records the writes it can tell apart (for the replay matcher). */
  log?: RequestLog;
  /** Where a RESP tracker records the capture times of the stream probe's PUBLISHes (ProbeCaptureTimes). */
  probes?: ProbeCaptureTimes;
}

/** Follows one connection's request and reply streams (both in order, without gaps). */
export interface ExchangeTracker {
  /** Bytes the client sent, in stream order, without gaps; at: when they were captured. */
  clientData(chunk: Uint8Array, at?: ChunkTime): void;
  /** Bytes the server sent, in stream order, without gaps; at: when they were captured. */
  serverData(chunk: Uint8Array, at?: ChunkTime): void;
  /**
   * Client stream offset (bytes) where the first request not yet answered by a complete reply
   * starts: everything before it was answered; what follows is replayed to the new upstream.
   */
  answeredClientBytes(): number;
  /** Server stream offset (bytes) where the last complete reply ends. */
  completeServerBytes(): number;
  /** The session state the new upstream needs before the replay (login, database, ...). */
  sessionPreamble(): SessionPreamble;
  /** null when the connection can be continued; otherwise why not (for the log and the RST). */
  blocker(): string | null;
  /**
   * Optional, consulted when blocker() is null: the session cannot be continued safely (inside a
   * PostgreSQL transaction), but the restored socket can end it cleanly with these bytes instead
   * of a RST, provided the server is not in the middle of a reply. null: continue it.
   */
  goodbye?(): ProtocolGoodbye | null;
  /**
   * Optional, consulted when the server was in the middle of a reply at the takeover (after
   * blocker() said null): how the new upstream can send the rest of it, or why it cannot (the
   * shadow then needs the replay's reply to reproduce the bytes sent, checked by the relay).
   */
  resumeReply?(): ReplyResume | string;
  /**
   * Optional: `length` bytes of the server's stream, next in order, that the client acknowledged
   * and the capture never saw (its ring overflowed); at: when the acknowledgement was captured
   * (late: the bytes themselves came earlier). null: the tracker followed the stream past them
   * (they lie inside a payload of known length, whose bytes it does not read); otherwise why it
   * cannot (the connection is not continued; the shadow says that bytes were lost first: see
   * gapReason). Absent: no gap can be followed.
   */
  serverGap?(length: number, at?: ChunkTime): string | null;
  /**
   * Optional: the same for `length` bytes of the client's stream the server acknowledged. A
   * request they belong to is framed on without them: if it is still unanswered at a takeover,
   * its replay is missing bytes and the connection is reset.
   */
  clientGap?(length: number): string | null;
  /**
   * Optional, consulted for a plan whose replay (`replay`: its bytes) follows the last complete
   * reply (no reply begun): how to replay it so that it cannot write, for when whether the dead
   * server ran it is unknown, or why it cannot be (for the log).
   */
  readOnlyReplay?(replay: Buffer): ReadOnlyReplay | string;
  /**
   * Optional, consulted when goodbye() ended a session inside a transaction with nothing
   * unanswered and no reply begun: how a new upstream can rebuild that transaction, proven to
   * have written nothing (a ReadOnlyReplay with an empty replay: its `before` runs the
   * transaction's requests read-only and rolls back, then runs them for real; its judge fails
   * when anything wrote or differs, and the goodbye is said instead), or why it cannot be.
   * `requests(from)`: the client's bytes from that stream offset to answeredClientBytes() (null:
   * not retained: see retainClientFrom).
   */
  transactionReplay?(requests: (from: number) => Buffer | null): ReadOnlyReplay | string;
  /** Optional: the client stream offset before which bytes may be dropped (default answeredClientBytes()). */
  retainClientFrom?(): number;
}

/**
 * A replay run so that it cannot write (PostgreSQL: default_transaction_read_only), for requests
 * the dead server may or may not have run: a read is answered as it would have been, a write is
 * refused by the new upstream and its connection reset (it is never applied twice).
 */
export interface ReadOnlyReplay {
  /** Sent to the upstream right before the replay; its replies never reach the client. */
  before: Buffer;
  /** Reads the upstream's bytes from the first of `before`'s replies on; one per relay. */
  createJudge(): ReadOnlyJudge;
}

/** Reads the replies to a ReadOnlyReplay for one relay. */
export interface ReadOnlyJudge {
  /**
   * The upstream's bytes, in order. `more`: nothing for the client yet. `passed` (a replay): its
   * replies show no write: `replies` go to the client, then `send` to the upstream (it gives the
   * session its own mode back; the client's bytes follow it). `done`: the last reply asked for
   * was read (`send`'s; a transaction rebuild's all, none passed), `rest` (the chunk's remaining
   * bytes) belongs to the client. `failed`: a write was refused, a transaction was left open or
   * not rebuilt, the stream cannot be read: the relay resets the client (a replay) or says the
   * session's goodbye (a rebuild), with `reason`.
   */
  push(chunk: Uint8Array): { kind: 'more' } | { kind: 'passed'; replies: Buffer; send: Buffer } | { kind: 'done'; rest: Buffer } | { kind: 'failed'; reason: string };
}

/**
 * Why a connection is not continued after the capture lost `length` bytes of one side's stream
 * that the other side acknowledged: `why` the protocol cannot be followed past them.
 */
export function gapReason(length: number, side: 'server' | 'client', why: string): string {
  return `the capture lost ${length} ${side} bytes the ${side === 'server' ? 'client' : 'server'} acknowledged: ${why}`;
}

/** Counts complete replies in an upstream's byte stream (the relay swallows the preamble's). */
export interface ReplyCounter {
  /** Feeds bytes; returns the offsets (within chunk, exclusive ends) where replies completed. */
  push(chunk: Uint8Array): number[];
  /** Why the stream cannot be framed, or null. */
  readonly broken: string | null;
}

/** A protocol the shadow can continue connections of. */
export interface ContinuePlugin {
  /** The name the config and the CLI use (`resp`). */
  readonly name: string;
  createTracker(context?: TrackerContext): ExchangeTracker;
  createReplyCounter(): ReplyCounter;
}
