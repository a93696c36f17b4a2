// The RESP (Redis) continue plugin (issue 12): pairs a connection's requests with its replies in
// order (Redis answers each command once, in order, also when pipelined), so the shadow knows
// which requests a dead server answered, which to replay on a new upstream, and the session state
// (login, database, protocol, name, READONLY) to give that upstream first. Connections whose
// replies cannot be paired with requests (pub/sub, MONITOR, CLIENT REPLY OFF, RESP3 pushes) or
// that sit inside server-side state it cannot rebuild (MULTI, WATCH) are blocked. Spec:
// https://redis.io/docs/latest/develop/reference/protocol-spec/ and the command pages it links.
import { RespFramer } from '../resp-framer.js';
import { gapReason, type ChunkTime, type ContinuePlugin, type ExchangeTracker, type ReplyCounter, type SessionPreamble, type TrackerContext } from './exchange-tracker.js';
import type { CapturedProbe } from './probe-capture-times.js';
import type { LoggedWrite } from './request-log.js';
import { RespRequestFramer, type RespRequest } from './resp-request.js';
import { respMayMatch, respWriteKey, respWriteKind } from './resp-write-kinds.js';

/** Requests waiting for a reply beyond this many block the connection (memory bound). */
export const MAX_PENDING = 10_000;
/** Session commands queued inside one MULTI that the tracker follows. */
const MAX_TX_SESSION = 64;
/** Commands whose (small) arguments the tracker keeps: they set session state. */
const SESSION_COMMANDS = new Set(['auth', 'select', 'hello', 'client', 'readonly', 'readwrite']);
/** Commands after which replies are no longer one per request. */
const UNPAIRED: Record<string, string> = {
  subscribe: 'SUBSCRIBE: subscribe mode (messages are not replies to requests)',
  psubscribe: 'PSUBSCRIBE: subscribe mode (messages are not replies to requests)',
  ssubscribe: 'SSUBSCRIBE: subscribe mode (messages are not replies to requests)',
  unsubscribe: 'UNSUBSCRIBE: one reply per channel, not per request',
  punsubscribe: 'PUNSUBSCRIBE: one reply per pattern, not per request',
  sunsubscribe: 'SUNSUBSCRIBE: one reply per channel, not per request',
  monitor: 'MONITOR: the server streams every command it runs',
};

interface Session {
  auth?: Buffer[];
  protocol?: Buffer;
  name?: Buffer;
  db?: Buffer;
  readonly?: boolean;
}

const lower = (b: Buffer | undefined) => (b ? b.toString('latin1').toLowerCase() : '');

/**
 * A request waiting for its reply, and its entry in the request log (a write, when logged); an
 * EXEC or DISCARD carries the writes queued since its MULTI (they run, or not, at its reply).
 */
type Pending = RespRequest & { logged?: LoggedWrite; queued?: LoggedWrite[]; probe?: CapturedProbe };

class RespTracker implements ExchangeTracker {
  private readonly requests: RespRequestFramer;
  private readonly replies = new RespFramer({
    listener: { value: (type, depth, length) => this.onReplyValue(type, depth, length), end: (at) => this.onReply(at) },
  });
  /** Requests not answered yet, oldest at `head`. */
  private pending: (Pending | undefined)[] = [];
  /** When the request being framed began (its first byte's chunk), or null between requests. */
  private requestStart: ChunkTime | null = null;
  /** When the server chunk being read was captured. */
  private serverAt: ChunkTime | null = null;
  /** Writes framed after a MULTI whose EXEC/DISCARD is not framed yet (null: not in one). */
  private framingTx: LoggedWrite[] | null = null;
  /**
   * The database the requests being framed run in (a pipelined SELECT counts before its reply);
   * null once a SELECT was refused or could not be read: then no write is matched any more.
   */
  private framingDb: string | null = '0';
  private head = 0;
  private answered = 0;
  private complete = 0;
  private serverBase = 0;
  private sticky: string | null = null;
  private session: Session = {};
  private inTx = false;
  private watching = false;
  private txQueued = 0;
  private txSession: { index: number; req: RespRequest }[] = [];
  /** The reply being read: its top-level type and length, and error elements of an EXEC reply. */
  private replyType = '';
  private replyLength: number | null = null;
  private element = -1;
  private execErrors = new Set<number>();

