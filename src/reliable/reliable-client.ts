// The reliable client (seed 004's client 54, method 500): a client ID, an increasing message ID
// per request, every message kept until its reply comes (outstanding), and on losing its server
// it tries the others in turn (the primary's and the backup's addresses, step 520) with a
// bounded backoff. A server's first word is READY or RECOVERED (the recovery signal, step 530);
// the client then resends every outstanding message in message-ID order (step 540) and goes on
// (step 550). The server's duplicate table answers those it had already applied with the
// stored reply; the caller gets exactly one reply per message (later copies are dropped).
//
// Loss of the server is noticed when its connection closes or fails (a killed process, a reset),
// or, with `replyTimeoutMs`, when the oldest message sent on the connection has had no reply for
// that long (a server or node gone silent with its connection open; a slow server is left too,
// which costs a reconnection and resends the duplicate table answers). The agent's failure
// detector would tell a silent node sooner and surer: a later block.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { CLIENT_ACCEPTS, ReliableFrameReader, checkClientId, encodeReliable, type ReliableMessage } from './reliable-wire.js';
import { resetIfSelfConnected, selfConnectError } from '../net/self-connect.js';

export interface ReliableClientOptions {
  /** The servers in the order to try them: the primary's address, then the backup's. */
  servers: Array<{ host: string; port: number }>;
  /** This client's ID (1..64 bytes of UTF-8), the same across its lives if it resumes message IDs. */
  clientId: string;
  /** The first message ID (default 1); a client that restarts must start above what it sent before. */
  firstMsgId?: number;
  /** Pause between tries after a server is lost or unreachable: from minMs doubling to maxMs. Default 20 .. 1,000 ms. */
  backoff?: { minMs?: number; maxMs?: number };
  /** connect() rejects if no server answered within this, ms. Default 10,000. */
  connectTimeoutMs?: number;
  /** The largest reply body, bytes. Default 1 MiB. */
  maxBodyBytes?: number;
  /**
   * A connection whose oldest message sent has waited this long for its reply is dropped and the
   * next server tried, ms. Default 0: never (only a closed or failed connection moves the client).
   */
  replyTimeoutMs?: number;
  /**
   * A connection that has not been greeted (READY / RECOVERED) this long after it was opened is
   * dropped and the next server tried, ms: a stopped process's listen backlog completes the TCP
   * handshake and then says nothing. Default 5,000; 0: never.
   */
  greetingTimeoutMs?: number;
}

/** Why a request or the client failed. */
export class ReliableClientError extends Error {
  override readonly name = 'ReliableClientError';
  constructor(
    readonly code: 'ERELIABLECLOSED' | 'ERELIABLESTALE' | 'ERELIABLETIMEOUT',
    message: string,
  ) {
    super(message);
  }
}

export interface ReliableClientStats {
  sent: number;
  /** Messages sent again after a (re)connection. */
  resent: number;
  replies: number;
  /** Replies for a message already answered (a resend answered twice): dropped. */
  duplicateReplies: number;
  /** Connections that got READY or RECOVERED. */
  connects: number;
  recoveredSignals: number;
  /** Connections lost or refused. */
  losses: number;
  /** Connections dropped for a reply that did not come within replyTimeoutMs. */
  replyTimeouts: number;
}

export interface ReliableClientEvents {
  /** A server answered (READY, or RECOVERED with `recoveredLsn`). */
  connected: [info: { server: number; node: string; incarnation: bigint; recoveredLsn: number | null; resending: number }];
  /** The connection to a server ended (or could not be made). */
  lost: [info: { server: number; error: string }];
}

interface Outstanding {
  msgId: number;
  body: Buffer;
  /** When it was last sent (performance.now()), or 0 if not on the current connection. */
  sentAt: number;
  resolve: (reply: Buffer) => void;
  reject: (err: Error) => void;
}

