// Marks in the primary Redis' replication stream, with the wall-clock time around each (issue 12,
// seed 003 [0078]-[0080]: a request's log location range). The backup, continuing a dead
// primary's client connections, must not replay a write the primary applied and replicated but
// never answered; it finds which of the unanswered requests are in the stream by matching them
// against the stream's commands, and these probes tie stream offsets to times: a probe says "at
// some instant in [sentMs, receivedMs], the stream ended at `offset`, right after this PUBLISH".
//
// How: every intervalMs, ONE write of `PUBLISH takeover:probe <nonce>` and `INFO replication` on a
// persistent connection. Redis runs a client's pipelined commands back to back (one read of the
// query buffer, processed in a loop; nothing of another client in between), and PUBLISH is always
// propagated to replicas (Redis 7.0 pubsub.c publishCommand: forceCommandPropagation), before the
// next command runs (call() -> afterCommand -> propagatePendingCommands). So INFO's
// master_repl_offset is the stream offset of the PUBLISH's last byte. The connection never
// SELECTs: the PUBLISH runs in db 0, and the stream is in db 0 right after it (a `SELECT 0`
// precedes the PUBLISH in the stream when the stream was elsewhere).
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { canonicalAddress } from '../net/endpoint.js';
import { RespFramer } from '../net/resp-framer.js';
import { native } from '../native.js';
import { PROBE_CHANNEL } from '../net/shadow/replication-stream.js';
import { encodeCommand } from '../net/shadow/resp-continue.js';
import { parseInfo } from './redis-catch-up.js';

export interface RedisEndpoint {
  host: string;
  port: number;
}

/** One answered probe. */
export interface StreamProbe {
  /** 16 random bytes as 32 lowercase hex digits: the PUBLISH's message, new per probe. */
  nonce: string;
  /** The wall clock read just before the write (native.realtimeMs(): ms since the epoch, fractional; <= the true send instant). */
  sentMs: number;
  /**
   * The wall clock read once the whole reply was parsed (native.realtimeMs(): ms since the epoch,
   * fractional; >= the instant the reply arrived). The clock capture rings stamp frames with.
   */
  receivedMs: number;
  /** Round trip of the write to the parsed reply, in ms (fractional, monotonic clock). */
  rttMs: number;
  /** The primary's master_replid: the history the offset belongs to (a restart without persistence starts another). */
  replid: string;
  /** The primary's master_repl_offset after the PUBLISH: the stream offset of its last byte (bytes numbered from 1). */
  offset: number;
  /** The stream's database right after the PUBLISH (the probe connection never SELECTs). */
  db: 0;
  /** The probe connection's own end (its address canonical): where a mirror's copy of the probe comes from. */
  local: { address: string; port: number };
}

export interface StreamProbeStats {
  /** Probes answered and recorded. */
  probes: number;
  /** Failures: connection errors and closes, error replies, malformed replies, late replies. */
  errors: number;
  /** Connection attempts after the first. */
  reconnects: number;
  /** Ticks that sent nothing because the previous probe was still unanswered. */
  skippedTicks: number;
  connected: boolean;
  /** The last failure, in words, or null. */
  lastError: string | null;
}

export interface StreamProbeOptions {
  /** Time between probes, ms (default 50). */
  intervalMs?: number;
  /** Probes kept, the newest (default 60). */
  keep?: number;
  /** A reply (or a connection) not there after this many ms closes the connection and reconnects (default 2000). */
  replyTimeoutMs?: number;
  /** Reconnect delays, ms: the first, doubled per failure up to the max (defaults 50 and 2000). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

interface Outstanding {
  nonce: string;
  local: { address: string; port: number };
  sentMs: number;
  sentAt: number;
  chunks: Buffer[];
  framer: RespFramer;
  replies: number;
}

/** Bytes of the probe's PUBLISH in the stream (its nonce is always 32 hex digits): 77. */
export const PROBE_PUBLISH_BYTES = encodeCommand(['PUBLISH', PROBE_CHANNEL, '0'.repeat(32)]).length;

/**
 * A persistent probe of the primary's replication stream (see the file's comment). Starts at
 * once; never throws from its loop, never blocks, one probe outstanding at a time; reconnects
 * with backoff after any failure. `close()` ends it (no timer or socket left).
 */
export class ReplicationStreamProbe {
  private readonly intervalMs: number;
  private readonly keep: number;
  private readonly replyTimeoutMs: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly recorded: StreamProbe[] = [];
  private readonly counters = { probes: 0, errors: 0, reconnects: 0, skippedTicks: 0 };
  private lastError: string | null = null;
  private socket: net.Socket | null = null;
  private connected = false;
  private connectStarted = 0;
  private outstanding: Outstanding | null = null;
  private backoffMs: number;
  private interval: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private attempts = 0;
  /** The connections' own ends, the newest last (`${address}|${port}`, the address canonical). */
  private readonly locals: string[] = [];

