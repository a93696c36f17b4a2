// The replay check of a Redis takeover (`continue.matchWrites`, docs/CONTINUE.md): which
// continued connections' unanswered writes the dead primary ran, read from the replication
// stream the promoted replica applied (seed 003 [0055], [0077]-[0080]). At the takeover the
// request log and the probes are snapshotted with the plans; once the local replica is promoted,
// its copy of the old primary's stream from the earliest probe needed is read back (PSYNC from
// its backlog) and handed to the matcher (replay-match.ts).
import type { ReplayCheckResult, RestorePlan } from '../net/shadow/continue-connections.js';
import { decideReplays, planMatch, type StreamProbe, type StreamWrite } from '../net/shadow/replay-match.js';
import type { RequestLog } from '../net/shadow/request-log.js';
import { argumentsDigest } from '../net/shadow/resp-request.js';
import { respWriteKey } from '../net/shadow/resp-write-kinds.js';
import { parseReplicationStream } from '../net/shadow/replication-stream.js';
import { readOldHistory } from './redis-backlog.js';
import type { StreamProbe as ProbeRecord } from './redis-stream-probe.js';

export interface RedisReplayCheckOptions {
  /** The shadow's request log (the RESP tracker's writes). */
  log: RequestLog;
  /** The probes of the primary's stream so far, oldest first. */
  probes: () => readonly ProbeRecord[];
  /** The local Redis, promoted by the time `promoted` resolves (its backlog holds the old stream). */
  upstream: { host: string; port: number };
  /** How long the backlog read may take, ms. */
  timeoutMs?: number;
}

/**
 * The check for ContinueOptions.checkReplays: snapshots now, decides once `promoted` resolves.
 * Rejects (every non-empty replay is then refused) when the backlog cannot be read (the replica
 * lost the old history, a FULLRESYNC would be needed) or does not parse.
 */
export function redisReplayCheck(options: RedisReplayCheckOptions, promoted: Promise<unknown>): (restores: RestorePlan[]) => Promise<ReplayCheckResult> {
  return async (restores) => {
    // Every restored connection: those with unanswered writes are judged, the others' acknowledged writes counted.
    const connections = restores.map((p) => `${p.client.address}|${p.client.port}`);
    const snapshot = options.log.snapshot();
    const all = options.probes();
    // Only the primary's current history: a restart (new replid) leaves older probes elsewhere.
    const replid = all.at(-1)?.replid;
    const probes: StreamProbe[] = all.filter((p) => p.replid === replid);
    const plan = planMatch(snapshot, probes, connections);
    await promoted;
    let stream: StreamWrite[] = [];
    if (plan.from !== null && replid !== undefined) {
      const history = await readOldHistory(options.upstream, { replid, offset: plan.from }, { timeoutMs: options.timeoutMs ?? 2000 });
      // Right after a probe the stream is in database 0: the probe's PUBLISH ran there.
      stream = parseReplicationStream(history.bytes, history.startOffset, 0).flatMap((c) => {
        const key = respWriteKey(String(c.db), argumentsDigest(c.argv));
        return key === null ? [] : [{ offset: c.offset, key }];
      });
    }
    const verdicts = decideReplays(snapshot, plan, stream, connections);
    const refused = new Map<string, string>();
    let lostAcknowledged = 0;
    let ranUnanswered = 0;
    for (const [c, v] of verdicts) {
      lostAcknowledged += v.lostAcknowledged;
      ranUnanswered += v.ranUnanswered;
      if (v.verdict === 'reset') refused.set(c, v.reason!);
    }
    return { refused, counts: { judged: connections.length, lostAcknowledged, ranUnanswered, streamCommands: stream.length } };
  };
}
