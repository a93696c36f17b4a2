// The backup's half of a planned switchover (`takeover switchover`, docs/AGENT.md): this node
// follows the primary's service (a takeover with `continue`) and takes it over while the
// primary lives, with its connections, exactly. In order:
//   1. dial the primary agent's connection-stream listener; REQUEST, its CHALLENGE, GO;
//   2. the primary locks, waits for its server to go quiet, dumps every connection frozen and
//      sends the states (STATES..., DUMPED) or REFUSED with the reason (nothing changed there);
//   3. here, from QUIET on (while the states come): the replica caught up with the locked
//      primary and the sessions read from its server (`catchUp`); after DUMPED the plans
//      (net/switchover-plans.ts; the shadow asked only for what the server does not show), the
//      promotion, the upstream seen to accept connections. Any failure: ABORT, and the primary thaws its sockets and unlocks: the
//      clients go on there, nothing lost (a replica already promoted stays so: said in the error);
//   4. RELEASE; the primary removes the address (RELEASED);
//   5. continueConnections: the restores in batches, the address added and announced after the
//      first, each connection relayed to the upstream (preamble, then the requests the server
//      never read), the ones whose session cannot be rebuilt reset exactly;
//   6. DONE; the primary unlocks (UNLOCKED, with how long the lock held).
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { continueConnections, type ContinueOptions, type ContinueReport } from '../net/shadow/continue-connections.js';
import type { ContinuePlugin, ProtocolGoodbye } from '../net/shadow/exchange-tracker.js';
import { switchoverPlans, type ServerSession } from '../net/switchover-plans.js';
import { SwitchoverFrameReader, SwitchoverFrameWriter, type SwitchoverBarrier, type SwitchoverMessage } from '../net/switchover-wire.js';
import type { TcpRepairState } from '../net/tcp-repair-state.js';
import type { Shadow } from './peer-takeover.js';
import { SwitchoverChannel } from './switchover-channel.js';

export interface BackupSwitchoverOptions {
  node: string;
  key: Buffer;
  /** The primary agent's connection-stream listener. */
  primary: { host: string; port: number };
  service: { address: string; port: number };
  interface: string;
  prefixLength: number;
  shadow: Shadow;
  upstream: { host: string; port: number };
  plugin: ContinuePlugin;
  /**
   * Resolves once the local service holds every write the locked primary applied (with a line
   * saying how it knows), and the sessions as the primary's server shows them, when it can
   * (net/switchover-plans.ts ServerSession); rejects why not.
   */
  catchUp: () => Promise<{ detail: string; sessions?: ReadonlyMap<string, ServerSession> }>;
  promote?: () => Promise<void>;
  /** Checks the promoted upstream accepts connections (rejects naming it). */
  upstreamAccepts: () => Promise<void>;
  /** What proves the primary's server answered what it read (net/switchover-wire.ts SwitchoverBarrier; default none). */
  barrier?: SwitchoverBarrier;
  /** What a connection that cannot be moved is told instead of a reset (switchoverPlans; PostgreSQL's 57P01 with the pg-idle barrier). */
  goodbye?: (reason: string) => ProtocolGoodbye;
  /** How long the primary's server may take to go quiet once locked (default 2000 ms). */
  quietWaitMs?: number;
  /** false: the caller has the RST guard in place. */
  guard?: boolean;
  /** The moved connections' relays go to the relay keeper (ContinueOptions.keeper). */
  keeper?: ContinueOptions['keeper'];
}

export interface SwitchoverReport {
  service: string;
  /** Connections the primary handed over; of them continued here, told the protocol's goodbye instead (PostgreSQL's 57P01) and reset (with the reasons, counted). */
  connections: number;
  moved: number;
  goodbyes: number;
  goodbyeBy: Record<string, number>;
  reset: number;
  resetBy: Record<string, number>;
  /** The primary's: lock to quiet, the dump; the lock's whole time (until DONE reached it). */
  quietMs: number;
  dumpMs: number;
  lockHeldMs?: number;
  /** The primary's: from its lock to the address removed there (what a client sending under the lock waits for, at least). */
  releasedAfterMs?: number;
  /** Here, ms: from the request to the states, the catch-up (and what it found; it runs from QUIET, beside the transfer), the promotion, the release. */
  handedOverMs: number;
  /** From GO (the primary locks) to DUMPED: lock, quiet, dump, the states' transfer and check. */
  statesMs: number;
  /** The shadow's plans and the switchover's, ms. */
  plansMs: number;
  catchUp: string;
  catchUpMs: number;
  promoteMs: number;
  releasedMs: number;
  /** From RELEASED: continueConnections' own timings. */
  timings: ContinueReport['timings'];
  /** From the request to the last connection relaying. */
  totalMs: number;
}

