// Planned changes, asked for by an operator through the control socket:
//
// - `service stop NAME`: for each of this node's members, GOING_DOWN; then, if the instance
//   offers no other service here, a drain (the connections on its ports are counted until none
//   is left, up to `drainMs`) and a stop of the process if the agent runs it (SIGTERM to its
//   process group, SIGKILL after `stopGraceMs`), and the instance DOWN; then the member DOWN,
//   and the service DOWN when no member is left. A process watched by pid is not the agent's to
//   kill: it is drained and taken out of the service, and the operator stops it.
// - `service start NAME`: COMING_UP, the process started again if the agent stopped it, and once
//   it is up (its health probe passes, if it has one) instance UP, member UP and service UP.
// - `instance cleanup NAME`: Pacemaker's cleanup: the failure count is reset and the instance
//   started again (a hung one is stopped first): the way out of NOT_RESTARTING.
//
// Everything published carries reason `user` (planned). Changes run one at a time; one that
// cannot be done (a member NOT_RESTARTING, a process the agent does not run and that is gone)
// is refused before anything is published.
import type { EventStatus, ServiceEvent } from '../events/service-event.js';
import type { AgentConfig } from './config.js';
import { drain, type DrainResult } from './drain.js';
import { describeExit } from './exit-description.js';
import type { InstanceMonitor, LastExit } from './instance-monitor.js';

/** What the agent lends the planned changes. */
export interface PlannedHost {
  readonly config: AgentConfig;
  readonly monitors: ReadonlyMap<string, InstanceMonitor>;
  /** service -> this node's instances taken out of it by `service stop`. */
  offline(service: string): Set<string>;
  servicesOf(instance: string): string[];
  memberUp(service: string, instance: string): boolean;
  upMembers(service: string): string[];
  /** The last service-level event this agent published for it was a DOWN. */
  serviceDown(service: string): boolean;
  memberEvent(service: string, instance: string, status: EventStatus, reason: string): ServiceEvent;
  serviceEvent(service: string, status: EventStatus, reason: string): ServiceEvent;
  /** The instance DOWN of a process the agent stopped (or that is gone). */
  instanceDown(instance: string, reason: string, exit?: LastExit): ServiceEvent;
  /** Member UP for each service, and service UP for those that were down. */
  membersUp(instance: string, services: string[], reason: string): ServiceEvent[];
  publish(events: ServiceEvent[]): void;
  /** The next UP of the instance (the agent publishes it when the instance comes up) has this reason. */
  expectUp(instance: string, reason: string): void;
  /** Calls fn with every event published until the returned function is called. */
  follow(fn: (e: ServiceEvent) => void): () => void;
  /** Why no process may be started on this node now (it was fenced), if so. */
  startRefusal(): string | undefined;
}

export interface MemberReport {
  instance: string;
  /** What happened to it, for people (one line). */
  note: string;
  drain?: DrainResult;
  /** How the process the agent stopped ended. */
  exit?: LastExit;
  /** Its state when the change was done. */
  state: string;
}

export interface ChangeReport {
  /** What was published for the change, in order. */
  events: ServiceEvent[];
  instances: MemberReport[];
  /** False when an instance did not come up (NOT_RESTARTING, or not within the wait). */
  ok: boolean;
}

export interface StopOptions {
  /** Overrides the instances' `drainMs` (0: do not wait). */
  drainMs?: number;
}

export interface StartOptions {
  /** How long a start waits for the instance to be up; default DEFAULT_START_WAIT_MS. */
  waitMs?: number;
}

export const DEFAULT_START_WAIT_MS = 60_000;

type Outcome = 'up' | 'not-restarting' | 'timeout';

export class PlannedChanges {
  private queue: Promise<unknown> = Promise.resolve();
  /** Aborted when the agent stops: a drain or a wait in progress ends at once. */
  private readonly closing = new AbortController();

  constructor(private readonly host: PlannedHost) {}

  /** `service stop`; throws (publishing nothing) for an unknown service or one without a member here. */
  stopService(name: string, options: StopOptions = {}): Promise<ChangeReport> {
    return this.serial(() => this.collect(() => this.stop(name, options)));
  }

  /** `service start`; throws (publishing nothing) when a member cannot be started. */
  startService(name: string, options: StartOptions = {}): Promise<ChangeReport> {
    return this.serial(() => this.collect(() => this.start(name, options)));
  }

  /** `instance cleanup`; throws (doing nothing) for an instance not on this node or not the agent's to start. */
  cleanup(instance: string, options: StartOptions = {}): Promise<ChangeReport> {
    return this.serial(() => this.collect(() => this.clean(instance, options)));
  }

  /** The agent is stopping: drains and waits in progress end now (the agent stops the instances itself). */
  close(): void {
    this.closing.abort();
  }