  constructor(private readonly context: TrackerContext | undefined) {
    // Writes are digested only for a request log (the replay matcher's); a PUBLISH's words are
    // kept (up to 8 and 4 KiB, until it is framed) only to tell the stream probe's from others.
    const probes = context?.probes !== undefined;
    this.requests = new RespRequestFramer((name) => SESSION_COMMANDS.has(name) || (probes && name === 'publish'), context?.log ? respMayMatch : () => false);
  }

  clientData(chunk: Uint8Array, at?: ChunkTime): void {
    if (this.sticky) return;
    // The first request completed here began in an earlier chunk when one was being framed.
    let start = this.requests.between ? (at ?? null) : this.requestStart;
    for (const req of this.requests.push(chunk)) {
      this.onRequest(req, start);
      start = at ?? null;
    }
    this.requestStart = this.requests.between ? null : start;
    if (this.requests.broken && !this.sticky) this.sticky = `client stream not RESP requests: ${this.requests.broken}`;
  }

  serverData(chunk: Uint8Array, at?: ChunkTime): void {
    if (this.sticky) return;
    this.serverAt = at ?? null;
    this.serverBase = this.replies.offset;
    this.replies.push(chunk);
    if (this.replies.broken && !this.sticky) this.sticky = `server stream not RESP: ${this.replies.broken}`;
  }

  serverGap(length: number, at?: ChunkTime): string | null {
    if (this.sticky) return this.sticky;
    // Inside a bulk string (its payload is skipped unread anyway), at most to its CRLF: a reply
    // ending there ends at the gap's end (serverBase), answered by the time of `at`.
    this.serverAt = at ?? null;
    this.serverBase = this.replies.offset;
    if (this.replies.skipLost(length)) return null;
    const why = 'they reach past a bulk string\'s payload, and the replies cannot be framed past them';
    this.sticky = gapReason(length, 'server', why);
    return why;
  }

  clientGap(length: number): string | null {
    if (this.sticky) return this.sticky;
    // Inside an argument's payload: the request is framed on, without its digest (a write then
    // cannot be matched; one unanswered is not replayed: its bytes are gone).
    if (this.requests.skipLost(length)) return null;
    const why = 'they reach past an argument\'s payload, and the requests cannot be framed past them';
    this.sticky = gapReason(length, 'client', why);
    return why;
  }

  answeredClientBytes(): number {
    return this.answered;
  }

  completeServerBytes(): number {
    return this.complete;
  }

  sessionPreamble(): SessionPreamble {
    const s = this.session;
    const commands: Buffer[][] = [];
    const word = (w: string) => Buffer.from(w);
    // AUTH first: before it, a server with a password refuses the rest.
    if (s.auth) commands.push([word('AUTH'), ...s.auth]);
    if (s.protocol) commands.push([word('HELLO'), s.protocol]);
    if (s.name) commands.push([word('CLIENT'), word('SETNAME'), s.name]);
    if (s.db) commands.push([word('SELECT'), s.db]);
    if (s.readonly) commands.push([word('READONLY')]);
    return { bytes: Buffer.concat(commands.map(encodeCommand)), replies: commands.length };
  }

  blocker(): string | null {
    if (this.sticky) return this.sticky;
    if (this.inTx) return 'inside a transaction (MULTI answered, EXEC/DISCARD not yet)';
    if (this.watching) return 'WATCH active (watched keys are not rebuilt on a new server)';
    return null;
  }

