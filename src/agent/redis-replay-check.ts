// The replay check of a Redis takeover (`continue.matchWrites`, docs/CONTINUE.md): which
// continued connections' unanswered writes the dead primary ran, read from the replication
// stream the promoted replica applied (seed 003 [0055], [0077]-[0080]). At the takeover the
// request log and the probes are snapshotted with the plans; once the local replica is promoted,
// its copy of the old primary's stream from the earliest probe needed is read back (PSYNC from
// its backlog) and handed to the matcher (replay-match.ts). The writes the dead primary
// acknowledged that the replica never got are run again on the promoted replica, in the order
// they were sent, before any relay replays (seed 003 [0059]: the captured requests are replayed
// on the other server, so committed transactions are not lost). A connection whose unanswered
// writes the dead primary ran is answered from the promoted replica where their replies follow
// from its state (redis-ran-replies.ts: INCR-like counters, SET, MSET), else reset.
import type { ReplayCheckResult, RestorePlan } from '../net/shadow/continue-connections.js';
import type { CapturedProbe } from '../net/shadow/probe-capture-times.js';
import { DEFAULT_MARGIN_MS, decideReplays, planMatch, type ReplayVerdict, type StreamProbe, type StreamWrite } from '../net/shadow/replay-match.js';
import type { LoggedWrite, RequestLog, RequestLogSnapshot } from '../net/shadow/request-log.js';
import { argumentsDigest } from '../net/shadow/resp-request.js';
import { respWriteKey } from '../net/shadow/resp-write-kinds.js';
import { parseReplicationStream } from '../net/shadow/replication-stream.js';
import { readOldHistory } from './redis-backlog.js';
import { isErrorReply, pipelineCommands, type DatabaseCommand } from './redis-pipeline.js';
import { planRanReplies, ranReplies, readKeys } from './redis-ran-replies.js';
import { parseInfo, respCommand } from './redis-catch-up.js';
import type { StreamProbe as ProbeRecord } from './redis-stream-probe.js';

export interface RedisReplayCheckOptions {
  /** The shadow's request log (the RESP tracker's writes). */
  log: RequestLog;
  /** The probes of the primary's stream so far, oldest first. */
  probes: () => readonly ProbeRecord[];
  /** The capture's times of a probe's PUBLISH and reply, by nonce (ProbeCaptureTimes.get), when the capture sees the probes. */
  captured?: (nonce: string) => CapturedProbe | undefined;
  /**
   * Whether a probe the capture did not time is dropped instead of judged by this host's clock
   * around its round trip: for a copy streamed by the primary, whose capture times are the
   * primary's clock (the writes' times cannot be compared with this host's). Default false (a
   * mirror captured on this host: one clock).
   */
  capturedOnly?: boolean;
  /** The local Redis, promoted by the time `promoted` resolves (its backlog holds the old stream). */
  upstream: { host: string; port: number };
  /** How long the backlog read may take, ms. */
  timeoutMs?: number;
  /** The ordering margin between capture times and probe windows, ms (default DEFAULT_MARGIN_MS; see replay-match.ts). */
  marginMs?: number;
}

/**
 * The check for ContinueOptions.checkReplays: snapshots now, decides once `promoted` resolves,
 * and runs the lost acknowledged writes again before it resolves (the relays wait for it).
 * Rejects (every non-empty replay is then refused) when the promoted server does not hold the
 * old primary's history, its backlog cannot be read or does not parse. Only probes whose stream
 * the backlog still holds are chosen (a key whose probe is older is not placed: its connection is
 * reset if it has unanswered writes), so a read needing a FULLRESYNC is a race (the backlog moved
 * after INFO), not the common case.
 */
