// A PostgreSQL replay that cannot write (issue 12, config `continue.walCheck.readOnlyReplay`).
// When the takeover cannot tell whether the dead primary committed a session's unanswered
// request (WAL arrived after it), the request is replayed with default_transaction_read_only on:
// a read is answered as the dead primary would have answered it, and a write is refused by the
// new upstream itself (SQLSTATE 25006, read_only_sql_transaction) before it changes anything, so
// its connection is reset, as it was before this existed, and the write is never applied twice.
// The replies are held until the last one shows no refusal; then the session gets its own mode
// back (RESET) before the client's next bytes. A statement that could lift the mode itself is
// not replayed this way (the list below), nor is a session that set the mode.
import { PgMessageFramer, pgErrorFields, pgMessage, type PgMessage } from '../pg-framer.js';
import type { ReadOnlyJudge, ReadOnlyReplay } from './exchange-tracker.js';
import { MAX_QUERY_BYTES, splitStatements } from './pg-sql.js';

/** SQLSTATE read_only_sql_transaction: a statement that would have written, refused. */
const READ_ONLY_SQL_TRANSACTION = '25006';
/** The replies held before the client gets any (bytes): past it, the client is reset. */
export const MAX_HELD_BYTES = 64 << 20;

const query = (sql: string) => pgMessage('Q', sql, Buffer.from([0]));
const BEFORE = query('SET default_transaction_read_only = on');
const AFTER = query('RESET default_transaction_read_only');

/**
 * What in a statement (lowercased, literals and comments blanked: SqlStatement.code) could lift
 * the read-only mode for a later transaction of the replay or run code the text does not show:
 * READ WRITE in any form, the settings themselves, RESET ALL / DISCARD ALL, a procedure (it may
 * commit and set the mode inside), a DO block. A false alarm only resets the connection.
 */
const ESCAPES: Array<[RegExp, string]> = [
  [/\bwrite\b/, 'READ WRITE'],
  [/read_only/, 'a read-only setting'],
  [/\breset\s+all\b|\bdiscard\s+all\b/, 'RESET ALL / DISCARD ALL'],
  [/^call\b/, 'CALL (a procedure may commit and lift the mode)'],
  [/^do\b/, 'a DO block (its code is not read)'],
];

/** Frontend messages a replay may hold: queries and complete extended-protocol batches. */
const REPLAYABLE = new Set(['Q', 'P', 'B', 'E', 'D', 'C', 'S']);

/**
 * How to replay `replay` (frontend messages, the session's unanswered requests) read-only, or
 * why it cannot be: it ends inside a message or an unsynced batch (the judge would wait for
 * replies the client has yet to ask for), holds other messages, a statement could lift the mode
 * (ESCAPES), or the session set the mode itself (`sessionKeys`: the settings it SET, lowercased).
 */
export function pgReadOnlyReplay(replay: Buffer, sessionKeys: Iterable<string>): ReadOnlyReplay | string {
  for (const key of sessionKeys) {
    if (key.includes('read_only') || key === 'session characteristics') return `the session set its own read-only mode (${key})`;
  }
  const framer = new PgMessageFramer({ typed: true, keep: (t) => (t === 'Q' || t === 'P' ? MAX_QUERY_BYTES + 1 : 0) });
  const messages = framer.push(replay);
  if (framer.broken) return `the replay is not PostgreSQL messages: ${framer.broken}`;
  if (!framer.between) return 'the replay ends inside a message (its client has yet to send the rest)';
  const last = messages[messages.length - 1];
  if (!last) return 'nothing to replay';
  if (last.type !== 'Q' && last.type !== 'S') return 'the replay ends inside an extended-protocol batch (no Sync yet)';
  let requests = 0;
  for (const m of messages) {
    if (!REPLAYABLE.has(m.type)) return `the replay holds a '${m.type}' message`;
    if (m.type === 'Q' || m.type === 'S') requests++;
    const sql = queryText(m);
    if (sql === null) continue;
    if (m.truncated) return `a query longer than ${MAX_QUERY_BYTES} bytes`;
    const statements = splitStatements(sql);
    if (!statements) return 'a query with too many statements';
    for (const s of statements) {
      for (const [re, what] of ESCAPES) if (re.test(s.code)) return `a statement could lift the read-only mode (${what}): ${s.text.slice(0, 80)}`;
    }
  }
  return { before: BEFORE, createJudge: () => new PgReadOnlyJudge(requests) };
}

