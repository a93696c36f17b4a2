// The library side of a cluster-aware application (seed 002: "a registration module embedded in
// the program", the resume marker, the pause while the primary is phoenixing). The application
// talks to the cluster's store directly, the same store its node's agent uses; the agent moves
// the service address and fails the application over, the application says when it is ready,
// waits until its server is HOST, and keeps its resume marker where the next HOST reads it.
import { loadConfig } from '../agent/config.js';
import { type AppObject, type AppSpec, newApp } from './app-object.js';
import { type Registration, registration } from './app-decisions.js';
import { AppRegistrationError, type ClusterStore, type StoredApp } from './cluster-store.js';
import { openClusterStore } from './open-store.js';

/** Thrown by calls only the HOST may make (ready, setMarker) from a node that is not HOST. */
export class NotHostError extends Error {
  override readonly name = 'NotHostError';
  readonly code = 'ENOTHOST';
  constructor(
    readonly tag: string,
    readonly host: string | null,
    node: string,
  ) {
    super(`application ${tag}: ${node} is not its HOST (${host ?? 'none'})`);
  }
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** Give up after this long (ms); default: wait until aborted. */
  timeoutMs?: number;
}

export class ClusterApp {
  /**
   * @param store the cluster's store (`openClusterStore(config)`, or `ClusterApp.fromConfig`)
   * @param tag the application's TAG
   * @param node the node this process runs on (the agent config's `node`)
   */
  constructor(
    readonly store: ClusterStore,
    readonly tag: string,
    readonly node: string,
  ) {}

  /** The store and node of an agent configuration file (YAML/JSON). Throws ConfigError. */
  static async fromConfig(file: string, tag: string): Promise<ClusterApp> {
    const config = await loadConfig(file);
    return new ClusterApp(await openClusterStore(config), tag, config.node);
  }

  /**
   * Registration on load (seed 002 FIG. 6), called by the application as it starts here:
   * - `create`: not registered: the object is created from `spec` (PRIMARY must be this node), HOST here;
   * - `become-host`: an operator had unloaded it (HOST null): HOST = this node;
   * - `phoenix`: this node is PRIMARY and a backup hosts it: stay paused, `waitUntilHost()`;
   *   the backup's agent hands it back (AUTO-RECOVER, or `takeover app failback`);
   * - `resume`: this node is HOST already (it restarted, or both servers failed and recover);
   * - `standby`: another server hosts it and this node is a backup: `waitUntilHost()`.
   * Returns what was decided. Throws AppObjectError (a bad spec), StoreConflictError (another
   * node changed it at the same moment: call again), StoreUnavailableError.
   */
  async register(spec?: AppSpec): Promise<Registration> {
    const current = await this.store.get(this.tag);
    const decided = registration(current?.app, this.node);
    const note = { by: this.node, why: 'registered by the application' };
    if (decided.kind === 'create') {
      if (spec === undefined) throw new AppRegistrationError(this.tag, 'EAPPUNKNOWN', 'is not registered, and no description was given to create it');
      if (spec.tag !== this.tag || spec.primary !== this.node) throw new AppRegistrationError(this.tag, 'EAPPUNKNOWN', `is created by its PRIMARY with its own TAG (spec: ${spec.tag} on ${spec.primary}, here: ${this.tag} on ${this.node})`);
      await this.store.create(newApp(spec, undefined, Date.now()), note);
    } else if (decided.kind === 'become-host') {
      await this.store.update(current!, { ...current!.app, host: this.node, state: 'loading', failedOver: false, failedOn: [] }, note);
    }
    return decided;
  }

  /** The object as the store has it now (undefined: not registered). */
  async get(): Promise<AppObject | undefined> {
    return (await this.store.get(this.tag))?.app;
  }

  /** Resolves once this node is HOST (state loading or up). Rejects when aborted or past timeoutMs. */
  async waitUntilHost(options: WaitOptions = {}): Promise<AppObject> {
    return this.waitFor((a) => a.host === this.node && (a.state === 'loading' || a.state === 'up'), 'this node is HOST', options);
  }

  /** The application runs and serves here: state `up` (seed 001's UP is published by the agent's next look). Throws NotHostError. */
  async ready(): Promise<void> {
    await this.asHost((a) => ({ ...a, state: 'up' }), 'the application says it is up');
  }

  /** The resume marker the last HOST left (null: none). */
  async getMarker(): Promise<string | null> {
    return (await this.known()).app.marker;
  }

  /** Keeps `marker` (≤ 64 KiB of UTF-8) for the next HOST. Only the HOST may: throws NotHostError, AppObjectError. */
  async setMarker(marker: string | null): Promise<void> {
    await this.asHost((a) => ({ ...a, marker }), 'marker');
  }

  /** A planned switchover to `to` (the HOST's agent stops it, the address moves, `to` loads it). Resolves once written; `waitUntil`-style waiting is the caller's. */
  async switchover(to: string): Promise<void> {
    await this.store.modify(this.tag, (a) => ({ ...a, request: { kind: 'move', to, by: this.node, at: Date.now() } }), { by: this.node, why: `switchover to ${to} asked by the application` });
  }

  close(): Promise<void> {
    return this.store.close();
  }

  private async known(): Promise<StoredApp> {
    const s = await this.store.get(this.tag);
    if (s === undefined) throw new AppRegistrationError(this.tag, 'EAPPUNKNOWN', 'is not registered');
    return s;
  }

  private async asHost(change: (a: AppObject) => AppObject, why: string): Promise<void> {
    await this.store.modify(
      this.tag,
      (a) => {
        if (a.host !== this.node) throw new NotHostError(this.tag, a.host, this.node);
        return change(a);
      },
      { by: this.node, why },
    );
  }

  private async waitFor(cond: (a: AppObject) => boolean, what: string, options: WaitOptions): Promise<AppObject> {
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    let wake: () => void = () => {};
    const stop = await this.store.watch((tag) => {
      if (tag === this.tag) wake();
    });
    try {
      for (;;) {
        options.signal?.throwIfAborted();
        const a = (await this.known()).app;
        if (cond(a)) return a;
        const left = deadline - Date.now();
        if (left <= 0) throw Object.assign(new Error(`application ${this.tag}: not ${what} within ${options.timeoutMs} ms (HOST ${a.host ?? 'none'}, ${a.state})`), { code: 'ETIMEDOUT' });
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 1000)); // the watch wakes it; the timer is a backstop
          const onAbort = () => resolve();
          options.signal?.addEventListener('abort', onAbort, { once: true });
          wake = () => {
            clearTimeout(t);
            options.signal?.removeEventListener('abort', onAbort);
            resolve();
          };
        });
      }
    } finally {
      stop();
    }
  }
}
