// Whether the dead primary ran a continued connection's unanswered writes, decided from the
// replication stream the promoted replica received instead of guessed (seed 003 [0055], [0077]-
// [0080]: requests get a range of log locations, and what the log holds in that range is not
// replayed). Pure (no I/O: the probes, the stream and the request log are the caller's); async
// only to yield to the event loop every ~2 ms (SLICE_MS), since the agent that runs it also sends
// the heartbeats and a request log holds up to 200,000 writes.
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
import { Slices } from '../../event-loop.js';
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
  /** Those writes, in log order (each key's first unanswered ones: one connection's writes ran in order). */
  ranWrites: LoggedWrite[];
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

/** A write's round trip straddles a probe's: neither is known to be first. */
function straddles(w: LoggedWrite, p: StreamProbe, marginMs: number): boolean {
  const answeredBefore = w.answeredMs !== null && w.answeredMs + marginMs < p.sentMs;
  const sentAfter = w.sentExact && w.sentMs - marginMs > p.receivedMs;
  return !answeredBefore && !sentAfter;
}

interface LogIndex {
  byKey: Map<string, LoggedWrite[]>;
  byConnection: Map<string, LoggedWrite[]>;
}

/** Indexes made, by the snapshot's writes array: planMatch and decideReplays share one. */
const indexes = new WeakMap<readonly LoggedWrite[], LogIndex>();

/** The log's writes by key and by connection (each in log order). */
async function index(writes: readonly LoggedWrite[], slices: Slices): Promise<LogIndex> {
  const made = indexes.get(writes);
  if (made) return made;
  const byKey = new Map<string, LoggedWrite[]>();
  const byConnection = new Map<string, LoggedWrite[]>();
  for (let i = 0; i < writes.length; i++) {
    if ((i & 1023) === 0 && slices.due) await slices.next();
    const w = writes[i]!;
    if (w.key !== null) push(byKey, w.key, w);
    push(byConnection, w.connection, w);
  }
  indexes.set(writes, { byKey, byConnection });
  return { byKey, byConnection };
}

function push<T>(map: Map<string, T[]>, key: string, value: T): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/**
 * Picks, for every key the given connections wrote (their unanswered writes are judged by it, the
 * answered ones counted), the latest probe no write of that key straddles and that the log covers
 * (sent after log.since: every write the log dropped was answered before it). Probes come one at a time (each answered before the next is
 * sent), so in time order their windows do not overlap and the probes one write straddles are a
 * run of consecutive ones: each write marks its run (two binary searches), and each key takes its
 * latest unmarked probe; O(writes × log probes), not writes × probes (200,000 logged writes
 * took 0.7-1.2 s of the agent's loop that way).
 *
 * `readableFrom`: the first stream offset the stream can still be read from (the promoted
 * server's backlog). A key whose probe is older is not placed, with that reason, instead of
 * making the whole read fail: a key whose log holds an old unanswered write (a connection whose
 * reply a capture loss took, reset for the hole) keeps its probe from before that write, while
 * writers back to back fill a 1 MiB backlog in a few seconds.
 */
