// The primary's half of a planned switchover (`takeover switchover`, docs/AGENT.md): a backup
// that follows this node's service asks, over the connection-stream listener, for the service's
// connections. In order:
//   1. REQUEST: the backup must be a configured peer and the address must be on this host;
//      CHALLENGE with a fresh nonce; nothing happens before the backup's GO, which covers it;
//   2. the lock (net/network-lock.ts): the service's traffic dropped both ways (PostgreSQL: only
//      what comes in, the clients' pure ACKs let in until the barrier holds);
//   3. quiet: the server reads what arrived and writes its replies; the switchover waits until
//      every locked connection's receive queue is read and its send queue stopped growing
//      (sock_diag, two samples QUIET_SAMPLE_MS apart), or the barrier the backup asked for
//      holds (a PING to Redis answered; every PostgreSQL backend idle), within its quietWaitMs;
//   4. each connection's socket borrowed from the process holding it (pidfd_getfd) and dumped,
//      left in repair mode: frozen, it sends nothing more, not even a FIN or RST when closed;
//   5. QUIET (the backup may read the server meanwhile), the states sent (STATES, then DUMPED);
//   6. RELEASE: the address removed here, RELEASED; or ABORT (or the backup gone, or silent for
//      DECISION_WAIT_MS): every socket taken out of repair mode as it was, the lock removed:
//      the clients go on here, nothing lost;
//   7. DONE: the lock removed, UNLOCKED with the time it was held.
// The frozen sockets stay with the server process: its next read or write on one fails and it
// drops the client (silently: the socket is in repair mode). Demoting the server (making it a
// replica of the new primary) is the operator's step.
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Slices, yieldToLoop } from '../event-loop.js';
import { BorrowedSocket } from '../net/borrowed-socket.js';
import { canonicalAddress, wireAddress } from '../net/endpoint.js';
import { removeAddress } from '../net/address.js';
import { NetworkLock } from '../net/network-lock.js';
import { pgBackendActivity } from '../net/pg-backend-title.js';
import { parseProcStat } from '../monitor/process-identity.js';
import { listTcpSocketsAsync, socketOwners, TCP_ESTABLISHED, type DiagSocket, type SocketHolder } from '../net/sockdiag.js';
import { SwitchoverFrameReader, SwitchoverFrameWriter, packStates, type SwitchoverBarrier } from '../net/switchover-wire.js';
import { respCommand } from './redis-catch-up.js';
import { dumpConnection } from '../net/tcp-repair.js';
import type { TcpRepairState } from '../net/tcp-repair-state.js';
import { findOnHost, type HostAddress } from './address-holding.js';
import { SwitchoverChannel } from './switchover-channel.js';
import { quietVerdict, type QueueSample } from './switchover-quiet.js';

/** Between the two samples of the quiet check, ms. */
export const QUIET_SAMPLE_MS = 10;
/** The most a backup may ask the server to take to go quiet, ms. */
export const MAX_QUIET_WAIT_MS = 10_000;
/** How long the primary waits for RELEASE or ABORT after DUMPED, and for DONE after RELEASED, ms. */
export const DECISION_WAIT_MS = 30_000;

/** The services ("address|port") a switchover is handing over now, in this process. */
const RUNNING = new Set<string>();

export interface PrimarySwitchoverOptions {
  node: string;
  key: Buffer;
  /** The peers allowed to ask (config.peers' nodes). */
  peers: ReadonlySet<string>;
  /** Where an address sits on this host (default: os.networkInterfaces()). */
  find?: (address: string) => HostAddress | undefined;
}

export type PrimarySwitchoverEvent =
  | { type: 'switchover-refused'; backup: string; address: string; port: number; reason: string }
  | { type: 'switchover-aborted'; backup: string; address: string; port: number; reason: string; connections: number; lockHeldMs: number; thawFailures: number }
  | {
      type: 'switchover-given'; backup: string; address: string; port: number; connections: number; moved: number; reset: number; quietMs: number; dumpMs: number; lockHeldMs: number; lockInstallMs: number; sendMs: number; quietRounds: number; quietReadMs: number; releasedAfterMs: number;
      /** PostgreSQL: client sessions of the same server the lock did not hold (loopback, a Unix socket, this host's own address) at the barrier. */
      unlockedSessions?: number;
    };