  private onRequest(req: RespRequest, start: ChunkTime | null): void {
    if (this.sticky) return;
    const unpaired = UNPAIRED[req.name];
    if (unpaired) return void (this.sticky = unpaired);
    if (req.name === 'client') {
      const sub = lower(req.args[0]);
      const mode = lower(req.args[1]);
      if (sub === 'reply' && (mode === 'off' || mode === 'skip')) return void (this.sticky = `CLIENT REPLY ${mode.toUpperCase()}: requests without replies`);
      if (sub === 'tracking' && mode === 'on') return void (this.sticky = 'CLIENT TRACKING ON: tracking state is not rebuilt on a new server');
    }
    if (!req.answered) {
      // No reply will come: it is answered once everything before it is.
      if (this.head < this.pending.length) this.pending[this.pending.length - 1]!.end = req.end; // the queue's tail is never cleared
      else this.answered = req.end;
      return;
    }
    if (this.pending.length - this.head >= MAX_PENDING) return void (this.sticky = `more than ${MAX_PENDING} requests pending`);
    this.pending.push(req.name === 'publish' ? this.probePublish(req, start) : this.logWrite(req, start));
  }

  /**
   * A PUBLISH: the stream probe's own is timed (ProbeCaptureTimes) and is no write to match;
   * any other goes to the request log as the write it is. Its words are not kept past here.
   */
  private probePublish(req: RespRequest, start: ChunkTime | null): Pending {
    const probes = this.context?.probes;
    const probe = probes && start && !this.framingTx ? probes.sent(this.context!.connection, req.args, start.ms, !start.late) : null;
    const bare = { ...req, args: [] };
    return probe ? { ...bare, probe } : this.logWrite(bare, start);
  }

  /**
   * A write goes into the request log (when there is one), for the replay matcher. One queued in
   * a transaction is answered by its EXEC (it runs there), not by its +QUEUED.
   */
  private logWrite(req: RespRequest, start: ChunkTime | null): Pending {
    const log = this.context?.log;
    if (!log || !start) return req;
    if (req.name === 'multi') {
      this.framingTx ??= [];
      return req;
    }
    if (req.name === 'select') {
      this.framingDb = req.args.length === 1 && !req.truncated ? req.args[0]!.toString('latin1') : null;
      return req;
    }
    if (req.name === 'reset') this.framingDb = '0';
    if ((req.name === 'exec' || req.name === 'discard') && this.framingTx) {
      const queued = this.framingTx;
      this.framingTx = null;
      return { ...req, queued };
    }
    const kind = respWriteKind(req.name, req.argc);
    if (kind === 'read') return req;
    const key = kind === 'matchable' && req.digest && this.framingDb !== null ? respWriteKey(this.framingDb, req.digest) : null;
    const rerun = key !== null && !req.truncated ? { db: Number(this.framingDb), argv: [Buffer.from(req.name, 'latin1'), ...req.args] } : undefined;
    const logged = log.record({ connection: this.context.connection, command: req.name, key, sentMs: start.ms, sentExact: !start.late, rerun });
    // The request is this tracker's own (the framer made it): marked, not copied (one per write seen).
    if (!this.framingTx) return Object.assign(req, { logged });
    this.framingTx.push(logged);
    return req;
  }

  /** The request log learns that a reply came: a write's own, or an EXEC's/DISCARD's for its queued writes. */
  private logReply(req: Pending): void {
    const ms = this.serverAt?.ms ?? null;
    const error = this.replyType === '-' || this.replyType === '!';
    if (req.logged) {
      req.logged.answeredMs = ms;
      req.logged.failed = error;
    }
    if (req.probe) req.probe.answeredMs = ms;
    // A refused SELECT left the database as it was: the writes framed after it were keyed wrong.
    if (req.name === 'select' && error) this.framingDb = null;
    // EXEC ran them unless it failed or was aborted (a null array); DISCARD never does.
    const ran = req.name === 'exec' && !error && (this.replyLength ?? -1) >= 0;
    for (const w of req.queued ?? []) {
      w.answeredMs = ms;
      w.failed = !ran;
    }
  }

  private onReplyValue(type: string, depth: number, length: number | null): void {
    if (depth === 0) {
      this.replyType = type;
      this.replyLength = length;
      this.element = -1;
      this.execErrors = new Set();
    } else if (depth === 1) {
      this.element++;
      if ((type === '-' || type === '!') && this.txSession.some((t) => t.index === this.element)) this.execErrors.add(this.element);
    }
  }

