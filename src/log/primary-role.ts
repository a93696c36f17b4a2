// The mirrored log's primary role in the cluster store (seed 004, "never two primaries", steps
// 420-425 and [0073]): one record per log naming the node that may serve it as primary, changed
// only by compare-and-swap, and held only while its holder keeps a lease in the same store. A
// backup takes the role over (claim) only once the holder's lease has run out, so a primary that
// is merely cut off (a partition: it looks dead to the backup) keeps the role as long as it can
// renew its lease, and loses it (`PrimaryHold.lost`) before anyone else can claim it. The same
// primitive as app-decisions.ts's "two survivors can never both become HOST": both claimants
// read revision r, both write "primary = me if revision is r", one wins; the loser reads again
// and finds a holder whose lease is live.
//
// Where it lives: a StoreBackend of its own (openLogRoleStore in cluster/open-store.ts: the
// agent's etcd under `/takeover/<cluster>/logs/`, or the file store's sibling `<file>.logs`),
// not among the applications: ClusterStore reads every record there as an application, and the
// holder's lease must be the serving process's own, not the node's agent's (an agent alive on a
// node whose log process died must not keep the role alive). Keys:
//   record  <log>           {format, log, primary, incarnation (decimal), since (ms since the epoch)}
//   lease   <log>.<node>    the holder's liveness (liveNodes); a log name has no '.', so the first
//                           one ends it (etcd takes only [A-Za-z0-9._-] in a lease's name)
// Records hold nothing else: a ClusterStore-like history is not needed to decide anything.
import { isDeepStrictEqual } from 'node:util';
import { type NodeLease, type RawRecord, type StoreBackend, StoreConflictError, StoreUnavailableError } from '../cluster/store-backend.js';

const FORMAT = 'takeover-log-role';
/**
 * Node names: what both store engines take in a lease's name (etcd: [A-Za-z0-9._-]), 1-128.
 * Log names: the same without '.', which separates the two in the lease's name.
 */
const NODE = /^[A-Za-z0-9._-]{1,128}$/;
const LOG = /^[A-Za-z0-9_-]{1,128}$/;
/** Compare-and-swap attempts one claim makes when the record keeps changing under it. */
const CLAIM_ATTEMPTS = 5;

/** Who holds a log's primary role, as the store says. */
export interface PrimaryRoleRecord {
  log: string;
  /** The node that may serve the log as primary. */
  primary: string;
  /** Its process's incarnation (MirroredLog's), a u64 above 0. */
  incarnation: bigint;
  /** When this holder took the role, ms since the epoch. */
  since: number;
}

/** The record and its store revision (what a compare-and-swap names). */
export interface StoredPrimaryRole {
  record: PrimaryRoleRecord;
  revision: number;
}

/** Codes of PrimaryRoleError. */
export type PrimaryRoleErrorCode =
  /** Another node holds the role and its lease is live (`holder` names it): serve as its backup. */
  | 'EMIRRORROLEHELD'
  /** The stored record is not a role record of this log (hand-edited, another program's): nothing was written. */
  | 'EMIRRORROLEBAD';

export class PrimaryRoleError extends Error {
  override readonly name = 'PrimaryRoleError';
  constructor(
    readonly code: PrimaryRoleErrorCode,
    message: string,
    /** With EMIRRORROLEHELD: the record naming the live holder. */
    readonly holder?: PrimaryRoleRecord,
  ) {
    super(message);
  }
}

/** The role, held by this process until `lost` resolves. */
export interface PrimaryHold {
  readonly record: PrimaryRoleRecord;
  /** The record's revision when claimed. */
  readonly revision: number;
  /** The holder this claim replaced, when the record named another node (its log may hold commits this one lacks). */
  readonly takenFrom: PrimaryRoleRecord | undefined;
  /**
   * Resolves (never rejects), with why, once this process may no longer act as primary: its
   * lease was not renewed before its TTL ran out (the store unreachable or too slow), the
   * record was seen naming another node or incarnation, or release() was called. From then on
   * another node may claim the role, so the application MUST stop acknowledging at once (stop
   * its ReliableServer, close its MirroredLog). The lease's loss is told no later than the store
   * can let it expire (file: the same expiry time on the one machine's clock; etcd: counted from
   * the sending of the last answered renewal, the server keeps it at least that long) — provided
   * this event loop runs: keep `leaseMs` well above the longest pause the process may have.
   */
  readonly lost: Promise<string>;
  /** A planned stop: ends the lease at once (the role may be claimed right away); `lost` resolves with 'released'. The record is left. */
  release(): Promise<void>;
}