interface Frozen {
  socket: BorrowedSocket;
  state: TcpRepairState;
}

/**
 * Serves one switchover request on `socket` (bytes already read in `first`). Resolves with what
 * happened (also when refused or aborted); never rejects.
 */
export async function servePrimarySwitchover(socket: net.Socket, first: Buffer, options: PrimarySwitchoverOptions): Promise<PrimarySwitchoverEvent | undefined> {
  const primaryNonce = randomNonce();
  const reader = new SwitchoverFrameReader('primary', options.key, { primaryNonce });
  // The writer needs B's nonce, which only the REQUEST carries: a provisional one until then.
  const channel = new SwitchoverChannel(socket, reader, new SwitchoverFrameWriter(options.key, 1n, primaryNonce), first);
  let backup = '?';
  let address = '';
  let port = 0;
  try {
    const req = await channel.next(5000, 'REQUEST');
    if (req.type !== 'request') return undefined;
    backup = req.node;
    address = canonicalAddress(req.address);
    port = req.port;
    // From here the frames carry B's nonce: a writer of this session.
    channel.writer = new SwitchoverFrameWriter(options.key, reader.session.backupNonce, primaryNonce);
    const refuse = (reason: string): PrimarySwitchoverEvent => {
      channel.send({ type: 'refused', reason });
      channel.close();
      return { type: 'switchover-refused', backup, address, port, reason };
    };
    if (!options.peers.has(req.node)) return refuse(`${req.node} is not a peer of ${options.node}`);
    const here = (options.find ?? findOnHost)(address);
    if (!here) return refuse(`${address} is not on ${options.node}`);
    if (req.quietWaitMs > MAX_QUIET_WAIT_MS) return refuse(`quietWaitMs ${req.quietWaitMs} is above ${MAX_QUIET_WAIT_MS}`);
    // One at a time per service: a second lock and dump of the same sockets would hand them out twice.
    const service = `${address}|${port}`;
    if (RUNNING.has(service)) return refuse(`a switchover of ${address}:${port} is already running here`);
    RUNNING.add(service);
    try {
      channel.send({ type: 'challenge', node: options.node });
      const go = await channel.next(5000, 'GO');
      if (go.type !== 'go') return refuse(`expected GO, got ${go.type.toUpperCase()}`);
      return await lockAndHand(channel, { backup, address, port, here, quietWaitMs: req.quietWaitMs, barrier: req.barrier });
    } finally {
      RUNNING.delete(service);
    }
  } catch (err) {
    channel.close();
    return backup === '?' ? undefined : { type: 'switchover-refused', backup, address, port, reason: (err as Error).message };
  }
}

interface Hand {
  backup: string;
  address: string;
  port: number;
  here: HostAddress;
  quietWaitMs: number;
  barrier: SwitchoverBarrier;
}