  private async stop(name: string, options: StopOptions): Promise<Omit<ChangeReport, 'events'>> {
    const h = this.host;
    const off = h.offline(name);
    const reports: MemberReport[] = [];
    for (const instance of this.members(name)) {
      const m = h.monitors.get(instance)!;
      if (off.has(instance)) {
        reports.push({ instance, note: 'already stopped here', state: m.state });
        continue;
      }
      const wasUp = h.memberUp(name, instance);
      if (wasUp) h.publish([h.memberEvent(name, instance, 'GOING_DOWN', 'user')]);
      const report: MemberReport = { instance, note: '', state: m.state };
      const notes: string[] = [];
      const others = h.servicesOf(instance).filter((s) => s !== name && !h.offline(s).has(instance));
      if (others.length > 0) {
        // Its ports serve the other services too: no drain, and it keeps running for them.
        notes.push(`still offers ${others.join(', ')} here: not drained, kept running`);
      } else {
        if (m.pid !== undefined) {
          report.drain = await drain(m.config.ports, { timeoutMs: options.drainMs ?? m.config.drainMs, signal: this.closing.signal });
          if (report.drain.aborted) throw new Error(`the agent is stopping: the drain of ${instance} was cut short with ${report.drain.left} connection(s) left`);
          notes.push(drainNote(report.drain));
        }
        if (m.runsCommand) {
          const instanceWasUp = m.state === 'up';
          const exit = await m.stop();
          off.add(instance);
          if (exit) report.exit = exit;
          notes.push(exit ? `stopped (${describeExit(exit)})` : 'no process was running');
          if (instanceWasUp) h.publish([h.instanceDown(instance, 'user', exit)]);
        } else {
          const how = m.config.pid !== undefined ? `pid ${m.config.pid}` : `pidFile ${m.config.pidFile}`;
          notes.push(`watched by ${how}: not stopped (the agent stops only the processes it runs): stop it yourself`);
        }
      }
      off.add(instance);
      if (wasUp) h.publish([h.memberEvent(name, instance, 'DOWN', 'user')]);
      report.note = notes.join('; ') || 'taken out';
      report.state = m.state;
      reports.push(report);
    }
    if (h.upMembers(name).length === 0 && !h.serviceDown(name)) h.publish([h.serviceEvent(name, 'DOWN', 'user')]);
    return { instances: reports, ok: true };
  }

  private async start(name: string, options: StartOptions): Promise<Omit<ChangeReport, 'events'>> {
    const h = this.host;
    const off = h.offline(name);
    const members = this.members(name);
    // Refuse before publishing anything.
    for (const instance of members) {
      const problem = this.cannotStart(h.monitors.get(instance)!, off.has(instance));
      if (problem) throw new Error(problem);
    }
    const reports: MemberReport[] = [];
    let ok = true;
    for (const instance of members) {
      const m = h.monitors.get(instance)!;
      if (!off.has(instance)) {
        reports.push({ instance, note: m.state === 'up' ? 'already started here' : `${m.state}: being restarted by the agent (failure ${m.failures} of its restart policy)`, state: m.state });
        continue;
      }
      h.publish([h.memberEvent(name, instance, 'COMING_UP', 'user')]);
      off.delete(instance);
      if (m.state === 'up') {
        h.publish(h.membersUp(instance, [name], 'user'));
        reports.push({ instance, note: 'offered again', state: m.state });
        continue;
      }
      const outcome = await this.bringUp(m, m.state === 'stopped', options);
      ok &&= outcome === 'up';
      reports.push({ instance, note: outcomeNote(m, outcome, options), state: m.state });
    }
    return { instances: reports, ok };
  }

  private async clean(instance: string, options: StartOptions): Promise<Omit<ChangeReport, 'events'>> {
    const h = this.host;
    const m = h.monitors.get(instance);
    if (!m) {
      const elsewhere = h.config.instances.find((i) => i.name === instance);
      throw new Error(elsewhere ? `instance ${instance} runs on node ${elsewhere.node}: clean it up there` : `unknown instance ${instance}`);
    }
    const done = (note: string, ok = true) => ({ instances: [{ instance, note, state: m.state }], ok });
    if (!m.runsCommand) {
      if (m.state === 'up' || m.state === 'starting' || m.state === 'hung') return done(`watched by ${m.config.pid !== undefined ? 'pid' : 'pidFile'} and ${m.state}: nothing to clean up (the agent starts only what it runs)`);
      throw new Error(this.cannotStart(m, true) ?? `instance ${instance} is ${m.state}`);
    }
    const services = h.servicesOf(instance);
    m.resetFailures();
    if (services.length > 0 && services.every((s) => h.offline(s).has(instance))) {
      return done(`failure count reset; stopped by \`takeover service stop\`: \`takeover service start ${services[0]}\` starts it`);
    }
    if (m.state === 'up') return done(`up (pid ${m.pid}): failure count reset, nothing to restart`);
    const refusal = h.startRefusal();
    if (refusal) throw new Error(`instance ${instance}: ${refusal}`);
    const outcome = await this.bringUp(m, true, options);
    return done(outcome === 'up' ? `failure count reset; ${outcomeNote(m, outcome, options)}` : outcomeNote(m, outcome, options), outcome === 'up');
  }

