// The reliable server (seed 004's application process AP_P, and AP_B after a takeover): takes
// requests over TCP (reliable-wire.ts), applies each once (reliable-state.ts: the application
// and the duplicate table), appends the record through the MirroredLog, and sends the reply only
// once that commit is acknowledged (normal: the backup holds it; primary-only / backup-only:
// durable here). A resent duplicate gets the stored reply (FIG. 15), after the same commit.
//
// Every client that connects is told first whether this server is an ordinary primary (READY)
// or one that recovered from a takeover (RECOVERED, seed step 429: the recovery signal); either
// way the client then resends what it has outstanding (step 540).
//
// If the log fails (an append rejected: EMIRRORFAILED, EMIRRORCLOSED) the in-memory state holds
// a request whose record may not exist; if the application throws, its state may be half
// changed. Either way the server stops (every client gets ERROR unavailable and is closed;
// later connections too) and must be rebuilt from the log.
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import type { MirroredLog } from '../log/mirrored-log.js';
import { ReliableState } from './reliable-state.js';
import { ReliableFrameReader, ReliableProtocolError, SERVER_ACCEPTS, encodeReliable, type ReliableMessage, type ReliableRejection } from './reliable-wire.js';

export interface ReliableServerOptions<S> {
  /** The log every applied request goes through (open; the server does not close it). */
  log: Pick<MirroredLog, 'append'>;
  /** The state to serve: a new ReliableState, or one rebuilt by replaying the log (takeOver's replay). */
  state: ReliableState<S>;
  host: string;
  /** TCP port; 0 picks a free one (read `port`). */
  port: number;
  /** This server's node name (1..64 bytes) and incarnation, told to clients. */
  node: string;
  incarnation: bigint;
  /**
   * Set after a takeover: clients get RECOVERED (the recovery signal, seed step 429) with this
   * LSN (every record below was replayed) instead of READY.
   */
  recoveredLsn?: number;
  /** The largest request body, bytes. Default 1 MiB. */
  maxBodyBytes?: number;
}

export interface ReliableServerStats {
  connections: number;
  requests: number;
  /** Replies sent (ok), stale answers included in `stale`. */
  replies: number;
  /** Connections closed for bad input, by reason. */
  rejected: Record<ReliableRejection, number>;
}

export interface ReliableServerEvents {
  /** A connection sent bad bytes: it was sent ERROR protocol and closed, nothing of it applied. */
  rejected: [info: { remote: string; error: ReliableProtocolError }];
  /** The log refused an append: the server stopped. */
  failed: [error: Error];
}

interface Conn {
  socket: net.Socket;
  remote: string;
  reader: ReliableFrameReader;
  clientId: string | null;
  closed: Promise<void>;
}