async function lockAndHand(channel: SwitchoverChannel, h: Hand): Promise<PrimarySwitchoverEvent> {
  const l0 = performance.now();
  // PostgreSQL's sessions are known from the backup's shadow only: its replies must reach it,
  // and a reply larger than a send buffer must drain (the client's ACKs let in) for its backend
  // to finish and go idle.
  const pg = h.barrier === 'pg-idle';
  const lock = await NetworkLock.install(h.address, h.port, { outbound: !pg, acks: pg });
  const lockInstallMs = Math.round(performance.now() - l0);
  const lockedAtMs = performance.timeOrigin + lock.lockedAt;
  let frozen: Frozen[] = [];
  const abort = async (reason: string, tell: boolean): Promise<PrimarySwitchoverEvent> => {
    let thawFailures = 0;
    for (const f of frozen) {
      try {
        dumpConnection(f.socket.fd, { leaveInRepair: false }); // out of repair mode, no window probe
      } catch {
        thawFailures++;
      }
      f.socket.close();
    }
    await lock.remove().catch(() => undefined);
    if (tell) channel.send({ type: 'refused', reason });
    channel.close();
    return { type: 'switchover-aborted', backup: h.backup, address: h.address, port: h.port, reason, connections: frozen.length, lockHeldMs: Math.round(lock.heldMs()), thawFailures };
  };
  try {
    const quiet = await waitQuiet(h.address, h.port, h.quietWaitMs, h.barrier === 'none');
    if (!quiet.ok) return await abort(quiet.why, true);
    if (h.barrier === 'resp-ping') {
      // Still queues do not prove a request read was answered (the server may have been
      // descheduled in between): a PING answered after them does (see SwitchoverBarrier).
      try {
        const pong = await respCommand({ host: h.address, port: h.port }, ['PING'], Math.max(200, h.quietWaitMs - lock.heldMs()));
        if (pong !== 'PONG') throw new Error(`it answered ${JSON.stringify(pong.slice(0, 40))}`);
      } catch (err) {
        return await abort(`the server's barrier (a PING over loopback) failed: ${(err as Error).message}`, true);
      }
    }
    let owners: Map<number, SocketHolder> | undefined;
    let unlocked: Promise<number | undefined> | undefined;
    if (h.barrier === 'pg-idle') {
      owners = await socketOwners({ inodes: quiet.sockets.map((s) => s.inode) });
      // In the background, on the thread pool: the server's other client sessions, which the
      // lock does not hold (those open now: the backup's catch-up logins come later).
      unlocked = unlockedPgSessions(owners).catch(() => undefined);
      const idle = await waitPgIdle(owners, Math.max(200, h.quietWaitMs - lock.heldMs()));
      if (idle) return await abort(`the server's barrier (every PostgreSQL backend idle) failed: ${idle}`, true);
      // The dump must see queues nothing changes: the ACKs dropped too, those already let in
      // processed (they reach the socket within the softirq that let them in, or at its next
      // release) before the first dump, QUIET_SAMPLE_MS later.
      await lock.tighten();
      await new Promise((r) => setTimeout(r, QUIET_SAMPLE_MS));
    }
    const quietMs = Math.round(lock.heldMs());
    channel.send({ type: 'quiet', quietMs });
    const t = performance.now();
    owners ??= await socketOwners({ inodes: quiet.sockets.map((s) => s.inode) });
    // In slices: a thousand dumps hold the loop ~100-170 ms, and this agent's heartbeats must go on
    // (the backup would declare this node dead). The connections are locked and quiet meanwhile.
    const slices = new Slices();
    for (const s of quiet.sockets) {
      if (slices.due) await slices.next();
      const holder = owners.get(s.inode);
      if (!holder) continue; // no process holds it (closing): not moved
      const socket = BorrowedSocket.borrow(holder.pid, holder.fd);
      try {
        frozen.push({ socket, state: dumpConnection(socket.fd, { leaveInRepair: true }) });
      } catch (err) {
        socket.close();
        return await abort(`the dump of ${s.dst}:${s.dport} failed: ${(err as Error).message}`, true);
      }
    }
    const dumpMs = Math.round(performance.now() - t);
    const s0 = performance.now();
    for (const states of packStates(frozen.map((f) => f.state))) {
      channel.send({ type: 'states', states });
      await yieldToLoop();
    }
    channel.send({ type: 'dumped', connections: frozen.length, quietMs, dumpMs, lockedAtMs });
    const sendMs = Math.round(performance.now() - s0);
    let decision;
    try {
      decision = await channel.next(DECISION_WAIT_MS, 'RELEASE or ABORT');
    } catch (err) {
      return await abort((err as Error).message, false);
    }
    if (decision.type !== 'release') return await abort(decision.type === 'abort' ? `the backup aborted: ${decision.reason}` : `expected RELEASE, got ${decision.type.toUpperCase()}`, false);
    try {
      removeAddress(h.here.ifname, h.address, h.here.prefixLength);
    } catch (err) {
      return await abort(`${h.address} could not be removed here: ${(err as Error).message}`, true);
    }
    const releasedAfterMs = Math.round(lock.heldMs());
    channel.send({ type: 'released' });
    let moved = 0;
    let reset = 0;
    try {
      const done = await channel.next(DECISION_WAIT_MS, 'DONE');
      if (done.type === 'done') ({ moved, reset } = done);
    } catch {
      // The backup has the address; whatever it did, the lock has nothing left to protect.
    }
    // The sockets stay frozen in the server's hands: closing our copies sends nothing.
    for (const f of frozen) f.socket.close();
    const connections = frozen.length;
    frozen = [];
    await lock.remove().catch(() => undefined);
    const lockHeldMs = Math.round(lock.heldMs());
    channel.send({ type: 'unlocked', lockHeldMs, releasedAfterMs });
    channel.close();
    const unlockedSessions = await unlocked;
    return { type: 'switchover-given', backup: h.backup, address: h.address, port: h.port, connections, moved, reset, quietMs, dumpMs, lockHeldMs, lockInstallMs, sendMs, quietRounds: quiet.rounds, quietReadMs: quiet.readMs, releasedAfterMs, ...(unlockedSessions !== undefined ? { unlockedSessions } : {}) };
  } catch (err) {
    return await abort((err as Error).message, true);
  }
}