export class ReliableClient extends EventEmitter<ReliableClientEvents> {
  readonly stats: ReliableClientStats = { sent: 0, resent: 0, replies: 0, duplicateReplies: 0, connects: 0, recoveredSignals: 0, losses: 0, replyTimeouts: 0 };
  readonly clientId: string;
  /** Outstanding messages by ID; a Map keeps insertion order, which is ID order. */
  private readonly outstanding = new Map<number, Outstanding>();
  private nextId: number;
  private socket: net.Socket | null = null;
  private ready = false;
  private server = 0;
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readyWaiters: Array<() => void> = [];
  private sockets = new Set<Promise<void>>();
  private watch: NodeJS.Timeout | null = null;
  /** Why this side dropped the current connection (a reply timeout), for the 'lost' event. */
  private lostWhy: string | null = null;
  private dialledAt = 0;

  private constructor(private readonly options: ReliableClientOptions) {
    super();
    checkClientId(options.clientId);
    if (options.servers.length === 0) throw new RangeError('at least one server');
    this.clientId = options.clientId;
    this.nextId = options.firstMsgId ?? 1;
    if (!Number.isSafeInteger(this.nextId) || this.nextId < 1) throw new RangeError('firstMsgId must be a positive integer');
    const rt = options.replyTimeoutMs ?? 0;
    const gt = options.greetingTimeoutMs ?? 5000;
    if (!(rt >= 0) || !(gt >= 0)) throw new RangeError('replyTimeoutMs and greetingTimeoutMs must be 0 (off) or more');
    // Checked a few times per period: a silent server is left after the timeout to 1.25x it.
    const period = Math.min(rt || Infinity, gt || Infinity);
    if (period < Infinity) {
      this.watch = setInterval(() => this.checkSilence(rt, gt), Math.max(1, Math.floor(period / 4)));
      this.watch.unref();
    }
  }

  private checkSilence(replyMs: number, greetingMs: number): void {
    if (!this.socket) return;
    const now = performance.now();
    if (!this.ready) {
      if (greetingMs > 0 && now - this.dialledAt > greetingMs) {
        this.lostWhy = `no greeting (READY / RECOVERED) within ${greetingMs} ms`;
        this.socket.destroy();
      }
      return;
    }
    if (replyMs === 0) return;
    const timeoutMs = replyMs;
    for (const o of this.outstanding.values()) {
      if (o.sentAt > 0 && now - o.sentAt > timeoutMs) {
        this.stats.replyTimeouts++;
        this.lostWhy = `no reply to message ${o.msgId} within ${timeoutMs} ms`;
        this.socket.destroy();
      }
      return; // the oldest (Map order) decides
    }
  }

