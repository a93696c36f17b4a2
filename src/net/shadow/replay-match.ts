// Whether the dead primary ran a continued connection's unanswered writes, decided from the
// replication stream the promoted replica received instead of guessed (seed 003 [0055], [0077]-
// [0080]: requests get a range of log locations, and what the log holds in that range is not
// replayed). Pure: the probes, the stream and the request log are the caller's.
//
// The log locations are probes: a command the backup runs on the primary now and then, whose
// place in the stream is known (its offset) and whose window is timed (by the capture, which
// copies it on its way like the clients' writes, or by the backup around its round trip). A write whose
// reply the capture saw before a probe was sent ran before the probe; one whose first byte the
// capture saw after the probe's reply came back runs after it (the mirror copies a frame on its
// way to the primary, and the primary's reply to the probe went out before that frame came in).
// A write in flight across a probe is on neither side, so each key (database + command) is
// judged from the latest probe no write of that key straddles. After that probe the stream holds
// the first s runs of the key, in the order the primary ran them; the capture saw a of them
// answered (successfully) and u of them unanswered. With one connection sending the key, the
// primary ran its requests in order, so s - a of its unanswered ones ran (0: none did; less than
// 0: a - s acknowledged writes never reached the replica, and none of the unanswered ran).
//
// Verdicts: replay when no unanswered write ran; reset when some ran (their replies are lost, and
// running them again would apply them twice), when the key was sent by several connections since
// the probe, when no probe is clean, or when a write cannot be found in the stream at all.
import type { LoggedWrite } from './request-log.js';

/** A probe's place in the stream and the window it ran in. */
export interface StreamProbe {
  /** Stream offset of the probe's last byte (Redis master_repl_offset right after it). */
  offset: number;
  /**
   * Before the probe reached the primary, and after its reply left it: ms since the epoch (the
   * capture's clock). The backup's own reads around its round trip, or the capture's times of
   * the probe's request and reply when the mirror copied them (probe-capture-times.ts).
   */
  sentMs: number;
  receivedMs: number;
  /**
   * This probe's margin, ms, instead of the caller's: CAPTURED_MARGIN_MS for a window the
   * capture timed (it is compared with times of the same capture only).
   */
  marginMs?: number;
}

/** One command of the stream the promoted replica applied. */
export interface StreamWrite {
  /** Stream offset of its first byte. */
  offset: number;
  /** The plugin's key (RESP: respWriteKey of its database and arguments). */
  key: string;
}

/** Which probe each key is judged from, and where the stream must be read from. */
export interface MatchPlan {
  /** Each unanswered key of the connections asked about: its probe, or why none fits. */
  probes: Map<string, StreamProbe | string>;
  /** The first stream offset the decision needs (one past the earliest chosen probe); null: none needed. */
  from: number | null;
}

/** What the matcher decided for one connection. */
export interface ReplayVerdict {
  /** replay: none of its unanswered writes ran; reset: they ran, or nothing can tell. */
  verdict: 'replay' | 'reset';
  /** With reset: why (logged with the RST). */
  reason?: string;
  /** Its unanswered writes the primary ran (their replies were lost). */
  ranUnanswered: number;
  /** Writes the primary acknowledged to it that the replica never got (lost with the primary). */
  lostAcknowledged: number;
  /**
   * Those writes, each key's last ones in log order (the stream is a prefix of what the primary
   * ran, and one connection's writes ran in order): what can be run again on the promoted server.
   */
  lostWrites: LoggedWrite[];
}

/**
 * Capture and probe times closer than this are not taken as ordered, ms. Both are the wall clock
 * to a µs (ring timestamps, native.realtimeMs()); the margin is for a mirror whose copy of a frame
 * reaches this host a little after frames that left the primary later (a switch's SPAN queue, or
 * a lab's per-CPU backlogs). Each probe's window grows by twice it: a key written back to back
 * every ~3 ms still finds probes no write straddles.
 */
export const DEFAULT_MARGIN_MS = 0.5;

/**
 * The margin of a probe whose window the capture timed itself, ms: its times and the writes'
 * come from the same ring, copied by the same mirror, so what is left is frames of different
 * connections stamped out of their order on the way (a switch copies a port's frames into one
 * queue; this host's per-CPU input backlogs can swap two by how long one waited there, µs when
 * the CPUs keep up). 0.1 ms: a key written back to back with a gap of ~0.25 ms after a reply
 * finds a clean probe (docs/CONTINUE.md, matchWrites, for the numbers and the limits).
 */
export const CAPTURED_MARGIN_MS = 0.1;

/** A write's round trip straddles a probe's: neither is known to be first. */
function straddles(w: LoggedWrite, p: StreamProbe, defaultMarginMs: number): boolean {
  const marginMs = p.marginMs ?? defaultMarginMs;
  const answeredBefore = w.answeredMs !== null && w.answeredMs + marginMs < p.sentMs;
  const sentAfter = w.sentExact && w.sentMs - marginMs > p.receivedMs;
  return !answeredBefore && !sentAfter;
}

/** The log's writes by key and by connection (each in log order). */
function index(writes: readonly LoggedWrite[]): { byKey: Map<string, LoggedWrite[]>; byConnection: Map<string, LoggedWrite[]> } {
  const byKey = new Map<string, LoggedWrite[]>();
  const byConnection = new Map<string, LoggedWrite[]>();
  for (const w of writes) {
    if (w.key !== null) push(byKey, w.key, w);
    push(byConnection, w.connection, w);
  }
  return { byKey, byConnection };
}

