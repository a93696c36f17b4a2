// Ends the connections of a hung local process on its behalf. The process still holds its
// sockets, so the kernel can do the work: SOCK_DESTROY sends the exact RST, and a borrowed fd
// (pidfd_getfd) lets us send urgent data, a protocol goodbye or a FIN on the process's own
// connection, with the kernel's own sequence numbers.
import { readdirSync, statSync } from 'node:fs';
import { BorrowedSocket } from './borrowed-socket.js';
import type { CloseMethod } from './close-method.js';
import { methodName } from './close-method.js';
import type { CloseOutcome, CloseResult } from './close-result.js';
import type { Endpoint } from './endpoint.js';
import { destroySocket, listTcpSockets, socketInodesOfPid, socketsOfPid, TCP_ESTABLISHED, type OwnedSocket } from './sockdiag.js';
import type { NativeError } from '../native.js';

const TCP_CLOSE_WAIT = 8;

export interface LocalCloseOptions {
  /** Only connections whose local port is one of these (default: all of the process's). */
  ports?: number[];
  /**
   * For goodbyes: the operator vouches that every connection is between messages (e.g. the
   * process hung while waiting for requests). Without it a goodbye falls back to RST, because
   * nothing has followed the stream to prove a message boundary.
   */
  assumeBoundary?: boolean;
}

/** True when pid lives in the caller's network namespace (sock_diag only sees that one). */
export function sameNetworkNamespace(pid: number): boolean {
  return statSync(`/proc/${pid}/ns/net`).ino === statSync('/proc/self/ns/net').ino;
}

/** The process's connected TCP sockets: established, or half-closed by the peer. */
export function connectionsOfPid(pid: number, ports?: number[]): OwnedSocket[] {
  const seen = new Set<number>();
  return socketsOfPid(pid).filter((o) => {
    const s = o.socket;
    if (s.state !== TCP_ESTABLISHED && s.state !== TCP_CLOSE_WAIT) return false;
    if (ports && !ports.includes(s.sport)) return false;
    // A socket shared by several fds is one connection.
    if (seen.has(s.inode)) return false;
    seen.add(s.inode);
    return true;
  });
}

export function closeLocalPeers(pid: number, method: CloseMethod, options: LocalCloseOptions = {}): CloseResult[] {
  if (!sameNetworkNamespace(pid)) {
    throw Object.assign(new Error(`process ${pid} is in another network namespace; run takeover inside it (nsenter -t ${pid} -n)`), {
      code: 'ERR_OTHER_NETNS',
    });
  }
  return connectionsOfPid(pid, options.ports).map((owned) => closeOne(pid, owned, method, options));
}

/**
 * Ends every connection on these local ports in this network namespace, whoever holds it: the
 * failure plan of a server that died while workers it forked still hold their clients'
 * connections (PostgreSQL backends outlive a killed postmaster and finish their query first).
 */
export function closePortPeers(ports: number[], method: CloseMethod, options: Omit<LocalCloseOptions, 'ports'> = {}): CloseResult[] {
  if (ports.length === 0) throw new RangeError('closePortPeers needs at least one port');
  const connected = listTcpSockets().filter((s) => (s.state === TCP_ESTABLISHED || s.state === TCP_CLOSE_WAIT) && ports.includes(s.sport));
  // A RST needs no owner (SOCK_DESTROY); the other methods act through the owner's fd.
  const owners = method.kind === 'rst' || connected.length === 0 ? new Map<number, { pid: number; fd: number }>() : socketOwners();
  return connected.map((socket) => {
    const owner = owners.get(socket.inode);
    return closeOne(owner?.pid ?? 0, { fd: owner?.fd ?? -1, socket }, owner ? method : { kind: 'rst' }, options);
  });
}

/** Socket inode -> one (pid, fd) holding it, over every process in /proc. */
function socketOwners(): Map<number, { pid: number; fd: number }> {
  const owners = new Map<number, { pid: number; fd: number }>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    let inodes: Map<number, number>;
    try {
      inodes = socketInodesOfPid(pid);
    } catch {
      continue; // gone while we looked, or not ours to read
    }
    for (const [fd, inode] of inodes) if (!owners.has(inode)) owners.set(inode, { pid, fd });
  }
  return owners;
}

function closeOne(pid: number, owned: OwnedSocket, method: CloseMethod, options: LocalCloseOptions): CloseResult {
  const started = performance.now();
  const s = owned.socket;
  const local: Endpoint = { address: s.src, port: s.sport };
  const peer: Endpoint = { address: s.dst, port: s.dport };
  let action: string = methodName(method);
  let fallback: string | undefined;
  if (method.kind === 'goodbye' && !options.assumeBoundary) {
    action = 'rst';
    fallback = 'no tracked stream proves a message boundary (use a tracker, or --assume-boundary)';
  }
  const base = { local, peer, method: methodName(method), seqSource: 'socket' as const };
  const done = (outcome: CloseOutcome, ok: boolean, error?: string): CloseResult => ({
    ...base,
    action,
    outcome,
    ok,
    // SOCK_DESTROY is the kernel's own exact RST; data and FIN are only queued on the socket.
    verified: ok && action === 'rst',
    ...(fallback ? { fallback } : {}),
    ...(error ? { error } : {}),
    elapsedMs: Math.round((performance.now() - started) * 1000) / 1000,
  });
  try {
    if (action === 'rst') {
      destroySocket(s);
      return done('reset', true);
    }
    using sock = BorrowedSocket.borrow(pid, owned.fd);
    if (method.kind === 'break') {
      sock.sendUrgent();
      return done('urgent-delivered', true);
    }
    if (method.kind === 'goodbye') sock.send(method.plugin.message());
    sock.shutdownWrite();
    return done(method.kind === 'goodbye' ? 'goodbye-delivered' : 'closed', true);
  } catch (err) {
    const e = err as NativeError;
    // The socket went away between listing and acting: the peer is not waiting on it any more.
    if (e.code === 'ENOENT' || e.code === 'EBADF') return done('not-connected', true, e.message);
    return done('failed', false, e.message);
  }
}
