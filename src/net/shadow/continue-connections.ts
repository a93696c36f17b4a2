// The backup continues a dead primary's client connections (issue 12, seed 003), in the order
// the feasibility run found to work (docs/CONTINUE.md; issue 12 quotes that run):
//   1. an nftables guard drops this host's bare RSTs from the service address, so its kernel
//      does not reset a client whose segment arrives before that client's socket exists;
//   2. the provable connections are restored (TCP_REPAIR, IP_TRANSPARENT: the address is not
//      here yet) on a libuv worker, in batches, the most recently active first; the refill
//      (server bytes the client had not acknowledged) goes out normally after repair off;
//   3. after the first batch the address is added and announced (gratuitous ARP / unsolicited
//      NA): clients' segments now reach sockets that exist (or meet the guard and come again);
//      before it when a copy's end must be proven by the clients (the tail proof: a stream's
//      copy, or a capture loss), and those connections are relayed only once proven;
//   4. each socket is adopted and relayed to the new upstream (the promoted local service):
//      session preamble first, then the requests the dead server never answered (a plan with a
//      protocol goodbye instead gets those bytes and a FIN: PostgreSQL inside a transaction).
//      The upstream connections are opened and their preambles sent batch by batch as the
//      sockets are restored, while the service is promoted; only the replay waits;
//   5. every connection that could not be proven (a hole, both ends' FINs, an unfollowed reply,
//      a failed restore) is reset exactly by the close engine, its reason kept; the client bytes
//      a mirror showed reaching the dead server meanwhile are delivered into the restored
//      sockets (lateClientData);
//   6. the guard goes.
// The caller has fenced the primary before (two hosts on one sequence space corrupt it); the
// promotion of the local service may still run (`ready`).
import { closeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { native } from '../../native.js';
import { takeOverAddress } from '../address.js';
import { adoptSocket } from '../adopt-socket.js';
import type { DeadConnection } from '../close-engine.js';
import type { CloseResult } from '../close-result.js';
import { closePeers } from '../close-peers.js';
import { canonicalAddress, formatEndpoint, type Endpoint } from '../endpoint.js';
import { RstGuard } from '../rst-guard.js';
import { restoreConnections, type RestoredConnection, type RestoreOutcome } from '../tcp-repair.js';
import { seqAdd } from '../seq.js';
import { restoredRcvNxt, type TcpRepairState } from '../tcp-repair-state.js';
import type { RelayHandOff } from '../relay-keeper/keeper-client.js';
import { prepareUpstream, relayConnection, type PreparedUpstream, type Relay } from './connection-relay.js';
import type { ContinuePlugin } from './exchange-tracker.js';
import { LateClientDelivery, type LateClientSource } from './late-client-data.js';
import type { ContinuePlan } from './shadow-connection.js';
import type { CopyTail } from './tail-check.js';
import { TailProof } from './tail-proof.js';

export interface ContinueOptions {
  /**
   * The plans of one service address (e.g. `() => shadow.plans(address)`), called once the RST
   * guard is in place and right before the restores: the later the snapshot, the fewer client
   * segments reach the dead server after it (each one waits for the client's retransmission).
   */
  plans: () => ContinuePlan[] | Promise<ContinuePlan[]>;
  /** The service address to take over, its interface and prefix length (bits). */
  address: string;
  interface: string;
  prefixLength: number;
  /**
   * Where the continued connections go now: the promoted service on this host. Its connections
   * are opened, and their session preambles sent, right after the plans, before `ready`: it must
   * accept them while being promoted (a Redis replica does, a PostgreSQL hot standby too).
   */
  upstream: { host: string; port: number };
  plugin: ContinuePlugin;
  /** Gratuitous ARPs / unsolicited NAs after the add (default 3). */
  announce?: number;
  /**
   * Install the RST guard here (default true). false: the caller has one in place already
   * (installing it costs ~20-60 ms of nft at the takeover; PeerTakeover installs it ahead).
   */
  guard?: boolean;
  /**
   * Connections known from elsewhere (e.g. the peer's replicated table) that the plans lack:
   * reset exactly too (reason: not shadowed). Those a plan names are left to the plan.
   */
  alsoReset?: DeadConnection[];
  /**
   * The plans' copy may lack its tail (the primary's own stream, not a mirror): each restored
   * connection is relayed only once its client has shown that it holds nothing the copy lacks,
   * and reset exactly otherwise (TailProof). Without it, only the plans marked `unproven` (a
   * capture loss) are proven so. waitMs: how long one may stay undecided (default 3000).
   */
  proveTail?: { waitMs?: number };
  /**
   * The caller's promotion of the upstream, run meanwhile: nothing waits for it but the relays'
   * replays and their clients' bytes (the upstream connections, their preambles, the restores
   * and the address go ahead). When it rejects, every relay resets its client (the restored
   * socket's own RST, exact; a protocol goodbye is still said), the connections that could not
   * be continued are reset exactly, and its error is thrown as is: no report, the address stays.
   */
  ready?: Promise<unknown>;
  /**
   * Which restored connections' replays must not run (the replay matcher, replay-match.ts: the
   * dead server may have run an unanswered write). Called once, right after the plans are taken,
   * with the restore plans (it snapshots what it needs then). Their relays wait for it as for
   * `ready`; a refused one resets its client (the restored socket's own RST, exact) without
   * replaying and is reported under `reset`. A rejection refuses every replay that is not empty.
   */
  checkReplays?: (restores: RestorePlan[]) => Promise<ReplayCheckResult>;
  /**
   * The copy's client bytes past a restore's RCV.NXT (a mirror's: ShadowCapture.clientDataSince):
   * delivered into each relayed socket (LateClientDelivery) instead of waiting for the client's
   * retransmission. Absent (a stream's copy ends with the primary): nothing is delivered.
   */
  lateClientData?: LateClientSource;
  /**
   * Each relay's steady state goes to the relay keeper (RelayOptions.keeper), so that the
   * continued connections outlive this process; called once per relay with what it relays.
   */
  keeper?: (relay: { client: string; service: string; upstream: string }) => RelayHandOff;
}

/** What a replay check decided. */
export interface ReplayCheckResult {
  /** The connections (the client as `${address}|${port}`) whose replay must not run, and why. */
  refused: Map<string, string>;
  /**
   * The connections whose replayed requests the dead server ran, answered instead: the replies,
   * written to the client in place of the replay (RelayOptions.hold). Never one with a
   * mid-reply plan (expectReply, resumeReply).
   */
  answered?: Map<string, Uint8Array>;
  /**
   * The connections whose replay may run only so that it cannot write (their plan's
   * ReadOnlyReplay: a read is answered, a write refused by the upstream and its client reset),
   * and why it may not run otherwise. Only plans with a ReadOnlyReplay object are named here.
   */
  readOnly?: Map<string, string>;
  /** What it counted, for the report (e.g. acknowledged writes the promoted server lacks). */
  counts?: Record<string, number>;
  /** What an operator must hear about (e.g. acknowledged writes that may be lost uncounted). */
  warnings?: string[];
}

/** A plan that restores its connection (continued or ended with a goodbye). */
export type RestorePlan = Extract<ContinuePlan, { kind: 'restore' }>;

export interface ContinuedConnection {
  client: Endpoint;
  server: Endpoint;
  /** The addon's restore of this socket, µs. */
  restoreUs: number;
  /** Bytes replayed to the upstream (unanswered requests) and the preamble's replies swallowed. */
  replayBytes: number;
  preambleReplies: number;
  /** Bytes of a reply the dead server had begun that the relay checks the replay against (0: none). */
  midReplyBytes: number;
  /** Set when the reply the dead server was cut in is asked of the upstream from where it stopped (ContinuePlan.resumeReply): from where, and how. */
  resumed?: string;
  /** With proveTail: ms from the restore until the client showed the copy whole. */
  tailProvenMs?: number;
  /** Set when the plan was a protocol goodbye (ContinuePlan.goodbye): why; the relay only sent it. */
  goodbye?: string;
  /**
   * Set when the client was inside a transaction that the relay rebuilds (ContinuePlan.transaction):
   * why it was said to be inside one. If the rebuild fails, the relay says that goodbye after all
   * (RelayEnd.saidGoodbye).
   */
  transaction?: string;
  /** With lateClientData: client bytes that reached the dead server after the plans, delivered here. */
  lateBytes?: number;
  relay: Relay;
}

export interface ResetConnection {
  client: Endpoint;
  server: Endpoint;
  /** Why it was not continued. */
  reason: string;
  /** What the close engine did (an exact RST when the state was known). */
  close?: CloseResult;
}

export interface ContinueReport {
  continued: ContinuedConnection[];
  reset: ResetConnection[];
  /**
   * ms from the call: guard in place and plans taken; the first batch restored and the address
   * added and announced; that batch relaying; every connection relaying; the resets done too
   * (with lateClientData, and its last look: 60 ms after the last relay started).
   * With the tail proof, "relaying" means restored and handed to the proof (each is relayed once
   * proven, its tailProvenMs later), and relayingMs waits for the last verdict. With `ready`, a
   * relay is started before the promotion is done (its replay waits), and relayingMs waits for it.
   */
  timings: { plannedMs: number; addressMs: number; firstRelayingMs: number; relayingMs: number; doneMs: number };
  /** false when the address was already here and usable. */
  addressAdded: boolean;
  /** With checkReplays: what the check counted, and how long after the call it decided (ms). */
  replayCheck?: Record<string, number> & { decidedMs: number };
  /** With checkReplays: why the check failed, when it did (every connection with a replay was then reset). */
  replayCheckError?: string;
  /** With checkReplays: its warnings (ReplayCheckResult.warnings). */
  replayCheckWarnings?: string[];
  /**
   * With lateClientData: the connections whose client bytes (or FIN) reached the dead server
   * after the plans and were delivered here, the bytes, and the looks whose send the kernel
   * refused (their bytes sent again at the next look, or left to the client's retransmission).
   */
  late?: { connections: number; bytes: number; failures: number };
}

/**
 * Continues every provable connection of a dead service address on this host and resets the
 * rest. Throws when the guard cannot be installed (nft missing or refusing: nothing touched),
 * a plan names another address (RangeError: nothing touched), the plans reject (nothing
 * touched), the address cannot be taken (rtnetlink's error: the restored sockets are closed,
 * silently since the address is not here) or `ready` rejects (its error: see there).
 */
export async function continueConnections(options: ContinueOptions): Promise<ContinueReport> {
  const t0 = performance.now();
  const since = () => Math.round((performance.now() - t0) * 100) / 100;
  const address = canonicalAddress(options.address);
  const guard = options.guard === false ? undefined : await RstGuard.install([address]);
  let tailProof: TailProof | undefined;
  const late = options.lateClientData ? new LateClientDelivery(options.lateClientData) : undefined;
  /** Upstream connections opened ahead, by connection key, until a relay takes each over. */
  const prepared = new Map<string, PreparedUpstream>();
  try {
    const plans = await options.plans();
    const foreign = plans.find((p) => p.server.address !== address);
    if (foreign) throw new RangeError(`a plan for ${foreign.server.address} was given to continue connections of ${address}`);
    const restores = plans.filter((p): p is RestorePlan => p.kind === 'restore');
    const reset: ResetConnection[] = plans
      .filter((p): p is Extract<ContinuePlan, { kind: 'reset' }> => p.kind === 'reset')
      .map((p) => ({ client: p.client, server: p.server, reason: p.reason }));
    const deadOf = new Map<string, DeadConnection>(plans.filter((p) => p.kind === 'reset').map((p) => [key(p.client, p.server), p.dead]));
    const planned = new Set(plans.map((p) => key(p.client, p.server)));
    for (const d of options.alsoReset ?? []) {
      const server = { address: canonicalAddress(d.local.address), port: d.local.port };
      const client = { address: canonicalAddress(d.peer.address), port: d.peer.port };
      const k = key(client, server);
      if (server.address !== address || planned.has(k) || deadOf.has(k)) continue;
      reset.push({ client, server, reason: 'not shadowed (opened before the capture started, or its SYN was not seen)' });
      deadOf.set(k, { ...d, local: server, peer: client });
    }
    const plannedMs = since();
    // Asked now, while the copy is what the plans were made from; waited for with the promotion.
    let decidedMs = 0;
    let checkError: string | undefined;
    const refusals = options.checkReplays?.(restores)
      .catch((err: Error): ReplayCheckResult => {
        checkError = err.message;
        return { refused: new Map(restores.filter((p) => p.replay.length > 0).map((p) => [clientKey(p.client), `the replay check failed: ${err.message}`])) };
      })
      .then((r) => {
        decidedMs = since();
        return r;
      });
    const hold: Promise<ReplayCheckResult | undefined> | undefined = refusals ? Promise.all([options.ready, refusals]).then(([, r]) => r) : options.ready?.then(() => undefined);
    // A failed promotion rejects it, maybe before any relay listens (they come after the
    // restores): each relay handles it (resets its client), and `ready` is reported below.
    hold?.catch(() => undefined);
    // The most recently active first (the order of the restores below).
    const order = [...restores].sort((a, b) => b.lastSeenMs - a.lastSeenMs);
    // Started before the address moves here, so that no client segment is missed.
    // Every plan with an unproven end (a capture loss), or all of them (a stream's copy).
    const toProve = options.proveTail ? restores : restores.filter((p) => p.unproven !== undefined);
    tailProof = toProve.length > 0
      ? new TailProof({
          interface: options.interface,
          address,
          ports: [...new Set(toProve.map((p) => p.server.port))],
          connections: toProve.map((p) => ({ client: p.client, server: p.server, tail: copyTail(p.state) })),
          ...(options.proveTail?.waitMs !== undefined ? { waitMs: options.proveTail.waitMs } : {}),
        })
      : undefined;
    const proving: Promise<void>[] = [];
    // In batches: the address is added after the first batch, so those clients go on while the
    // rest are restored (a segment for a connection not restored yet meets the guard, not a RST,
    // and is retransmitted).
    const continued: ContinuedConnection[] = [];
    let taken: Awaited<ReturnType<typeof takeOverAddress>> | undefined;
    let addressMs = 0;
    let firstRelayingMs = 0;
    const takeAddress = async (restored: BatchOutcome[]) => {
      try {
        taken = await takeOverAddress(options.interface, address, options.prefixLength, { announce: options.announce ?? 3 });
      } catch (err) {
        for (const o of restored) if (o.ok) closeSilently(o.fd);
        throw err;
      }
      addressMs = since();
    };
    // With the tail proof the address comes first: each restore's window probe is the client's
    // first question, and its answer must reach this host.
    if (tailProof) await takeAddress([]);
    for (let i = 0; i === 0 || i < order.length; i += RESTORE_BATCH) {
      const batch = order.slice(i, i + RESTORE_BATCH);
      // Each batch's upstream connections opened (preambles sent) as its restores start on the
      // worker: all of them at once held the loop ~250 ms before the first restore at 9,000
      // connections, and the address and the first relays with it.
      for (const p of batch) if (!p.goodbye) prepared.set(key(p.client, p.server), prepareUpstream(options.upstream, p.preamble));
      let outcomes: BatchOutcome[] = [];
      try {
        if (batch.length > 0) outcomes = await restoreConnections(batch.map((p) => p.state), { transparent: true });
      } catch (err) {
        // A state the check refuses fails its whole batch (nothing of it restored): those are reset.
        outcomes = batch.map(() => ({ ok: false as const, error: err as Error }));
      }
      if (!taken) await takeAddress(outcomes);
      outcomes.forEach((outcome, j) => {
        const plan = batch[j]!;
        if (!outcome.ok) {
          reset.push({ client: plan.client, server: plan.server, reason: `the restore failed: ${outcome.error.message}` });
          deadOf.set(key(plan.client, plan.server), { local: plan.server, peer: plan.client });
          return;
        }
        if (!tailProof || !(options.proveTail || plan.unproven !== undefined)) {
          continued.push(relayRestored(plan, outcome, options, takePrepared(plan), hold, late));
          return;
        }
        proving.push(
          tailProof.watch(plan.client, plan.server).then((proof) => {
            if (proof.proven) {
              continued.push({ ...relayRestored(plan, outcome, options, takePrepared(plan), hold, late), tailProvenMs: proof.afterMs });
              return;
            }
            closeSilently(outcome.fd); // its RST would carry the copy's numbers, not the client's
            reset.push({ client: plan.client, server: plan.server, reason: plan.unproven ? `${proof.reason} (${plan.unproven})` : proof.reason });
            deadOf.set(key(plan.client, plan.server), proof.dead);
          }),
        );
      });
      if (i === 0) firstRelayingMs = since();
    }
    await Promise.all(proving);
    tailProof?.close();
    // A promotion that failed has reset every relay's client by now (RelayOptions.hold); the
    // connections that could not be continued are reset all the same, then its error is thrown.
    const promotion = options.ready?.then(() => undefined, (err: unknown) => ({ err }));
    const failed = await promotion;
    // A connection whose replay was refused: its relay resets its client with the restored
    // socket's own RST (it was not continued); reported with the others, not closed again.
    const checked = await refusals;
    const refused = takeRefused(continued, checked?.refused);
    const relayingMs = since();
    await resetExactly(reset, deadOf, address, options.interface);
    reset.push(...refused);
    // Under the guard still: a look that finds a socket gone (a refused replay) draws no RST.
    await late?.done();
    if (late) for (const c of continued) c.lateBytes = late.delivered(c.client, c.server);
    if (failed) throw failed.err;
    return {
      continued,
      reset,
      timings: { plannedMs, addressMs, firstRelayingMs, relayingMs, doneMs: since() },
      addressAdded: taken!.added,
      ...(checked ? { replayCheck: { ...checked.counts, refused: checked.refused.size, decidedMs } } : {}),
      ...(checkError !== undefined ? { replayCheckError: checkError } : {}),
      ...(checked?.warnings?.length ? { replayCheckWarnings: checked.warnings } : {}),
      ...(late ? { late: late.totals() } : {}),
    };
  } finally {
    late?.close();
    tailProof?.close();
    // Those no relay took over: not restored, not proven, or the takeover failed.
    for (const u of prepared.values()) u.close();
    await guard?.remove();
  }

  function takePrepared(plan: ContinuePlan): PreparedUpstream | undefined {
    const k = key(plan.client, plan.server);
    const u = prepared.get(k);
    prepared.delete(k);
    return u;
  }
}

/**
 * Takes the connections whose replay the check refused out of `continued` (their relays reset
 * their clients) and returns them as resets, with the check's reason. A goodbye stays: it
 * replays nothing and waits for no check, so it was said (and its FIN sent) all the same.
 */
export function takeRefused(continued: ContinuedConnection[], refused: ReadonlyMap<string, string> | undefined): ResetConnection[] {
  const out: ResetConnection[] = [];
  for (let i = continued.length - 1; i >= 0; i--) {
    const c = continued[i]!;
    const why = refused?.get(clientKey(c.client));
    if (why === undefined || c.goodbye !== undefined) continue;
    out.push({ client: c.client, server: c.server, reason: why });
    continued.splice(i, 1);
  }
  return out;
}

/** One restore of a batch: a state the check refuses fails the whole batch with its error. */
type BatchOutcome = Extract<RestoreOutcome, { ok: true }> | { ok: false; error: Error };

/** Connections restored per batch (one libuv work item each); the first batch's clients resume first. */
const RESTORE_BATCH = 64;

/**
 * Adopts a restored socket and relays it to the upstream: preamble, replay, then both ways. hold:
 * the promotion and the replay check's decision (a refused connection's relay resets its client;
 * an answered one's writes the answer to its client instead of replaying).
 */
function relayRestored(
  plan: RestorePlan,
  outcome: RestoredConnection,
  options: ContinueOptions,
  prepared: PreparedUpstream | undefined,
  hold: Promise<ReplayCheckResult | undefined> | undefined,
  late: LateClientDelivery | undefined,
): ContinuedConnection {
  const client = clientKey(plan.client);
  if (plan.clientEnded) {
    // Its FIN is counted in RCV.NXT already; the reader learns of it here, after the queued
    // bytes (the replay), as it would have there. A socket gone meanwhile fails this: the relay
    // then reads its error.
    try {
      native.shutdownRead(outcome.fd);
    } catch {
      // (ENOTCONN: reset by the client since the restore)
    }
  }
  const relay = relayConnection({
    client: adoptSocket(outcome),
    upstream: options.upstream,
    ...(prepared ? { prepared } : {}),
    ...(hold
      ? {
          hold: hold.then((checked) => {
            const why = checked?.refused.get(client);
            if (why !== undefined) throw new Error(why);
            const answer = checked?.answered?.get(client);
            if (answer) return { answer };
            const readOnlyWhy = checked?.readOnly?.get(client);
            if (readOnlyWhy === undefined) return undefined;
            // (The check names only plans that have one.)
            if (typeof plan.readOnlyReplay !== 'object') throw new Error(readOnlyWhy);
            return { readOnly: plan.readOnlyReplay, why: readOnlyWhy };
          }),
        }
      : {}),
    replay: plan.replay,
    preamble: plan.preamble,
    ...(plan.transaction ? { transaction: { replay: plan.transaction.replay, goodbye: plan.transaction.goodbye.bytes } } : {}),
    replyCounter: options.plugin.createReplyCounter(),
    ...(plan.expectReply ? { expectReply: plan.expectReply } : {}),
    ...(plan.resumeReply ? { replyFilter: plan.resumeReply.createFilter() } : {}),
    ...(plan.goodbye ? { goodbye: plan.goodbye.bytes } : {}),
    ...(options.keeper
      ? { keeper: options.keeper({ client: formatEndpoint(plan.client), service: formatEndpoint(plan.server), upstream: formatEndpoint({ address: options.upstream.host, port: options.upstream.port }) }) }
      : {}),
  });
  // A goodbye reads nothing it is sent: nothing to deliver.
  if (!plan.goodbye) late?.watch(plan.client, plan.server, plan.state);
  return {
    client: plan.client,
    server: plan.server,
    restoreUs: outcome.durationUs,
    replayBytes: plan.replay.length,
    preambleReplies: plan.preamble.replies,
    midReplyBytes: plan.expectReply?.bytes ?? 0,
    ...(plan.resumeReply ? { resumed: plan.resumeReply.description } : {}),
    ...(plan.goodbye ? { goodbye: plan.goodbye.reason } : {}),
    ...(plan.transaction ? { transaction: plan.transaction.goodbye.reason } : {}),
    relay,
  };
}

/** Where a restored state's copy ends: RCV.NXT, and one past the last server byte (refill included). */
function copyTail(state: TcpRepairState): CopyTail {
  return { rcvNxt: restoredRcvNxt(state), sndEnd: seqAdd(state.send.seq, state.send.queue.length) };
}

/** Closes a restored socket without a FIN or RST (its numbers may not be the client's). */
function closeSilently(fd: number): void {
  try {
    native.tcpRepairClose(fd);
  } catch {
    closeSync(fd); // repair mode refused (not expected of a socket restored here): closed anyway
  }
}

/** A client as the replay check names it (RequestLog's connection). */
const clientKey = (e: Endpoint) => `${e.address}|${e.port}`;

function key(client: Endpoint, server: Endpoint): string {
  return `${client.address}|${client.port}|${server.address}|${server.port}`;
}

/** Resets the connections that could not be continued, one close-engine run per service port. */
async function resetExactly(
  reset: ResetConnection[],
  deadOf: Map<string, DeadConnection>,
  address: string,
  ifname: string,
): Promise<void> {
  const ports = [...new Set(reset.map((r) => r.server.port))];
  for (const port of ports) {
    const here = reset.filter((r) => r.server.port === port);
    const report = await closePeers(
      { address, port, interface: ifname, known: here.map((r) => deadOf.get(key(r.client, r.server))!).filter(Boolean), peers: here.map((r) => r.client) },
      { method: 'rst' },
    );
    for (const r of here) {
      const result = report.results.find((c) => c.peer.address === r.client.address && c.peer.port === r.client.port);
      if (result) r.close = result;
    }
  }
}
