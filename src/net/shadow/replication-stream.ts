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
  const r = new StreamReader(buf, startOffset);
  let db = startDb;
  while (r.i < buf.length) {
    const first = (r.first = r.i);
    const words = r.header(0x2a /* * */, 0, 0);
    if (words === 0) r.fail(first, 'an empty array is not a command');
    if (words > MAX_WORDS) r.fail(first, `${words} words is more than a command has`);
    const argv: Buffer[] = [];
    for (let w = 0; w < words; w++) {
      const len = r.header(0x24 /* $ */, w + 1, words);
      const i = r.i;
      if (len > buf.length - i - 2) r.fail(i, `bulk string ${w + 1} of ${words} (${len} bytes) is cut`);
      argv.push(buf.subarray(i, i + len));
      if (buf[i + len] !== CR || buf[i + len + 1] !== LF) r.fail(i + len, `bulk string ${w + 1} of ${words} is not followed by CRLF`);
      r.i = i + len + 2;
    }
    const name = argv[0]!;
    if (isWord(name, 'select')) {
      const text = argv[1]?.toString('latin1') ?? '';
      if (argv.length !== 2 || !/^(0|[1-9][0-9]{0,9})$/.test(text) || Number(text) > MAX_DB) r.fail(first, `SELECT ${JSON.stringify(text)} does not name a database`);
      db = Number(text);
      continue;
    }
    if (isWord(name, 'ping') || isWord(name, 'replconf')) continue;
    out.push({ offset: startOffset + first, end: startOffset + r.i - 1, db, argv });
  }
  return out;
}

/**
 * The parser's place in the bytes and its errors. One per parse, not closures per command: a
 * takeover parses tens of thousands of commands on the agent's loop (made so when 30,000 INCRs
 * took 60-150 ms).
 */
class StreamReader {
  /** The next byte to read. */
  i = 0;
  /** Where the current command starts. */
  first = 0;

  constructor(
    private readonly buf: Buffer,
    private readonly startOffset: number,
  ) {}

  fail(k: number, why: string): never {
    throw new RangeError(`replication stream at offset ${this.startOffset + k} (command at ${this.startOffset + this.first}): ${why}`);
  }

  /**
   * A `<type><decimal>\r\n` header at i; returns the number and moves i past the CRLF. `word`
   * 0: the array's header; else the bulk string `word` of `words` (named so only in errors).
   */
  header(type: number, word: number, words: number): number {
    const { buf } = this;
    const i = this.i;
    const what = () => (word === 0 ? 'array' : `bulk string ${word} of ${words}`);
    if (i >= buf.length) this.fail(i, `cut before the ${what()} header`);
    if (buf[i] !== type) this.fail(i, `expected ${String.fromCharCode(type)} (${what()}), found byte 0x${buf[i]!.toString(16).padStart(2, '0')}`);
    let k = i + 1;
    let n = 0;
    while (k < buf.length && buf[k] !== CR) {
      const c = buf[k]!;
      if (c < 0x30 || c > 0x39) this.fail(k, `${what()} length has a non-digit byte 0x${c.toString(16).padStart(2, '0')}`);
      if (k - i > MAX_HEADER) this.fail(k, `${what()} length is too long`);
      if (k > i + 1 && n === 0) this.fail(k, `${what()} length has a leading zero`);
      n = n * 10 + (c - 0x30);
      k++;
    }
    if (k === i + 1) this.fail(k, k >= buf.length ? `cut in the ${what()} header` : `${what()} length is empty`);
    if (k + 1 >= buf.length) this.fail(k, `cut in the ${what()} header`);
    if (buf[k + 1] !== LF) this.fail(k + 1, 'CR not followed by LF');
    this.i = k + 2;
    return n;
  }
}

/** Whether `name` is `word` (lowercase ASCII) in any case, without making a string of it. */
function isWord(name: Uint8Array, word: string): boolean {
  if (name.length !== word.length) return false;
  for (let k = 0; k < name.length; k++) if ((name[k]! | 0x20) !== word.charCodeAt(k)) return false;
  return true;
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
