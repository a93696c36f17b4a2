// The agent's end of the relay keeper (relay-keeper.ts): one connection to its socket, started
// when the agent starts (a keeper of a previous life answers: its relays are listed) or when the
// first relay is handed over (no keeper answers: one is started, detached, in its own session, so
// that it outlives this process). Keeps the list of the keeper's relays current from its
// answers and `ended` messages, for `takeover status`.
//
// A handover (relayConnection's `keeper` option): the agent's relay duplicates both sockets' fds,
// destroys its net.Sockets, and sends `take` with the duplicates' numbers and the bytes it had
// read but not delivered. The keeper answers `taken` (the agent closes its duplicates: the
// connection is the keeper's) or `refused` (nothing taken: the agent relays it itself). When the
// keeper is lost before it answers, nobody can tell whether it took them: the relay ends
// (EKEEPERLOST), and closing the agent's duplicates closes the connection if the keeper did not.
import { spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { closeSync, existsSync, openSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { keeperLine, parseKeeperReply, type KeeperRequest, type KeptRelayInfo, type RelayMeta } from './keeper-wire.js';

/** What a relay hands over: its sockets' fds (duplicates the keeper copies) and its unsent bytes. */
export interface HandOff {
  clientFd: number;
  upstreamFd: number;
  /** Read from the client, not yet written to the upstream. */
  toUpstream: Uint8Array;
  /** Read from the upstream, not yet written to the client. */
  toClient: Uint8Array;
  clientEof: boolean;
  upstreamEof: boolean;
  /** Bytes the relay had written each way before. */
  before: { clientBytes: number; upstreamBytes: number };
}

/** How a kept relay ended: the keeper's reason ('client ended', 'upstream error: ...'), the bytes relayed in all. */
export interface KeptEnd {
  reason: string;
  clientBytes: number;
  upstreamBytes: number;
}

/** A relay the keeper holds. */
export interface KeptRelay {
  readonly id: string;
  /** Resolves (never rejects) when the keeper says it ended, or the keeper is lost ('relay keeper lost: ...'). */
  readonly ended: Promise<KeptEnd>;
  /** Asks the keeper to close it (FIN, or RST with unread bytes); `ended` follows. */
  close(reason: string): void;
}

/** relayConnection's `keeper` option: hands one relay's steady state to the keeper. */
export type RelayHandOff = (h: HandOff) => Promise<KeptRelay>;

/**
 * A handover or a start that failed (code): EKEEPERREFUSED (the keeper took nothing: the caller's
 * fds are as they were), EKEEPERLOST (the connection to the keeper ended before its answer),
 * EKEEPERSTART (no keeper answers and the one started did not come up).
 */
export class KeeperError extends Error {
  override readonly name = 'KeeperError';
  constructor(
    readonly code: 'EKEEPERREFUSED' | 'EKEEPERLOST' | 'EKEEPERSTART',
    message: string,
  ) {
    super(message);
  }
}

export interface KeeperClientOptions {
  /** The keeper's Unix socket. */
  socket: string;
  /** Where a keeper this client starts writes its log (appended). */
  logFile: string;
  /** How long a started keeper may take to answer (ms, default 5000). */
  startTimeoutMs?: number;
  /** A started keeper's `--idle-exit-ms` (default: the keeper's own, 10000; 0: never). */
  idleExitMs?: number;
}

interface Pending {
  resolve: (kept: KeptRelay) => void;
  reject: (err: KeeperError) => void;
}

export interface RelayKeeperClientEvents {
  /** A relay the keeper held ended: one this client handed over (`mine`), or another's (a previous life's). */
  ended: [KeptRelayInfo & { reason: string; mine: boolean }];
  /** The connection to the keeper ended; `held` relays it was known to hold are counted lost. */
  lost: [{ reason: string; held: number }];
  /** This client started a keeper (pid). */
  /**
   * This client started a keeper (pid). insideUnit: this process runs under systemd, so the
   * keeper is in its unit's cgroup, and a stop or restart of the unit kills it (KillMode=mixed).
   */
  started: [{ pid: number; logFile: string; insideUnit: boolean }];
}

export class RelayKeeperClient extends EventEmitter<RelayKeeperClientEvents> {
  private sock: net.Socket | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private readonly pending = new Map<string, Pending>();
  private readonly listWaiters: Array<(r: { pid: number; relays: KeptRelayInfo[] }) => void> = [];
  /** The keeper's relays as last known, by id. */
  private readonly known = new Map<string, KeptRelayInfo>();
  private readonly endings = new Map<string, (end: KeptEnd) => void>();
  /** The ids of the relays this client handed over (the keeper took them). */
  private readonly mine = new Set<string>();
  private next = 0;
  private keeperPid: number | undefined;
  private closed = false;

  constructor(private readonly options: KeeperClientOptions) {
    super();
  }

  /** The keeper's pid and the relays it holds, as last known (absent: not connected). */
  get held(): { pid: number; relays: KeptRelayInfo[] } | undefined {
    return this.sock && this.keeperPid !== undefined ? { pid: this.keeperPid, relays: [...this.known.values()] } : undefined;
  }

  /**
   * Connects when a keeper answers (a previous life's: its relays become known); starts none.
   * Resolves false when none answers.
   */
  async attach(): Promise<boolean> {
    try {
      await this.connection(false);
      return true;
    } catch {
      return false;
    }
  }

  /** A handOff for relays described by `meta` (relayConnection's `keeper` option). */
  handOff(meta: Omit<RelayMeta, 'since'>): RelayHandOff {
    return (h) => this.take(h, { ...meta, since: Date.now() });
  }

  /** Disconnects (the keeper keeps its relays); pending handovers fail with EKEEPERLOST. Idempotent. */
  close(): void {
    this.closed = true;
    this.sock?.destroy();
  }

  private async take(h: HandOff, meta: RelayMeta): Promise<KeptRelay> {
    const sock = await this.connection(true);
    const id = `${process.pid}.${Date.now().toString(36)}.${this.next++}`;
    const req: KeeperRequest = {
      op: 'take',
      id,
      pid: process.pid,
      clientFd: h.clientFd,
      upstreamFd: h.upstreamFd,
      toUpstream: Buffer.from(h.toUpstream).toString('base64'),
      toClient: Buffer.from(h.toClient).toString('base64'),
      clientEof: h.clientEof,
      upstreamEof: h.upstreamEof,
      meta,
      before: h.before,
    };
    const kept = new Promise<KeptRelay>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    sock.write(keeperLine(req));
    // Known from the take on, so that an `ended` right after `taken` finds it.
    this.known.set(id, { id, ...meta, ...h.before });
    return kept.catch((err: unknown) => {
      this.known.delete(id);
      throw err;
    });
  }

  private connection(start: boolean): Promise<net.Socket> {
    if (this.closed) return Promise.reject(new KeeperError('EKEEPERLOST', 'the relay keeper client is closed'));
    if (this.sock && !this.sock.destroyed) return Promise.resolve(this.sock);
    this.connecting ??= this.open(start).finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async open(start: boolean): Promise<net.Socket> {
    let sock = await connectOnce(this.options.socket).catch((err: NodeJS.ErrnoException) => {
      if (!start || (err.code !== 'ENOENT' && err.code !== 'ECONNREFUSED')) throw err;
      return undefined;
    });
    sock ??= await this.startKeeper();
    this.sock = sock;
    sock.on('error', () => {});
    createInterface({ input: sock, crlfDelay: Infinity })
      .on('error', () => {})
      .on('line', (line) => this.onLine(line));
    sock.once('close', () => this.onClose(sock));
    // The keeper's relays (a previous life's among them) and its pid.
    const listed = new Promise<{ pid: number; relays: KeptRelayInfo[] }>((r) => this.listWaiters.push(r));
    sock.write(keeperLine({ op: 'list' }));
    const gone = once(sock, 'close').then(() => {
      throw new KeeperError('EKEEPERLOST', `the relay keeper on ${this.options.socket} closed the connection before it listed its relays`);
    });
    gone.catch(() => undefined); // (the race below takes it; later, a close is onClose's)
    const { pid, relays } = await Promise.race([listed, gone]);
    this.keeperPid = pid;
    for (const r of relays) if (!this.known.has(r.id)) this.known.set(r.id, r);
    return sock;
  }

  private async startKeeper(): Promise<net.Socket> {
    const { socket, logFile } = this.options;
    const log = openSync(logFile, 'a', 0o600);
    let exited: string | undefined;
    try {
      // Its own session: a signal meant for the agent's process group (a Ctrl-C) does not reach it.
      const idle = this.options.idleExitMs === undefined ? [] : ['--idle-exit-ms', String(this.options.idleExitMs)];
      const child = spawn(process.execPath, [cliMain(), 'relay-keeper', '--socket', socket, ...idle], { detached: true, stdio: ['ignore', log, log] });
      child.once('error', (err) => (exited = err.message));
      child.once('exit', (code, signal) => (exited = `exited ${signal ?? code}`));
      child.unref();
      // Under systemd (INVOCATION_ID is set for a unit's processes) it lands in this unit's cgroup.
      if (child.pid !== undefined) this.emit('started', { pid: child.pid, logFile, insideUnit: process.env.INVOCATION_ID !== undefined });
    } finally {
      closeSync(log);
    }
    const deadline = Date.now() + (this.options.startTimeoutMs ?? 5000);
    for (;;) {
      const sock = await connectOnce(socket).catch(() => undefined);
      if (sock) return sock;
      if (exited !== undefined || Date.now() > deadline) {
        throw new KeeperError('EKEEPERSTART', `the relay keeper did not come up on ${socket} (${exited ?? 'no answer in time'}; its log: ${logFile})`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private onLine(line: string): void {
    let msg;
    try {
      msg = parseKeeperReply(line);
    } catch {
      return; // not the keeper's (it is validated on its side); nothing to act on
    }
    if (msg.op === 'relays') return this.listWaiters.shift()?.(msg);
    if (msg.op === 'taken' || msg.op === 'refused') {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.op === 'refused') return p.reject(new KeeperError('EKEEPERREFUSED', `the relay keeper refused the relay: ${msg.reason}`));
      const id = msg.id;
      this.mine.add(id);
      const ended = new Promise<KeptEnd>((r) => this.endings.set(id, r));
      return p.resolve({ id, ended, close: (reason) => void this.sock?.write(keeperLine({ op: 'close', ids: [id], reason: reason.slice(0, 500) })) });
    }
    if (msg.op === 'ended') {
      const info = this.known.get(msg.id);
      this.known.delete(msg.id);
      const end = { reason: msg.reason, clientBytes: msg.clientBytes, upstreamBytes: msg.upstreamBytes };
      this.endings.get(msg.id)?.(end);
      this.endings.delete(msg.id);
      if (info) this.emit('ended', { ...info, ...end, mine: this.mine.delete(msg.id) });
    }
  }

  private onClose(sock: net.Socket): void {
    if (this.sock !== sock) return;
    this.sock = undefined;
    const reason = this.closed ? 'the agent closed its connection to the relay keeper' : 'relay keeper lost: its connection closed';
    for (const p of this.pending.values()) p.reject(new KeeperError('EKEEPERLOST', reason));
    this.pending.clear();
    const held = this.known.size;
    if (!this.closed) {
      for (const [id, end] of this.endings) end({ reason, ...counts(this.known.get(id)) });
      this.endings.clear();
      this.known.clear();
      this.mine.clear();
      this.emit('lost', { reason, held });
    }
  }
}

function counts(r: KeptRelayInfo | undefined): { clientBytes: number; upstreamBytes: number } {
  return { clientBytes: r?.clientBytes ?? 0, upstreamBytes: r?.upstreamBytes ?? 0 };
}

function connectOnce(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.removeListener('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** The `takeover` command's script: dist/cli/main.js (from the TypeScript sources, the built one beside them). */
function cliMain(): string {
  const here = fileURLToPath(new URL('../../cli/main.js', import.meta.url));
  return existsSync(here) ? here : fileURLToPath(new URL('../../../dist/cli/main.js', import.meta.url));
}
