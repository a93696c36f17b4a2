// The relay keeper (`takeover relay-keeper`): a process apart from the agent that holds the
// continued connections' steady-state relays (the addon's SpliceRelay: client socket <-> upstream
// socket in the kernel), so that they outlive the agent: its restart (an upgrade of the agent, a
// config change), its crash, its planned stop. (Upgrading the keeper itself means stopping it.)
// The agent relays a continued connection itself while it still looks at its bytes (the
// preamble's replies, the first reply's check), then hands both sockets over (keeper-client.ts):
// the keeper copies them out of the agent with pidfd_getfd, checks that each is connected to the
// peer the agent named, starts the kernel relay, answers `taken`, and the agent closes its copies.
//
// It listens on a Unix socket (mode 0600) in the agent's state directory; one keeper per path
// (a second one exits, naming the first). It exits by itself once it holds no relay and no agent
// has been connected for `idleExitMs`, and on SIGTERM/SIGINT closes every relay it holds (each
// socket's close: FIN, or RST with bytes unread) and exits: stopping it ends those connections.
import { once } from 'node:events';
import { chmod, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import net from 'node:net';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { native, type NativeError, type NativeSpliceRelay, type SpliceEnd } from '../../native.js';
import { spliceEndReason } from '../shadow/connection-relay.js';
import { removeStaleSocket } from '../../unix-socket.js';
import { formatEndpoint, parseEndpoint, wireAddress } from '../endpoint.js';
import { KEEPER_LIST_PAGE, KEEPER_WIRE_VERSION, keeperLine, lineId, parseKeeperRequest, type KeeperReply, type KeptRelayInfo, type RelayMeta, type TakeRequest } from './keeper-wire.js';

/** How long a stopping keeper still reads (and refuses) takes before it ends its agents' connections, ms. */
const STOP_GRACE_MS = 200;

export interface RelayKeeperOptions {
  /** The Unix socket to listen on. */
  socket: string;
  log: Logger;
  /** Exit once no relay is held and no agent connected for this long (ms, default 10000; 0: never). */
  idleExitMs?: number;
}

interface Held {
  relay: NativeSpliceRelay;
  meta: RelayMeta;
  before: { clientBytes: number; upstreamBytes: number };
}

/** Another keeper answers on the path (code EKEEPERRUNNING). */
export class KeeperRunningError extends Error {
  override readonly name = 'KeeperRunningError';
  readonly code = 'EKEEPERRUNNING';
  constructor(readonly path: string) {
    super(`another relay keeper answers on ${path}`);
  }
}

export class RelayKeeper {
  private readonly held = new Map<string, Held>();
  private readonly agents = new Set<net.Socket>();
  private readonly server: net.Server;
  private idleTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private resolveStopped!: (why: string) => void;
  /** Resolves with the reason once the keeper has stopped (idle, or stop()). */
  readonly stopped = new Promise<string>((r) => (this.resolveStopped = r));

  private constructor(private readonly options: RelayKeeperOptions) {
    this.server = net.createServer((sock) => this.accept(sock));
  }

  /**
   * Listens on options.socket, replacing a stale socket file. Throws KeeperRunningError when a
   * keeper answers there, (code EEXIST) when the path is not a socket, (code ENOENT) when its
   * directory does not exist.
   */
  static async start(options: RelayKeeperOptions): Promise<RelayKeeper> {
    const k = new RelayKeeper(options);
    const dir = path.dirname(options.socket);
    if (!(await stat(dir).then((st) => st.isDirectory(), () => false))) {
      throw Object.assign(new Error(`relay keeper: ${dir} (the directory of --socket ${options.socket}) does not exist or is not a directory`), { code: 'ENOENT' });
    }
    await removeStaleSocket(options.socket, 'relay keeper', () => new KeeperRunningError(options.socket));
    k.server.listen(options.socket);
    await once(k.server, 'listening');
    await chmod(options.socket, 0o600);
    k.armIdle();
    options.log.info({ socket: options.socket, pid: process.pid }, `relay keeper listening on ${options.socket}`);
    return k;
  }

  /** The relays held now. */
  list(): KeptRelayInfo[] {
    return [...this.held].map(([id, h]) => ({ id, ...h.meta, ...this.counts(h) }));
  }

  /** Closes every relay (their sockets' close: FIN, or RST with unread bytes) and the listener. Idempotent. */
  async stop(why: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.idleTimer);
    const n = this.held.size;
    for (const [id, h] of this.held) {
      h.relay.close();
      this.ended(id, h, `relay keeper stopped (${why})`);
    }
    // No new agent; those connected get STOP_GRACE_MS in which a take already on its way is read
    // and refused (the agent then relays that connection itself), then end(), not destroy(): the
    // `ended` lines above and the refusals reach them first.
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    await new Promise((r) => setTimeout(r, STOP_GRACE_MS));
    for (const a of this.agents) a.end();
    const cut = setTimeout(() => {
      for (const a of this.agents) a.destroy();
    }, 1000);
    await closed;
    clearTimeout(cut);
    await rm(this.options.socket, { force: true });
    this.options.log.info({ closed: n }, `relay keeper stopped (${why}): ${n} connection(s) closed`);
    this.resolveStopped(why);
  }

  private accept(sock: net.Socket): void {
    if (this.stopping) return void sock.destroy();
    this.agents.add(sock);
    clearTimeout(this.idleTimer);
    sock.on('error', () => {});
    sock.once('close', () => {
      this.agents.delete(sock);
      this.armIdle();
    });
    const reply = (msg: KeeperReply) => void (sock.destroyed || sock.write(keeperLine(msg)));
    const rl = createInterface({ input: sock, crlfDelay: Infinity });
    rl.on('error', () => {});
    rl.on('line', (line) => {
      let req;
      try {
        req = parseKeeperRequest(line);
      } catch (err) {
        const id = lineId(line);
        this.options.log.warn({ err: (err as Error).message, ...(id ? { id } : {}) }, `relay keeper: request refused: ${(err as Error).message}`);
        return reply({ op: 'error', ...(id ? { id } : {}), reason: (err as Error).message.slice(0, 500) });
      }
      if (req.op === 'list') {
        const all = this.list();
        for (let i = 0; i === 0 || i < all.length; i += KEEPER_LIST_PAGE) {
          reply({ op: 'relays', version: KEEPER_WIRE_VERSION, pid: process.pid, relays: all.slice(i, i + KEEPER_LIST_PAGE), more: i + KEEPER_LIST_PAGE < all.length });
        }
        return;
      }
      if (req.op === 'close') {
        for (const id of req.ids) {
          const h = this.held.get(id);
          if (!h) continue;
          h.relay.close();
          this.ended(id, h, req.reason);
        }
        return;
      }
      reply(this.take(req));
    });
  }

  /**
   * Copies both fds out of the agent and starts the kernel relay; nothing is read before `taken`.
   * The fds are numbers in another process: each copy must be connected to the peer the agent
   * named (a number the agent closed and reused since would be another socket), or nothing is taken.
   */
  private take(req: TakeRequest): KeeperReply {
    const refused = (reason: string): KeeperReply => {
      this.options.log.warn({ id: req.id, client: req.meta.client, reason }, `relay keeper: relay of ${req.meta.client} refused: ${reason}`);
      return { op: 'refused', id: req.id, reason: reason.slice(0, 500) };
    };
    if (this.stopping) return refused('the relay keeper is stopping');
    if (this.held.has(req.id)) return refused(`relay ${req.id} is held already`);
    const borrowed: number[] = [];
    let relay: NativeSpliceRelay;
    try {
      borrowed.push(native.borrowFd(req.pid, req.clientFd));
      borrowed.push(native.borrowFd(req.pid, req.upstreamFd));
      const wrong = wrongPeer(borrowed[0]!, req.meta.client, 'client') ?? wrongPeer(borrowed[1]!, req.meta.upstream, 'upstream');
      if (wrong) return refused(`fd ${wrong.which === 'client' ? req.clientFd : req.upstreamFd} of pid ${req.pid} is not the ${wrong.which} socket: ${wrong.why}`);
      relay = new native.SpliceRelay(borrowed[0]!, borrowed[1]!);
    } catch (err) {
      return refused((err as Error).message);
    } finally {
      // SpliceRelay holds its own duplicates.
      for (const fd of borrowed) native.closeFd(fd);
    }
    const h: Held = { relay, meta: req.meta, before: req.before };
    try {
      relay.start(
        {
          aToB: Buffer.from(req.toUpstream, 'base64'),
          bToA: Buffer.from(req.toClient, 'base64'),
          aEof: req.clientEof,
          bEof: req.upstreamEof,
        },
        (err: NativeError | null, end: SpliceEnd) => this.ended(req.id, h, spliceEndReason(err, end)),
      );
    } catch (err) {
      relay.close();
      return refused((err as Error).message);
    }
    this.held.set(req.id, h);
    this.options.log.info({ id: req.id, ...req.meta }, `relay kept: ${req.meta.client} -> ${req.meta.upstream} (continued from ${req.meta.peer})`);
    return { op: 'taken', id: req.id };
  }

  private counts(h: Held): { clientBytes: number; upstreamBytes: number } {
    const b = h.relay.bytes();
    return { clientBytes: h.before.clientBytes + b.aToB, upstreamBytes: h.before.upstreamBytes + b.bToA };
  }

  private ended(id: string, h: Held, reason: string): void {
    if (this.held.get(id) !== h) return;
    this.held.delete(id);
    const msg: KeeperReply = { op: 'ended', id, reason: reason.slice(0, 500), ...this.counts(h) };
    this.options.log.info({ id, client: h.meta.client, reason, clientBytes: msg.clientBytes, upstreamBytes: msg.upstreamBytes }, `kept relay ended: ${h.meta.client}: ${reason}`);
    for (const a of this.agents) if (!a.destroyed) a.write(keeperLine(msg));
    this.armIdle();
  }

  private armIdle(): void {
    clearTimeout(this.idleTimer);
    if (this.stopping || this.held.size > 0 || this.agents.size > 0) return;
    const ms = this.options.idleExitMs ?? 10_000;
    if (ms === 0) return;
    this.idleTimer = setTimeout(() => void this.stop(`idle: no connection and no agent for ${ms} ms`), ms);
  }
}

/** Why `fd` is not connected to `expected` (ADDRESS:PORT), or undefined when it is. */
function wrongPeer(fd: number, expected: string, which: 'client' | 'upstream'): { which: 'client' | 'upstream'; why: string } | undefined {
  let want;
  try {
    want = parseEndpoint(expected);
  } catch {
    return { which, why: `its ${which} ${expected} is not ADDRESS:PORT` };
  }
  let peer;
  try {
    peer = native.socketPeer(fd);
  } catch (err) {
    return { which, why: (err as Error).message };
  }
  // (An upstream named by host name: its port only.)
  const sameAddress = net.isIP(want.address) === 0 || wireAddress(peer.address) === wireAddress(want.address);
  const same = sameAddress && peer.port === want.port;
  return same ? undefined : { which, why: `its peer is ${formatEndpoint({ address: wireAddress(peer.address), port: peer.port })}, not ${expected}` };
}
