// The RESP (Redis) continue plugin (issue 12): pairs a connection's requests with its replies in
// order (Redis answers each command once, in order, also when pipelined), so the shadow knows
// which requests a dead server answered, which to replay on a new upstream, and the session state
// (login, database, protocol, name, READONLY) to give that upstream first. Connections whose
// replies cannot be paired with requests (pub/sub, MONITOR, CLIENT REPLY OFF, RESP3 pushes) or
// that sit inside server-side state it cannot rebuild (MULTI, WATCH) are blocked. Spec:
// https://redis.io/docs/latest/develop/reference/protocol-spec/ and the command pages it links.
import { RespFramer } from '../resp-framer.js';
import type { ContinuePlugin, ExchangeTracker, ReplyCounter, SessionPreamble } from './exchange-tracker.js';
import { RespRequestFramer, type RespRequest } from './resp-request.js';

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

class RespTracker implements ExchangeTracker {
  private readonly requests = new RespRequestFramer((name) => SESSION_COMMANDS.has(name));
  private readonly replies = new RespFramer({
    listener: { value: (type, depth, length) => this.onReplyValue(type, depth, length), end: (at) => this.onReply(at) },
  });
  /** Requests not answered yet, oldest at `head`. */
  private pending: (RespRequest | undefined)[] = [];
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

  clientData(chunk: Uint8Array): void {
    if (this.sticky) return;
    for (const req of this.requests.push(chunk)) this.onRequest(req);
    if (this.requests.broken && !this.sticky) this.sticky = `client stream not RESP requests: ${this.requests.broken}`;
  }

  serverData(chunk: Uint8Array): void {
    if (this.sticky) return;
    this.serverBase = this.replies.offset;
    this.replies.push(chunk);
    if (this.replies.broken && !this.sticky) this.sticky = `server stream not RESP: ${this.replies.broken}`;
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

  private onRequest(req: RespRequest): void {
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
    this.pending.push(req);
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
  createTracker: () => new RespTracker(),
  createReplyCounter: () => new RespReplyCounter(),
};
