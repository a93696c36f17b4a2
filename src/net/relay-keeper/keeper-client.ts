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
// The keeper checks that the fds it copies by number are connected to the peers the take names,
// so a number this process closed and reused since is refused, never relayed.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { atNice } from '../../monitor/cpu-priority.js';
import { KEEPER_WIRE_VERSION, keeperLine, parseKeeperReply, type KeeperRequest, type KeptRelayInfo, type RelayMeta } from './keeper-wire.js';

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
export interface RelayHandOff {
  /** Whether a keeper is connected now: a handover would not wait for one to start. */
  readonly ready: boolean;
  /** Connects, starting a keeper when none answers (~0.3 s); rejects with a KeeperError (EKEEPERSTART). */
  connect(): Promise<void>;
  /** Hands the relay over; rejects with a KeeperError (EKEEPERREFUSED: nothing taken, or EKEEPERLOST). */
  take(h: HandOff): Promise<KeptRelay>;
}

/**
 * A handover or a start that failed (code): EKEEPERREFUSED (the keeper took nothing: it refused,
 * or the request was never sent; the caller's fds are as they were), EKEEPERLOST (the connection
 * to the keeper ended, or the keeper did not answer in time, after the request was sent: the
 * keeper is asked to close it should it have taken it), EKEEPERSTART (no keeper could be
 * reached: none answers and `start` is false, the one started did not come up, or it speaks
 * another version of the wire).
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
  /** Start a keeper when none answers (default true); false: a handover then fails with EKEEPERSTART, and the relay stays in this process. */
  start?: boolean;
  /** How long a started keeper may take to answer (ms, default 5000). */
  startTimeoutMs?: number;
  /** How long the keeper may take to list its relays, and to answer a take (ms, default 3000). */
  answerTimeoutMs?: number;
  /** A started keeper's `--idle-exit-ms` (default: the keeper's own, 10000; 0: never). */
  idleExitMs?: number;
  /** The nice value a started keeper runs at (atNice; default this thread's): the agent's start nice, as its instances. */
  nice?: number;
}

interface Pending {
  resolve: (kept: KeptRelay) => void;
  reject: (err: KeeperError) => void;
  timer: NodeJS.Timeout;
}

export interface RelayKeeperClientEvents {
  /** A relay the keeper held ended: one this client handed over (`mine`), or another's (a previous life's). */
  ended: [KeptRelayInfo & { reason: string; mine: boolean }];
  /** The connection to the keeper ended; `held` relays it was known to hold are counted lost. */
  lost: [{ reason: string; held: number }];
  /** A handover the keeper refused, or could not be made (the relay stays in this process): why. */
  refused: [{ client: string; reason: string }];
  /** A handover sent whose answer never came (the keeper lost, or silent): that connection ends. */
  dropped: [{ client: string; reason: string }];
  /**
   * The keeper was replaced (`takeover relay-keeper --replace`): this client follows its
   * relays to the new keeper `pid`, which lists `relays`.
   */
  replaced: [{ from: number; pid: number; relays: number }];
  /** attach() found a keeper it could not use (another version, no list in time): why. */
  unusable: [{ reason: string }];
  /**
   * This client started a keeper (pid). insideUnit: this process runs under systemd, so the
   * keeper is in its unit's cgroup, and a stop or restart of the unit kills it (KillMode=mixed).
   */
  started: [{ pid: number; logFile: string; insideUnit: boolean }];
}

type Listed = { version: number; pid: number };