/** A simple Query's or a Parse's SQL text; null for other messages. */
function queryText(m: PgMessage): string | null {
  if (m.type === 'Q') return m.body.toString('latin1', 0, Math.max(0, m.body.indexOf(0)));
  if (m.type !== 'P') return null;
  const nul = m.body.indexOf(0);
  const end = nul < 0 ? -1 : m.body.indexOf(0, nul + 1);
  return m.body.toString('latin1', nul + 1, end < 0 ? m.body.length : end);
}

type Step = ReturnType<ReadOnlyJudge['push']>;

/**
 * Reads the upstream's replies in three parts, each ended by a ReadyForQuery: the SET's (dropped),
 * the replay's `requests` (held until the last; a 25006 fails at once; the last must leave no
 * transaction open, status 'I'), then the RESET's (dropped).
 */
class PgReadOnlyJudge implements ReadOnlyJudge {
  private readonly framer = new PgMessageFramer({ typed: true, keep: (t) => (t === 'E' ? 4096 : t === 'Z' ? 1 : 0) });
  private phase: 'before' | 'replay' | 'after' = 'before';
  private ready = 0;
  /** The first ErrorResponse of the part being read, as text. */
  private error: string | null = null;
  private held: Buffer[] = [];
  private heldBytes = 0;

  constructor(private readonly requests: number) {}

  push(chunk: Uint8Array): Step {
    const base = this.framer.offset;
    const messages = this.framer.push(chunk);
    if (this.framer.broken) return failed(`the new upstream's replies cannot be read: ${this.framer.broken}`);
    /** Where the part being read starts in this chunk. */
    let start = 0;
    let passed: Buffer | undefined;
    for (const m of messages) {
      const end = m.end - base;
      if (m.type === 'E') {
        const f = pgErrorFields(m.body);
        if (this.phase === 'replay' && f.get('C') === READ_ONLY_SQL_TRANSACTION) {
          return failed(`the replayed request writes (${f.get('M') ?? 'SQLSTATE 25006'}), and whether the dead primary committed it is not known`);
        }
        this.error ??= `${f.get('C') ?? '?'}: ${f.get('M') ?? ''}`;
        continue;
      }
      if (m.type !== 'Z') continue;
      if (this.phase === 'before') {
        if (this.error) return failed(`the new upstream refused SET default_transaction_read_only (${this.error})`);
        this.phase = 'replay';
        start = end;
      } else if (this.phase === 'replay') {
        if (++this.ready < this.requests) continue;
        const status = String.fromCharCode(m.body[0] ?? 0);
        if (status !== 'I') return failed(`the replayed requests left a transaction open (ReadyForQuery '${status}'): it would go on read-only`);
        this.hold(chunk.subarray(start, end));
        if (this.heldBytes > MAX_HELD_BYTES) return tooMuch();
        passed = Buffer.concat(this.held);
        this.held = [];
        this.phase = 'after';
        this.error = null;
        start = end;
      } else {
        // RESET is sent once the replay passed: its ReadyForQuery cannot come with the replay's.
        if (passed) return failed('a ReadyForQuery the new upstream was not asked for');
        if (this.error) return failed(`the new upstream refused RESET default_transaction_read_only (${this.error})`);
        return { kind: 'done', rest: Buffer.from(chunk.subarray(end)) };
      }
    }
    if (this.phase === 'replay') {
      this.hold(chunk.subarray(start));
      if (this.heldBytes > MAX_HELD_BYTES) return tooMuch();
    }
    return passed ? { kind: 'passed', replies: passed, send: AFTER } : { kind: 'more' };
  }

  private hold(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.held.push(Buffer.from(bytes));
    this.heldBytes += bytes.length;
  }
}

const failed = (reason: string): Step => ({ kind: 'failed', reason });
const tooMuch = () => failed(`the replies to the read-only replay passed ${MAX_HELD_BYTES} bytes before they ended (they are held until the last)`);