export function redisReplayCheck(options: RedisReplayCheckOptions, promoted: Promise<unknown>): (restores: RestorePlan[]) => Promise<ReplayCheckResult> {
  return async (restores) => {
    // Every restored connection: those with unanswered writes are judged, the others' acknowledged writes counted.
    const restored = new Set(restores.map((p) => `${p.client.address}|${p.client.port}`));
    // Each phase's time, ms (for the report: where a takeover's wait for the check goes).
    const phase = phases();
    const snapshot = options.log.snapshot();
    // Every connection the log knows too: one that ended (or is reset) may have lost acknowledged writes.
    const connections = [...new Set([...restored, ...snapshot.writes.map((w) => w.connection)])];
    const all = options.probes();
    const windows = probeWindows(all, options.captured ?? (() => undefined)).map((w) => (w.captured || !options.capturedOnly ? w : null));
    // Only the primary's current history: a restart (new replid) leaves older probes elsewhere.
    const replid = all.at(-1)?.replid;
    await promoted;
    const promotedMs = phase();
    // Judged from probes the replica got: after a probe it never got, a write it lacks would be
    // counted nowhere (a lagging or cut replication link leaves the replica behind the probes).
    const held = replid === undefined ? { end: 0, first: 1 } : await oldHistoryBounds(options.upstream, replid, options.timeoutMs ?? 2000);
    const infoMs = phase();
    const probes = windows.filter((w, i): w is NonNullable<typeof w> => w !== null && all[i]!.replid === replid && all[i]!.offset <= held.end);
    const capturedProbes = probes.filter((p) => p.captured).length;
    const marginMs = options.marginMs ?? DEFAULT_MARGIN_MS;
    const unlogged = unloggedAcknowledged(snapshot, probes, windows, held.end, marginMs);
    // Only what the backlog still holds, and no more than one read takes, can be read back.
    const readableFrom = Math.max(held.first, held.end + 1 - MAX_HISTORY_BYTES);
    const plan = await planMatch(snapshot, probes, connections, marginMs, readableFrom);
    const planMs = phase();
    let stream: StreamWrite[] = [];
    if (plan.from !== null && replid !== undefined) {
      const history = await readOldHistory(options.upstream, { replid, offset: plan.from }, { timeoutMs: options.timeoutMs ?? 2000, maxBytes: MAX_HISTORY_BYTES });
      // Right after a probe the stream is in database 0: the probe's PUBLISH ran there.
      stream = parseReplicationStream(history.bytes, history.startOffset, 0).flatMap((c) => {
        const key = respWriteKey(String(c.db), argumentsDigest(c.argv));
        return key === null ? [] : [{ offset: c.offset, key }];
      });
    }
    const readMs = phase();
    const verdicts = await decideReplays(snapshot, plan, stream, connections, marginMs);
    const decideMs = phase();
    const refused = new Map<string, string>();
    let lostAcknowledged = 0;
    let ranUnanswered = 0;
    const lost: LoggedWrite[] = [];
    for (const [c, v] of verdicts) {
      lostAcknowledged += v.lostAcknowledged;
      // Counted for the connections being continued only: one already reset for a capture hole
      // shows writes whose replies fell in the hole as unanswered, and they all ran.
      if (restored.has(c)) ranUnanswered += v.ranUnanswered;
      lost.push(...v.lostWrites);
      if (v.verdict === 'reset' && restored.has(c)) refused.set(c, v.reason!);
    }
    lost.sort((a, b) => a.sentMs - b.sentMs);
    const rerun = lost.flatMap((w) => (w.rerun ? [w.rerun] : []));
    // A failure here leaves those writes lost (counted), and the replays go on: they do not depend on them.
    const reapplied = rerun.length > 0 ? await runAgain(options.upstream, rerun, options.timeoutMs ?? 2000).catch(() => ({ ok: 0, failed: rerun.length })) : { ok: 0, failed: 0 };
    const { answered, writes: ranAnswered } = await answerRan(options.upstream, restores, verdicts, refused, options.timeoutMs ?? 2000);
    const applyMs = phase();
    return {
      refused,
      answered,
      ...(unlogged.warning !== undefined ? { warnings: [unlogged.warning] } : {}),
      counts: {
        answered: answered.size,
        ranAnswered,
        judged: restored.size,
        lostAcknowledged,
        reapplied: reapplied.ok,
        reapplyFailed: reapplied.failed,
        notKept: lost.length - rerun.length,
        unloggedAcknowledged: unlogged.count,
        ranUnanswered,
        streamCommands: stream.length,
        probes: probes.length,
        capturedProbes,
        loggedWrites: snapshot.writes.length,
        promotedMs,
        infoMs,
        planMs,
        readMs,
        decideMs,
        applyMs,
      },
    };
  };
}