export class RelayKeeperClient extends EventEmitter<RelayKeeperClientEvents> {
  private sock: net.Socket | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private readonly pending = new Map<string, Pending>();
  /** The connection being opened, and who waits for its last `relays` page. */
  private listing: { sock: net.Socket; done: (r: Listed) => void } | undefined;
  /** The keeper's relays as last known, by id. */
  private readonly known = new Map<string, KeptRelayInfo>();
  /** known's clients (RelayMeta.client), counted: holds(). */
  private readonly clients = new Map<string, number>();
  private readonly endings = new Map<string, (end: KeptEnd) => void>();
  /** The ids of the relays this client handed over (the keeper took them). */
  private readonly mine = new Set<string>();
  private next = 0;
  private keeperPid: number | undefined;
  /** The keeper's last `replaced`: the pid of its replacement, which its connection's close then leads to. */
  private replacedBy: number | undefined;
  /** While follow() looks for a replaced keeper's replacement: nothing starts a keeper. */
  private following = false;
  /** The ids the keeper listed when this client last connected. */
  private listed = new Set<string>();
  private closed = false;
  /** The last failure to reach a keeper, and when: relays asking within START_BACKOFF_MS get it at once (no spawn storm). */
  private failed: { at: number; error: Error } | undefined;

  constructor(private readonly options: KeeperClientOptions) {
    super();
  }

  /**
   * The keeper's pid and the relays it holds, as last known (absent: not connected). Not the
   * handovers still waiting for `taken`: until then the connection is the agent's, and ends with
   * it.
   */
  get held(): { pid: number; relays: KeptRelayInfo[] } | undefined {
    if (!this.connected) return undefined;
    return { pid: this.keeperPid!, relays: [...this.known.values()].filter((r) => !this.pending.has(r.id)) };
  }

  /** Whether the keeper is known to hold a relay of this client (ADDRESS:PORT, as in RelayMeta.client). */
  holds(client: string): boolean {
    return this.clients.has(client);
  }

  /**
   * Connects when a keeper answers (a previous life's: its relays become known); starts none.
   * Resolves false when none answers, or it speaks another version, or it did not list its
   * relays within answerTimeoutMs.
   */
  async attach(): Promise<boolean> {
    try {
      await this.connection(false);
      return true;
    } catch (err) {
      // None there is the usual case; one there that cannot be used is worth saying.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ECONNREFUSED') this.emit('unusable', { reason: (err as Error).message });
      return false;
    }
  }

  /** A handOff for relays described by `meta` (relayConnection's `keeper` option). */
  handOff(meta: Omit<RelayMeta, 'since'>): RelayHandOff {
    const connected = () => this.connected;
    return {
      get ready() {
        return connected();
      },
      connect: async () => {
        try {
          await this.connection(this.options.start ?? true);
        } catch (err) {
          const e = err instanceof KeeperError ? err : new KeeperError('EKEEPERSTART', `no relay keeper answers on ${this.options.socket}: ${(err as Error).message}${this.options.start === false ? ' (relayKeeper.start is false: the agent starts none)' : ''}`);
          this.emit('refused', { client: meta.client, reason: e.message });
          throw e;
        }
      },
      take: (h) => this.take(h, { ...meta, since: Date.now() }),
    };
  }

  /** Disconnects (the keeper keeps its relays); pending handovers fail with EKEEPERLOST. Idempotent. */
  close(): void {
    this.closed = true;
    this.sock?.destroy();
  }

  private get connected(): boolean {
    return this.keeperPid !== undefined && this.sock !== undefined && !this.sock.destroyed;
  }

