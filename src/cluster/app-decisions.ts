// What one node's cluster manager does next for one clustered application, from the object in
// the store and what the node knows now. Pure: the AppManager gathers the inputs, acts, writes
// the store (compare-and-swap, so a decision made on a stale read fails and is made again) and
// asks again. Level-triggered: the same inputs always give the same answer, so a missed event
// or a restarted agent converges to the same place.
//
// Seed 002: FIG. 6 (registration on load: create, unloaded by an operator, phoenixing, both
// failed), FIG. 7A (failover: the backup sees the HOST fail on the LAN and, where one is
// configured, on the disk; it becomes HOST), FIG. 7B (failback: the backup sees the primary
// back; with AUTO-RECOVER, or when the operator says so, it deactivates the object and the
// primary activates it and writes its own ID into HOST).
import { type AppObject, serversOf } from './app-object.js';

/**
 * The application on this node, as its runner sees it. With a readiness probe (`app.ready`),
 * `running` means the process runs and its probe passed; before that it is `starting`.
 */
export type LocalState = 'stopped' | 'starting' | 'running' | 'stopping' | 'not-restarting';

/** COMMAND's process runs here, but its readiness probe (`app.ready`) has not passed yet. */
export interface Unready {
  /** How long the process has run without passing (ms). */
  runningMs: number;
  /** What the probe is: `tcp 192.0.2.10:5432`, `command pg_isready -q`. */
  probe: string;
  /** The last try's error (undefined: no try has ended yet). */
  lastError?: string;
}

export interface NodeView {
  me: string;
  /**
   * Nodes this node does not know to be dead (itself included): their death did not come through
   * the quorum gate, and they were heard, or the agent started too recently to have heard them.
   */
  alive: ReadonlySet<string>;
  /** Of those, the ones actually heard: where an application may be handed (a node not heard yet may not be running at all). */
  heard: ReadonlySet<string>;
  /** Nodes whose lease in the store is live: a node alive there is not dead, whatever the LAN says. */
  leased: ReadonlySet<string>;
  local: LocalState;
  /** With `app.ready` and the process running here without having passed its probe (`local` is then `starting`). */
  unready?: Unready;
  /** Why the last start here was ended as not ready, until the application is up here or stopped (for the hand-on's words). */
  lastUnready?: string;
}

export type Step =
  | { kind: 'none'; why: string }
  /** Start the application here (HOST is this node). */
  | { kind: 'start' }
  /** The application runs here: write state `up`. */
  | { kind: 'mark-up' }
  /** Stop the application here (and release its address): it must not run on this node. */
  | { kind: 'stop'; why: string; /** an operator's or the agent's own stop, not a failure */ planned?: true }
  /**
   * Write HOST = this node, state `loading` (a failover, a failback's second half, a retaken
   * release). The start that follows fences the previous HOST first when it is not alive.
   */
  | { kind: 'claim'; why: string; /** the HOST died: AUTO-RECOVER applies later */ failover: boolean }
  /** The HOST (this node) gives the application to `to`: stop it, release the address, write `released`. */
  | { kind: 'release'; to: string; why: string }
  /** An operator's unload: stop it here, release the address, write HOST null, state `unloaded`. */
  | { kind: 'unload'; why: string }
  /**
   * COMMAND's process ran `ready.timeoutMs` without passing its readiness probe: a failed start.
   * Stop that process as a failure, so that the restart policy counts it (a restart after
   * `backoffMs`, or NOT_RESTARTING and then `hand-on`).
   */
  | { kind: 'fail-start'; why: string }
  /** HOST (this node) cannot keep it running: hand it to the next live server, or mark it failed. */
  | { kind: 'hand-on'; to: string | null; why: string }
  /** Nothing to do until something changes; `why` is for status and the log. */
  | { kind: 'wait'; why: string };

/**
 * The servers that may take over from `from`, in seed 002's order: PRIMARY first (a primary
 * alive again is where the application belongs), then the BACKUP servers as listed; `from`
 * excluded. The first of them alive acts; the others wait.
 */
export function failoverOrder(app: AppObject, from: string): string[] {
  return serversOf(app).filter((n) => n !== from);
}

