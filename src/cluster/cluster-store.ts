// The cluster's store of clustered applications (seed 002's replicated database), over either
// engine (store-backend.ts). Every write is validated (app-object.ts) and carries a note of who
// and why; a change of HOST or state is appended to the object's history in the same write, so
// history and object can never disagree. Changes are compare-and-swap on the revision read:
// a caller that lost a race gets StoreConflictError and decides again from what is there now.
import { type AppObject, type AppObjectInput, AppObjectError, validateApp } from './app-object.js';
import { type NodeLease, type RawRecord, type StoreBackend, StoreConflictError } from './store-backend.js';

/** One change of HOST or state (seed 002: who, when, why). */
export interface HostChange {
  /** ms since the epoch */
  at: number;
  from: { host: string | null; state: AppObject['state'] } | null;
  to: { host: string | null; state: AppObject['state'] };
  /** A node (`node2`) or an operator (`operator@HOSTNAME`). */
  by: string;
  why: string;
}

/** Who makes a change and why, kept in the history. */
export interface ChangeNote {
  by: string;
  why: string;
}

export interface StoredApp {
  app: AppObject;
  /** The engine's revision of this object: what an update must name. */
  revision: number;
  /** Oldest first, at most HISTORY_LIMIT entries. */
  history: HostChange[];
}

/** History entries kept per application (the oldest are dropped). */
export const HISTORY_LIMIT = 200;

/** The record as stored: the object and its history together, so one write changes both. */
interface Record {
  app: AppObject;
  history: HostChange[];
}

/**
 * An application that is already registered (create), or is not (update, remove), or whose
 * service address another application has (create: EAPPADDRESS).
 */
export class AppRegistrationError extends Error {
  override readonly name = 'AppRegistrationError';
  constructor(
    readonly tag: string,
    readonly code: 'EAPPEXISTS' | 'EAPPUNKNOWN' | 'EAPPADDRESS',
    message: string,
  ) {
    super(`application ${tag}: ${message}`);
  }
}

export class ClusterStore {
  /**
   * @param nodes the cluster's nodes: PRIMARY and BACKUP must be among them (undefined: any name).
   * @param now the clock for history entries and `since` (ms since the epoch).
   */
  constructor(
    readonly backend: StoreBackend,
    private readonly nodes?: readonly string[],
    private readonly now: () => number = Date.now,
  ) {}

  get location(): string {
    return `${this.backend.engine} ${this.backend.location}`;
  }

  async list(): Promise<StoredApp[]> {
    return (await this.backend.readAll()).map((r) => this.decode(r)).sort((a, b) => a.app.tag.localeCompare(b.app.tag));
  }

  async get(tag: string): Promise<StoredApp | undefined> {
    const r = await this.backend.read(tag);
    return r && this.decode(r);
  }

  /**
   * Registers a new application (seed 002 FIG. 6 step 604). Throws AppObjectError,
   * AppRegistrationError: EAPPEXISTS, or EAPPADDRESS when another application has the same
   * service address (whatever the port: the address is added and removed with its application,
   * so unloading one would take it from the other).
   */
  async create(input: AppObjectInput, note: ChangeNote): Promise<StoredApp> {
    const app = validateApp(input, this.nodes);
    if (app.address) {
      const other = (await this.list()).find((o) => o.app.tag !== app.tag && o.app.address?.address === app.address!.address);
      if (other) throw new AppRegistrationError(app.tag, 'EAPPADDRESS', `its service address ${app.address.address} is ${other.app.tag}'s: each application needs its own`);
    }
    const record: Record = { app, history: [this.entry(null, app, note)] };
    try {
      const revision = await this.backend.compareAndSwap(app.tag, 0, record);
      return { ...record, revision };
    } catch (err) {
      if (err instanceof StoreConflictError) throw new AppRegistrationError(app.tag, 'EAPPEXISTS', 'is already registered');
      throw err;
    }
  }

  /**
   * Writes `next` over the object at `revision` (what `get` returned). A change of HOST or state
   * is added to the history. Throws AppObjectError, StoreConflictError (changed meanwhile),
   * StoreUnavailableError.
   */
  async update(current: StoredApp, next: AppObjectInput, note: ChangeNote): Promise<StoredApp> {
    const app = validateApp(next, this.nodes);
    if (app.tag !== current.app.tag) throw new AppObjectError(app.tag, 'tag', `cannot rename ${current.app.tag}`);
    const moved = app.host !== current.app.host || app.state !== current.app.state;
    if (moved && app.since === current.app.since) app.since = this.now();
    const history = moved ? [...current.history, this.entry(current.app, app, note)].slice(-HISTORY_LIMIT) : current.history;
    const record: Record = { app, history };
    const revision = await this.backend.compareAndSwap(app.tag, current.revision, record);
    return { ...record, revision };
  }

  /**
   * Read, change, write, again on a conflict (at most `attempts` times): for changes that hold
   * whatever else changed (an operator's unload, a marker). `change` returns undefined to write
   * nothing. Throws AppRegistrationError (EAPPUNKNOWN) for an unknown tag.
   */
  async modify(tag: string, change: (app: AppObject) => AppObjectInput | undefined, note: ChangeNote, attempts = 5): Promise<StoredApp> {
    for (let i = 1; ; i++) {
      const current = await this.get(tag);
      if (current === undefined) throw new AppRegistrationError(tag, 'EAPPUNKNOWN', 'is not registered');
      const next = change(structuredClone(current.app));
      if (next === undefined) return current;
      try {
        return await this.update(current, next, note);
      } catch (err) {
        if (!(err instanceof StoreConflictError) || i >= attempts) throw err;
      }
    }
  }

  /** Removes the object at `revision`. Throws StoreConflictError when it changed meanwhile. */
  async remove(current: StoredApp): Promise<void> {
    await this.backend.compareAndSwap(current.app.tag, current.revision, null);
  }

  /** Calls `onChange(tag)` after an object changed; resolves with the stop function once watching (read the state after). */
  watch(onChange: (tag: string) => void): Promise<() => void> {
    return this.backend.watch(onChange);
  }

  keepAlive(node: string, ttlMs: number): Promise<NodeLease> {
    return this.backend.keepAlive(node, ttlMs);
  }

  async liveNodes(): Promise<Set<string>> {
    return new Set(await this.backend.liveNodes());
  }

  close(): Promise<void> {
    return this.backend.close();
  }

  private entry(from: AppObject | null, to: AppObject, note: ChangeNote): HostChange {
    return { at: this.now(), from: from && { host: from.host, state: from.state }, to: { host: to.host, state: to.state }, by: note.by, why: note.why };
  }

  /** A stored record back to an object; a record that does not validate is an error naming the tag and field. */
  private decode(r: RawRecord): StoredApp {
    const rec = r.record as Partial<Record> | null;
    if (typeof rec !== 'object' || rec === null || !Array.isArray(rec.history)) throw new AppObjectError(r.tag, '', `the stored record at revision ${r.revision} is not an application record`);
    const app = validateApp(rec.app);
    if (app.tag !== r.tag) throw new AppObjectError(r.tag, 'tag', `the record stored under ${r.tag} is for ${app.tag}`);
    return { app, revision: r.revision, history: rec.history };
  }
}