/** What a starting node is (see LogPrimaryRole.atStart). */
export type StartingRole = { role: 'primary'; hold: PrimaryHold } | { role: 'backup'; primary: PrimaryRoleRecord };

export interface LogPrimaryRoleOptions {
  /** The role store (openLogRoleStore(config), or any StoreBackend of its own). Not closed by this. */
  backend: StoreBackend;
  /** The log's name (as MirroredLog's `log`): 1-128 letters, digits, '_' and '-'. */
  log: string;
  /** This node: 1-128 letters, digits, '.', '_' and '-' (what etcd takes in a lease's name). */
  node: string;
  /** This process's incarnation (MirroredLog's `incarnation`), a u64 above 0. */
  incarnation: bigint;
  /** The holder's lease TTL, ms (300-60,000; etcd rounds up to whole seconds): how long a dead primary blocks a takeover. */
  leaseMs: number;
  /** Clock for `since`, ms since the epoch. Default Date.now. */
  now?: () => number;
}

export interface ClaimWhenFreeOptions {
  /** Give up after this long, ms (default 3 × leaseMs + 2,000: the holder's lease runs out within one TTL). */
  timeoutMs?: number;
  /** How often to try again while the holder's lease is live or the store unavailable, ms (default leaseMs / 4, 50-1,000). */
  pollMs?: number;
}

/** The lease a holder of `log` on `node` keeps in the role store. */
export function roleLeaseName(log: string, node: string): string {
  return `${log}.${node}`;
}

/**
 * One process's view of one log's primary role. `claim()` takes it by compare-and-swap:
 * it succeeds when the record is absent, names this node, or names a node whose lease is not
 * live; `atStart()` tells a starting node whether it is the primary or the backup of whom;
 * `claimWhenFree()` waits for a dead holder's lease to run out (what a backup's takeover does,
 * through roleClaimHook in takeover-hooks.ts).
 */
export class LogPrimaryRole {
  private lease: NodeLease | undefined;
  private current: PrimaryHold | undefined;
  /** The claim under way: a second call while one runs shares it (one lease, one write). */
  private claiming: Promise<PrimaryHold> | undefined;
  private readonly now: () => number;

  /** Throws RangeError for a bad log or node name, incarnation or leaseMs. */
  constructor(private readonly options: LogPrimaryRoleOptions) {
    if (!LOG.test(options.log)) throw new RangeError(`log must be 1-128 letters, digits, '_' and '-' (got ${JSON.stringify(options.log)})`);
    if (!NODE.test(options.node)) throw new RangeError(`node must be 1-128 letters, digits, '.', '_' and '-' (got ${JSON.stringify(options.node)})`);
    if (!(typeof options.incarnation === 'bigint' && options.incarnation > 0n && options.incarnation < 1n << 64n)) throw new RangeError('incarnation must be a u64 above 0');
    if (!Number.isInteger(options.leaseMs) || options.leaseMs < 300 || options.leaseMs > 60_000) throw new RangeError(`leaseMs must be an integer of 300-60000 ms (got ${options.leaseMs})`);
    this.now = options.now ?? Date.now;
  }

  get log(): string {
    return this.options.log;
  }

  get node(): string {
    return this.options.node;
  }

  /** The role as this process holds it, until its `lost` resolved; undefined otherwise. */
  get hold(): PrimaryHold | undefined {
    return this.current;
  }

  /** The record as stored (undefined: nobody ever held the role). Throws StoreUnavailableError, PrimaryRoleError EMIRRORROLEBAD. */
  async read(): Promise<StoredPrimaryRole | undefined> {
    const raw = await this.options.backend.read(this.options.log);
    return raw && { record: this.decode(raw), revision: raw.revision };
  }

