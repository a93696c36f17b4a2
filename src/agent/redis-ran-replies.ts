// The replies of unanswered writes the dead primary ran, rebuilt from the promoted replica
// (`continue.matchWrites`, docs/CONTINUE.md). The replay check (redis-replay-check.ts) finds a
// connection's unanswered writes in the replication stream: the primary ran them, and their
// replies died with it. Replaying them would apply them twice; resetting the connection is safe
// but the client sees an error. When every request the connection left unanswered is such a
// write, and each one's reply follows from the promoted replica's state, the takeover answers
// them itself and the connection goes on as if the primary had:
// - INCR, DECR, INCRBY, DECRBY: the key's value after that run. No other connection wrote the
//   key since the probe the check judged from (it resets otherwise), and a connection's writes
//   ran in order, so its ran writes are the key's last runs in the stream: the value read now is
//   the one after the last of them, and each earlier one's is that minus the increments after it.
// - SET without options, MSET: +OK (Redis answers nothing else to a SET that ran).
// Anything else (APPEND, a list push, a hash write: replies that depend on the state before;
// a read, a SELECT or a MULTI among the unanswered requests; a reply the dead primary had begun
// to send) keeps the reset, with the reason.
import { RespFramer } from '../net/resp-framer.js';
import type { LoggedWrite } from '../net/shadow/request-log.js';
import { pipelineCommands } from './redis-pipeline.js';

/** Commands whose reply is the key's new integer value, and the increment each applies. */
const INCREMENTS: Record<string, (argv: readonly Buffer[]) => bigint | null> = {
  incr: (a) => (a.length === 2 ? 1n : null),
  decr: (a) => (a.length === 2 ? -1n : null),
  incrby: (a) => (a.length === 3 ? integer(a[2]!) : null),
  decrby: (a) => {
    const n = a.length === 3 ? integer(a[2]!) : null;
    return n === null ? null : -n;
  },
};

/** A Redis integer (64-bit signed, decimal, as Redis parses it: no sign but '-', no leading zero), or null. */
function integer(b: Buffer): bigint | null {
  const text = b.toString('latin1');
  if (!/^(0|-?[1-9][0-9]{0,18})$/.test(text)) return null;
  const n = BigInt(text);
  return n >= -(2n ** 63n) && n < 2n ** 63n ? n : null;
}

/** What it takes to answer a connection's ran writes: the keys to read (database, key), or why it cannot be done. */
export type RanReplyPlan = { reads: Array<{ db: number; key: Buffer }> } | { why: string };

/**
 * Whether a connection's unanswered requests can be answered from the promoted replica, and
 * what must be read there. `replay`: the requests the connection left unanswered (the restore
 * plan's), `midReply`: the dead primary had begun one's reply. `ran`: its unanswered writes the
 * stream shows ran, in the order sent (ReplayVerdict.ranWrites). Pure.
 */
export function planRanReplies(replay: Uint8Array, midReply: boolean, ran: readonly LoggedWrite[]): RanReplyPlan {
  if (midReply) return { why: 'the dead primary had begun its reply' };
  let requests = 0;
  let framed = 0;
  const framer = new RespFramer({
    listener: {
      end: (offset) => {
        requests++;
        framed = offset;
      },
    },
  });
  framer.push(replay);
  if (framer.broken !== null || framed !== replay.length) return { why: `its unanswered requests are not whole RESP messages (${framer.broken ?? `${replay.length - framed} bytes past the last one`})` };
  if (requests !== ran.length) return { why: `${ran.length} of its ${requests} unanswered requests ran as writes the stream shows (the others did not run, or are not such writes)` };
  const reads = new Map<string, { db: number; key: Buffer }>();
  for (const w of ran) {
    if (!w.rerun) return { why: `a ${w.command.toUpperCase()} too large to keep` };
    const name = w.rerun.argv[0]!.toString('latin1').toLowerCase();
    const step = INCREMENTS[name];
    if (step) {
      if (step(w.rerun.argv) === null) return { why: `a ${name.toUpperCase()} with arguments Redis would refuse` };
      const key = w.rerun.argv[1]!;
      reads.set(`${w.rerun.db} ${key.toString('latin1')}`, { db: w.rerun.db, key });
    } else if (!((name === 'set' && w.rerun.argv.length === 3) || name === 'mset')) {
      return { why: `the reply to ${name.toUpperCase()} depends on the state before it` };
    }
  }
  return { reads: [...reads.values()] };
}

/**
 * The replies to `ran` (in order), given each read key's value now (`values`, by `${db} ${key}`
 * as latin1). Returns why not when a value is missing or not an integer (the key was deleted or
 * overwritten since: not by the ran writes). Pure.
 */
export function ranReplies(ran: readonly LoggedWrite[], values: ReadonlyMap<string, Buffer | null>): Buffer | { why: string } {
  const after = new Map<string, bigint>();
  const replies: string[] = [];
  // From the last run back: each INCR-like one's value is the value after it, minus what later ones added.
  for (let i = ran.length - 1; i >= 0; i--) {
    const argv = ran[i]!.rerun!.argv;
    const name = argv[0]!.toString('latin1').toLowerCase();
    const step = INCREMENTS[name];
    if (!step) {
      replies.push('+OK\r\n');
      continue;
    }
    const id = `${ran[i]!.rerun!.db} ${argv[1]!.toString('latin1')}`;
    let value = after.get(id);
    if (value === undefined) {
      const now = values.get(id);
      const n = now ? integer(now) : null;
      if (n === null) return { why: `the promoted server holds ${now ? 'no integer' : 'nothing'} at the key of its ${name.toUpperCase()}` };
      value = n;
    }
    replies.push(`:${value}\r\n`);
    after.set(id, value - step(argv)!);
  }
  return Buffer.from(replies.reverse().join(''), 'latin1');
}

/**
 * Reads keys on the promoted server (pipelineCommands: one connection, each GET in its
 * database): their values (null: no such key), by `${db} ${key}` as latin1. Rejects when the
 * server cannot be read or a reply is not a string.
 */
export async function readKeys(upstream: { host: string; port: number }, keys: ReadonlyArray<{ db: number; key: Buffer }>, timeoutMs: number): Promise<Map<string, Buffer | null>> {
  const replies = await pipelineCommands(upstream, keys.map((k) => ({ db: k.db, argv: [Buffer.from('GET'), k.key] })), timeoutMs);
  const values = new Map<string, Buffer | null>();
  replies.forEach((reply, i) => {
    const value = bulk(reply);
    if (value === undefined) throw new Error(`${upstream.host}:${upstream.port}: GET answered ${JSON.stringify(reply.toString('latin1').slice(0, 60))}`);
    values.set(`${keys[i]!.db} ${keys[i]!.key.toString('latin1')}`, value);
  });
  return values;
}

/** A bulk string reply's bytes, null for a RESP2/RESP3 null, undefined for anything else. */
function bulk(reply: Buffer): Buffer | null | undefined {
  const text = reply.toString('latin1');
  if (text === '$-1\r\n' || text === '_\r\n') return null;
  const m = /^\$(\d+)\r\n/.exec(text);
  if (!m || reply.length !== m[0].length + Number(m[1]) + 2) return undefined;
  return reply.subarray(m[0].length, m[0].length + Number(m[1]));
}