  /**
   * Creates the client and resolves once a server answered (READY or RECOVERED), trying
   * `servers` in turn. Rejects with RangeError on bad options, ReliableClientError
   * ERELIABLETIMEOUT after `connectTimeoutMs` (the client is closed then).
   */
  static async connect(options: ReliableClientOptions): Promise<ReliableClient> {
    const c = new ReliableClient(options);
    c.dial();
    const ms = options.connectTimeoutMs ?? 10_000;
    let t: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((r) => c.readyWaiters.push(r)),
        new Promise<never>((_r, reject) => (t = setTimeout(() => reject(new ReliableClientError('ERELIABLETIMEOUT', `no server answered within ${ms} ms`)), ms))),
      ]);
    } catch (err) {
      await c.close();
      throw err;
    } finally {
      clearTimeout(t);
    }
    return c;
  }

  /** Messages sent and not answered yet. */
  get outstandingCount(): number {
    return this.outstanding.size;
  }

  /** The ID the next request gets. */
  get nextMsgId(): number {
    return this.nextId;
  }

  /**
   * Sends one request (the body is copied) and resolves with its reply, exactly once, whichever
   * server gives it and however many times it had to be resent. Rejects with
   * ReliableClientError ERELIABLECLOSED when the client is closed before the reply, or
   * ERELIABLESTALE if a server says the ID is below what this client acknowledged (a bug: two
   * clients with one ID, or a restarted client reusing IDs).
   */
  request(body: Uint8Array): Promise<Buffer> {
    if (this.closed) return Promise.reject(new ReliableClientError('ERELIABLECLOSED', 'the client is closed'));
    const msgId = this.nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      const o: Outstanding = { msgId, body: Buffer.from(body), sentAt: 0, resolve, reject };
      this.outstanding.set(msgId, o);
      if (this.ready) this.send(o);
    });
  }

  /** Closes the connection; outstanding requests reject with ERELIABLECLOSED. Resolves once the socket is closed. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      if (this.watch) clearInterval(this.watch);
      this.socket?.destroy();
      const err = new ReliableClientError('ERELIABLECLOSED', 'the client closed before the reply');
      for (const o of this.outstanding.values()) o.reject(err);
      this.outstanding.clear();
    }
    await Promise.all(this.sockets);
  }

  /** The lowest outstanding ID (or the next one): every reply below it is held here. */
  private ackBelow(): number {
    for (const id of this.outstanding.keys()) return id;
    return this.nextId;
  }

  private send(o: Outstanding): void {
    this.stats.sent++;
    o.sentAt = performance.now();
    this.socket!.write(encodeReliable({ type: 'request', msgId: o.msgId, ackBelow: Math.min(this.ackBelow(), o.msgId), body: o.body }));
  }

  private dial(): void {
    if (this.closed) return;
    const index = this.server;
    const { host, port } = this.options.servers[index]!;
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    this.socket = socket;
    this.ready = false;
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    this.sockets.add(closed);
    void closed.then(() => this.sockets.delete(closed));
    const reader = new ReliableFrameReader(CLIENT_ACCEPTS, this.options.maxBodyBytes !== undefined ? { maxBodyBytes: this.options.maxBodyBytes } : {});
    this.lostWhy = null;
    this.dialledAt = performance.now();
    let why = 'closed';
    socket.on('connect', () => {
      if (resetIfSelfConnected(socket)) why = selfConnectError(host, port).message;
      else socket.write(encodeReliable({ type: 'hello', clientId: this.clientId }));
    });
    socket.on('error', (err) => (why = err.message));
    socket.on('data', (chunk: Buffer) => {
      for (const r of reader.push(chunk)) {
        if (!r.ok) {
          why = `bad bytes from the server: ${r.error.message}`;
          socket.destroy();
          return;
        }
        if (r.message.type === 'error') why = `the server said ${r.message.code}: ${r.message.reason}`;
        if (!this.take(socket, index, r.message)) {
          socket.destroy();
          return;
        }
      }
    });
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.ready = false;
      if (this.closed) return;
      this.stats.losses++;
      this.emit('lost', { server: index, error: this.lostWhy ?? why });
      for (const o of this.outstanding.values()) o.sentAt = 0;
      // Try the next server after a pause (bounded backoff): step 520.
      this.server = (index + 1) % this.options.servers.length;
      const min = this.options.backoff?.minMs ?? 20;
      const max = this.options.backoff?.maxMs ?? 1000;
      const wait = Math.min(max, min * 2 ** Math.min(this.attempt++, 20));
      this.timer = setTimeout(() => {
        this.timer = null;
        this.dial();
      }, wait);
    });
  }

  /** One message from the server; false to drop the connection. */
  private take(socket: net.Socket, index: number, m: ReliableMessage): boolean {
    if (m.type === 'ready' || m.type === 'recovered') {
      if (this.ready) return false; // a second greeting: not a server we understand
      this.ready = true;
      this.attempt = 0;
      this.stats.connects++;
      if (m.type === 'recovered') this.stats.recoveredSignals++;
      this.emit('connected', { server: index, node: m.node, incarnation: m.incarnation, recoveredLsn: m.type === 'recovered' ? m.recoveredLsn : null, resending: this.outstanding.size });
      // Step 540: everything outstanding, in message-ID order (the Map's order).
      for (const o of this.outstanding.values()) {
        this.stats.resent++;
        this.send(o);
      }
      for (const w of this.readyWaiters.splice(0)) w();
      return socket === this.socket;
    }
    if (m.type === 'error') return false; // the server said why; it closes; we try the next
    if (m.type !== 'reply' || !this.ready) return false;
    const o = this.outstanding.get(m.msgId);
    if (!o) {
      this.stats.duplicateReplies++;
      return true;
    }
    this.outstanding.delete(m.msgId);
    if (m.status === 'stale') {
      o.reject(new ReliableClientError('ERELIABLESTALE', `message ${m.msgId} is below what client ${this.clientId} acknowledged at the server`));
      return true;
    }
    this.stats.replies++;
    o.resolve(m.body);
    return true;
  }
}