  private take(h: HandOff, meta: RelayMeta): Promise<KeptRelay> {
    const sock = this.sock;
    if (!this.connected || !sock) return Promise.reject(new KeeperError('EKEEPERREFUSED', 'no relay keeper connected: nothing was sent'));
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
    const ms = this.options.answerTimeoutMs ?? 3000;
    const kept = new Promise<KeptRelay>((resolve, reject) => {
      // Decided after the loop's next poll: after a stall of this process, the answer may be
      // waiting in the socket when the timer runs (timers run before the poll).
      const timer = setTimeout(() => setImmediate(() => {
        if (!this.pending.delete(id)) return;
        // It may take it yet (a keeper held up): then it closes it, as the relay here ends.
        sock.write(keeperLine({ op: 'close', ids: [id], reason: `the agent gave up waiting after ${ms} ms` }));
        this.forget(id);
        reject(new KeeperError('EKEEPERLOST', `the relay keeper did not answer in ${ms} ms`));
      }), ms);
      this.pending.set(id, { resolve, reject, timer });
    });
    sock.write(keeperLine(req));
    // Known from the take on, so that an `ended` right after `taken` finds it.
    this.remember({ id, ...meta, ...h.before });
    return kept.catch((err: KeeperError) => {
      this.forget(id);
      if (err.code === 'EKEEPERREFUSED') this.emit('refused', { client: meta.client, reason: err.message });
      else if (!this.closed) this.emit('dropped', { client: meta.client, reason: err.message });
      throw err;
    });
  }

  private remember(r: KeptRelayInfo): void {
    if (this.known.has(r.id)) return;
    this.known.set(r.id, r);
    this.clients.set(r.client, (this.clients.get(r.client) ?? 0) + 1);
  }

  /** Drops a relay from what is known; returns what was known of it. */
  private forget(id: string): KeptRelayInfo | undefined {
    const r = this.known.get(id);
    if (!r) return undefined;
    this.known.delete(id);
    const n = (this.clients.get(r.client) ?? 1) - 1;
    if (n > 0) this.clients.set(r.client, n);
    else this.clients.delete(r.client);
    return r;
  }