export async function planMatch(
  log: { since: number; writes: readonly LoggedWrite[] },
  probes: readonly StreamProbe[],
  connections: readonly string[],
  marginMs = DEFAULT_MARGIN_MS,
  readableFrom = 1,
): Promise<MatchPlan> {
  const slices = new Slices();
  const { byKey, byConnection } = await index(log.writes, slices);
  const keys = new Set<string>();
  for (const c of connections) for (const w of byConnection.get(c) ?? []) if (w.key !== null) keys.add(w.key);
  const usable = ordered(probes.filter((p) => p.sentMs - marginMs > log.since));
  const chosen = new Map<string, StreamProbe | string>();
  const straddled = new Int32Array(usable.length + 1);
  const sent = Float64Array.from(usable, (p) => p.sentMs);
  const received = Float64Array.from(usable, (p) => p.receivedMs);
  for (const key of keys) {
    if (slices.due) await slices.next();
    const ofKey = byKey.get(key)!;
    straddled.fill(0);
    for (const w of ofKey) {
      const first = firstStraddled(w, received, marginMs);
      const last = lastStraddled(w, sent, marginMs);
      if (first > last) continue;
      straddled[first]!++;
      straddled[last + 1]!--;
    }
    // The latest probe no write of the key straddles (running sum of the marks, newest last).
    let p: StreamProbe | undefined;
    for (let i = 0, depth = 0; i < usable.length; i++) {
      depth += straddled[i]!;
      if (depth === 0) p = usable[i];
    }
    if (p !== undefined && p.offset + 1 < readableFrom) {
      // Its stream from there on is gone (a newer probe would not be clean): nothing to judge it from.
      chosen.set(key, `its latest clean probe of the stream (offset ${p.offset}) is older than the promoted server's backlog, which starts at ${readableFrom}`);
      continue;
    }
    chosen.set(key, p ?? (usable.length === 0 ? 'no probe of the stream recent enough' : `every recent probe of the stream overlaps a ${ofKey[0]!.command.toUpperCase()} of the same key`));
  }
  const offsets = [...chosen.values()].flatMap((p) => (typeof p === 'string' ? [] : [p.offset]));
  return { probes: chosen, from: offsets.length > 0 ? Math.min(...offsets) + 1 : null };
}

/**
 * The probes in time order, without any whose window is not after the previous one's (only a
 * wall clock stepped back can do that: such a probe cannot be placed, and dropping it only
 * leaves fewer probes to judge from).
 */
function ordered(probes: readonly StreamProbe[]): StreamProbe[] {
  const out: StreamProbe[] = [];
  for (const p of [...probes].sort((a, b) => a.offset - b.offset)) {
    if (p.receivedMs < p.sentMs || (out.length > 0 && p.sentMs < out.at(-1)!.receivedMs)) continue;
    out.push(p);
  }
  return out;
}

/**
 * The indexes [first, last] of the probes (in time order; their sent and received times, both
 * increasing) a write straddles (first > last: none): from the first probe whose reply came
 * back no earlier than the write's first byte, to the last one sent no later than its reply came
 * (all of them for an unanswered write or one whose first byte's time is not its own). The same
 * test as straddles(), by binary search on typed arrays: no closure or tuple per write (the log
 * holds up to 200,000).
 */
function firstStraddled(w: LoggedWrite, received: Float64Array, marginMs: number): number {
  return w.sentExact ? firstIndex(received, w.sentMs - marginMs, false) : 0;
}

function lastStraddled(w: LoggedWrite, sent: Float64Array, marginMs: number): number {
  return w.answeredMs === null ? sent.length - 1 : firstIndex(sent, w.answeredMs + marginMs, true) - 1;
}

/** The first index whose time is at least `ms` (strictly more with `above`), in an increasing array (its length: none). */
function firstIndex(times: Float64Array, ms: number, above: boolean): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (above ? times[mid]! > ms : times[mid]! >= ms) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * Decides each connection from the plan and the stream the promoted replica applied (every
 * command from plan.from on; commands before it are ignored). What depends only on a key
 * (its writes after its probe, by connection; its runs in the stream after the probe) is worked
 * out once per key, not once per connection that wrote it: O(writes + stream).
 */