/** Why a switchover did not happen; `phase` says how far it went (before the release: the primary serves on). */
export class SwitchoverError extends Error {
  override readonly name = 'SwitchoverError';
  constructor(
    message: string,
    readonly phase: 'refused' | 'aborted' | 'after-release',
  ) {
    super(message);
  }
}

/** Runs a switchover (see the file's comment). Resolves with the report and what was continued; rejects with a SwitchoverError. */
export async function runSwitchover(o: BackupSwitchoverOptions): Promise<{ report: SwitchoverReport; continued: ContinueReport['continued'] }> {
  const t0 = performance.now();
  const since = () => Math.round(performance.now() - t0);
  const backupNonce = randomNonce();
  const reader = new SwitchoverFrameReader('backup', o.key, { backupNonce });
  const socket = await connect(o.primary);
  const channel = new SwitchoverChannel(socket, reader, new SwitchoverFrameWriter(o.key, backupNonce, 0n));
  const service = `${o.service.address}:${o.service.port}`;
  let released = false;
  try {
    channel.send({ type: 'request', node: o.node, address: o.service.address, port: o.service.port, quietWaitMs: o.quietWaitMs ?? 2000, barrier: o.barrier ?? 'none' });
    const challenge = await expect(channel, 5000, 'CHALLENGE', 'challenge');
    channel.writer.primaryNonce = reader.session.primaryNonce;
    void challenge;
    channel.send({ type: 'go' });
    const goAt = performance.now();
    const states: TcpRepairState[] = [];
    let dumped: Extract<SwitchoverMessage, { type: 'dumped' }> | undefined;
    // Started at QUIET: the catch-up and the server's sessions are read while the states come.
    type Caught = { ok: true; value: Awaited<ReturnType<BackupSwitchoverOptions['catchUp']>>; ms: number } | { ok: false; error: Error };
    let catching: Promise<Caught> | undefined;
    const startCatchUp = () => {
      const c0 = performance.now();
      return o.catchUp().then(
        (value): Caught => ({ ok: true, value, ms: Math.round(performance.now() - c0) }),
        (error: Error): Caught => ({ ok: false, error }),
      );
    };
    for (let i = 0; i < 1_000_000 && !dumped; i++) {
      const m = await channel.next((o.quietWaitMs ?? 2000) + 10_000, 'STATES or DUMPED');
      if (m.type === 'quiet') catching ??= startCatchUp();
      else if (m.type === 'states') states.push(...m.states);
      else if (m.type === 'dumped') dumped = m;
      else if (m.type === 'refused') throw new SwitchoverError(`the primary refused: ${m.reason}`, 'refused');
      else throw new SwitchoverError(`the primary sent ${m.type.toUpperCase()} before DUMPED`, 'refused');
    }
    if (!dumped || dumped.connections !== states.length) throw new SwitchoverError(`the primary announced ${dumped?.connections} connections and sent ${states.length}`, 'refused');
    const handedOverMs = since();
    const statesMs = Math.round(performance.now() - goAt);
    let catchUp = '';
    let catchUpMs = 0;
    let promoteMs = 0;
    let plansMs = 0;
    let plans;
    try {
      const result = await (catching ?? startCatchUp());
      if (!result.ok) throw result.error;
      const caught = result.value;
      catchUp = caught.detail;
      catchUpMs = result.ms;
      // The shadow is asked only for what the server's account lacks (all of it without one; a
      // login's AUTH with one): its plans of a thousand connections take ~70 ms under the lock.
      const needShadow = !caught.sessions || [...caught.sessions.values()].some((x) => x.kind === 'auth');
      const pl0 = performance.now();
      let shadowPlans: Awaited<ReturnType<Shadow['plans']>> = [];
      if (needShadow) {
        // Past the dump: a lock that lets replies out (PostgreSQL's) shows them until then.
        await shadowReaches(o.shadow, dumped.lockedAtMs + dumped.quietMs + dumped.dumpMs, 2000).catch((err: Error) => {
          if (!caught.sessions) throw err;
        });
        shadowPlans = await o.shadow.plans(o.service.address);
      }
      plans = switchoverPlans(states, shadowPlans, o.service.address, Date.now(), caught.sessions, o.goodbye);
      plansMs = Math.round(performance.now() - pl0);
      const p0 = performance.now();
      try {
        await o.promote?.();
      } catch (err) {
        throw new Error(`the local service was not promoted: ${(err as Error).message}`);
      }
      promoteMs = Math.round(performance.now() - p0);
      try {
        await o.upstreamAccepts();
      } catch (err) {
        throw new Error(`${(err as Error).message}${o.promote ? ' (it was promoted: make it a replica again)' : ''}`);
      }
    } catch (err) {
      const reason = (err as Error).message;
      channel.send({ type: 'abort', reason });
      throw new SwitchoverError(`aborted, the primary serves on: ${reason}`, 'aborted');
    }
    channel.send({ type: 'release' });
    const rel = await channel.next(10_000, 'RELEASED').catch((err: Error) => {
      throw new SwitchoverError(`no answer to RELEASE (${err.message}): where the address is, is not known; check both nodes`, 'after-release');
    });
    if (rel.type === 'refused') throw new SwitchoverError(`the primary could not give the address up and serves on (the replica here was promoted: make it a replica again): ${rel.reason}`, 'aborted');
    if (rel.type !== 'released') throw new SwitchoverError(`expected RELEASED, got ${rel.type.toUpperCase()}`, 'after-release');
    released = true;
    const releasedMs = since();
    const r = await continueConnections({
      plans: () => plans,
      address: o.service.address,
      interface: o.interface,
      prefixLength: o.prefixLength,
      upstream: o.upstream,
      plugin: o.plugin,
      guard: o.guard ?? true,
      ...(o.keeper ? { keeper: o.keeper } : {}),
    });
    const resetBy: Record<string, number> = {};
    for (const x of r.reset) resetBy[x.reason] = (resetBy[x.reason] ?? 0) + 1;
    const goodbyeBy: Record<string, number> = {};
    for (const x of r.continued) if (x.goodbye !== undefined) goodbyeBy[x.goodbye] = (goodbyeBy[x.goodbye] ?? 0) + 1;
    const goodbyes = r.continued.filter((x) => x.goodbye !== undefined).length;
    const moved = r.continued.length - goodbyes;
    // The primary's count of what was not moved holds the goodbyes with the resets.
    channel.send({ type: 'done', moved, reset: r.reset.length + goodbyes });
    const totalMs = since();
    let lockHeldMs: number | undefined;
    let releasedAfterMs: number | undefined;
    const un = await channel.next(5000, 'UNLOCKED').catch(() => undefined);
    if (un?.type === 'unlocked') ({ lockHeldMs, releasedAfterMs } = un);
    return {
      report: {
        service, connections: states.length, moved, goodbyes, goodbyeBy, reset: r.reset.length, resetBy,
        quietMs: dumped.quietMs, dumpMs: dumped.dumpMs, ...(lockHeldMs !== undefined ? { lockHeldMs } : {}), ...(releasedAfterMs !== undefined ? { releasedAfterMs } : {}),
        handedOverMs, statesMs, plansMs, catchUp, catchUpMs, promoteMs, releasedMs, timings: r.timings, totalMs,
      },
      continued: r.continued,
    };
  } catch (err) {
    if (err instanceof SwitchoverError) throw err;
    throw new SwitchoverError((err as Error).message, released ? 'after-release' : 'aborted');
  } finally {
    channel.close();
  }
}