  constructor(
    readonly primary: RedisEndpoint,
    options: StreamProbeOptions = {},
  ) {
    this.intervalMs = positive(options.intervalMs ?? 50, 'intervalMs');
    this.keep = positive(options.keep ?? 60, 'keep');
    this.replyTimeoutMs = positive(options.replyTimeoutMs ?? 2000, 'replyTimeoutMs');
    this.backoffMinMs = positive(options.backoffMinMs ?? 50, 'backoffMinMs');
    this.backoffMaxMs = Math.max(this.backoffMinMs, positive(options.backoffMaxMs ?? 2000, 'backoffMaxMs'));
    this.backoffMs = this.backoffMinMs;
    this.connect();
    this.interval = setInterval(() => this.tick(), this.intervalMs);
  }

  /**
   * Whether a client endpoint is one of this probe's connections (the current one or one of the
   * last 16: an old one's last segments may still be shadowed). Known from its 'connect' on.
   */
  isOwnClient(client: { address: string; port: number }): boolean {
    return this.locals.includes(`${canonicalAddress(client.address)}|${client.port}`);
  }

  /** The recorded probes, oldest first (a copy). */
  probes(): StreamProbe[] {
    return this.recorded.slice();
  }

  stats(): StreamProbeStats {
    return { ...this.counters, connected: this.connected, lastError: this.lastError };
  }

  /** Ends the probe: the timers cleared, the connection destroyed. Idempotent. */
  close(): void {
    this.closed = true;
    if (this.interval) clearInterval(this.interval);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.interval = this.reconnectTimer = null;
    this.socket?.destroy();
    this.socket = null;
    this.connected = false;
    this.outstanding = null;
  }

  private connect(): void {
    if (this.closed) return;
    if (this.attempts++ > 0) this.counters.reconnects++;
    const socket = net.connect({ host: this.primary.host, port: this.primary.port, noDelay: true, keepAlive: true });
    this.socket = socket;
    this.connectStarted = performance.now();
    socket.on('connect', () => {
      if (this.socket !== socket) return;
      this.connected = true;
      if (socket.localAddress !== undefined && socket.localPort !== undefined) {
        this.locals.push(`${canonicalAddress(socket.localAddress)}|${socket.localPort}`);
        if (this.locals.length > KEEP_LOCALS) this.locals.shift();
      }
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.socket === socket) this.guard(() => this.onData(chunk));
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (this.socket === socket) this.fail(`${err.code ?? err.message} on ${this.primary.host}:${this.primary.port}`);
    });
    socket.on('close', () => {
      if (this.socket === socket) this.fail(`connection to ${this.primary.host}:${this.primary.port} closed`);
    });
  }

