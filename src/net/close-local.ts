// Ends the connections of a hung local process on its behalf. The process still holds its
// sockets, so the kernel can do the work: SOCK_DESTROY sends the exact RST, and a borrowed fd
// (pidfd_getfd) lets us send urgent data, a protocol goodbye or a FIN on the process's own
// connection, with the kernel's own sequence numbers.
// Everything that can take long with many connections (the socket dump, the /proc scan, the
// resets) runs on libuv workers, and the per-connection fd work in slices: the agent calls
// this on the event loop that sends its heartbeats.
import { statSync } from 'node:fs';
import { mapInSlices } from '../event-loop.js';
import { native, type NativeError } from '../native.js';
import { BorrowedSocket } from './borrowed-socket.js';
import type { CloseMethod } from './close-method.js';
import { methodName } from './close-method.js';
import type { CloseOutcome, CloseResult } from './close-result.js';
import type { Endpoint } from './endpoint.js';
import { CONNECTED_STATES, destroySockets, listTcpSocketsAsync, socketOwners, type DiagSocket, type SocketHolder } from './sockdiag.js';

/** What a stream follower (BoundaryWatch) knows of the server's byte stream on one connection. */
export interface LocalBoundary {
  atBoundary: boolean;
  reason: string;
  /** The sequence number after the last server byte followed: the boundary holds only there. */
  serverNext?: number;
}

export interface LocalCloseOptions {
  /** Only connections whose local port is one of these (default: all of the process's). */
  ports?: number[];
  /**
   * For goodbyes: the operator vouches that every connection is between messages (e.g. the
   * process hung while waiting for requests). Without it a goodbye needs `boundary`, and falls
   * back to RST where nothing proves a message boundary.
   */
  assumeBoundary?: boolean;
  /** For goodbyes: what the agent's own stream following knows of each connection (local = the server side). */
  boundary?: (local: Endpoint, peer: Endpoint) => LocalBoundary | undefined;
}

/** A connection and, when known, a process fd through which to act on it. */
interface Held {
  socket: DiagSocket;
  holder: SocketHolder | undefined;
}

/** True when pid lives in the caller's network namespace (sock_diag only sees that one). */
export function sameNetworkNamespace(pid: number): boolean {
  return statSync(`/proc/${pid}/ns/net`).ino === statSync('/proc/self/ns/net').ino;
}

/** The process's connected TCP sockets (established, or half-closed by the peer), each with one fd of the process holding it. */
export async function connectionsOfPid(pid: number, ports?: number[]): Promise<Array<{ fd: number; socket: DiagSocket }>> {
  const fds = await socketOwners({ pid });
  const sockets = await listTcpSocketsAsync({ states: CONNECTED_STATES, ...(ports ? { localPorts: ports } : {}) });
  return sockets.flatMap((socket) => {
    const h = fds.get(socket.inode);
    return h ? [{ fd: h.fd, socket }] : [];
  });
}

export async function closeLocalPeers(pid: number, method: CloseMethod, options: LocalCloseOptions = {}): Promise<CloseResult[]> {
  if (!sameNetworkNamespace(pid)) {
    throw Object.assign(new Error(`process ${pid} is in another network namespace; run takeover inside it (nsenter -t ${pid} -n)`), {
      code: 'ERR_OTHER_NETNS',
    });
  }
  const owned = await connectionsOfPid(pid, options.ports);
  return closeHeld(owned.map((o) => ({ socket: o.socket, holder: { pid, fd: o.fd } })), method, options);
}

/**
 * Ends every connection on these local ports in this network namespace, whoever holds it: the
 * failure plan of a server that died while workers it forked still hold their clients'
 * connections (PostgreSQL backends outlive a killed postmaster and finish their query first).
 */
export async function closePortPeers(ports: number[], method: CloseMethod, options: Omit<LocalCloseOptions, 'ports'> = {}): Promise<CloseResult[]> {
  if (ports.length === 0) throw new RangeError('closePortPeers needs at least one port');
  const connected = await listTcpSocketsAsync({ states: CONNECTED_STATES, localPorts: ports });
  // A RST needs no owner (SOCK_DESTROY); the other methods act through the owner's fd.
  const owners = method.kind === 'rst' || connected.length === 0 ? new Map<number, SocketHolder>() : await socketOwners({ inodes: connected.map((s) => s.inode) });
  return closeHeld(connected.map((socket) => ({ socket, holder: owners.get(socket.inode) })), method, options);
}

/** What will be done to one connection, and why it is not the method asked for. */
interface Plan {
  held: Held;
  action: 'rst' | 'fd';
  fallback?: string;
  /** For a goodbye: where the followed server stream sat at a message boundary. */
  boundary?: LocalBoundary;
  started: number;
}