async function expect<T extends SwitchoverMessage['type']>(channel: SwitchoverChannel, ms: number, what: string, type: T): Promise<Extract<SwitchoverMessage, { type: T }>> {
  const m = await channel.next(ms, what);
  if (m.type === 'refused') throw new SwitchoverError(`the primary refused: ${m.reason}`, 'refused');
  if (m.type !== type) throw new SwitchoverError(`expected ${what}, got ${m.type.toUpperCase()}`, 'refused');
  return m as Extract<SwitchoverMessage, { type: T }>;
}

/**
 * A stream's copy lags the wire: waits (up to waitMs) until its last mark is past `atMs` (the
 * dump's end), so every session command the clients sent before the lock, and every reply the
 * server wrote before the dump that left the host, is in the shadow. A mirror's copy has no
 * marks: it lags by the capture's block timeout at most, waited once (50 ms).
 */
async function shadowReaches(shadow: Shadow, atMs: number, waitMs: number): Promise<void> {
  const t0 = performance.now();
  if (shadow.stats().lastMarkMs === undefined) {
    await new Promise((r) => setTimeout(r, 50));
    return;
  }
  for (let i = 0; i < 10_000; i++) {
    const s = shadow.stats();
    if ((s.lastMarkMs ?? 0) >= atMs) return;
    if (performance.now() - t0 > waitMs) throw new Error(`the shadow's stream did not reach the dump in ${waitMs} ms (${s.connected === false ? 'the stream is down' : `last mark ${Math.round(atMs - (s.lastMarkMs ?? 0))} ms before it`})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function connect(to: { host: string; port: number }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: to.host, port: to.port, timeout: 3000 });
    s.once('connect', () => {
      s.setTimeout(0);
      resolve(s);
    });
    s.once('timeout', () => {
      s.destroy();
      reject(new SwitchoverError(`the primary's agent at ${to.host}:${to.port} did not answer in 3000 ms`, 'refused'));
    });
    s.once('error', (err: NodeJS.ErrnoException) => reject(new SwitchoverError(`the primary's agent at ${to.host}:${to.port}: ${err.code ?? err.message}`, 'refused')));
  });
}

function randomNonce(): bigint {
  const b = new BigUint64Array(1);
  do crypto.getRandomValues(b);
  while (b[0] === 0n);
  return b[0]!;
}