  /** Starts the instance afresh (or only waits for it) until it is up, NOT_RESTARTING, or the wait is over. */
  private async bringUp(m: InstanceMonitor, restart: boolean, options: StartOptions): Promise<Outcome> {
    this.host.expectUp(m.config.name, 'user');
    const outcome = waitUp(m, options.waitMs ?? DEFAULT_START_WAIT_MS, this.closing.signal);
    if (restart) await m.restart();
    return outcome;
  }

  /** Why a member cannot be started, or undefined. */
  private cannotStart(m: InstanceMonitor, offline: boolean): string | undefined {
    const n = m.config.name;
    const cleanup = `\`takeover instance cleanup ${n}\``;
    switch (m.state) {
      case 'up':
        return undefined;
      case 'not-restarting': {
        const r = m.config.restart;
        const last = m.lastExit ? `; last ${describeExit(m.lastExit)}${m.lastExit.stderr.length ? `: ${m.lastExit.stderr.at(-1)}` : ''}` : '';
        return `instance ${n} is not-restarting (more than ${r?.maxFailures ?? 0} failures within ${r?.windowMs ?? 0} ms${last}): ${cleanup} resets its failure count and starts it`;
      }
      case 'hung':
        return `instance ${n} is hung (its health probe fails${m.info().probeError ? `: ${m.info().probeError}` : ''}): ${cleanup} restarts it`;
      case 'stopped': {
        const refusal = this.host.startRefusal();
        if (refusal) return `instance ${n}: ${refusal}`;
        return offline && m.runsCommand ? undefined : `instance ${n} is stopped`;
      }
      case 'starting':
        return undefined;
      case 'down':
        if (m.runsCommand) return undefined; // between a failure and its restart
        return m.config.pidFile
          ? `instance ${n} is down: its process is gone, and the agent does not start it (watched through ${m.config.pidFile}; it is found again there once started)`
          : `instance ${n} is down: its process (pid ${m.config.pid}) is gone, and the agent does not start it (a pid is not found again: give the new one and restart the agent, or use pidFile)`;
    }
  }

  /** This node's members of the service; throws for an unknown service or one with no member here. */
  private members(name: string): string[] {
    const svc = this.host.config.services.find((s) => s.name === name);
    if (!svc) throw new Error(`unknown service ${name}`);
    const mine = svc.members.filter((m) => this.host.monitors.has(m));
    if (mine.length === 0) throw new Error(`service ${name} has no member on node ${this.host.config.node}`);
    return mine;
  }

  /** Runs a change and gathers what was published for it (reason user). */
  private async collect(fn: () => Promise<Omit<ChangeReport, 'events'>>): Promise<ChangeReport> {
    const events: ServiceEvent[] = [];
    const unfollow = this.host.follow((e) => {
      if (e.reason === 'user') events.push(e);
    });
    try {
      return { events, ...(await fn()) };
    } finally {
      unfollow();
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }
}

/** Resolves when the instance is up, NOT_RESTARTING, after ms, or when the agent stops. */
function waitUp(m: InstanceMonitor, ms: number, signal: AbortSignal): Promise<Outcome> {
  return new Promise((resolve) => {
    const on = (e: { kind: string }) => {
      if (e.kind === 'up') done('up');
      else if (e.kind === 'not-restarting') done('not-restarting');
    };
    const aborted = () => done('timeout');
    const timer = setTimeout(() => done('timeout'), ms);
    const done = (o: Outcome) => {
      clearTimeout(timer);
      m.off('event', on);
      signal.removeEventListener('abort', aborted);
      resolve(o);
    };
    m.on('event', on);
    signal.addEventListener('abort', aborted, { once: true });
  });
}

function drainNote(d: DrainResult): string {
  if (d.ports.length === 0) return 'not drained (no ports configured: nothing to count)';
  if (d.timedOut) return `drain time up after ${d.waitedMs} ms with ${d.left} connection(s) left on port(s) ${d.ports.join(',')}`;
  return `drained in ${d.waitedMs} ms`;
}

function outcomeNote(m: InstanceMonitor, o: Outcome, options: StartOptions): string {
  if (o === 'up') return `started (pid ${m.pid})`;
  const last = m.lastExit ? ` (last ${describeExit(m.lastExit)}${m.lastExit.stderr.length ? `: ${m.lastExit.stderr.at(-1)}` : ''})` : '';
  if (o === 'not-restarting') return `did not come up: not-restarting${last}`;
  const probe = m.info().probeError;
  return `not up after ${options.waitMs ?? DEFAULT_START_WAIT_MS} ms (${m.state}${probe ? `, health probe: ${probe}` : ''}): its UP is published when it is`;
}