async function closeHeld(list: Held[], method: CloseMethod, options: LocalCloseOptions): Promise<CloseResult[]> {
  // Every loop over the connections runs in slices: there may be tens of thousands.
  const plans = await mapInSlices(list, (held): Plan => {
    const started = performance.now();
    if (method.kind === 'rst') return { held, action: 'rst', started };
    if (!held.holder) return { held, action: 'rst', fallback: 'no process holds the socket any more: reset instead', started };
    if (method.kind !== 'goodbye' || options.assumeBoundary) return { held, action: 'fd', started };
    const s = held.socket;
    const boundary = options.boundary?.({ address: s.src, port: s.sport }, { address: s.dst, port: s.dport });
    if (!boundary) return { held, action: 'rst', fallback: 'no stream follower saw this connection from its start, so no message boundary is known (use --assume-boundary if the process hung between messages)', started };
    if (!boundary.atBoundary) return { held, action: 'rst', fallback: boundary.reason, started };
    return { held, action: 'fd', boundary, started };
  });
  const results = new Map<Plan, CloseResult>();
  // The fd methods first: a goodbye that finds the kernel ahead of the stream it followed
  // turns into a reset, which the batch below then carries out.
  for (const [p, r] of await mapInSlices(plans.filter((p) => p.action === 'fd'), (p) => [p, actThroughFd(p, method)] as const)) {
    if (r) results.set(p, r);
  }
  const resets = plans.filter((p) => p.action === 'rst');
  const errors = resets.length > 0 ? await destroySockets(resets.map((p) => p.held.socket)) : [];
  await mapInSlices(resets, (p, i) => {
    const err = errors[i];
    results.set(p, err ? gone(err) ? result(p, method, 'not-connected', true, err.message) : result(p, method, 'failed', false, err.message) : result(p, method, 'reset', true));
  });
  return plans.map((p) => results.get(p)!);
}

/**
 * Sends the method's bytes through a borrowed fd. Returns undefined when the connection must be
 * reset after all (the plan is switched to 'rst' with the reason).
 */
function actThroughFd(p: Plan, method: CloseMethod): CloseResult | undefined {
  const holder = p.held.holder!;
  try {
    using sock = BorrowedSocket.borrow(holder.pid, holder.fd);
    if (method.kind === 'break') {
      sock.sendUrgent();
      return result(p, method, 'urgent-delivered', true);
    }
    if (method.kind === 'goodbye') {
      const b = p.boundary;
      if (b) {
        // The boundary was seen on the wire; bytes the server wrote but the wire has not
        // carried yet sit before our goodbye in the socket. Only when there are none does the
        // goodbye land where the boundary is.
        const written = native.tcpRepairSeq(sock.fd).sendSeq;
        if (b.serverNext === undefined || written !== b.serverNext) {
          p.action = 'rst';
          p.fallback = b.serverNext === undefined
            ? 'the stream follower gave no stream position to check against the socket'
            : `the server wrote ${((written - b.serverNext) >>> 0)} bytes the wire has not carried yet: a goodbye would land inside them`;
          return undefined;
        }
      }
      sock.send(method.plugin.message());
    }
    sock.shutdownWrite();
    return result(p, method, method.kind === 'goodbye' ? 'goodbye-delivered' : 'closed', true);
  } catch (err) {
    const e = err as NativeError;
    // The socket went away between listing and acting: the peer is not waiting on it any more.
    if (gone(e)) return result(p, method, 'not-connected', true, e.message);
    return result(p, method, 'failed', false, e.message);
  }
}

function gone(e: NativeError): boolean {
  return e.code === 'ENOENT' || e.code === 'EBADF' || e.code === 'ESRCH';
}

function result(p: Plan, method: CloseMethod, outcome: CloseOutcome, ok: boolean, error?: string): CloseResult {
  const s = p.held.socket;
  const action = p.action === 'rst' ? 'rst' : methodName(method);
  return {
    local: { address: s.src, port: s.sport },
    peer: { address: s.dst, port: s.dport },
    method: methodName(method),
    action,
    seqSource: 'socket',
    outcome,
    ok,
    // SOCK_DESTROY is the kernel's own exact RST; data and FIN are only queued on the socket.
    verified: ok && action === 'rst' && outcome === 'reset',
    ...(p.fallback ? { fallback: p.fallback } : {}),
    ...(error ? { error } : {}),
    elapsedMs: Math.round((performance.now() - p.started) * 1000) / 1000,
  };
}
