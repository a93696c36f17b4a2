// What a protocol plugin tells the connection shadow (issue 12, seed 003) about one connection's
// two byte streams: where the requests the server answered end, where its last complete reply
// ends, the session state a new upstream must be given first, and whether the connection can be
// continued at all. Offsets are stream offsets: bytes since the SYN in that direction (0 is the
// first data byte), not sequence numbers, so they never wrap.

/** The bytes that re-establish a session on a new upstream, and how many replies they draw. */
export interface SessionPreamble {
  /** Sent to the new upstream before anything else (e.g. RESP `AUTH`, `SELECT`). */
  bytes: Buffer;
  /** Complete replies those bytes produce; the relay swallows them, the client never sees them. */
  replies: number;
}

/** Follows one connection's request and reply streams (both in order, without gaps). */
export interface ExchangeTracker {
  /** Bytes the client sent, in stream order, without gaps. */
  clientData(chunk: Uint8Array): void;
  /** Bytes the server sent, in stream order, without gaps. */
  serverData(chunk: Uint8Array): void;
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
  createTracker(): ExchangeTracker;
  createReplyCounter(): ReplyCounter;
}