  /** A failure: counted, the connection dropped, a reconnect scheduled after the backoff. */
  private fail(why: string): void {
    this.counters.errors++;
    this.lastError = why;
    const socket = this.socket;
    this.socket = null;
    this.connected = false;
    this.outstanding = null;
    socket?.destroy();
    if (this.closed || this.reconnectTimer) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMaxMs, this.backoffMs * 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.guard(() => this.connect());
    }, delay);
  }

  private guard(f: () => void): void {
    try {
      f();
    } catch (err) {
      this.fail(`internal: ${(err as Error).message}`);
    }
  }

  private tick(): void {
    this.guard(() => {
      if (this.closed || !this.socket) return;
      const now = performance.now();
      if (!this.connected) {
        if (now - this.connectStarted > this.replyTimeoutMs) this.fail(`no connection to ${this.primary.host}:${this.primary.port} in ${this.replyTimeoutMs} ms`);
        return;
      }
      if (this.outstanding) {
        this.counters.skippedTicks++;
        if (now - this.outstanding.sentAt > this.replyTimeoutMs) this.fail(`no probe reply in ${this.replyTimeoutMs} ms`);
        return;
      }
      const nonce = randomBytes(16).toString('hex');
      const bytes = Buffer.concat([encodeCommand(['PUBLISH', PROBE_CHANNEL, nonce]), encodeCommand(['INFO', 'replication'])]);
      const [address, port] = splitLocal(this.locals.at(-1) ?? '|0');
      const sentMs = native.realtimeMs();
      this.outstanding = { nonce, local: { address, port }, sentMs, sentAt: performance.now(), chunks: [], framer: new RespFramer(), replies: 0 };
      this.socket.write(bytes);
    });
  }

  private onData(chunk: Buffer): void {
    const o = this.outstanding;
    if (!o) return this.fail('bytes from the primary with no probe outstanding');
    o.chunks.push(chunk);
    o.replies += o.framer.push(chunk).length;
    if (o.framer.broken) return this.fail(`the primary's reply is not RESP: ${o.framer.broken}`);
    if (o.replies < 2) return;
    if (o.replies > 2 || !o.framer.between) return this.fail('more bytes from the primary than the probe\'s two replies');
    const receivedMs = native.realtimeMs();
    const rttMs = performance.now() - o.sentAt;
    this.outstanding = null;
    const reply = readProbeReply(Buffer.concat(o.chunks));
    if (typeof reply === 'string') {
      // An error reply (LOADING, NOAUTH, ...): the connection stays, the next tick tries again.
      this.counters.errors++;
      this.lastError = reply;
      return;
    }
    this.recorded.push({ nonce: o.nonce, sentMs: o.sentMs, receivedMs, rttMs, replid: reply.replid, offset: reply.offset, db: 0, local: o.local });
    if (this.recorded.length > this.keep) this.recorded.shift();
    this.counters.probes++;
    this.backoffMs = this.backoffMinMs;
  }
}

/** The two replies (`:<subscribers>` and INFO's bulk string), framed already: the INFO fields, or why not. */
function readProbeReply(b: Buffer): { replid: string; offset: number } | string {
  const eol = b.indexOf('\r\n');
  const first = b.subarray(0, eol).toString('latin1');
  if (!first.startsWith(':')) return `PUBLISH answered ${JSON.stringify(first.slice(0, 120))}`;
  const rest = b.subarray(eol + 2);
  const eol2 = rest.indexOf('\r\n');
  const head = rest.subarray(0, eol2).toString('latin1');
  if (!head.startsWith('$')) return `INFO replication answered ${JSON.stringify(head.slice(0, 120))}`;
  const info = parseInfo(rest.subarray(eol2 + 2, rest.length - 2).toString('latin1'));
  const replid = info.get('master_replid') ?? '';
  const offset = Number(info.get('master_repl_offset'));
  if (!/^[0-9a-f]{40}$/.test(replid)) return `INFO replication shows no master_replid (${JSON.stringify(replid)})`;
  if (!Number.isSafeInteger(offset) || offset < 1) return `INFO replication shows master_repl_offset ${JSON.stringify(info.get('master_repl_offset'))}: no replication backlog, the PUBLISH is in no stream`;
  return { replid, offset };
}

/** Own ends of past connections remembered (isOwnClient). */
const KEEP_LOCALS = 16;

/** `${address}|${port}` back into its parts (the address may hold colons, never a bar). */
function splitLocal(key: string): [string, number] {
  const bar = key.lastIndexOf('|');
  return [key.slice(0, bar), Number(key.slice(bar + 1))];
}

function positive(n: number, what: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${what} must be a positive number (got ${n})`);
  return n;
}
