// The relay keeper (`takeover relay-keeper`): a process apart from the agent that holds the
// continued connections' steady-state relays (the addon's SpliceRelay: client socket <-> upstream
// socket in the kernel), so that they outlive the agent: its restart (an upgrade of the agent, a
// config change), its crash, its planned stop. A new keeper (an upgrade of the keeper itself)
// takes them over from the running one (`--replace`, replace() below) without ending them.
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
import { chmod, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import net from 'node:net';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { native, type NativeError, type NativeSpliceRelay, type SpliceEnd } from '../../native.js';
import { closeFds, spliceEndReason } from '../shadow/connection-relay.js';
import { parseProcStat } from '../../monitor/process-identity.js';
import { removeStaleSocket } from '../../unix-socket.js';
import { formatEndpoint, parseEndpoint, wireAddress } from '../endpoint.js';
import { KEEPER_LIST_PAGE, KEEPER_WIRE_VERSION, keeperLine, lineId, parseKeeperReply, parseKeeperRequest, type KeeperReply, type KeptRelayInfo, type RelayMeta, type TakeRequest } from './keeper-wire.js';

/** How long a replacement waits for the keeper it replaced to exit before it takes the socket path anyway, ms. */
const REPLACED_EXIT_MS = 30_000;

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

/** A relay detached from this keeper and offered to its replacement, until it answers. */
interface Offered {
  meta: RelayMeta;
  counts: { clientBytes: number; upstreamBytes: number };
  fds: [number, number];
  /** What detach() gave back: the next relay's start (here again, if the replacement does not take it). */
  init: { aToB: Buffer; bToA: Buffer; aEof: boolean; bEof: boolean };
}

export class RelayKeeper {
  private readonly held = new Map<string, Held>();
  /** Once a replacement asked (`replace`): its connection, its pid, what it has not answered yet. */
  private replacing: { sock: net.Socket; pid: number; relays: number; offered: Map<string, Offered>; taken: Set<string>; closed: number; handed: boolean } | undefined;
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
    await k.listen(options.socket);
    k.armIdle();
    options.log.info({ socket: options.socket, pid: process.pid }, `relay keeper listening on ${options.socket}`);
    return k;
  }

  /**
   * Starts a keeper that takes every relay over from the keeper answering on options.socket (an
   * upgrade of the keeper that ends no connection). It listens on `SOCKET.next` meanwhile, asks
   * the old keeper to `replace`, takes each relay it offers as it takes an agent's (copies the
   * fds out of it, checks their peers), and once the old keeper has `handed` all, renames its
   * socket over options.socket; the old keeper then tells its agents (`replaced`: they reconnect
   * to the same path) and exits. Resolves with the keeper and the counts. Throws (code
   * EKEEPERREPLACE) when no keeper answers there, or it speaks another wire version, or it does
   * not know `replace` (an older one), or this process cannot copy fds out of it (no
   * CAP_SYS_PTRACE): nothing changed then, the old keeper holds its relays; KeeperRunningError
   * when another replacement is under way. `handedMs`: from the request to the last relay
   * running here (what their bytes waited at most).
   */
  static async replace(options: RelayKeeperOptions): Promise<{ keeper: RelayKeeper; from: number; taken: number; closed: number; handedMs: number }> {
    const k = new RelayKeeper(options);
    // Its own name (libuv unlinks the name a listener was bound to when it closes: a later
    // replacement of this keeper must not lose its socket to that).
    const next = `${options.socket}.next-${process.pid}`;
    await k.listen(next, options.socket);
    let old: net.Socket | undefined;
    try {
      const fail = (why: string) => Object.assign(new Error(`relay keeper: cannot replace the keeper on ${options.socket}: ${why}`), { code: 'EKEEPERREPLACE' });
      old = await new Promise<net.Socket>((resolve, reject) => {
        const c = net.connect(options.socket, () => resolve(c));
        c.once('error', (err: NodeJS.ErrnoException) => reject(fail(`no keeper answers (${err.code ?? err.message})`)));
      });
      old.on('error', () => {});
      const lines = createInterface({ input: old, crlfDelay: Infinity });
      lines.on('error', () => {});
      const sock = old;
      const from = await new Promise<number>((resolve, reject) => {
        sock.once('close', () => reject(fail('it closed the connection before it listed its relays')));
        lines.on('line', (line) => {
          const o = tryParse(parseKeeperReply, line);
          if (o?.op === 'ended') return; // (one of its relays ended: said to every connection)
          if (o?.op !== 'relays' || o.version !== KEEPER_WIRE_VERSION) return reject(fail(`it answered ${line.slice(0, 200)} (another version of the wire: this one speaks ${KEEPER_WIRE_VERSION})`));
          resolve(o.pid);
        });
        sock.write(keeperLine({ op: 'list' }));
      });
      // A keeper systemd started (its unit's, or in the agent's unit) cannot be replaced by a
      // process outside its unit: the unit's end (it exits once replaced) would kill the
      // replacement or remove its socket's directory (RuntimeDirectory=).
      const unit = await systemdUnitOf(from);
      if (unit !== undefined) throw fail(`it runs under systemd (${unit}); a replacement started outside its unit would die with it, or lose its socket: restart the unit instead (that ends its connections)`);
      // Asked before anything moves: can this process copy fds out of it?
      const probe = (await readdir(`/proc/${from}/fd`))[0];
      try {
        if (probe !== undefined) native.closeFd(native.borrowFd(from, Number(probe)));
      } catch (err) {
        throw fail(`${(err as Error).message} (copying its sockets out needs CAP_SYS_PTRACE)`);
      }
      options.log.info({ from, socket: options.socket }, `relay keeper: replacing the keeper (pid ${from}) on ${options.socket}`);
      const askedAt = performance.now();
      const counts = await new Promise<{ taken: number; closed: number }>((resolve, reject) => {
        let taken = 0;
        let refusedHere = 0;
        lines.removeAllListeners('line');
        lines.on('line', (line) => {
          const req = tryParse(parseKeeperRequest, line);
          if (req?.op === 'take') {
            const answer = k.take(req);
            if (answer.op === 'taken') taken++;
            else refusedHere++;
            return void sock.write(keeperLine(answer));
          }
          // (An agent's close of a relay on its way here, passed on by the old keeper.)
          if (req?.op === 'close') return k.close(req.ids, req.reason);
          // (Else the rest of a long list's pages.)
          const msg = tryParse(parseKeeperReply, line);
          if (msg?.op === 'handed') resolve({ taken, closed: msg.closed });
          else if (msg?.op === 'error' && taken + refusedHere === 0) reject(fail(`it answered: ${msg.reason}${/request: /.test(msg.reason) ? ' (an older keeper, which cannot hand its relays over)' : ''}`));
        });
        // Gone before `handed`: what was taken is this keeper's; the old one has closed the rest.
        sock.once('close', () => resolve({ taken, closed: refusedHere }));
        sock.write(keeperLine({ op: 'replace', pid: process.pid }));
      });
      // From the request to the last relay running here: how long their bytes waited.
      const handedMs = Math.round((performance.now() - askedAt) * 10) / 10;
      // The old keeper exits next, and its exit removes the socket path (libuv unlinks a Unix
      // socket's path when its listener closes, at exit too): the rename comes after it. The
      // agents meanwhile find no keeper, and try again (keeper-client's follow()).
      old.end();
      await gone(from, options.socket, REPLACED_EXIT_MS);
      await rename(next, options.socket);
      k.armIdle();
      options.log.info({ from, ...counts, handedMs, socket: options.socket, pid: process.pid }, `relay keeper listening on ${options.socket}, in place of the keeper pid ${from}: ${counts.taken} relay(s) taken in ${handedMs} ms, ${counts.closed} closed`);
      return { keeper: k, from, ...counts, handedMs };
    } catch (err) {
      old?.destroy();
      await k.stop(`this replacement (pid ${process.pid}) gave up; the keeper it was to replace goes on`, true);
      await rm(next, { force: true });
      throw err;
    }
  }

  /**
   * Listens on `socket`, replacing a stale socket file. Throws KeeperRunningError when a keeper
   * answers there, (code ENOENT) when its directory does not exist (naming `named`, the path the
   * operator gave).
   */
  private async listen(socket: string, named = socket): Promise<void> {
    const dir = path.dirname(socket);
    if (!(await stat(dir).then((st) => st.isDirectory(), () => false))) {
      throw Object.assign(new Error(`relay keeper: ${dir} (the directory of --socket ${named}) does not exist or is not a directory`), { code: 'ENOENT' });
    }
    await removeStaleSocket(socket, 'relay keeper', () => new KeeperRunningError(socket));
    this.server.listen(socket);
    await once(this.server, 'listening');
    await chmod(socket, 0o600);
  }

  /** The relays held now. */
  list(): KeptRelayInfo[] {
    return [...this.held].map(([id, h]) => ({ id, ...h.meta, ...this.counts(h) }));
  }

  /**
   * Closes every relay (their sockets' close: FIN, or RST with unread bytes) and the listener.
   * Idempotent. `keepSocketFile`: options.socket is, or is about to be, another keeper's (this
   * keeper's replacement takes it once the listener's close has removed it; a failed
   * replacement leaves it to the keeper it was to replace), and the end does not remove it.
   */
  async stop(why: string, keepSocketFile = false): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.idleTimer);
    // Stopped while a replacement takes its relays: what it has not answered for is closed here
    // (ended, unless it took them); after `handed` the socket path is the replacement's.
    if (this.replacing) {
      for (const [id, o] of this.replacing.offered) {
        closeFds(o.fds);
        this.announceEnd(id, o.meta, o.counts, `relay keeper stopped (${why}) while its replacement was taking it over`);
      }
      this.replacing.offered.clear();
      keepSocketFile ||= this.replacing.handed;
    }
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
    if (!keepSocketFile) await rm(this.options.socket, { force: true });
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
      if (this.replacing?.sock === sock) return void this.replacementGone();
      this.armIdle();
    });
    const reply = (msg: KeeperReply) => void (sock.destroyed || sock.write(keeperLine(msg)));
    const rl = createInterface({ input: sock, crlfDelay: Infinity });
    rl.on('error', () => {});
    rl.on('line', (line) => {
      if (this.replacing?.sock === sock) return this.onReplacementAnswer(line);
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
      if (req.op === 'replace') return this.handOverAll(sock, req.pid, reply);
      if (req.op === 'close') return this.close(req.ids, req.reason);
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
    if (this.replacing) return refused(`the relay keeper is being replaced (by pid ${this.replacing.pid})`);
    if (this.held.has(req.id)) return refused(`relay ${req.id} is held already`);
    const borrowed: number[] = [];
    try {
      borrowed.push(native.borrowFd(req.pid, req.clientFd));
      borrowed.push(native.borrowFd(req.pid, req.upstreamFd));
      const wrong = wrongPeer(borrowed[0]!, req.meta.client, 'client') ?? wrongPeer(borrowed[1]!, req.meta.upstream, 'upstream');
      if (wrong) return refused(`fd ${wrong.which === 'client' ? req.clientFd : req.upstreamFd} of pid ${req.pid} is not the ${wrong.which} socket: ${wrong.why}`);
      const init = { aToB: Buffer.from(req.toUpstream, 'base64'), bToA: Buffer.from(req.toClient, 'base64'), aEof: req.clientEof, bEof: req.upstreamEof };
      this.run(req.id, [borrowed[0]!, borrowed[1]!], init, req.meta, req.before);
    } catch (err) {
      return refused((err as Error).message);
    } finally {
      closeFds(borrowed);
    }
    this.options.log.info({ id: req.id, ...req.meta }, `relay kept: ${req.meta.client} -> ${req.meta.upstream} (continued from ${req.meta.peer})`);
    return { op: 'taken', id: req.id };
  }

  /**
   * Starts the kernel relay of `fds` (duplicated: the caller closes its own) from `init`, held as
   * `id`. Throws what SpliceRelay throws; nothing is held then.
   */
  private run(id: string, fds: readonly [number, number], init: Offered['init'], meta: RelayMeta, before: Held['before']): void {
    const relay = new native.SpliceRelay(fds[0], fds[1]);
    const h: Held = { relay, meta, before };
    try {
      relay.start(init, (err: NativeError | null, end: SpliceEnd) => this.ended(id, h, spliceEndReason(err, end)));
    } catch (err) {
      relay.close();
      throw err;
    }
    this.held.set(id, h);
  }

  private counts(h: Held): { clientBytes: number; upstreamBytes: number } {
    const b = h.relay.bytes();
    return { clientBytes: h.before.clientBytes + b.aToB, upstreamBytes: h.before.upstreamBytes + b.bToA };
  }

  private ended(id: string, h: Held, reason: string): void {
    if (this.held.get(id) !== h) return;
    this.held.delete(id);
    this.announceEnd(id, h.meta, this.counts(h), reason);
    this.armIdle();
  }

  /** Logs a relay's end and tells every agent (`ended`). */
  private announceEnd(id: string, meta: RelayMeta, counts: { clientBytes: number; upstreamBytes: number }, reason: string): void {
    const msg: KeeperReply = { op: 'ended', id, reason: reason.slice(0, 500), ...counts };
    this.options.log.info({ id, client: meta.client, reason, ...counts }, `kept relay ended: ${meta.client}: ${reason}`);
    for (const a of this.agents) if (!a.destroyed && a !== this.replacing?.sock) a.write(keeperLine(msg));
  }

  /**
   * A replacement asked for every relay: each is detached (its fds and the bytes in its pipes
   * kept as they are) and offered as a `take`; the replacement copies the fds out of this
   * process, as this keeper did out of the agent's. New takes are refused from here on (the
   * agents relay those themselves). Answered `taken`: closed here; refused: closed (that
   * connection ends, said to the agents). Then `handed`; once the replacement closes this
   * connection, the agents hear `replaced` and this keeper exits (which lets the socket path go
   * to the replacement). A replacement gone before `handed`: replacementGone().
   */
  private handOverAll(sock: net.Socket, pid: number, reply: (msg: KeeperReply) => void): void {
    if (this.stopping || this.replacing) return reply({ op: 'error', reason: this.stopping ? 'the relay keeper is stopping' : `the relay keeper is being replaced already (by pid ${this.replacing!.pid})` });
    const relays = this.held.size;
    this.replacing = { sock, pid, relays, offered: new Map(), taken: new Set(), closed: 0, handed: false };
    clearTimeout(this.idleTimer);
    let carried = 0;
    for (const [id, h] of [...this.held]) {
      let d;
      try {
        d = h.relay.detach();
      } catch (err) {
        // (Closed by detach.)
        this.replacing.closed++;
        this.ended(id, h, `relay keeper: it could not be handed to its replacement: ${(err as Error).message}`);
        continue;
      }
      this.held.delete(id);
      const counts = { clientBytes: h.before.clientBytes + d.bytes.aToB, upstreamBytes: h.before.upstreamBytes + d.bytes.bToA };
      this.replacing.offered.set(id, { meta: h.meta, counts, fds: [d.fdA, d.fdB], init: { aToB: d.aToB, bToA: d.bToA, aEof: d.aEof, bEof: d.bEof } });
      carried += d.aToB.length + d.bToA.length;
      const take: TakeRequest = {
        op: 'take', id, pid: process.pid, clientFd: d.fdA, upstreamFd: d.fdB,
        toUpstream: d.aToB.toString('base64'), toClient: d.bToA.toString('base64'), clientEof: d.aEof, upstreamEof: d.bEof,
        meta: h.meta, before: counts,
      };
      sock.write(keeperLine(take));
    }
    this.options.log.info({ by: pid, relays, carried }, `relay keeper: ${relays} relay(s) offered to its replacement (pid ${pid}), with the ${carried} byte(s) they had read and not yet written`);
    this.handedIfDone();
  }

  /**
   * Closes the relays named (an agent's `close`). During a replacement, one offered or handed to
   * the replacement is closed there: the request goes on to it, behind its take.
   */
  private close(ids: readonly string[], reason: string): void {
    const onward: string[] = [];
    for (const id of ids) {
      const h = this.held.get(id);
      if (h) {
        h.relay.close();
        this.ended(id, h, reason);
      } else if (this.replacing?.offered.has(id) || this.replacing?.taken.has(id)) onward.push(id);
    }
    if (onward.length > 0) this.replacing!.sock.write(keeperLine({ op: 'close', ids: onward, reason }));
  }

  /** The replacement's answer to one offered relay. */
  private onReplacementAnswer(line: string): void {
    const r = this.replacing!;
    let msg;
    try {
      msg = parseKeeperReply(line);
    } catch (err) {
      return this.options.log.warn({ err: (err as Error).message }, `relay keeper: its replacement's answer ignored: ${(err as Error).message}`);
    }
    if ((msg.op !== 'taken' && msg.op !== 'refused' && msg.op !== 'error') || msg.id === undefined) return;
    const o = r.offered.get(msg.id);
    if (!o) return;
    r.offered.delete(msg.id);
    closeFds(o.fds);
    if (msg.op === 'taken') r.taken.add(msg.id);
    // Refused: it ends (this keeper exits once the rest are handed).
    else {
      r.closed++;
      this.announceEnd(msg.id, o.meta, o.counts, `relay keeper: its replacement (pid ${r.pid}) refused it: ${msg.reason}`);
    }
    this.handedIfDone();
  }

  private handedIfDone(): void {
    const r = this.replacing!;
    if (r.handed || r.offered.size > 0) return;
    r.handed = true;
    r.sock.write(keeperLine({ op: 'handed', relays: r.relays, closed: r.closed }));
  }

  /**
   * The replacement's connection closed: after `handed`, the replacement listens on the socket
   * path now; before, it is gone, and so is what it did not answer (closed here). Either way the
   * agents are told (`replaced`, or each relay's end) and this keeper exits.
   */
  private async replacementGone(): Promise<void> {
    const r = this.replacing!;
    if (r.handed) {
      for (const a of this.agents) if (!a.destroyed) a.write(keeperLine({ op: 'replaced', pid: r.pid }));
      return this.stop(`replaced by pid ${r.pid}`, true);
    }
    // Gone before `handed` (it died, or gave up): what it did not answer runs here again (its
    // copies are closed, or it closes them: a socket ends only with its last fd); what it took is
    // its own. This keeper goes on.
    for (const [id, o] of r.offered) this.resume(id, o, `its replacement (pid ${r.pid}) left before it answered`);
    this.options.log.warn({ by: r.pid, resumed: r.offered.size }, `relay keeper: its replacement (pid ${r.pid}) left before it had every relay; ${r.offered.size} relay(s) it had not answered for run here again`);
    r.offered.clear();
    this.replacing = undefined;
    this.armIdle();
  }

  /**
   * Runs an offered relay here again (its replacement left before answering for it), from where
   * detach() stopped it. When it cannot, the connection ends, said to the agents.
   */
  private resume(id: string, o: Offered, why: string): void {
    try {
      this.run(id, o.fds, o.init, o.meta, o.counts);
      this.options.log.warn({ id, client: o.meta.client, why }, `relay keeper: ${o.meta.client} relayed here again: ${why}`);
    } catch (err) {
      this.announceEnd(id, o.meta, o.counts, `relay keeper: ${why}, and it could not be relayed here again: ${(err as Error).message}`);
    } finally {
      closeFds(o.fds);
    }
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

function tryParse<T>(parse: (line: string) => T, line: string): T | undefined {
  try {
    return parse(line);
  } catch {
    return undefined;
  }
}

/** Resolves once the process `pid` is gone (or a zombie), or the socket path is, or after `ms`. */
async function gone(pid: number, socket: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const state = await readFile(`/proc/${pid}/stat`, 'latin1').then((t) => parseProcStat(t).state).catch(() => 'gone');
    if (state === 'gone' || state === 'Z') return;
    if (!(await stat(socket).then(() => true, () => false))) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The systemd unit a process runs in (its cgroup's last part), when systemd started it (INVOCATION_ID in its environment); undefined otherwise. */
async function systemdUnitOf(pid: number): Promise<string | undefined> {
  const environ = await readFile(`/proc/${pid}/environ`, 'latin1').catch(() => '');
  if (!environ.split('\0').some((v) => v.startsWith('INVOCATION_ID='))) return undefined;
  const cgroup = await readFile(`/proc/${pid}/cgroup`, 'latin1').catch(() => '');
  return cgroup.trim().split('\n').at(-1)?.split('/').at(-1) || 'a unit';
}