export function nextStep(app: AppObject, v: NodeView): Step {
  const servers = serversOf(app);
  if (!servers.includes(v.me)) return v.local === 'running' || v.local === 'starting' ? { kind: 'stop', why: `${v.me} is not a server of ${app.tag}` } : { kind: 'none', why: 'not a server of it' };
  const runsHere = v.local === 'running' || v.local === 'starting';

  if (app.host === null) {
    if (runsHere) return { kind: 'stop', why: app.state === 'unloaded' ? 'unloaded by an operator' : 'failed everywhere' };
    return { kind: 'none', why: app.state === 'unloaded' ? 'unloaded: `takeover app load` starts it' : 'failed on every server: `takeover app load` tries again' };
  }

  if (app.host === v.me) {
    if (app.state === 'released') {
      if (runsHere) return { kind: 'stop', why: `released to ${app.releasedTo}` };
      if (!v.alive.has(app.releasedTo!)) return { kind: 'claim', why: `${app.releasedTo}, which it was released to, is not alive: taken back`, failover: app.failedOver };
      return { kind: 'wait', why: `released to ${app.releasedTo}, which has not loaded it yet` };
    }
    if (app.state === 'failed') return runsHere ? { kind: 'stop', why: 'failed' } : { kind: 'none', why: 'failed' };
    if (v.local === 'not-restarting') {
      const next = failoverOrder(app, v.me).find((n) => v.heard.has(n) && !app.failedOn.includes(n));
      return { kind: 'hand-on', to: next ?? null, why: `it could not be kept running on ${v.me}${v.lastUnready ? ` (${v.lastUnready})` : ''}` };
    }
    if (app.request?.kind === 'unload') return { kind: 'unload', why: `unload asked for by ${app.request.by}` };
    if (app.request?.kind === 'move') {
      const to = app.request.to!;
      if (v.alive.has(to)) return { kind: 'release', to, why: `move to ${to} asked for by ${app.request.by}` };
      // Moving to a node that is not alive would leave the application nowhere.
    }
    const primaryBack = app.primary !== v.me && v.alive.has(app.primary);
    if (primaryBack && app.state === 'up' && app.autoRecover && app.failedOver) return { kind: 'release', to: app.primary, why: `${app.primary} (PRIMARY) is alive again and AUTO-RECOVER is on` };
    if (v.local === 'stopped') return { kind: 'start' };
    if (v.local === 'stopping') return { kind: 'wait', why: 'stopping' };
    const unready = v.local === 'starting' && app.ready !== undefined ? v.unready : undefined;
    if (unready) return readiness(app.ready!, unready);
    // A cluster-aware application without a COMMAND says itself that it runs (register()).
    if (v.local === 'running' && app.state === 'loading' && app.command !== undefined) return { kind: 'mark-up' };
    if (primaryBack && app.state === 'up' && app.failedOver) return { kind: 'wait', why: `${app.primary} (PRIMARY) is alive again: AUTO-RECOVER is off, \`takeover app failback ${app.tag}\` moves it back` };
    return { kind: 'none', why: app.state === 'loading' ? 'loading' : 'up here' };
  }

  // HOST is another node.
  if (runsHere) return { kind: 'stop', why: `${app.host} is HOST` };
  if (app.state === 'released') {
    if (app.releasedTo === v.me) return { kind: 'claim', why: `released by ${app.host}`, failover: false };
    return { kind: 'wait', why: `${app.host} released it to ${app.releasedTo}` };
  }
  if (app.state === 'failed') return { kind: 'none', why: `failed on ${app.host}` };
  if (v.alive.has(app.host)) return { kind: 'none', why: `${app.host} is HOST` };
  const first = failoverOrder(app, app.host).find((n) => v.alive.has(n));
  if (first !== v.me) return { kind: 'wait', why: first === undefined ? `${app.host} is dead and no server is alive` : `${app.host} is dead: ${first} comes first` };
  if (v.leased.has(app.host)) return { kind: 'wait', why: `${app.host} is silent on the LAN but its lease in the store is live: not dead yet` };
  return { kind: 'claim', why: `${app.host} failed`, failover: true };
}

/**
 * A process that runs without having passed its readiness probe: wait while `timeoutMs` has not
 * run out since its start, then a failed start.
 */
export function readiness(ready: NonNullable<AppObject['ready']>, u: Unready): Step {
  const last = u.lastError === undefined ? '' : `: ${u.lastError}`;
  if (u.runningMs >= ready.timeoutMs) return { kind: 'fail-start', why: `not ready ${ready.timeoutMs} ms after its start (${u.probe}${last})` };
  return { kind: 'wait', why: `not ready yet, ${Math.floor(u.runningMs)} of ${ready.timeoutMs} ms after its start (${u.probe}${last})` };
}

/**
 * Seed 002 FIG. 6: an application is loaded on `me` (a cluster-aware application registering
 * itself, or an operator's `app load`). What the store says decides what happens.
 */
export type Registration =
  /** Step 604: not registered: create the object (HOST = me). */
  | { kind: 'create' }
  /** Step 610: HOST null (an operator unloaded it): HOST = me. */
  | { kind: 'become-host' }
  /** Step 612: me is PRIMARY and a backup hosts it ("phoenixing"): wait (paused) until it releases it. */
  | { kind: 'phoenix'; host: string }
  /** HOST is already me: both servers failed and recover (step 614), or this node's agent restarted: resume as HOST. */
  | { kind: 'resume' }
  /** Another live server hosts it and me is a backup: stand by. */
  | { kind: 'standby'; host: string };

export function registration(app: AppObject | undefined, me: string): Registration {
  if (app === undefined) return { kind: 'create' };
  if (app.host === null) return { kind: 'become-host' };
  if (app.host === me) return { kind: 'resume' };
  if (app.primary === me) return { kind: 'phoenix', host: app.host };
  return { kind: 'standby', host: app.host };
}
