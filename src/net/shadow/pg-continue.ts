// The PostgreSQL continue plugin (issue 12): follows a connection's protocol 3.0 streams from the
// StartupMessage, pairs requests with their replies and keeps the session state a new upstream
// must be given, so the backup can continue the connection on a promoted replica.
//
// - A request is a simple Query, or the extended-protocol messages (Parse, Bind, Describe,
//   Execute, Close) up to a Sync; its reply ends at the ReadyForQuery it draws. The login
//   (StartupMessage and password messages) is the first request, answered by the first
//   ReadyForQuery, whose status byte ('I' idle, 'T' in a transaction, 'E' in a failed one) every
//   later ReadyForQuery updates.
// - The preamble (a dialog: pg-login.ts) logs in with the client's own StartupMessage and the
//   password the plugin was given, then replays the SET/RESET statements that were committed
//   and the prepared statements that exist (their Parse messages, or their SQL PREPARE).
// - Blocked (reset): TLS or GSS encryption, CancelRequest connections, replication connections,
//   a login not finished, COPY, FunctionCall, LISTEN/NOTIFY, Flush without Sync, temporary
//   objects, session advisory locks, set_config(), WITH HOLD cursors, a simple Query longer than
//   1 MiB; anything it cannot frame.
// - Inside a transaction ('T' or 'E'): not continued (what the dead server had done in it is
//   gone) but ended with FATAL 57P01, what a backend says when it is terminated, instead of a RST.
// Spec: https://www.postgresql.org/docs/current/protocol-flow.html, protocol-message-formats.html.
import { postgresErrorResponse } from '../goodbye/postgres.js';
import { cstr, int32, PgBodyReader, PgMessageFramer, pgMessage, type PgMessage } from '../pg-framer.js';
import { gapReason, type ContinuePlugin, type ExchangeTracker, type ProtocolGoodbye, type ReadOnlyReplay, type ReplyCounter, type SessionPreamble } from './exchange-tracker.js';
import { pgLoginDialog } from './pg-login.js';
import { pgReadOnlyReplay, pgTransactionReplay } from './pg-read-only-replay.js';
import { MAX_QUERY_BYTES, sessionEffect, splitStatements, type SessionEffect } from './pg-sql.js';

export interface PgContinueOptions {
  /**
   * The password the new upstream's authentication needs (cleartext, md5 or SCRAM-SHA-256), or a
   * function of the login. Not needed when the upstream trusts the login. The client's own
   * answers cannot be replayed: salts and nonces differ per login.
   */
  password?: string | ((login: { user: string; database: string }) => string | undefined);
  /**
   * Rebuild a transaction a session was inside when its requests, run read-only, prove it had
   * written nothing (default true); false: such a session always gets the 57P01 goodbye. The
   * proof trusts the server's read-only refusal: a function that catches it (EXCEPTION WHEN
   * OTHERS around a write) passes for a read (the agent's `unproven: reset` turns this off too).
   */
  rebuildTransactions?: boolean;
}

/** Requests waiting for a reply beyond this many block the connection (memory bound). */
export const MAX_PENDING = 10_000;
/**
 * An open transaction's requests kept for its rebuild (bytes): past it, the session gets the goodbye.
 * Kept per connection in the shadow, so small: a typical OLTP transaction is far smaller.
 */
export const MAX_TX_REBUILD_BYTES = 64 << 10;
/** Session state kept for the preamble: settings, prepared statements, their bytes in all. */
const MAX_SETTINGS = 1000;
const MAX_PREPARED = 10_000;
const MAX_SESSION_BYTES = 16 << 20;
/** SETs waiting for their transaction's end. */
const MAX_TX_EFFECTS = 1000;

const PROTOCOL_3_0 = 196608;
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