/**
 * The acknowledged writes the promoted replica may lack that nothing counted: the request log
 * judges the writes it holds, but one the log had dropped (answered longer ago than its
 * retention) and acknowledged after the replica's copy ends is lost uncounted and not run again.
 * The replica holds what ran before its latest probe (`held`: the probes within its history), so
 * the bound counts the dropped writes answered after that probe was sent; holding none of the
 * probes kept, those answered after the oldest one (the replica lags further back than the
 * probes reach: more may be lost). A warning when any may be lost, or when no probe of the
 * stream exists to place the replica's end. (A replica starved or cut off for longer than the
 * log's retention: seen with the backup's agent starved, its replica 390 kB behind.)
 */
function unloggedAcknowledged(
  snapshot: RequestLogSnapshot,
  held: readonly StreamProbe[],
  all: ReadonlyArray<StreamProbe | null>,
  end: number,
  marginMs: number,
): { count: number; warning?: string } {
  const latest = held.reduce<StreamProbe | undefined>((a, p) => (a === undefined || p.offset > a.offset ? p : a), undefined);
  const oldest = all.find((p): p is StreamProbe => p !== null);
  if (latest === undefined && oldest === undefined) {
    return snapshot.droppedAcknowledgedSince(Number.NEGATIVE_INFINITY) === 0 ? { count: 0 } : { count: 0, warning: 'no probe of the old primary\'s stream was timed: acknowledged writes the request log no longer holds that the promoted replica lacks cannot be counted' };
  }
  const from = (latest ?? oldest)!.sentMs - marginMs;
  const count = snapshot.droppedAcknowledgedSince(from);
  if (count === 0) return { count };
  const at = new Date(from).toISOString();
  const where = latest !== undefined ? `its latest probe (offset ${latest.offset}, sent ${at})` : `every probe kept (the oldest sent ${at}): it lags further back, and more may be lost`;
  return { count, warning: `the promoted replica's copy of the old primary's stream ends at offset ${end}, before the writes acknowledged after ${where}; the request log had dropped up to ${count} of them (older than its retention): lost if the replica lacks them, uncounted and not run again` };
}

/**
 * The connections whose unanswered requests all ran and can be answered from the promoted
 * server (redis-ran-replies.ts): their replies, taken out of `refused`. The others stay refused,
 * the reason saying why they could not be answered. Read after the lost writes ran again.
 */
async function answerRan(upstream: { host: string; port: number }, restores: readonly RestorePlan[], verdicts: ReadonlyMap<string, ReplayVerdict>, refused: Map<string, string>, timeoutMs: number): Promise<{ answered: Map<string, Uint8Array>; writes: number }> {
  const answered = new Map<string, Uint8Array>();
  let writes = 0;
  const candidates: Array<{ client: string; ran: LoggedWrite[]; reads: Array<{ db: number; key: Buffer }> }> = [];
  for (const p of restores) {
    const client = `${p.client.address}|${p.client.port}`;
    const v = verdicts.get(client);
    if (!refused.has(client) || !v || v.ranWrites.length === 0) continue;
    const plan = p.goodbye ? { why: 'its session ends with a goodbye' } : planRanReplies(p.replay, p.expectReply !== undefined || p.resumeReply !== undefined, v.ranWrites);
    if ('why' in plan) refused.set(client, `${refused.get(client)} (its replies cannot be rebuilt: ${plan.why})`);
    else candidates.push({ client, ran: v.ranWrites, reads: plan.reads });
  }
  if (candidates.length === 0) return { answered, writes };
  const keys = new Map(candidates.flatMap((c) => c.reads.map((k) => [`${k.db} ${k.key.toString('latin1')}`, k] as const)));
  let values: Map<string, Buffer | null>;
  try {
    values = await readKeys(upstream, [...keys.values()].sort((a, b) => a.db - b.db), timeoutMs);
  } catch (err) {
    for (const c of candidates) refused.set(c.client, `${refused.get(c.client)} (its replies cannot be rebuilt: ${(err as Error).message})`);
    return { answered, writes };
  }
  for (const c of candidates) {
    const replies = ranReplies(c.ran, values);
    if (!Buffer.isBuffer(replies)) {
      refused.set(c.client, `${refused.get(c.client)} (its replies cannot be rebuilt: ${replies.why})`);
      continue;
    }
    answered.set(c.client, replies);
    writes += c.ran.length;
    refused.delete(c.client);
  }
  return { answered, writes };
}

