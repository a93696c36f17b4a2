// What a store engine must do for the cluster store (cluster-store.ts): keep one record per
// application under its TAG, each with a revision, and change a record only when the caller
// names the revision it read (compare-and-swap). That single primitive is what makes "two
// survivors can never both become HOST" hold: both read revision r, both write "HOST = me if
// revision is r", one of them wins. The engines: file-backend.ts (one machine: a file, a lock,
// atomic rename) and etcd-backend.ts (a cluster: etcd transactions on mod_revision).
//
// Engines know nothing of what a record means; validation and history are ClusterStore's.

/** A record as an engine keeps it: opaque JSON and its revision (> 0; grows with every write). */
export interface RawRecord {
  tag: string;
  record: unknown;
  revision: number;
}

/** A node's liveness in the store (an etcd lease; a renewed expiry time in the file). */
export interface NodeLease {
  readonly node: string;
  /** Resolves when the lease is lost (could not be renewed before it ran out), with why. */
  readonly lost: Promise<string>;
  /** Ends the lease at once (a planned stop): the node is no longer live in the store. */
  close(): Promise<void>;
}

export interface StoreBackend {
  readonly engine: 'file' | 'etcd';
  /** Where it is, for messages: the file's path, or the etcd endpoints. */
  readonly location: string;
  readAll(): Promise<RawRecord[]>;
  read(tag: string): Promise<RawRecord | undefined>;
  /**
   * Writes `record` under `tag` if its current revision is `expected` (0: the tag must be
   * absent); `null` deletes it. Returns the new revision (0 after a delete). Throws
   * StoreConflictError when the revision differs, StoreUnavailableError when the store cannot
   * be reached or did not answer in time: nothing was written, unless its `maybeWritten` says
   * the write may still take effect (read again before deciding).
   */
  compareAndSwap(tag: string, expected: number, record: unknown): Promise<number>;
  /**
   * Calls `onChange(tag)` after a record changed (an engine may coalesce several changes into
   * one call, and may report a change before the writer's own call has returned). Resolves, with
   * the stop function, once every later change will be reported: read the state after that.
   */
  watch(onChange: (tag: string) => void): Promise<() => void>;
  /** Keeps `node` live in the store, renewed well inside `ttlMs`, until closed or lost. */
  keepAlive(node: string, ttlMs: number): Promise<NodeLease>;
  /** The nodes whose lease is live now. */
  liveNodes(): Promise<string[]>;
  close(): Promise<void>;
}

/** The record changed since it was read: read it again and decide again. */
export class StoreConflictError extends Error {
  override readonly name = 'StoreConflictError';
  readonly code = 'ESTORECONFLICT';
  constructor(
    readonly tag: string,
    message: string,
  ) {
    super(`application ${tag}: ${message}`);
  }
}

/** The store could not be reached or did not answer in time (etcd without quorum, say). */
export class StoreUnavailableError extends Error {
  override readonly name: string = 'StoreUnavailableError';
  /** ESTOREACCESS for its subclass StoreAccessError. */
  readonly code: 'ESTOREUNAVAILABLE' | 'ESTOREACCESS' = 'ESTOREUNAVAILABLE';
  /**
   * False: nothing was written. True: a write was sent and its answer did not come, so it may
   * still take effect, once, and only if the record was still at the expected revision (etcd: a
   * leader that lost its quorum had it in its log, and the next leader commits it). Read the
   * record again before deciding anything from this failure.
   */
  readonly maybeWritten: boolean;
  constructor(
    readonly location: string,
    message: string,
    options?: { cause?: unknown; maybeWritten?: boolean },
  ) {
    super(`store ${location}: ${message}${options?.maybeWritten ? ' (the write may still take effect: read the record again)' : ''}`, options);
    this.maybeWritten = options?.maybeWritten ?? false;
  }
}

/**
 * Why a store refuses this client: its user or password (`authentication`: wrong, or given to an
 * etcd without auth), its rights on the keys (`permission`), or TLS (a certificate that either
 * side does not accept, or no TLS where the other side speaks it).
 */
export type StoreAccessReason = 'authentication' | 'permission' | 'tls';

/**
 * The store answered but refuses this client (code ESTOREACCESS): asking again with the same
 * credentials will not help, an operator must change them (or the store's). A kind of
 * StoreUnavailableError, so whatever waits for the store to be usable again waits for this too.
 * Nothing was written, unless `maybeWritten` says an earlier attempt of the same call got no answer.
 */
export class StoreAccessError extends StoreUnavailableError {
  override readonly name: string = 'StoreAccessError';
  override readonly code = 'ESTOREACCESS';
  constructor(
    location: string,
    readonly reason: StoreAccessReason,
    message: string,
    options?: { cause?: unknown; maybeWritten?: boolean },
  ) {
    super(location, message, options);
  }
}