/** The message a terminated backend sends (pg_terminate_backend, a fast shutdown). */
const GOODBYE = postgresErrorResponse({ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' });

/**
 * PostgreSQL's goodbye for a session that cannot be carried on (FATAL 57P01, what
 * pg_terminate_backend sends), with why: to be said only where the server's stream is at a
 * message boundary (a backend waiting for its client: a planned switchover's barrier).
 */
export function pgTerminateGoodbye(reason: string): ProtocolGoodbye {
  return { reason, bytes: GOODBYE };
}

type Op =
  | { op: 'parse'; name: string; bytes: Buffer | null }
  | { op: 'close'; statement: boolean; name: string }
  | { op: 'execute'; effect: SessionEffect }
  | { op: 'other' };

interface Request {
  kind: 'login' | 'query' | 'extended';
  /** Client stream offset where it ends (after its Query or Sync). */
  end: number;
  /** query: the statements' effects in order; extended: its messages that matter, in order. */
  effects: SessionEffect[];
  ops: Op[];
  flush: boolean;
  /** It made or dropped a prepared statement, or discarded the session (not transactional). */
  sessionChange: boolean;
  /** From the reply: CommandComplete tags (and '' for EmptyQuery/PortalSuspended), ParseComplete and CloseComplete counts, an ErrorResponse. */
  tags: string[];
  parses: number;
  closes: number;
  error: boolean;
}

type Prepared = { kind: 'parse'; bytes: Buffer } | { kind: 'sql'; text: string };

function newRequest(kind: Request['kind'], end = 0): Request {
  return { kind, end, effects: [], ops: [], flush: false, sessionChange: false, tags: [], parses: 0, closes: 0, error: false };
}

const KEEP_CLIENT: Record<string, number> = { '': 10_000, Q: MAX_QUERY_BYTES, P: MAX_QUERY_BYTES, B: 256, E: 256, C: 256 };
const KEEP_SERVER: Record<string, number> = { C: 256, Z: 1, R: 4, E: 4096 };

class PgTracker implements ExchangeTracker {
  private readonly client = new PgMessageFramer({ typed: false, keep: (t) => KEEP_CLIENT[t] ?? 0 });
  private readonly server = new PgMessageFramer({ typed: true, keep: (t) => KEEP_SERVER[t] ?? 0 });
  private sticky: string | null = null;
  /** Waiting for the server's one-byte answer to an SSLRequest / GSSENCRequest. */
  private negotiating = false;
  private startup: Buffer | null = null;
  private params = new Map<string, string>();
  private loggedIn = false;
  private status = 'I';
  private pending: (Request | undefined)[] = [];
  private head = 0;
  /** The extended-protocol request being sent (no Sync yet). */
  private open: Request | null = null;
  private answered = 0;
  private complete = 0;
  /** Server stream bytes before the framer's first (the answers to SSL/GSS requests). */
  private serverBase = 0;
  /** Committed session state, in the order it was set (a later SET of the same key moves it last). */
  private settings = new Map<string, string>();
  private prepared = new Map<string, Prepared>();
  private sessionBytes = 0;
  /** SET/RESET effects inside the current transaction (applied at its commit). */
  private txEffects: SessionEffect[] = [];
  /** Statement texts by name ('' the unnamed one) and the statement each portal was bound to: what an Execute runs. */
  private statementText = new Map<string, string>();
  private portalStatement = new Map<string, string>();
  /**
   * The open transaction (ReadyForQuery 'T'): the client stream offset where the request that
   * began it starts (its bytes are kept from there: retainClientFrom), and why it cannot be
   * rebuilt on a new upstream, once a reason is known.
   */
  private tx: { start: number; notRebuilt: string | null } | null = null;

  constructor(private readonly options: PgContinueOptions) {}

  clientData(chunk: Uint8Array): void {
    let data = chunk;
    while (data.length > 0 && !this.sticky) {
      const before = this.client.offset;
      const untyped = this.startup === null;
      // Until the StartupMessage the framing changes after each message: take them one by one.
      const messages = this.client.push(data, untyped ? () => true : undefined);
      data = data.subarray(this.client.offset - before);
      if (this.client.broken) return void (this.sticky = `client stream not PostgreSQL: ${this.client.broken}`);
      for (const m of messages) if (!this.sticky) untyped ? this.onStartup(m) : this.onClientMessage(m);
      if (messages.length === 0) break;
    }
  }

  serverData(chunk: Uint8Array): void {
    if (this.sticky) return;
    let data = chunk;
    if (this.negotiating && data.length > 0) {
      const answer = String.fromCharCode(data[0]!);
      this.negotiating = false;
      if (answer !== 'N') return void (this.sticky = answer === 'S' || answer === 'G' ? 'the connection is encrypted (TLS or GSS): its messages cannot be followed' : `unexpected answer ${JSON.stringify(answer)} to an SSL/GSS request`);
      data = data.subarray(1);
      // The answer byte is part of no reply; the server's messages start after it.
      this.serverBase++;
      this.complete = this.serverBase;
    }
    for (const m of this.server.push(data)) {
      if (this.sticky) return;
      this.onServerMessage(m);
    }
    if (this.server.broken && !this.sticky) this.sticky = `server stream not PostgreSQL: ${this.server.broken}`;
  }

  answeredClientBytes(): number {
    return this.answered;
  }

  completeServerBytes(): number {
    return this.complete;
  }

  blocker(): string | null {
    if (this.sticky) return this.sticky;
    if (!this.loggedIn) return this.startup ? 'the login had not finished (no ReadyForQuery yet)' : 'no StartupMessage seen yet';
    if (this.open?.flush) return 'Flush without Sync: replies that end without a ReadyForQuery';
    return null;
  }

  goodbye(): ProtocolGoodbye | null {
    if (this.status === 'I') return null;
    return { reason: `inside a ${this.status === 'E' ? 'failed ' : ''}transaction (ReadyForQuery '${this.status}'): its work on the dead server cannot be continued`, bytes: GOODBYE };
  }

  sessionPreamble(): SessionPreamble {
    const startup = this.startup ?? Buffer.alloc(0);
    const units: Buffer[] = [];
    for (const text of this.settings.values()) units.push(pgMessage('Q', Buffer.from(text, 'latin1'), Buffer.from([0])));
    for (const p of this.prepared.values()) {
      units.push(p.kind === 'sql' ? pgMessage('Q', Buffer.from(p.text, 'latin1'), Buffer.from([0])) : Buffer.concat([p.bytes, pgMessage('S')]));
    }
    const session = Buffer.concat(units);
    const user = this.params.get('user') ?? '';
    const database = this.params.get('database') ?? user;
    const pw = this.options.password;
    const password = typeof pw === 'function' ? pw({ user, database }) : pw;
    return {
      bytes: Buffer.concat([startup, session]),
      replies: 1 + units.length,
      dialog: () => pgLoginDialog({ startup, user, password, session, sessionReplies: units.length }),
    };
  }

  readOnlyReplay(replay: Buffer): ReadOnlyReplay | string {
    return pgReadOnlyReplay(replay, this.settings.keys());
  }

  transactionReplay(requests: (from: number) => Buffer | null): ReadOnlyReplay | string {
    if (this.options.rebuildTransactions === false) return 'transactions are not rebuilt here (rebuildTransactions: false)';
    if (this.status !== 'T' || !this.tx) return `not inside a transaction (ReadyForQuery '${this.status}')`;
    if (this.tx.notRebuilt) return this.tx.notRebuilt;
    const bytes = requests(this.tx.start);
    if (!bytes) return 'its requests were not retained';
    return pgTransactionReplay(bytes, this.settings.keys());
  }

  retainClientFrom(): number {
    return this.tx && !this.tx.notRebuilt && this.options.rebuildTransactions !== false ? this.tx.start : this.answered;
  }

  private onStartup(m: PgMessage): void {
    const code = m.body.length >= 4 ? m.body.readInt32BE(0) : -1;
    if (code === SSL_REQUEST || code === GSSENC_REQUEST) return void (this.negotiating = true);
    if (code === CANCEL_REQUEST) return void (this.sticky = 'a CancelRequest connection (not a session)');
    if (code !== PROTOCOL_3_0) return void (this.sticky = `startup protocol ${code >> 16}.${code & 0xffff} not followed (3.0 is)`);
    if (m.truncated) return void (this.sticky = 'StartupMessage too long');
    try {
      const r = new PgBodyReader(m.body);
      r.int32();
      for (let i = 0; i < 64 && r.rest > 1; i++) {
        const name = r.cstring('latin1');
        this.params.set(name, r.cstring('latin1'));
      }
    } catch (err) {
      return void (this.sticky = `StartupMessage malformed: ${(err as Error).message}`);
    }
    const replication = this.params.get('replication');
    if (replication !== undefined && !['false', 'off', 'no', '0'].includes(replication.toLowerCase())) {
      return void (this.sticky = 'a replication connection (walsender)');
    }
    this.startup = Buffer.concat([int32(m.length + 4), m.body]);
    this.client.setTyped(true);
    this.push(newRequest('login', m.end));
  }

  private onClientMessage(m: PgMessage): void {
    const at = (r: Request) => {
      r.end = m.end;
    };
    switch (m.type) {
      case 'p': {
        // Password, SASL messages: part of the login, answered by its ReadyForQuery.
        const login = this.pending[this.pending.length - 1];
        if (this.loggedIn || !login || login.kind !== 'login') return void (this.sticky = 'a password message outside the login');
        return at(login);
      }
      case 'Q': {
        if (this.open) return void (this.sticky = 'a simple Query inside an unfinished extended-protocol batch');
        if (m.truncated) return void (this.sticky = `a simple Query longer than ${MAX_QUERY_BYTES} bytes (its statements were not read)`);
        const sql = m.body.toString('latin1', 0, Math.max(0, m.body.indexOf(0)));
        const statements = splitStatements(sql);
        if (!statements) return void (this.sticky = 'a simple Query with too many statements');
        const r = newRequest('query', m.end);
        for (const s of statements) {
          const e = sessionEffect(s);
          if (e.kind === 'block') return void (this.sticky = e.reason);
          r.effects.push(e);
        }
        return this.push(r);
      }
      case 'P': {
        const r = (this.open ??= newRequest('extended'));
        // name NUL, query NUL, parameter types: only the query may be cut (at 1 MiB).
        const nul = m.body.indexOf(0);
        const textEnd = nul < 0 ? -1 : m.body.indexOf(0, nul + 1);
        if (nul < 0 || (textEnd < 0 && !m.truncated)) return void (this.sticky = 'Parse malformed: a string without its NUL terminator');
        const name = m.body.toString('latin1', 0, nul);
        const text = m.body.toString('latin1', nul + 1, textEnd < 0 ? m.body.length : textEnd);
        if (m.truncated && name !== '') return void (this.sticky = `a named Parse longer than ${MAX_QUERY_BYTES} bytes (not kept for the preamble)`);
        const statements = splitStatements(text) ?? [];
        const effect = statements.length === 1 ? sessionEffect(statements[0]!) : { kind: 'other' as const };
        if (effect.kind === 'block') return void (this.sticky = effect.reason);
        this.statementText.set(name, text.slice(0, 4096));
        if (this.statementText.size > MAX_PREPARED) return void (this.sticky = `more than ${MAX_PREPARED} statements`);
        r.ops.push({ op: 'parse', name, bytes: name === '' ? null : Buffer.concat([Buffer.from('P'), int32(m.length + 4), m.body]) });
        return;
      }
      case 'B': {
        const r = (this.open ??= newRequest('extended'));
        try {
          const b = new PgBodyReader(m.body);
          const portal = b.cstring('latin1');
          this.portalStatement.set(portal, b.cstring('latin1'));
          if (this.portalStatement.size > MAX_PREPARED) this.portalStatement = new Map([[portal, this.portalStatement.get(portal)!]]);
        } catch (err) {
          return void (this.sticky = `Bind malformed: ${(err as Error).message}`);
        }
        r.ops.push({ op: 'other' });
        return;
      }
      case 'E': {
        const r = (this.open ??= newRequest('extended'));
        let portal: string;
        try {
          portal = new PgBodyReader(m.body).cstring('latin1');
        } catch (err) {
          return void (this.sticky = `Execute malformed: ${(err as Error).message}`);
        }
        const text = this.statementText.get(this.portalStatement.get(portal) ?? '') ?? '';
        const statements = splitStatements(text) ?? [];
        const effect = statements.length === 1 ? sessionEffect(statements[0]!) : { kind: 'other' as const };
        if (effect.kind === 'block') return void (this.sticky = effect.reason);
        if ((effect.kind === 'set' || effect.kind === 'prepare') && text.length >= 4096) return void (this.sticky = 'a session statement too long to keep');
        r.ops.push({ op: 'execute', effect });
        return;
      }
      case 'C': {
        const r = (this.open ??= newRequest('extended'));
        if (m.body.length < 2) return void (this.sticky = 'Close malformed');
        const statement = m.body[0] === 0x53; // 'S' a statement, 'P' a portal
        try {
          const name = new PgBodyReader(m.body.subarray(1)).cstring('latin1');
          r.ops.push({ op: 'close', statement, name });
          // Drivers name statements S_1, S_2, ... and close them: their texts must not pile up.
          if (statement) this.statementText.delete(name);
        } catch (err) {
          return void (this.sticky = `Close malformed: ${(err as Error).message}`);
        }
        return;
      }
      case 'D':
        (this.open ??= newRequest('extended')).ops.push({ op: 'other' });
        return;
      case 'H':
        (this.open ??= newRequest('extended')).flush = true;
        return;
      case 'S': {
        const r = this.open ?? newRequest('extended');
        this.open = null;
        at(r);
        return this.push(r);
      }
      case 'F':
        return void (this.sticky = 'FunctionCall (fast path) is not followed');
      case 'X':
        return void (this.sticky = 'the client sent Terminate');
      case 'd':
      case 'c':
      case 'f':
        return void (this.sticky = 'COPY data from the client (COPY is not continued)');
      default:
        return void (this.sticky = `unknown client message type ${JSON.stringify(m.type)}`);
    }
  }

  private push(r: Request): void {
    if (this.pending.length - this.head >= MAX_PENDING) return void (this.sticky = `more than ${MAX_PENDING} requests pending`);
    this.pending.push(r);
  }

  serverGap(length: number): string | null {
    if (this.sticky) return this.sticky;
    // Inside a message's body, past what the tracker reads of it (a DataRow's values, say).
    const done = this.negotiating ? null : this.server.skipLost(length);
    if (done === null) return this.gapRefused(length, 'server', 'they reach past a message body\'s unread part, and the messages cannot be framed past them');
    for (const m of done) this.onServerMessage(m);
    return null;
  }

  clientGap(length: number): string | null {
    if (this.sticky) return this.sticky;
    // Inside a message's body past what the tracker keeps (CopyData, a Bind's parameter values):
    // a request still unanswered at a takeover then cannot be replayed, its bytes being gone.
    const done = this.startup === null ? null : this.client.skipLost(length);
    if (done === null) return this.gapRefused(length, 'client', 'they reach past a message body\'s unread part, and the messages cannot be framed past them');
    for (const m of done) this.onClientMessage(m);
    return null;
  }

  private gapRefused(length: number, side: 'server' | 'client', why: string): string {
    this.sticky = gapReason(length, side, why);
    return why;
  }

  private onServerMessage(m: PgMessage): void {
    // Before its Sync, an extended-protocol batch is answered too (after a Flush, or a full buffer).
    const r = this.head < this.pending.length ? this.pending[this.head]! : this.open;
    switch (m.type) {
      case 'A':
        return void (this.sticky = 'NotificationResponse (LISTEN/NOTIFY): asynchronous messages are not continued');
      case 'G':
      case 'H':
      case 'W':
        return void (this.sticky = 'COPY (CopyIn/CopyOut/CopyBoth) is not continued');
      case 'v':
        return void (this.sticky = 'the server negotiated the protocol version down (NegotiateProtocolVersion)');
      case 'N':
      case 'S':
        // Asynchronous (a notice, a setting's new value): between replies they are a reply of their own.
        if (!r) this.complete = this.serverBase + m.end;
        return;
    }
    if (!r) return void (this.sticky = `server message '${m.type}' without a request`);
    switch (m.type) {
      case 'E':
        r.error = true;
        if (r.kind === 'login') this.sticky = 'the login failed';
        return;
      case 'C':
        r.tags.push(m.body.toString('latin1', 0, Math.max(0, m.body.indexOf(0))).toUpperCase());
        return;
      case 'I':
      case 's':
        r.tags.push('');
        return;
      case '1':
        r.parses++;
        return;
      case '3':
        r.closes++;
        return;
      case 'Z':
        if (r === this.open) return void (this.sticky = 'ReadyForQuery before the Sync that asks for it');
        return this.onReady(r, m);
    }
  }

  private onReady(r: Request, m: PgMessage): void {
    this.pending[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    const start = this.answered;
    this.answered = r.end;
    this.complete = this.serverBase + m.end;
    const status = m.body.length === 1 ? String.fromCharCode(m.body[0]!) : '?';
    if (status !== 'I' && status !== 'T' && status !== 'E') return void (this.sticky = `ReadyForQuery with status ${JSON.stringify(status)}`);
    if (r.kind === 'login') this.loggedIn = true;
    else if (r.kind === 'query') {
      // One CommandComplete per statement that ran; after an error nothing else runs.
      for (let i = 0; i < r.effects.length && i < r.tags.length; i++) this.apply(r.effects[i]!, r.tags[i]!, r);
    } else this.applyExtended(r);
    if (status === 'I') {
      // The transaction (explicit or the implicit one of this request) ended: committed unless it failed.
      if (!r.error) for (const e of this.txEffects) this.commit(e);
      this.txEffects = [];
    }
    if (status === 'T') {
      // A COMMIT or ROLLBACK inside the request ended the one before: the open one began in it.
      if (this.status !== 'T' || r.tags.includes('COMMIT') || r.tags.includes('ROLLBACK')) this.tx = { start, notRebuilt: null };
      const tx = this.tx!;
      if (r.sessionChange) tx.notRebuilt ??= 'a prepared statement was made or dropped in it (not transactional: a rebuild would make it twice)';
      if (this.answered - tx.start > MAX_TX_REBUILD_BYTES) tx.notRebuilt ??= `its requests passed ${MAX_TX_REBUILD_BYTES} bytes`;
    } else this.tx = null;
    this.status = status;
  }

  /** Extended-protocol messages run in order until the first error: each kind's successes are a prefix. */
  private applyExtended(r: Request): void {
    let parses = 0;
    let closes = 0;
    let executes = 0;
    for (const op of r.ops) {
      if (this.sticky) return;
      if (op.op === 'parse') {
        if (parses++ >= r.parses) return;
        if (op.bytes) {
          this.keepPrepared(op.name, { kind: 'parse', bytes: op.bytes });
          r.sessionChange = true;
        }
      } else if (op.op === 'close') {
        if (closes++ >= r.closes) return;
        if (op.statement) {
          this.dropPrepared(op.name);
          r.sessionChange = true;
        }
      } else if (op.op === 'execute') {
        if (executes >= r.tags.length) return;
        this.apply(op.effect, r.tags[executes++]!, r);
      }
    }
  }

  /** A statement that ran, with its CommandComplete tag, as part of request r. */
  private apply(e: SessionEffect, tag: string, r: Request): void {
    if (e.kind === 'discard-all' || e.kind === 'prepare' || e.kind === 'deallocate' || e.kind === 'deallocate-all') r.sessionChange = true;
    switch (e.kind) {
      case 'set':
      case 'reset':
      case 'reset-all':
        // Settings are transactional: kept when their transaction commits.
        this.txEffects.push(e);
        if (this.txEffects.length > MAX_TX_EFFECTS) this.sticky = `more than ${MAX_TX_EFFECTS} SETs in one transaction`;
        break;
      case 'discard-all':
        this.settings.clear();
        this.prepared.clear();
        this.sessionBytes = 0;
        this.txEffects = [];
        break;
      // Prepared statements are not transactional: they stay after a ROLLBACK.
      case 'prepare':
        this.keepPrepared(e.name, { kind: 'sql', text: e.text });
        break;
      case 'deallocate':
        this.dropPrepared(e.name);
        break;
      case 'deallocate-all':
        this.prepared.clear();
        break;
      case 'rollback-to':
        if (this.txEffects.length > 0) this.sticky = 'ROLLBACK TO SAVEPOINT after a SET in the same transaction (which SETs survive is not followed)';
        return;
    }
    // COMMIT of a failed transaction answers ROLLBACK.
    if (tag === 'COMMIT') {
      for (const t of this.txEffects) this.commit(t);
      this.txEffects = [];
    } else if (tag === 'ROLLBACK') this.txEffects = [];
  }

  private commit(e: SessionEffect): void {
    if (e.kind === 'set') {
      this.settings.delete(e.key);
      this.settings.set(e.key, e.text);
      if (this.settings.size > MAX_SETTINGS) this.sticky = `more than ${MAX_SETTINGS} settings`;
      this.sessionBytes += e.text.length;
    } else if (e.kind === 'reset') this.settings.delete(e.key);
    else if (e.kind === 'reset-all') {
      // RESET ALL leaves the role and the session user alone.
      for (const key of [...this.settings.keys()]) if (key !== 'role' && key !== 'session authorization') this.settings.delete(key);
    }
    if (this.sessionBytes > MAX_SESSION_BYTES) this.sticky = `session state over ${MAX_SESSION_BYTES} bytes`;
  }

  private keepPrepared(name: string, p: Prepared): void {
    this.prepared.delete(name);
    this.prepared.set(name, p);
    this.sessionBytes += p.kind === 'sql' ? p.text.length : p.bytes.length;
    if (this.prepared.size > MAX_PREPARED) this.sticky = `more than ${MAX_PREPARED} prepared statements`;
    if (this.sessionBytes > MAX_SESSION_BYTES) this.sticky = `session state over ${MAX_SESSION_BYTES} bytes`;
  }

  private dropPrepared(name: string): void {
    this.prepared.delete(name);
    this.statementText.delete(name);
  }
}

/** Counts replies in an upstream's stream: each ends at a ReadyForQuery (the login's too). */
class PgReplyCounter implements ReplyCounter {
  private readonly framer = new PgMessageFramer({ typed: true });
  push(chunk: Uint8Array): number[] {
    const base = this.framer.offset;
    return this.framer.push(chunk).filter((m) => m.type === 'Z').map((m) => m.end - base);
  }
  get broken(): string | null {
    return this.framer.broken;
  }
}

/** The PostgreSQL plugin; `password` logs the continued sessions into the new upstream. */
export function pgContinue(options: PgContinueOptions = {}): ContinuePlugin {
  return {
    name: 'postgres',
    createTracker: () => new PgTracker(options),
    createReplyCounter: () => new PgReplyCounter(),
  };
}