/**
 * Waits (up to waitMs) until every process holding a locked connection is a PostgreSQL backend
 * whose title says it waits for its client (net/pg-backend-title.ts), then checks once more
 * QUIET_SAMPLE_MS later (the title is set just before the ReadyForQuery is written). Resolves
 * undefined, or why not: a backend still at work (its activity), a process that is not a
 * backend (another server, or `update_process_title` off).
 */
async function waitPgIdle(owners: ReadonlyMap<number, SocketHolder>, waitMs: number): Promise<string | undefined> {
  const started = performance.now();
  const pids = [...new Set([...owners.values()].map((o) => o.pid))];
  let confirmed = false;
  for (let i = 0; i < 100_000; i++) {
    let why: string | undefined;
    let busy = 0;
    for (const pid of pids) {
      const title = await readFile(`/proc/${pid}/cmdline`).catch(() => undefined);
      if (!title) continue; // gone: its sockets were closed with it, and are not dumped
      const a = pgBackendActivity(title);
      if (a.kind === 'unknown') return `process ${pid} holds a locked connection but its title is not a PostgreSQL backend's (${JSON.stringify(a.title)}; update_process_title must be on)`;
      if (a.kind === 'walsender') return `process ${pid} is a WAL sender on a locked connection (${a.activity}): a standby must replicate from the primary's own address, which the lock leaves open, not through the service address`;
      if (a.kind === 'busy') {
        busy++;
        why ??= `process ${pid}: ${a.activity}`;
      }
    }
    if (busy === 0 && confirmed) return undefined;
    confirmed = busy === 0;
    if (busy > 0 && performance.now() - started > waitMs) return `${busy} of ${pids.length} backends still at work after ${Math.round(performance.now() - started)} ms (${why})`;
    await new Promise((r) => setTimeout(r, QUIET_SAMPLE_MS));
  }
  return 'the idle check ran out of rounds';
}

/**
 * How many client sessions of the PostgreSQL server holding the locked connections are not among
 * them and were open when called (read from /proc, 64 reads at a time on the thread pool): the
 * postmaster's other children whose title is a client backend's (idle or at work; not a WAL
 * sender, nor a background process), started at least a clock tick before the call (a process
 * forked later, such as the backup's catch-up login, is not counted). Rejects when no locked
 * connection's process is left to find the postmaster by.
 */
