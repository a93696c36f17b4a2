// The log mirror's errors (primary and backup): every one carries a `code`, as the log's own
// errors do (log-errors.ts), so callers branch on `err.code`, never on a message.

/** Codes of `MirrorError`. */
export type MirrorErrorCode =
  /** A frame failed its HMAC-SHA256: another key, or bytes altered on the way. The connection is closed. */
  | 'EMIRRORAUTH'
  /**
   * A frame that authenticates but breaks the protocol, or bytes that are not a frame: bad magic,
   * version, type, length or body, a frame out of order or of another connection (sequence,
   * incarnations, nonces), a gap in LSNs, an ACK for records never sent. The connection is closed.
   */
  | 'EMIRRORPROTO'
  /**
   * The backup holds records the primary does not (beyond its next LSN) or other ones (its last
   * record differs from the primary's at that LSN), and no fork point of the primary explains it
   * (mirror-history.ts: a returning primary is cut back to where its successor took over, with
   * `resync`). Refused, never overwritten: an operator decides.
   */
  | 'EMIRRORDIVERGED'
  /** The log's fork-point history (mirror-history.ts) is not valid: nothing is decided from it. */
  | 'EMIRRORHISTORY'
  /** The other side refused the connection for another reason (log name, node, records the primary no longer has). */
  | 'EMIRRORREFUSED'
  /** No ACK within `ackTimeoutMs` of a frame sent (or no HELLO / START in the handshake's time). */
  | 'EMIRRORTIMEOUT'
  /** The connection closed or failed (`cause`: the socket's error, if any). */
  | 'EMIRRORLINK'
  /** `close()` was called. */
  | 'EMIRRORCLOSED'
  /** The local log failed (an I/O error; `cause` is the log's error): no more appends. */
  | 'EMIRRORFAILED'
  /**
   * The primary stopped acting as one (`MirroredLog.fence()`: its role in the cluster store was
   * lost, or it was fenced): no more appends; a pending one's outcome is unknown (resend it to
   * the new primary).
   */
  | 'EMIRRORFENCED'
  /**
   * A takeover asked for without fencing: no `beforeTakeover` hook (fence the old primary, or
   * take the role in the cluster store) and no `unsafeWithoutFencing: true`. Nothing was changed.
   */
  | 'EMIRRORUNFENCED';

/** An error of the log mirror. `detail` is what was wrong, for logs (the message says it too). */
export class MirrorError extends Error {
  override readonly name = 'MirrorError';
  constructor(
    readonly code: MirrorErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