  /**
   * Takes the role: takes this process's lease (first, so a record naming it is never without a
   * live lease), then writes the record by compare-and-swap when it is absent, names this node,
   * or names a node whose lease is not live. A conflict (someone wrote in between) is decided
   * again from what is there now; a StoreUnavailableError with `maybeWritten` is decided by
   * reading again (the write took effect if the record is exactly the one sent).
   *
   * Resolves with the hold (also `this.hold`). Throws PrimaryRoleError EMIRRORROLEHELD (another
   * node holds it, with a live lease: `holder` names it), EMIRRORROLEBAD, StoreUnavailableError
   * (the store cannot be reached: nothing is known to be written), StoreConflictError (the
   * record changed at every one of 5 attempts). On any failure this process's lease is ended.
   * While this process holds the role, resolves with the same hold at once.
   */
  claim(): Promise<PrimaryHold> {
    if (this.current) return Promise.resolve(this.current);
    this.claiming ??= this.claimOnce().finally(() => (this.claiming = undefined));
    return this.claiming;
  }

  private async claimOnce(): Promise<PrimaryHold> {
    const { backend, log, node, incarnation } = this.options;
    const lease = this.lease ?? (this.lease = await backend.keepAlive(roleLeaseName(log, node), this.options.leaseMs));
    try {
      for (let attempt = 1; ; attempt++) {
        const stored = await this.read();
        const takenFrom = stored && stored.record.primary !== node ? stored.record : undefined;
        if (takenFrom) {
          const live = await backend.liveNodes();
          if (live.includes(roleLeaseName(log, takenFrom.primary))) throw held(takenFrom);
        }
        const mine = stored?.record.primary === node && stored.record.incarnation === incarnation;
        const record: PrimaryRoleRecord = { log, primary: node, incarnation, since: mine ? stored.record.since : this.now() };
        const expected = stored?.revision ?? 0;
        let revision: number | undefined;
        try {
          revision = await backend.compareAndSwap(log, expected, encode(record));
        } catch (err) {
          if (err instanceof StoreConflictError) {
            if (attempt >= CLAIM_ATTEMPTS) throw err;
            continue;
          }
          if (!(err instanceof StoreUnavailableError) || !err.maybeWritten) throw err;
          // It may have been written: what is there now decides (ours, or decide again).
          const again = await backend.read(log);
          if (again && isDeepStrictEqual(again.record, encode(record))) revision = again.revision;
          else if (attempt >= CLAIM_ATTEMPTS) throw err;
          else continue;
        }
        return this.held(lease, record, revision, takenFrom);
      }
    } catch (err) {
      this.lease = undefined;
      await lease.close().catch(() => {});
      throw err;
    }
  }