/**
 * Each probe's window (same order): the capture's own [first byte of its PUBLISH, end of the
 * PUBLISH's reply] when the capture saw both, the first byte exactly, on the probe's own
 * connection (captured: true); else the backup's clock around its round trip. The capture's
 * window holds the instant the primary ran the PUBLISH just as well (the mirror copies the
 * request before the primary reads it, the reply after it was written) and is the primary's
 * service time wide, not the backup's event loop's. Both are compared with the writes' capture
 * times under the same margin. Pure.
 */
export function probeWindows(records: readonly ProbeRecord[], captured: (nonce: string) => CapturedProbe | undefined): Array<StreamProbe & { captured: boolean }> {
  return records.map((r) => {
    const c = captured(r.nonce);
    const own = c !== undefined && c.connection === `${r.local.address}|${r.local.port}`;
    if (own && c.sentExact && c.answeredMs !== null && c.answeredMs >= c.sentMs) return { offset: r.offset, sentMs: c.sentMs, receivedMs: c.answeredMs, captured: true };
    return { offset: r.offset, sentMs: r.sentMs, receivedMs: r.receivedMs, captured: false };
  });
}

/** A clock of phases: each call returns the ms since the previous one (or since it was made). */
function phases(): () => number {
  let last = performance.now();
  return () => {
    const now = performance.now();
    const ms = Math.round((now - last) * 10) / 10;
    last = now;
    return ms;
  };
}

/** The most of the old stream read back at a takeover, bytes (readOldHistory's maxBytes). */
const MAX_HISTORY_BYTES = 4 * 1024 * 1024;

/**
 * What the promoted server holds of the dead primary's history (its INFO replication): `end`, the
 * last stream offset (second_repl_offset - 1), and `first`, the first one its backlog still
 * holds (repl_backlog_first_byte_offset; past `end` when it has no backlog: nothing can be read).
 * Rejects when the server does not hold that history.
 */
async function oldHistoryBounds(upstream: { host: string; port: number }, replid: string, timeoutMs: number): Promise<{ end: number; first: number }> {
  const info = parseInfo(await respCommand(upstream, ['INFO', 'replication'], timeoutMs));
  if (info.get('master_replid2') !== replid) throw new Error(`${upstream.host}:${upstream.port} does not hold the old primary's history (master_replid2 ${info.get('master_replid2') ?? '?'}, the probes' ${replid})`);
  const end = Number(info.get('second_repl_offset')) - 1;
  if (!Number.isSafeInteger(end) || end < 0) throw new Error(`${upstream.host}:${upstream.port}: INFO replication shows second_repl_offset ${info.get('second_repl_offset') ?? '?'}`);
  const first = Number(info.get('repl_backlog_first_byte_offset'));
  if (info.get('repl_backlog_active') !== '1') return { end, first: end + 2 };
  if (!Number.isSafeInteger(first) || first < 1) throw new Error(`${upstream.host}:${upstream.port}: INFO replication shows repl_backlog_first_byte_offset ${info.get('repl_backlog_first_byte_offset') ?? '?'}`);
  return { end, first };
}

/**
 * Runs writes again on the promoted server, pipelined on one connection, each in its database.
 * Resolves the counts of writes answered and refused (an error reply); rejects when the server
 * cannot be reached or the replies do not all come within timeoutMs (pipelineCommands).
 */
async function runAgain(upstream: { host: string; port: number }, writes: readonly DatabaseCommand[], timeoutMs: number): Promise<{ ok: number; failed: number }> {
  const replies = await pipelineCommands(upstream, writes, timeoutMs).catch((err: Error) => {
    throw new Error(`running lost writes again on ${err.message}`);
  });
  const failed = replies.filter(isErrorReply).length;
  return { ok: replies.length - failed, failed };
}
