// PostgreSQL requests run so that they cannot write (issue 12), for two uses.
// - An unanswered request the dead primary may have committed (config `continue.unproven:
//   read-only`: with walCheck, WAL arrived after it; without, every one) is replayed with
//   default_transaction_read_only on: a read is answered as the dead primary would have answered
//   it, a write is refused by the new upstream itself (SQLSTATE 25006, read_only_sql_transaction)
//   before it changes anything, so its connection is reset and the write is never applied twice.
//   The replies are held until the last one shows no refusal; then the session gets its own mode
//   back (RESET) before the client's next bytes.
// - A transaction a session was inside is rebuilt on the new upstream when its requests, run
//   read-only first, prove it had written nothing (pgTransactionReplay).
// A statement that could lift the mode itself is not run this way (ESCAPES), nor is a session
// that set the mode.
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
const ISOLATION = query("SELECT current_setting('transaction_isolation')");
const ROLLBACK = query('ROLLBACK');
/** Levels under which each statement takes its own snapshot (PostgreSQL runs READ UNCOMMITTED as READ COMMITTED). */
const PER_STATEMENT_SNAPSHOT = new Set(['read committed', 'read uncommitted']);

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
  const requests = readOnlyRequests(replay, sessionKeys);
  if (typeof requests === 'string') return requests;
  return { before: BEFORE, createJudge: () => new PgReadOnlyJudge(requests) };
}

/**
 * How to rebuild an open transaction on a new upstream (ExchangeTracker.transactionReplay):
 * `requests` (the client's, from the one that began it) run first read-only, then the isolation
 * level is read, ROLLBACK, RESET, and they run again for real, every reply dropped. The judge
 * passes only when no request failed (a 25006 is a write: the dead server's transaction had
 * written, and that work is gone), the level is READ COMMITTED (each statement takes a new
 * snapshot there anyway; a REPEATABLE READ or SERIALIZABLE client would see another snapshot),
 * and the transaction is open at the end; otherwise the session gets its goodbye. Why not, as
 * for pgReadOnlyReplay.
 */
export function pgTransactionReplay(requests: Buffer, sessionKeys: Iterable<string>): ReadOnlyReplay | string {
  const n = readOnlyRequests(requests, sessionKeys);
  if (typeof n === 'string') return n;
  return { before: Buffer.concat([BEFORE, requests, ISOLATION, ROLLBACK, AFTER, requests]), createJudge: () => new PgTransactionJudge(n) };
}

/** The number of requests (Query and Sync messages) in `replay` if it can run read-only; why not otherwise. */
function readOnlyRequests(replay: Buffer, sessionKeys: Iterable<string>): number | string {
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
  return requests;
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

/**
 * Reads the replies to a pgTransactionReplay, all dropped, by their ReadyForQuery: the SET's (1),
 * the read-only run's (n, the last 'T'), the isolation level's (1, its DataRow), ROLLBACK's,
 * RESET's, and the real run's (n, the last 'T'). Any ErrorResponse fails it.
 */
class PgTransactionJudge implements ReadOnlyJudge {
  private readonly framer = new PgMessageFramer({ typed: true, keep: (t) => (t === 'E' ? 4096 : t === 'Z' ? 1 : t === 'D' ? 64 : 0) });
  private ready = 0;
  private isolation: string | null = null;

  constructor(private readonly requests: number) {}

  /** What the replies being read answer, by how many ReadyForQuery came before them. */
  private part(): string {
    const n = this.requests;
    const k = this.ready;
    if (k === 0) return 'SET default_transaction_read_only';
    if (k <= n) return 'the transaction\'s requests run read-only';
    if (k === n + 1) return 'the isolation level\'s query';
    if (k === n + 2) return 'ROLLBACK';
    if (k === n + 3) return 'RESET default_transaction_read_only';
    return 'the transaction\'s requests';
  }

  push(chunk: Uint8Array): Step {
    const base = this.framer.offset;
    const messages = this.framer.push(chunk);
    if (this.framer.broken) return failed(`the new upstream's replies cannot be read: ${this.framer.broken}`);
    const n = this.requests;
    for (const m of messages) {
      if (m.type === 'E') {
        const f = pgErrorFields(m.body);
        const inRun = this.ready >= 1 && this.ready < 1 + n;
        if (inRun && f.get('C') === READ_ONLY_SQL_TRANSACTION) return failed(`it had written (${f.get('M') ?? 'SQLSTATE 25006'}): the dead server's work in it is gone`);
        return failed(`${this.part()} failed on the new upstream (${f.get('C') ?? '?'}: ${f.get('M') ?? ''})`);
      }
      if (m.type === 'D' && this.ready === n + 1) {
        this.isolation = dataRowText(m.body);
        continue;
      }
      if (m.type !== 'Z') continue;
      const status = String.fromCharCode(m.body[0] ?? 0);
      this.ready++;
      if ((this.ready === 1 + n || this.ready === 4 + 2 * n) && status !== 'T') return failed(`${this.part()} left no transaction open (ReadyForQuery '${status}')`);
      if (this.ready === 2 + n && !PER_STATEMENT_SNAPSHOT.has(this.isolation ?? '')) return failed(`its isolation level is ${this.isolation ?? 'unknown'}: rebuilt, it would see another snapshot`);
      if (this.ready === 4 + 2 * n) return { kind: 'done', rest: Buffer.from(chunk.subarray(m.end - base)) };
    }
    return { kind: 'more' };
  }
}

/** The first column of a DataRow as text (null: SQL NULL or malformed). */
function dataRowText(body: Buffer): string | null {
  if (body.length < 6 || body.readInt16BE(0) < 1) return null;
  const len = body.readInt32BE(2);
  if (len < 0 || 6 + len > body.length) return null;
  return body.toString('utf8', 6, 6 + len);
}