  private onReply(offsetInChunk: number): void {
    if (this.sticky) return;
    if (this.replyType === '>') return void (this.sticky = 'RESP3 push from the server (out-of-band messages break the reply pairing)');
    if (this.head >= this.pending.length) return void (this.sticky = 'more replies than requests');
    const req = this.pending[this.head]!;
    this.pending[this.head++] = undefined;
    if (this.context?.log || this.context?.probes) this.logReply(req);
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    this.answered = req.end;
    this.complete = this.serverBase + offsetInChunk;
    this.applyReply(req, this.replyType === '-' || this.replyType === '!');
  }

  /** What an answered request changed in the session (Redis command semantics). */
  private applyReply(req: RespRequest, error: boolean): void {
    switch (req.name) {
      case 'multi':
        if (!error && !this.inTx) {
          this.inTx = true;
          this.txQueued = 0;
          this.txSession = [];
        }
        return;
      case 'exec': {
        const ran = !error && (this.replyType === '*' || this.replyType === '~') && (this.replyLength ?? -1) >= 0;
        if (this.inTx && ran) for (const t of this.txSession) if (!this.execErrors.has(t.index)) this.applySession(t.req);
        this.endTx();
        return;
      }
      case 'discard':
        this.endTx();
        return;
      case 'reset':
        if (!error) {
          this.endTx();
          this.session = {};
        }
        return;
    }
    if (this.inTx) {
      // +QUEUED: it runs at EXEC, as element txQueued of EXEC's reply.
      if (error) return;
      const index = this.txQueued++;
      if (!SESSION_COMMANDS.has(req.name)) return;
      if (this.txSession.length >= MAX_TX_SESSION) return void (this.sticky = `more than ${MAX_TX_SESSION} session commands in one transaction`);
      this.txSession.push({ index, req });
      return;
    }
    if (error) return;
    if (req.name === 'watch') this.watching = true;
    else if (req.name === 'unwatch') this.watching = false;
    else this.applySession(req);
  }

  private endTx(): void {
    this.inTx = false;
    this.watching = false;
    this.txSession = [];
  }

  private applySession(req: RespRequest): void {
    const s = this.session;
    const a = req.args;
    const tooBig = () => void (this.sticky = `${req.name.toUpperCase()}: arguments too large (or quoted inline) to keep for the session preamble`);
    switch (req.name) {
      case 'auth':
        if (req.truncated) return tooBig();
        if (a.length === 1 || a.length === 2) s.auth = a;
        return;
      case 'select':
        if (req.truncated) return tooBig();
        if (a[0]) s.db = a[0];
        return;
      case 'hello': {
        if (req.truncated) return tooBig();
        if (a[0]) s.protocol = a[0];
        for (let i = 1; i < a.length; i++) {
          const opt = lower(a[i]);
          if (opt === 'auth' && a[i + 2]) s.auth = [a[i + 1]!, a[i + 2]!];
          if (opt === 'setname' && a[i + 1]) s.name = a[i + 1];
          i += opt === 'auth' ? 2 : opt === 'setname' ? 1 : 0;
        }
        return;
      }
      case 'client':
        if (lower(a[0]) !== 'setname') return;
        if (req.truncated) return tooBig();
        if (a[1]) s.name = a[1];
        return;
      case 'readonly':
        s.readonly = true;
        return;
      case 'readwrite':
        s.readonly = false;
        return;
    }
  }
}

/** A command as a RESP array of bulk strings (how clients send commands). */
export function encodeCommand(words: readonly (Buffer | string)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${words.length}\r\n`)];
  for (const w of words) {
    const b = Buffer.isBuffer(w) ? w : Buffer.from(w);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Counts complete replies in a RESP stream (any RESP2/RESP3 reply, pushes included). */
class RespReplyCounter implements ReplyCounter {
  private readonly framer = new RespFramer();
  push(chunk: Uint8Array): number[] {
    return this.framer.push(chunk);
  }
  get broken(): string | null {
    return this.framer.broken;
  }
}

export const respContinue: ContinuePlugin = {
  name: 'resp',
  createTracker: (context) => new RespTracker(context),
  createReplyCounter: () => new RespReplyCounter(),
};