async function unlockedPgSessions(owners: ReadonlyMap<number, SocketHolder>): Promise<number> {
  const before = Math.floor(Number((await readFile('/proc/uptime', 'latin1')).split(' ')[0]) * CLOCK_TICKS_PER_S) - 1;
  const locked = new Set([...owners.values()].map((o) => o.pid));
  const first = locked.values().next().value;
  if (first === undefined) return 0;
  const postmaster = parseProcStat(await readFile(`/proc/${first}/stat`, 'latin1')).ppid;
  const pids = (await readdir('/proc')).map(Number).filter((pid) => Number.isInteger(pid) && !locked.has(pid));
  let count = 0;
  for (let i = 0; i < pids.length; i += 64) {
    const kinds = await Promise.all(
      pids.slice(i, i + 64).map(async (pid) => {
        const stat = await readFile(`/proc/${pid}/stat`, 'latin1').catch(() => undefined);
        if (!stat) return 'gone';
        const f = parseProcStat(stat);
        if (f.ppid !== postmaster || Number(f.startTime) > before) return 'other';
        const title = await readFile(`/proc/${pid}/cmdline`).catch(() => undefined);
        return title ? pgBackendActivity(title).kind : 'gone';
      }),
    );
    count += kinds.filter((k) => k === 'idle' || k === 'busy').length;
  }
  return count;
}

/** USER_HZ: /proc's clock ticks per second (100 on every Linux architecture Node runs on). */
const CLOCK_TICKS_PER_S = 100;

type Quiet = { ok: true; sockets: DiagSocket[]; rounds: number; readMs: number } | { ok: false; why: string };

/**
 * The service's established client connections (not from this host), once quiet. `stableTx`:
 * every receive queue read AND every send queue unchanged between two samples (the proof without
 * a barrier); without it one sample with every receive queue read is enough, the barrier that
 * follows proves the replies written. Each sample is a sock_diag dump on a libuv worker, of the
 * established sockets only (filtered in the kernel) and of the service's port: a read of
 * /proc/net/tcp, used before, took 53 ms in the lab's 1,000-connection switchover, the dump
 * 31-46 ms (the kernel formats every namespace's sockets for the file).
 */
async function waitQuiet(address: string, port: number, waitMs: number, stableTx: boolean): Promise<Quiet> {
  const started = performance.now();
  let readMs = 0;
  const sample = async () => {
    const r0 = performance.now();
    // Clients on this host (over loopback, or to an address of its own: the barrier's PING) stay.
    // wireAddress: a dual-stack (::) server's IPv4 clients show as ::ffff:a.b.c.d.
    const all = (await listTcpSocketsAsync({ states: [TCP_ESTABLISHED], localPorts: [port] })).filter((s) => wireAddress(s.src) === address && !isLoopback(wireAddress(s.dst)) && !findOnHost(wireAddress(s.dst)));
    const queues: QueueSample = new Map(all.map((s) => [`${s.dst}|${s.dport}`, [s.wqueue, s.rqueue] as const]));
    readMs = Math.max(readMs, performance.now() - r0);
    return { all, queues };
  };
  // The first sample after a short wait: segments already past the lock's hook reach their queues.
  let before = stableTx ? await sample() : undefined;
  for (let i = 0; i < 10_000; i++) {
    await new Promise((r) => setTimeout(r, QUIET_SAMPLE_MS));
    const now = await sample();
    // Compared with itself, a sample only shows the unread queues.
    const v = quietVerdict((before ?? now).queues, now.queues);
    if (v.quiet) return { ok: true, sockets: now.all, rounds: i + (stableTx ? 2 : 1), readMs: Math.round(readMs) };
    if (performance.now() - started > waitMs) return { ok: false, why: `the server did not go quiet in ${waitMs} ms (of ${now.all.length} connections: ${v.why})` };
    if (stableTx) before = now;
  }
  return { ok: false, why: 'the quiet check ran out of rounds' };
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.');
}

function randomNonce(): bigint {
  const b = new BigUint64Array(1);
  do crypto.getRandomValues(b);
  while (b[0] === 0n);
  return b[0]!;
}

