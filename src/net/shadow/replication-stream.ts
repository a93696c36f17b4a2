// Redis' replication stream, parsed into the commands it carries (issue 12, seed 003 [0055],
// [0077]-[0080]: replayed requests are matched against the primary's log locations; for Redis the
// log is this stream, and a location is a stream offset).
//
// What a primary sends its replicas after `+CONTINUE` / the RDB (Redis 7.0 replication.c
// replicationFeedSlaves, https://redis.io/docs/latest/operate/oss_and_stack/management/replication/):
// every write as a RESP array of bulk strings, in the client's original case, a `SELECT <db>`
// before a command whose database differs from the stream's, `PING` every
// repl-ping-replica-period, `REPLCONF GETACK *` when the primary wants acknowledgements (WAIT,
// FAILOVER), and MULTI ... EXEC around a transaction's or a script's effects. Nothing else: no
// inline commands, no other RESP types. Anything else here means the bytes are not what this
// parser thinks (a wrong start offset, a cut, corruption), and it refuses rather than guess.
//
// Stream offsets: byte k of the stream (k >= 1) has offset k; a server whose master_repl_offset
// is N has written bytes 1..N, and PSYNC <replid> N+1 asks for the bytes from N+1 on.

/** One command of the stream. */
export interface ReplicatedCommand {
  /** Stream offset of the command's first byte (its `*`). */
  offset: number;
  /**
   * Stream offset of its last byte (the final LF): the primary's master_repl_offset right after it
   * was propagated. The next command starts at end + 1.
   */
  end: number;
  /** The database it ran in (the last SELECT before it, or the caller's startDb). */
  db: number;
  /** Its words, the name first, as sent (case kept). Views into the input (not copies). */
  argv: Buffer[];
}

/** The channel the stream probe publishes its nonces on (redis-stream-probe.ts). */
export const PROBE_CHANNEL = 'takeover:probe';

/** Databases Redis accepts for SELECT (its default `databases 16`; configurable up to int max). */
const MAX_DB = 2 ** 31 - 1;
/** Longest header line accepted (`*` or `$` and up to 11 digits, without CRLF): 512 MiB fits in 9. */
const MAX_HEADER = 12;
/** Most words in one command (Redis' own limit on a multibulk length). */
const MAX_WORDS = 1024 * 1024;
const CR = 0x0d;
const LF = 0x0a;

/**
 * The commands in `bytes`, which start at stream offset `startOffset` (>= 1, at a command's first
 * byte) in database `startDb`. SELECT is consumed (it sets the db of the commands after it) and not
 * returned; PING and REPLCONF (the primary's heartbeat and acknowledgement requests, never a
 * client's) are skipped; everything else (MULTI and EXEC included) is returned in order. Pure.
 *
 * Throws RangeError, naming the stream offset and what is wrong, when `bytes` is not a whole
 * sequence of RESP arrays of bulk strings (a cut command included), when a SELECT's argument is
 * not a database number, or when startOffset / startDb are not non-negative safe integers
 * (startOffset >= 1). Never returns a partial result.
 */
export function parseReplicationStream(bytes: Uint8Array, startOffset: number, startDb: number): ReplicatedCommand[] {
  if (!Number.isSafeInteger(startOffset) || startOffset < 1) throw new RangeError(`startOffset ${startOffset} is not a stream offset (an integer >= 1)`);
  if (!Number.isSafeInteger(startDb) || startDb < 0 || startDb > MAX_DB) throw new RangeError(`startDb ${startDb} is not a database number`);
  if (!Number.isSafeInteger(startOffset + bytes.length)) throw new RangeError('the stream offsets overflow');
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const out: ReplicatedCommand[] = [];
  let db = startDb;
  let i = 0;
  while (i < buf.length) {
    const first = i;
    const at = (k: number) => startOffset + k;
    const fail = (k: number, why: string): never => {
      throw new RangeError(`replication stream at offset ${at(k)} (command at ${at(first)}): ${why}`);
    };
    /** A `<type><decimal>\r\n` header at i; returns the number and moves i past the CRLF. */
    const header = (type: number, what: string): number => {
      if (i >= buf.length) fail(i, `cut before the ${what} header`);
      if (buf[i] !== type) fail(i, `expected ${String.fromCharCode(type)} (${what}), found byte 0x${buf[i]!.toString(16).padStart(2, '0')}`);
      let k = i + 1;
      let n = 0;
      while (k < buf.length && buf[k] !== CR) {
        const c = buf[k]!;
        if (c < 0x30 || c > 0x39) fail(k, `${what} length has a non-digit byte 0x${c.toString(16).padStart(2, '0')}`);
        if (k - i > MAX_HEADER) fail(k, `${what} length is too long`);
        if (k > i + 1 && n === 0) fail(k, `${what} length has a leading zero`);
        n = n * 10 + (c - 0x30);
        k++;
      }
      if (k === i + 1) fail(k, k >= buf.length ? `cut in the ${what} header` : `${what} length is empty`);
      if (k + 1 >= buf.length) fail(k, `cut in the ${what} header`);
      if (buf[k + 1] !== LF) fail(k + 1, 'CR not followed by LF');
      i = k + 2;
      return n;
    };
    const words = header(0x2a /* * */, 'array');
    if (words === 0) fail(first, 'an empty array is not a command');
    if (words > MAX_WORDS) fail(first, `${words} words is more than a command has`);
    const argv: Buffer[] = [];
    for (let w = 0; w < words; w++) {
      const len = header(0x24 /* $ */, `bulk string ${w + 1} of ${words}`);
      if (len > buf.length - i - 2) fail(i, `bulk string ${w + 1} of ${words} (${len} bytes) is cut`);
      argv.push(buf.subarray(i, i + len));
      i += len;
      if (buf[i] !== CR || buf[i + 1] !== LF) fail(i, `bulk string ${w + 1} of ${words} is not followed by CRLF`);
      i += 2;
    }
    const name = argv[0]!.toString('latin1').toLowerCase();
    if (name === 'select') {
      const text = argv[1]?.toString('latin1') ?? '';
      if (argv.length !== 2 || !/^(0|[1-9][0-9]{0,9})$/.test(text) || Number(text) > MAX_DB) fail(first, `SELECT ${JSON.stringify(text)} does not name a database`);
      db = Number(text);
      continue;
    }
    if (name === 'ping' || name === 'replconf') continue;
    out.push({ offset: at(first), end: at(i - 1), db, argv });
  }
  return out;
}

/**
 * Index in `commands` of the stream probe's `PUBLISH takeover:probe <nonce>` (the name in any
 * case, channel and nonce exact), or -1. Pure.
 */
export function findProbe(commands: readonly ReplicatedCommand[], nonce: string): number {
  const channel = Buffer.from(PROBE_CHANNEL);
  const want = Buffer.from(nonce);
  return commands.findIndex(
    (c) => c.argv.length === 3 && c.argv[0]!.toString('latin1').toLowerCase() === 'publish' && c.argv[1]!.equals(channel) && c.argv[2]!.equals(want),
  );
}