/** The keys of writes (a loop, not flatMap: a busy connection logs ~10,000 writes, and the decision is waited for). */
function keysOf(writes: readonly LoggedWrite[]): Set<string> {
  const keys = new Set<string>();
  for (const w of writes) if (w.key !== null) keys.add(w.key);
  return keys;
}

function push<T>(map: Map<string, T[]>, key: string, value: T): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/**
 * Picks, for every key the given connections wrote (their unanswered writes are judged by it, the
 * answered ones counted), the latest probe no write of that key straddles and that the log covers
 * (sent after log.since: every write the log dropped was answered before it). Pure.
 */
export function planMatch(log: { since: number; writes: readonly LoggedWrite[] }, probes: readonly StreamProbe[], connections: readonly string[], marginMs = DEFAULT_MARGIN_MS): MatchPlan {
  const { byKey, byConnection } = index(log.writes);
  const keys = keysOf(connections.flatMap((c) => byConnection.get(c) ?? []));
  const usable = probes.filter((p) => p.sentMs - (p.marginMs ?? marginMs) > log.since).sort((a, b) => b.offset - a.offset);
  const chosen = new Map<string, StreamProbe | string>();
  for (const key of keys) {
    const ofKey = byKey.get(key)!;
    const p = usable.find((probe) => !ofKey.some((w) => straddles(w, probe, marginMs)));
    chosen.set(key, p ?? (usable.length === 0 ? 'no probe of the stream recent enough' : `every recent probe of the stream overlaps a ${ofKey[0]!.command.toUpperCase()} of the same key`));
  }
  const offsets = [...chosen.values()].flatMap((p) => (typeof p === 'string' ? [] : [p.offset]));
  return { probes: chosen, from: offsets.length > 0 ? Math.min(...offsets) + 1 : null };
}

/**
 * Decides each connection from the plan and the stream the promoted replica applied (every
 * command from plan.from on; commands before it are ignored). Pure.
 */
export function decideReplays(
  log: { writes: readonly LoggedWrite[] },
  plan: MatchPlan,
  stream: readonly StreamWrite[],
  connections: readonly string[],
  marginMs = DEFAULT_MARGIN_MS,
): Map<string, ReplayVerdict> {
  const { byKey, byConnection } = index(log.writes);
  const streamed = new Map<string, number[]>();
  for (const s of stream) push(streamed, s.key, s.offset);
  const out = new Map<string, ReplayVerdict>();
  for (const c of connections) {
    const mine = byConnection.get(c) ?? [];
    const unanswered = mine.filter((w) => w.answeredMs === null);
    const blind = unanswered.find((w) => w.key === null);
    let ran = 0;
    let lost = 0;
    const lostWrites: LoggedWrite[] = [];
    let why: string | null = blind ? `an unanswered ${blind.command.toUpperCase()} cannot be looked up in the replication stream (replaying it could apply it twice)` : null;
    for (const key of keysOf(mine)) {
      if (why) break;
      const u = unanswered.filter((w) => w.key === key).length;
      const command = mine.find((w) => w.key === key)!.command.toUpperCase();
      const probe = plan.probes.get(key);
      // A key with nothing unanswered is only counted (the acknowledged writes the replica lacks), where it can be.
      const cannot = (reason: string) => void (u > 0 && (why = reason));
      if (probe === undefined || typeof probe === 'string') {
        cannot(`its unanswered ${command} cannot be placed in the replication stream: ${probe ?? 'not planned'}`);
        continue;
      }
      const after = byKey.get(key)!.filter((w) => w.sentMs - (probe.marginMs ?? marginMs) > probe.receivedMs && !straddles(w, probe, marginMs));
      const others = new Set(after.map((w) => w.connection).filter((x) => x !== c));
      if (others.size > 0) {
        cannot(`${others.size} other connection(s) sent the same ${command} since the stream's probe: the stream cannot tell whose ran`);
        continue;
      }
      const acked = after.filter((w) => w.answeredMs !== null && !w.failed);
      const acknowledged = acked.length;
      const inStream = (streamed.get(key) ?? []).filter((offset) => offset > probe.offset).length;
      const ranOfKey = inStream - acknowledged;
      if (ranOfKey > u) {
        // More runs than the capture saw sent: a connection the shadow did not follow sent it too.
        cannot(`the replication stream holds ${inStream} ${command} of this key since its probe, more than the ${acknowledged + u} the capture saw sent`);
        continue;
      }
      if (ranOfKey < 0) {
        lost += -ranOfKey;
        lostWrites.push(...acked.slice(ranOfKey));
      } else ran += ranOfKey;
    }
    lostWrites.sort((x, y) => x.sentMs - y.sentMs);
    const counted = { lostAcknowledged: lost, lostWrites };
    if (why) out.set(c, { verdict: 'reset', reason: why, ranUnanswered: 0, ...counted });
    else if (ran > 0) out.set(c, { verdict: 'reset', reason: `the primary ran ${ran} of its unanswered writes (in the replication stream) but its replies were lost: replaying would apply them twice`, ranUnanswered: ran, ...counted });
    else out.set(c, { verdict: 'replay', ranUnanswered: 0, ...counted });
  }
  return out;
}