export class ReliableServer<S> extends EventEmitter<ReliableServerEvents> {
  readonly stats: ReliableServerStats = {
    connections: 0,
    requests: 0,
    replies: 0,
    rejected: { short: 0, length: 0, magic: 0, version: 0, type: 0, body: 0, unexpected: 0 },
  };
  private readonly conns = new Set<Conn>();
  private failure: Error | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly options: ReliableServerOptions<S>,
    private readonly server: net.Server,
  ) {
    super();
    server.on('connection', (s) => this.onConnection(s));
  }

  /** Listens. Rejects with the listen error (EADDRINUSE...). */
  static async listen<S>(options: ReliableServerOptions<S>): Promise<ReliableServer<S>> {
    const server = net.createServer();
    server.listen(options.port, options.host);
    await once(server, 'listening'); // rejects with the listen error
    return new ReliableServer(options, server);
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** The state served (the application's and the duplicate table). */
  get state(): ReliableState<S> {
    return this.options.state;
  }

  get failed(): Error | null {
    return this.failure;
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** Stops listening and closes every connection (replies not yet sent are not sent). Resolves once all are closed. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((r) => this.server.close(() => r()));
      for (const c of this.conns) c.socket.destroy();
      await Promise.all([...this.conns].map((c) => c.closed));
      await closed;
    })();
    return this.closing;
  }

  private onConnection(socket: net.Socket): void {
    socket.setNoDelay(true);
    const conn: Conn = {
      socket,
      remote: `${socket.remoteAddress}:${socket.remotePort}`,
      reader: new ReliableFrameReader(SERVER_ACCEPTS, this.options.maxBodyBytes !== undefined ? { maxBodyBytes: this.options.maxBodyBytes } : {}),
      clientId: null,
      closed: new Promise((r) => socket.once('close', () => r())),
    };
    this.conns.add(conn);
    void conn.closed.then(() => this.conns.delete(conn));
    socket.on('error', () => {});
    if (this.closing || this.failure) {
      this.bye(conn, 'unavailable', this.failure ? `the server stopped: ${this.failure.message}` : 'the server is closing');
      return;
    }
    this.stats.connections++;
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('end', () => {
      const cut = conn.reader.finish();
      if (cut) this.reject(conn, cut);
      else socket.end();
    });
  }

  private onData(conn: Conn, chunk: Buffer): void {
    for (const r of conn.reader.push(chunk)) {
      if (!r.ok) {
        this.reject(conn, r.error);
        return;
      }
      if (!this.take(conn, r.message)) return;
    }
  }

  /** One checked message; false when the connection was closed. */
  private take(conn: Conn, m: ReliableMessage): boolean {
    if (m.type === 'hello') {
      if (conn.clientId !== null) return this.protocol(conn, 'a second HELLO');
      conn.clientId = m.clientId;
      const o = this.options;
      this.send(conn, o.recoveredLsn !== undefined ? { type: 'recovered', incarnation: o.incarnation, node: o.node, recoveredLsn: o.recoveredLsn } : { type: 'ready', incarnation: o.incarnation, node: o.node });
      return true;
    }
    if (m.type !== 'request') return this.protocol(conn, `a ${m.type} frame`);
    if (conn.clientId === null) return this.protocol(conn, 'a REQUEST before HELLO');
    if (this.failure) return false;
    this.stats.requests++;
    const clientId = conn.clientId;
    let h: ReturnType<ReliableState<S>['handle']>;
    try {
      h = this.options.state.handle(clientId, m.msgId, m.ackBelow, m.body);
    } catch (err) {
      // The application threw: its state may be half changed and nothing was logged. Stop, as
      // for a log failure; rebuild from the log (which replays only what was logged).
      this.fail(err instanceof Error ? err : new Error(String(err)));
      return false;
    }
    if (h.kind === 'stale') {
      this.send(conn, { type: 'reply', msgId: m.msgId, status: 'stale', body: Buffer.alloc(0) });
      return true;
    }
    if (h.kind === 'duplicate') {
      // The same commit as the first time: a reply never goes out before its record is acknowledged.
      h.entry.committed.then(() => this.reply(conn, m.msgId, h.entry.reply), () => {});
      return true;
    }
    let committed: Promise<unknown>;
    try {
      committed = this.options.log.append(h.record);
    } catch (err) {
      committed = Promise.reject(err);
    }
    h.store(committed);
    committed.then(
      () => this.reply(conn, m.msgId, h.reply),
      (err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))),
    );
    return true;
  }

  private reply(conn: Conn, msgId: number, body: Buffer): void {
    if (conn.socket.destroyed || this.failure) return; // the client resends on its next connection
    this.stats.replies++;
    this.send(conn, { type: 'reply', msgId, status: 'ok', body });
  }

  private send(conn: Conn, m: ReliableMessage): void {
    if (!conn.socket.destroyed) conn.socket.write(encodeReliable(m));
  }

  /** A well-formed frame out of order (a second HELLO, a REQUEST before HELLO). */
  private protocol(conn: Conn, what: string): false {
    this.reject(conn, new ReliableProtocolError('unexpected', `${what} from ${conn.remote} is not allowed here`));
    return false;
  }

  private reject(conn: Conn, error: ReliableProtocolError): void {
    this.stats.rejected[error.reason]++;
    this.emit('rejected', { remote: conn.remote, error });
    this.bye(conn, 'protocol', error.message);
  }

  /** ERROR, then the connection is closed (the bytes already written go first). */
  private bye(conn: Conn, code: 'protocol' | 'unavailable', reason: string): void {
    if (conn.socket.destroyed) return;
    conn.socket.end(encodeReliable({ type: 'error', code, reason }));
    conn.socket.setTimeout(1000, () => conn.socket.destroy());
    conn.socket.removeAllListeners('data');
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const c of this.conns) this.bye(c, 'unavailable', `the server stopped: ${err.message}`);
    this.emit('failed', err);
  }
}