  private connection(start: boolean): Promise<net.Socket> {
    if (this.closed) return Promise.reject(new KeeperError('EKEEPERLOST', 'the relay keeper client is closed'));
    // Following a replaced keeper: its replacement takes the socket path in a moment; a keeper
    // started meanwhile would be a second one.
    if (this.following) start = false;
    if (this.sock && !this.sock.destroyed && this.keeperPid !== undefined) return Promise.resolve(this.sock);
    if (start && this.failed && performance.now() - this.failed.at < START_BACKOFF_MS) return Promise.reject(this.failed.error);
    this.connecting ??= this.open(start)
      // A keeper that closed before it listed is one dying (its listener still there a moment
      // after its connections closed: a SIGKILL's exit): looked for once more, and started if gone.
      .catch((err: KeeperError) => (start && err.code === 'EKEEPERLOST' ? new Promise((r) => setTimeout(r, DYING_KEEPER_MS)).then(() => this.open(start)) : Promise.reject(err)))
      .then(
        (sock) => {
          this.failed = undefined;
          return sock;
        },
        (err: Error) => {
          // (attach()'s look, which starts nothing, is no reason to hold back a start.)
          if (start) this.failed = { at: performance.now(), error: err };
          throw err;
        },
      )
      .finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async open(start: boolean): Promise<net.Socket> {
    let sock = await connectOnce(this.options.socket).catch((err: NodeJS.ErrnoException) => {
      if (!start || (err.code !== 'ENOENT' && err.code !== 'ECONNREFUSED')) throw err;
      return undefined;
    });
    sock ??= await this.startKeeper();
    // It becomes this.sock once it has listed its relays in this version: until then a close
    // is only open()'s failure, not the loss of a keeper (no `lost`).
    sock.on('error', () => {});
    createInterface({ input: sock, crlfDelay: Infinity })
      .on('error', () => {})
      .on('line', (line) => this.onLine(line, sock));
    sock.once('close', () => this.onClose(sock));
    // The keeper's version, pid and relays (a previous life's among them), within the bound.
    const ms = this.options.answerTimeoutMs ?? 3000;
    let timer: NodeJS.Timeout | undefined;
    let listed: Listed;
    try {
      listed = await new Promise<Listed>((resolve, reject) => {
        this.listed = new Set();
        this.listing = { sock, done: resolve };
        timer = setTimeout(() => reject(new KeeperError('EKEEPERSTART', `the relay keeper on ${this.options.socket} did not list its relays in ${ms} ms`)), ms);
        sock.once('close', () => reject(new KeeperError('EKEEPERLOST', `the relay keeper on ${this.options.socket} closed the connection before it listed its relays`)));
        sock.write(keeperLine({ op: 'list' }));
      });
      if (listed.version !== KEEPER_WIRE_VERSION) {
        throw new KeeperError('EKEEPERSTART', `the relay keeper on ${this.options.socket} (pid ${listed.pid}) speaks version ${listed.version} of the wire, this process ${KEEPER_WIRE_VERSION}: relays stay here until it is replaced (stopping it closes the connections it holds)`);
      }
    } catch (err) {
      sock.destroy();
      // What its pages had listed (onLine records them as they come).
      this.known.clear();
      this.clients.clear();
      throw err;
    } finally {
      clearTimeout(timer);
      this.listing = undefined;
    }
    this.sock = sock;
    this.keeperPid = listed.pid;
    return sock;
  }

  private async startKeeper(): Promise<net.Socket> {
    const { socket, logFile } = this.options;
    const log = await open(logFile, 'a', 0o600);
    let exited: string | undefined;
    try {
      const idle = this.options.idleExitMs === undefined ? [] : ['--idle-exit-ms', String(this.options.idleExitMs)];
      // Its own session: a signal meant for the agent's process group (a Ctrl-C) does not reach it.
      const child = atNice(this.options.nice, () => spawn(process.execPath, [cliMain(), 'relay-keeper', '--socket', socket, ...idle], { detached: true, stdio: ['ignore', log.fd, log.fd] }));
      child.once('error', (err) => (exited = err.message));
      child.once('exit', (code, signal) => (exited = `exited ${signal ?? code}`));
      child.unref();
      // Under systemd (INVOCATION_ID is set for a unit's processes) it lands in this unit's cgroup.
      if (child.pid !== undefined) this.emit('started', { pid: child.pid, logFile, insideUnit: process.env.INVOCATION_ID !== undefined });
    } finally {
      await log.close();
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

  private onLine(line: string, sock: net.Socket): void {
    const l = this.listing?.sock === sock ? this.listing : undefined;
    if (!l && sock !== this.sock) return; // (a connection given up on)
    let msg;
    try {
      msg = parseKeeperReply(line);
    } catch {
      // A keeper of another version may list in another shape: its version is read leniently.
      const other = otherVersion(line);
      if (l && other) l.done(other);
      return;
    }
    if (msg.op === 'replaced') {
      if (sock === this.sock) this.replacedBy = msg.pid;
      return;
    }
    if (msg.op === 'relays') {
      if (!l) return;
      // Recorded as they come: an `ended` right after the last page then finds its relay.
      if (msg.version === KEEPER_WIRE_VERSION) {
        for (const r of msg.relays) {
          this.remember(r);
          this.listed.add(r.id);
        }
      }
      if (!msg.more || msg.version !== KEEPER_WIRE_VERSION) l.done({ version: msg.version, pid: msg.pid });
      return;
    }
    if (msg.op === 'taken' || msg.op === 'refused' || (msg.op === 'error' && msg.id !== undefined)) {
      const id = msg.id!;
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      clearTimeout(p.timer);
      if (msg.op !== 'taken') return p.reject(new KeeperError('EKEEPERREFUSED', `the relay keeper refused the relay: ${msg.reason}`));
      this.mine.add(id);
      const ended = new Promise<KeptEnd>((r) => this.endings.set(id, r));
      return p.resolve({ id, ended, close: (reason) => void this.sock?.write(keeperLine({ op: 'close', ids: [id], reason: reason.slice(0, 500) })) });
    }
    if (msg.op === 'ended') {
      const info = this.forget(msg.id);
      const end = { reason: msg.reason, clientBytes: msg.clientBytes, upstreamBytes: msg.upstreamBytes };
      this.endings.get(msg.id)?.(end);
      this.endings.delete(msg.id);
      if (info) this.emit('ended', { ...info, ...end, mine: this.mine.delete(msg.id) });
    }
  }

  private onClose(sock: net.Socket): void {
    if (this.sock !== sock) return;
    const from = this.keeperPid!;
    const by = this.replacedBy;
    this.sock = undefined;
    this.keeperPid = undefined;
    this.replacedBy = undefined;
    const reason = this.closed ? 'the agent closed its connection to the relay keeper' : 'relay keeper lost: its connection closed';
    // (The handovers not yet answered are reported as dropped, each, by take().)
    const held = this.known.size - this.pending.size;
    const unanswered = new Set(this.pending.keys());
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new KeeperError('EKEEPERLOST', reason));
    }
    this.pending.clear();
    if (this.closed) return;
    if (by !== undefined) void this.follow(from, by, held, unanswered);
    else this.loseAll(reason, held);
  }

  /** The keeper is gone, and with it every relay it held: each ends with `reason`. */
  private loseAll(reason: string, held: number): void {
    for (const [id, end] of this.endings) end({ reason, ...counts(this.known.get(id)) });
    this.endings.clear();
    this.known.clear();
    this.clients.clear();
    this.mine.clear();
    this.emit('lost', { reason, held });
  }

  /**
   * The keeper said it was replaced (`replaced`) by `by`, which listens on the same socket and
   * holds its relays under the same ids: this client connects to it and lists them. A relay it
   * does not list ended; `lost` when it does not answer.
   */
  private async follow(from: number, by: number, held: number, unanswered: ReadonlySet<string>): Promise<void> {
    const before = new Map([...this.known].filter(([id]) => !unanswered.has(id)));
    // The new keeper takes the socket path once the old one has let it go: tried again until then.
    const deadline = performance.now() + FOLLOW_MS;
    this.following = true;
    try {
      for (;;) {
        try {
          await this.connection(false);
          break;
        } catch (err) {
          for (const r of before.values()) this.remember(r); // (a failed listing forgets them)
          if (this.closed) return;
          if (performance.now() > deadline) return this.loseAll(`relay keeper lost: it was replaced by pid ${by}, which did not answer in ${FOLLOW_MS} ms: ${(err as Error).message}`, held);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } finally {
      this.following = false;
    }
    for (const [id, r] of before) {
      if (this.listed.has(id)) continue;
      this.forget(id);
      const end = { reason: `relay keeper replaced: not held by the new keeper (pid ${this.keeperPid}) when this agent connected to it (it ended meanwhile, or was not taken)`, ...counts(r) };
      this.endings.get(id)?.(end);
      this.endings.delete(id);
      this.emit('ended', { ...r, ...end, mine: this.mine.delete(id) });
    }
    this.emit('replaced', { from, pid: this.keeperPid!, relays: this.known.size });
  }
}

/**
 * How long a client tries to reach the keeper that replaced the one it was connected to (ms):
 * the replacement renames its socket into place as the old one exits, about 0.2 s after it said
 * `replaced` (its stop's grace), or once that exit is overdue (30 s).
 */
const FOLLOW_MS = 35_000;

/** How long after a keeper closed a connection before listing it is looked for again (ms). */
const DYING_KEEPER_MS = 100;

/** After a failure to reach a keeper, how long handovers fail at once before one tries again (ms). */
const START_BACKOFF_MS = 5000;

/** A `relays` answer of another wire version, read leniently (its version and pid). */
function otherVersion(line: string): Listed | undefined {
  try {
    const o = JSON.parse(line) as { op?: unknown; version?: unknown; pid?: unknown };
    if (o.op !== 'relays' || typeof o.version !== 'number' || o.version === KEEPER_WIRE_VERSION) return undefined;
    return { version: o.version, pid: typeof o.pid === 'number' ? o.pid : 0 };
  } catch {
    return undefined;
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