  /**
   * Claims the role, waiting while another node's lease is live or the store unavailable
   * (`pollMs` between tries), for at most `timeoutMs`: what a backup does before it takes over
   * from a primary it believes dead (the holder's lease runs out within its TTL of its last
   * renewal). Rejects with the last error (PrimaryRoleError EMIRRORROLEHELD naming the holder
   * whose lease stayed live, or StoreUnavailableError) once `timeoutMs` passed; at once with
   * EMIRRORROLEBAD, or StoreAccessError (ESTOREACCESS: credentials, not time, are missing).
   */
  async claimWhenFree(options: ClaimWhenFreeOptions = {}): Promise<PrimaryHold> {
    const leaseMs = this.options.leaseMs;
    const timeoutMs = options.timeoutMs ?? 3 * leaseMs + 2000;
    const pollMs = options.pollMs ?? Math.min(1000, Math.max(50, Math.floor(leaseMs / 4)));
    if (!(timeoutMs >= 0) || !(pollMs > 0)) throw new RangeError('timeoutMs must be >= 0 and pollMs > 0');
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        return await this.claim();
      } catch (err) {
        const retry = (err instanceof PrimaryRoleError && err.code === 'EMIRRORROLEHELD') || (err instanceof StoreUnavailableError && err.code === 'ESTOREUNAVAILABLE') || err instanceof StoreConflictError;
        const left = deadline - performance.now();
        if (!retry || left <= 0) throw err;
        await new Promise((r) => setTimeout(r, Math.min(pollMs, left)));
      }
    }
  }

  /**
   * What a starting node is: the primary if it can claim the role now (the record is absent,
   * names this node, or names a node whose lease ran out), else the backup of the node the
   * record names. So a primary that was taken over comes back as a backup of the node that took
   * the role. With the role taken from another node, `hold.takenFrom` names it: that node may
   * have acknowledged commits this log lacks (check before serving). Throws as claim() does,
   * except EMIRRORROLEHELD.
   */
  async atStart(): Promise<StartingRole> {
    try {
      return { role: 'primary', hold: await this.claim() };
    } catch (err) {
      if (err instanceof PrimaryRoleError && err.code === 'EMIRRORROLEHELD') return { role: 'backup', primary: err.holder! };
      throw err;
    }
  }

  /** The hold: `lost` on the lease's loss, on the record naming another holder (watched), or on release. */
  private async held(lease: NodeLease, record: PrimaryRoleRecord, revision: number, takenFrom: PrimaryRoleRecord | undefined): Promise<PrimaryHold> {
    const { backend, log } = this.options;
    let lose: (why: string) => void = () => {};
    const lost = new Promise<string>((r) => (lose = r));
    let done = false;
    let stopWatch: (() => void) | undefined;
    let closing: Promise<void> | undefined;
    // The lease ends with the hold, whatever ended it: a lease kept without the role would only
    // hold up whoever claims next after this process.
    const closeLease = () => (closing ??= lease.close().catch(() => {}));
    const end = (why: string) => {
      if (done) return;
      done = true;
      stopWatch?.();
      if (this.current === hold) this.current = undefined;
      if (this.lease === lease) this.lease = undefined;
      void closeLease();
      lose(why);
    };
    const hold: PrimaryHold = {
      record,
      revision,
      takenFrom,
      lost,
      release: async () => {
        end('released');
        await closeLease();
      },
    };
    this.current = hold;
    void lease.lost.then((why) => end(`the lease of ${log} on ${record.primary} was lost: ${why}`));
    const check = async () => {
      let now: StoredPrimaryRole | undefined;
      try {
        now = await this.read();
      } catch {
        return; // unreadable for now: the lease says whether the role is still ours
      }
      if (now === undefined) end(`the role record of ${log} was removed`);
      else if (now.record.primary !== record.primary || now.record.incarnation !== record.incarnation) end(`the role of ${log} now names ${now.record.primary} (incarnation ${now.record.incarnation})`);
    };
    // A watch that cannot be set up leaves the lease as the only signal (which suffices: nobody
    // claims while it is live); a record changed by hand is then not seen.
    const stop = await backend.watch((tag) => void (tag === log && !done && check())).catch(() => undefined);
    if (done) stop?.();
    else stopWatch = stop;
    if (!done) await check(); // a change before the watch started
    return hold;
  }

  private decode(raw: RawRecord): PrimaryRoleRecord {
    const r = raw.record as Record<string, unknown> | null;
    const bad = (why: string) => new PrimaryRoleError('EMIRRORROLEBAD', `the role record of ${this.options.log} at revision ${raw.revision} ${why}: fix or delete it by hand`);
    if (typeof r !== 'object' || r === null || r.format !== FORMAT) throw bad(`is not a ${FORMAT} record`);
    if (r.log !== this.options.log) throw bad(`is for log ${String(r.log)}`);
    if (typeof r.primary !== 'string' || !NODE.test(r.primary)) throw bad('has no valid primary');
    if (typeof r.incarnation !== 'string' || !/^[1-9][0-9]{0,19}$/.test(r.incarnation) || BigInt(r.incarnation) >= 1n << 64n) throw bad('has no valid incarnation');
    if (typeof r.since !== 'number' || !Number.isFinite(r.since)) throw bad('has no valid since');
    return { log: r.log, primary: r.primary, incarnation: BigInt(r.incarnation), since: r.since };
  }
}

function encode(r: PrimaryRoleRecord): Record<string, unknown> {
  return { format: FORMAT, log: r.log, primary: r.primary, incarnation: r.incarnation.toString(), since: r.since };
}

function held(holder: PrimaryRoleRecord): PrimaryRoleError {
  return new PrimaryRoleError('EMIRRORROLEHELD', `the primary role of log ${holder.log} is held by ${holder.primary} (incarnation ${holder.incarnation}, since ${new Date(holder.since).toISOString()}) and its lease is live`, holder);
}