export async function decideReplays(
  log: { writes: readonly LoggedWrite[] },
  plan: MatchPlan,
  stream: readonly StreamWrite[],
  connections: readonly string[],
  marginMs = DEFAULT_MARGIN_MS,
): Promise<Map<string, ReplayVerdict>> {
  const slices = new Slices();
  const { byKey, byConnection } = await index(log.writes, slices);
  const streamed = new Map<string, number[]>();
  for (const s of stream) push(streamed, s.key, s.offset);
  const sinceProbe = new Map<string, KeySinceProbe>();
  const keyState = (key: string, probe: StreamProbe) => {
    let k = sinceProbe.get(key);
    if (!k) sinceProbe.set(key, (k = keySinceProbe(byKey.get(key)!, streamed.get(key) ?? [], probe, marginMs)));
    return k;
  };
  const out = new Map<string, ReplayVerdict>();
  for (const c of connections) {
    if (slices.due) await slices.next();
    const mine = byConnection.get(c) ?? [];
    // Each key this connection wrote: the command (for the reasons) and its unanswered writes.
    const ofMine = new Map<string, { command: string; unanswered: number }>();
    let blind: LoggedWrite | undefined;
    for (const w of mine) {
      if (w.key === null) {
        if (w.answeredMs === null) blind ??= w;
        continue;
      }
      const k = ofMine.get(w.key) ?? { command: w.command.toUpperCase(), unanswered: 0 };
      if (w.answeredMs === null) k.unanswered++;
      ofMine.set(w.key, k);
    }
    let ran = 0;
    let lost = 0;
    const lostWrites: LoggedWrite[] = [];
    const ranWrites: LoggedWrite[] = [];
    let why: string | null = blind ? `an unanswered ${blind.command.toUpperCase()} cannot be looked up in the replication stream (replaying it could apply it twice)` : null;
    for (const [key, { command, unanswered: u }] of ofMine) {
      if (why) break;
      const probe = plan.probes.get(key);
      // A key with nothing unanswered is only counted (the acknowledged writes the replica lacks), where it can be.
      const cannot = (reason: string) => void (u > 0 && (why = reason));
      if (probe === undefined || typeof probe === 'string') {
        cannot(`its unanswered ${command} cannot be placed in the replication stream: ${probe ?? 'not planned'}`);
        continue;
      }
      const k = keyState(key, probe);
      const others = k.connections.size - (k.connections.has(c) ? 1 : 0);
      if (others > 0) {
        cannot(`${others} other connection(s) sent the same ${command} since the stream's probe: the stream cannot tell whose ran`);
        continue;
      }
      // No other connection sent the key since the probe: what was sent after it is this one's.
      const acked = k.connections.get(c)?.acked ?? [];
      const ranOfKey = k.inStream - acked.length;
      if (ranOfKey > u) {
        // More runs than the capture saw sent: a connection the shadow did not follow sent it too.
        cannot(`the replication stream holds ${k.inStream} ${command} of this key since its probe, more than the ${acked.length + u} the capture saw sent`);
        continue;
      }
      if (ranOfKey < 0) {
        lost += -ranOfKey;
        lostWrites.push(...acked.slice(ranOfKey));
      } else if (ranOfKey > 0) {
        ran += ranOfKey;
        ranWrites.push(...mine.filter((w) => w.key === key && w.answeredMs === null).slice(0, ranOfKey));
      }
    }
    lostWrites.sort((x, y) => x.sentMs - y.sentMs);
    const counted = { lostAcknowledged: lost, lostWrites };
    if (why) out.set(c, { verdict: 'reset', reason: why, ranUnanswered: 0, ranWrites: [], ...counted });
    else if (ran > 0) {
      // In the connection's order (a sort by time could swap two sent in one segment).
      const ranSet = new Set(ranWrites);
      out.set(c, { verdict: 'reset', reason: `the primary ran ${ran} of its unanswered writes (in the replication stream) but its replies were lost: replaying would apply them twice`, ranUnanswered: ran, ranWrites: mine.filter((w) => ranSet.has(w)), ...counted });
    } else out.set(c, { verdict: 'replay', ranUnanswered: 0, ranWrites: [], ...counted });
  }
  return out;
}

/** One key after its probe: who sent it (each one's acknowledged writes, in log order), and its runs in the stream. */
interface KeySinceProbe {
  connections: Map<string, { acked: LoggedWrite[] }>;
  inStream: number;
}

function keySinceProbe(ofKey: readonly LoggedWrite[], offsets: readonly number[], probe: StreamProbe, marginMs: number): KeySinceProbe {
  const connections = new Map<string, { acked: LoggedWrite[] }>();
  for (const w of ofKey) {
    if (!(w.sentMs - marginMs > probe.receivedMs) || straddles(w, probe, marginMs)) continue;
    let entry = connections.get(w.connection);
    if (!entry) connections.set(w.connection, (entry = { acked: [] }));
    if (w.answeredMs !== null && !w.failed) entry.acked.push(w);
  }
  // The stream's offsets of a key are in stream order: those after the probe are a suffix.
  let lo = 0;
  let hi = offsets.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (offsets[mid]! > probe.offset) hi = mid;
    else lo = mid + 1;
  }
  return { connections, inStream: offsets.length - lo };
}
