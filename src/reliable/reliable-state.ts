// The server's state machine over the log: the application's state and the duplicate table,
// changed only by applying a request (live) or a log record (recovery, seed step 428). Pure:
// no I/O; ReliableServer feeds it requests and writes what it returns to the log.
import { DuplicateTable } from './duplicate-table.js';
import { decodeRecord, encodeRecord } from './reliable-record.js';

/**
 * The application the reliable layer serves. `apply` must be deterministic: the same state and
 * request give the same reply and the same next state (recovery replays the log through it,
 * and a replay that recomputes another reply than the stored one is counted in
 * `stats.replayMismatches`). It runs synchronously, one request at a time, in log order.
 */
export interface ReliableApp<S> {
  /** A new, empty state (before the log's first record). */
  init(): S;
  /** Applies one request to `state` (mutating it or not) and returns the next state and the reply. */
  apply(state: S, request: Buffer, from: { clientId: string; msgId: number }): { state: S; reply: Buffer };
}

/** A stored reply; `committed` resolves once its record is acknowledged by the log. */
export interface StoredReply {
  reply: Buffer;
  committed: Promise<unknown>;
}

export type Handled =
  /** Applied now: append `record`, then send `reply` once its commit is acknowledged. */
  | { kind: 'applied'; reply: Buffer; record: Buffer; store: (committed: Promise<unknown>) => void }
  /** Applied before (the table has it): send `entry.reply` once `entry.committed` resolves. */
  | { kind: 'duplicate'; entry: StoredReply }
  /** Below what the client acknowledged: never applied, no reply kept. */
  | { kind: 'stale'; floor: number };

export class ReliableState<S> {
  state: S;
  readonly table = new DuplicateTable<StoredReply>();
  readonly stats = { applied: 0, duplicates: 0, stale: 0, replayed: 0, replayMismatches: 0 };

  constructor(private readonly app: ReliableApp<S>) {
    this.state = app.init();
  }

  /**
   * One request from a client (seed FIG. 15): the acknowledgement prunes the table, then a
   * duplicate gets its stored reply, a stale one nothing, a new one is applied. For 'applied'
   * the caller must call `store()` at once (same turn) with the commit's promise, so a
   * duplicate arriving meanwhile waits for the same commit.
   */
  handle(clientId: string, msgId: number, ackBelow: number, request: Buffer): Handled {
    this.table.acknowledge(clientId, ackBelow);
    const found = this.table.lookup(clientId, msgId);
    if (found.kind === 'duplicate') {
      this.stats.duplicates++;
      return { kind: 'duplicate', entry: found.entry };
    }
    if (found.kind === 'stale') {
      this.stats.stale++;
      return found;
    }
    const { state, reply } = this.app.apply(this.state, request, { clientId, msgId });
    this.state = state;
    this.stats.applied++;
    const record = encodeRecord({ clientId, msgId, ackBelow, request, reply });
    return { kind: 'applied', reply, record, store: (committed) => this.table.store(clientId, msgId, { reply, committed }) };
  }

  /**
   * Applies one log record at recovery (seed step 428; takeOver's `replay`): the table as it was
   * (the stored reply, already committed) and the application's state. Throws
   * ReliableRecordError for a record that is not one of ours.
   */
  replay(_lsn: number, payload: Buffer): void {
    const r = decodeRecord(payload);
    this.table.acknowledge(r.clientId, r.ackBelow);
    const { state, reply } = this.app.apply(this.state, r.request, { clientId: r.clientId, msgId: r.msgId });
    this.state = state;
    if (!reply.equals(r.reply)) this.stats.replayMismatches++;
    if (this.table.lookup(r.clientId, r.msgId).kind === 'new') this.table.store(r.clientId, r.msgId, { reply: r.reply, committed: Promise.resolve() });
    this.stats.replayed++;
  }
}
